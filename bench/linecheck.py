"""Which requests of a wrk run have no access line, and when: the bench's sequence check.

wrk numbers every request it sends (`SEQ_SCRIPT`: path `/seq/<run>/<thread>/<n>`, n
counting from 1 on each of its threads) and prints how many each thread issued, so
every filed line names the request it is for. After a run, `LineCounter` waits until
the log pipeline has drained (every request HAProxy received has its line, or
nothing changed for a while) and reads only what rsyslogd appended since the last
look (by inode, so a segment the agent's janitor renamed meanwhile is read to its
end). A `RunCheck` then sets three counts side by side:
- sent: the numbered requests wrk wrote (its counters; it numbers one more on its
  first thread to check the script, never sent);
- received: what HAProxy's frontends counted (`show stat` req_tot, delta over the run);
- filed: the lines of this run in the LB's files;
and lists the numbers without a line: among the last ones of a thread (in flight when
wrk stopped; if received - ereq == filed they never reached HAProxy) or earlier (a
drop in the middle of the run). wrk opens one empty connection at each start (a 400 `CR`
that HAProxy counts in req_tot and ereq and `option dontlognull` leaves unlogged):
received minus ereq is what must have a line.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Lua for wrk: each thread numbers its own requests; `done` reports the counts.
SEQ_SCRIPT = """\
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or "run"
  counter = 0
  prefix = "/seq/" .. run .. "/" .. thread_id .. "/"
end

function request()
  counter = counter + 1
  return wrk.format(nil, prefix .. counter)
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("issued %d %d\\n", t:get("thread_id"), t:get("counter")))
  end
end
"""

_ISSUED = re.compile(r"^issued (\d+) (\d+)$", re.M)
_COMPLETED = re.compile(r"^\s*(\d+) requests in ", re.M)
# One access line: its time, the numbered path (HAProxy's `json` converter escapes
# slashes) and how the request ended.
_LINE = re.compile(
    rb'"ts":(?P<ts>[\d.]+),.*?"path":"\\?/seq\\?/(?P<run>[^/\\"]+)\\?/(?P<thread>\d+)\\?/(?P<n>\d+)".*?'
    rb'"status":(?P<status>-?\d+),.*?"termination":"(?P<term>[^"]*)"'
)


def issued(wrk_output: str) -> dict[int, int]:
    """Requests each wrk thread issued (numbered 1..N), from the script's `done`."""
    return {int(t): int(n) for t, n in _ISSUED.findall(wrk_output)}


def completed(wrk_output: str) -> int:
    """Responses wrk received ("N requests in ...")."""
    match = _COMPLETED.search(wrk_output)
    return int(match.group(1)) if match else 0


@dataclass
class Filed:
    """What the lines of one numbered run say."""

    numbers: dict[int, dict[int, float]] = field(default_factory=dict)  # thread -> n -> ts
    terminations: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


class LineCounter:
    """Access lines rsyslogd filed for one load balancer, read incrementally.

    Files are followed by inode: the current `access.log` and the closed segments
    (`access.<ns>.log`) it becomes; only whole lines are consumed.
    """

    def __init__(self, lb_dir: Path) -> None:
        self.lb_dir = lb_dir
        self.lines = 0
        self.unnumbered = 0  # lines of requests not sent by the numbering script
        self.runs: dict[str, Filed] = {}
        self._offsets: dict[int, int] = {}

    def poll(self) -> int:
        """Read what was appended since the last call; returns the total lines so far."""
        for path in sorted(self.lb_dir.glob("access*.log")):
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            with fh:
                ino = os.fstat(fh.fileno()).st_ino
                offset = self._offsets.get(ino, 0)
                fh.seek(offset)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            if end:
                self._consume(data[:end])
                self._offsets[ino] = offset + end
        return self.lines

    def _consume(self, chunk: bytes) -> None:
        count = chunk.count(b"\n")
        self.lines += count
        numbered = 0
        for m in _LINE.finditer(chunk):
            numbered += 1
            filed = self.runs.setdefault(m["run"].decode(), Filed())
            seen = filed.numbers.setdefault(int(m["thread"]), {})
            n = int(m["n"])
            if n in seen:
                filed.duplicates += 1
            seen[n] = float(m["ts"])
            filed.terminations[f"{m['status'].decode()} {m['term'].decode()}"] += 1
        self.unnumbered += count - numbered


def drain(
    counter: LineCounter,
    received: Callable[[], T],
    expected_lines: Callable[[T], int],
    quiet: float = 3.0,
    limit: float = 30.0,
) -> tuple[int, float]:
    """Wait until every received request has its line, or nothing moved for `quiet` s.

    `expected_lines(received())` is the line total that means drained (HAProxy logs a
    request when its stream ends; rsyslogd writes a batch when it has taken it).
    Returns the line count and how long the wait took.
    """
    start = time.monotonic()
    last: tuple[T, int] | None = None
    last_change = start
    while True:
        now = (received(), counter.poll())
        if now[1] >= expected_lines(now[0]):
            break
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet or time.monotonic() - start >= limit:
            break
        time.sleep(0.1)
    return now[1], time.monotonic() - start


@dataclass
class RunCheck:
    """One numbered wrk run against one logging contender."""

    contender: str
    run: str
    started: float  # wall clock
    ended: float
    issued: dict[int, int]  # thread -> requests issued
    completed: int  # responses wrk got
    received: int  # req_tot delta
    empty: int  # ereq delta: connections closed before sending anything, never logged
    filed: int  # line delta (every line filed during the run and its drain)
    drain_seconds: float
    in_flight_per_thread: int  # wrk connections per thread

    def sent(self) -> int:
        return sum(self.issued.values()) - (1 if self.issued else 0)

    def missing(self, filed: Filed) -> list[tuple[int, int]]:
        """(thread, n) of every request sent without a line.

        Thread 0's number 1 is never sent: wrk calls `request()` once to check the
        script before its threads start.
        """
        out = []
        for thread, total in sorted(self.issued.items()):
            seen = filed.numbers.get(thread, {})
            first = 2 if thread == 0 else 1
            out.extend((thread, n) for n in range(first, total + 1) if n not in seen)
        return out

    def describe(self, filed: Filed, show: int = 8) -> list[str]:
        """Markdown bullet lines: the counts and where the missing requests are."""
        missing = self.missing(filed)
        numbered = sum(len(v) for v in filed.numbers.values())
        tail = [(t, n) for t, n in missing if n > self.issued[t] - self.in_flight_per_thread]
        earlier = [m for m in missing if m not in tail]
        dropped = self.received - self.empty - self.filed
        head = (
            f"- {self.contender} {self.run}: sent {self.sent():,}, "
            f"answered {self.completed:,}, received {self.received:,} (req_tot; "
            f"{self.empty} failed, ereq), filed {self.filed:,} ({numbered:,} numbered"
            + (f", {filed.duplicates} twice" if filed.duplicates else "")
            + f"): **{dropped:,} dropped** (req_tot - ereq - filed); "
            f"{len(missing):,} numbers without a line"
            f" ({len(tail)} among each thread's last {self.in_flight_per_thread}, in flight "
            f"when wrk stopped; {len(earlier)} earlier); all counted {self.drain_seconds:.1f} s "
            "after wrk exited (the bench's own parsing of the run's lines included)"
        )
        lines = [head]
        abnormal = {k: v for k, v in filed.terminations.items() if not k.endswith(" ----")}
        if abnormal:
            lines.append(
                "  - lines not ending normally (status termination: count): "
                + ", ".join(f"`{k}`: {v}" for k, v in sorted(abnormal.items()))
            )
        for thread, n in earlier[:show]:
            seen = filed.numbers.get(thread, {})
            before = max((k for k in seen if k < n), default=None)
            after = min((k for k in seen if k > n), default=None)

            def at(k: int | None, seen: dict[int, float] = seen) -> str:
                return "-" if k is None else f"{seen[k] - self.started:.3f} s"

            lines.append(
                f"  - thread {thread} request {n} of {self.issued[thread]}: neighbours "
                f"filed at {at(before)} and {at(after)} into the run "
                f"(run lasted {self.ended - self.started:.1f} s)"
            )
        if len(earlier) > show:
            lines.append(f"  - ... and {len(earlier) - show} more earlier ones")
        return lines
