"""A client loop for the benchmarks, run by `harness.Probe` inside a client namespace.

Reads target URLs on stdin (one per line; `-` pauses) and, while it has one, sends
`GET` requests on fresh connections, one after the other with `--interval` between
them, each bounded by `--timeout`. Every outcome is one JSON line on stdout:
`{"s": start, "e": end, "st": status or 0, "b": x-backend header or error, "u": url}`
with CLOCK_MONOTONIC times, comparable with the parent's `time.monotonic()`.
Fresh connections, because a kept-alive one stays with the HAProxy worker that
accepted it and would hide a reload from the client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


class Target:
    def __init__(self) -> None:
        self.url: str | None = None
        self.changed = threading.Event()
        self.closed = False


def read_commands(target: Target) -> None:
    for line in sys.stdin:
        url = line.strip()
        target.url = None if url in ("", "-") else url
        target.changed.set()
    target.closed = True
    target.changed.set()


def request(url: str, timeout: float) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("x-backend") or ""
    except (OSError, http.client.HTTPException) as exc:
        return 0, type(exc).__name__
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()
    target = Target()
    threading.Thread(target=read_commands, args=(target,), daemon=True).start()
    out = sys.stdout
    while not target.closed:
        url = target.url
        if url is None:
            target.changed.wait(0.5)
            target.changed.clear()
            continue
        start = time.monotonic()
        status, info = request(url, args.timeout)
        end = time.monotonic()
        out.write(json.dumps({"s": start, "e": end, "st": status, "b": info, "u": url}) + "\n")
        out.flush()
        # Failures (no ARP answer, refused) return at once: do not spin on them.
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
