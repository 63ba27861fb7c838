"""A client loop over many URLs at once, run by `MultiProbe` inside a client namespace.

Each URL (one per line in the file given as the argument) gets its own loop: a
`GET` on a fresh connection every `--interval` seconds, bounded by `--timeout`,
so that one load balancer timing out does not slow the others' loops. Every
outcome is one line, `<url index> <0|1> <start> <end>` (CLOCK_MONOTONIC,
comparable with the parent's `time.monotonic()`), appended to the `--out` file;
a line `lag <time> <seconds>` every second gives the longest the event loop
overslept in that second (how late this client itself was: a gap no longer than
the lag says nothing about the load balancer). Runs until stdin closes.

Records go to a file, never to a pipe: a parent that falls behind reading a pipe
fills it, and the probe's next write would stall every loop at once (the first
200-pair run lost its loops for ~58 s that way, or to CPU starvation, on load
balancers the failover never touched). The parent starts this process at a
real-time priority for the same reason.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TextIO
from urllib.parse import urlsplit

LAG_TICK = 0.05


async def get(host: str, port: int, timeout: float) -> bool:
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            await reader.read()
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def loop(
    out: TextIO, index: int, url: str, interval: float, timeout: float, offset: float
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    await asyncio.sleep(offset)  # spread the loops over the interval
    while True:
        start = time.monotonic()
        ok = await get(host, port, timeout)
        end = time.monotonic()
        out.write(f"{index} {int(ok)} {start:.4f} {end:.4f}\n")
        await asyncio.sleep(max(0.0, interval - (end - start)))


async def watch_lag(out: TextIO) -> None:
    """Every second, the longest this event loop overslept a LAG_TICK sleep."""
    worst, since = 0.0, time.monotonic()
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_TICK)
        now = time.monotonic()
        worst = max(worst, now - before - LAG_TICK)
        if now - since >= 1.0:
            out.write(f"lag {now:.4f} {worst:.4f}\n")
            worst, since = 0.0, now


async def flush_often(out: TextIO) -> None:
    while True:
        await asyncio.sleep(0.25)
        out.flush()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls")
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=0.3)
    args = parser.parse_args()
    with open(args.urls) as f:
        urls = [line.strip() for line in f if line.strip()]
    n = len(urls)
    with open(args.out, "a", buffering=1 << 20) as out:
        tasks = [
            asyncio.create_task(loop(out, i, u, args.interval, args.timeout, args.interval * i / n))
            for i, u in enumerate(urls)
        ]
        tasks.append(asyncio.create_task(flush_often(out)))
        tasks.append(asyncio.create_task(watch_lag(out)))
        # stdin closing (the parent gone or done) ends the probe.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for t in tasks:
            t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
