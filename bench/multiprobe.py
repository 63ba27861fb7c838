"""A client loop over many URLs at once, run by `MultiProbe` inside a client namespace.

Each URL (one per line in the file given as the argument) gets its own loop: a
`GET` on a fresh connection every `--interval` seconds, bounded by `--timeout`,
so that one load balancer timing out does not slow the others' loops. Every
outcome is one line, `<url index> <0|1> <start> <end>` (CLOCK_MONOTONIC,
comparable with the parent's `time.monotonic()`), appended to the `--out` file;
a line `lag <time> <seconds>` every second gives the longest the loop woke up
late in that second (how late this client itself was: a gap no longer than the
lag says nothing about the load balancer). Runs until stdin closes.

Records go to a file, never to a pipe: a parent that falls behind reading a pipe
fills it, and the probe's next write would stall every loop at once. The parent
starts this process at a real-time priority, so it must be cheap: one epoll loop
over non-blocking sockets (asyncio's streams cost ~0.6 ms of CPU a request, 60 %
of a core for 200 loops every 0.2 s, taken at real-time priority from the very
rebuild being timed).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import select
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

LAG_TICK = 0.05
START, DEADLINE, TICK = 0, 1, 2


class Loop:
    """One URL's loop: at most one request under way."""

    __slots__ = ("address", "head", "index", "request", "serial", "sock", "started")

    def __init__(self, index: int, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        self.index = index
        self.address = (host, parts.port or 80)
        self.request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        self.sock: socket.socket | None = None
        self.started = 0.0
        self.head = b""
        self.serial = 0  # which request a deadline in the heap belongs to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("urls")
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=0.3)
    args = parser.parse_args()
    with open(args.urls) as f:
        loops = [Loop(i, line.strip()) for i, line in enumerate(f) if line.strip()]
    stop = threading.Event()
    # stdin closing (the parent gone or done) ends the probe.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    poll = select.epoll()
    by_fd: dict[int, Loop] = {}
    now = time.monotonic()
    # (when, kind, loop index, serial): starts spread over the interval, deadlines, ticks.
    heap = [(now + args.interval * i / len(loops), START, i, 0) for i in range(len(loops))]
    heap.append((now + LAG_TICK, TICK, -1, 0))
    heapq.heapify(heap)
    worst, lag_since, flushed = 0.0, now, now
    with open(args.out, "a", buffering=1 << 20) as out:

        def finish(loop: Loop, ok: bool, at: float) -> None:
            assert loop.sock is not None
            by_fd.pop(loop.sock.fileno(), None)
            with contextlib.suppress(OSError):
                poll.unregister(loop.sock.fileno())
            loop.sock.close()
            loop.sock = None
            out.write(f"{loop.index} {int(ok)} {loop.started:.4f} {at:.4f}\n")
            heapq.heappush(heap, (max(at, loop.started + args.interval), START, loop.index, 0))

        while not stop.is_set():
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                when, kind, i, serial = heapq.heappop(heap)
                if kind == TICK:
                    worst = max(worst, now - when)
                    heapq.heappush(heap, (now + LAG_TICK, TICK, -1, 0))
                    continue
                loop = loops[i]
                if kind == DEADLINE:
                    if loop.sock is not None and loop.serial == serial:
                        finish(loop, False, now)
                    continue
                loop.serial += 1
                loop.started, loop.head = now, b""
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                loop.sock = sock
                err = sock.connect_ex(loop.address)
                if err not in (0, errno.EINPROGRESS):
                    finish(loop, False, time.monotonic())
                    continue
                by_fd[sock.fileno()] = loop
                poll.register(sock.fileno(), select.EPOLLOUT)
                heapq.heappush(heap, (now + args.timeout, DEADLINE, i, loop.serial))
            wait = max(0.0, min(heap[0][0] - time.monotonic(), LAG_TICK)) if heap else LAG_TICK
            for fd, events in poll.poll(wait):
                loop = by_fd.get(fd)
                if loop is None or loop.sock is None:
                    continue
                sock = loop.sock
                at = time.monotonic()
                if events & select.EPOLLOUT and not loop.head:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        finish(loop, False, at)
                        continue
                    try:
                        sock.send(loop.request)
                    except OSError:
                        finish(loop, False, at)
                        continue
                    loop.head = b" "  # sent: now reading
                    poll.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    finish(loop, False, at)
                    continue
                if data:
                    if len(loop.head) < 64:
                        loop.head += data[:64]
                    continue
                # The server closed (Connection: close): the answer is complete.
                finish(loop, loop.head[1:].split(b" ")[1:2] == [b"200"], at)
            now = time.monotonic()
            if now - lag_since >= 1.0:
                out.write(f"lag {now:.4f} {worst:.4f}\n")
                worst, lag_since = 0.0, now
            if now - flushed >= 0.25:
                out.flush()
                flushed = now


if __name__ == "__main__":
    main()
