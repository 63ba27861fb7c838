"""Per-LB log files on an agent host: segments, quotas, retention, and reading them.

rsyslogd writes `<root>/<lb id>/access.log` (HAProxy's JSON lines as they are) and
`admin.log`; the agent never writes a line. What the agent does, from its janitor
pass every second, and never per request (nor per quiet load balancer: one whose
files did not change for a few seconds gets a one-shot inotify watch, `DirWatch`,
and is not looked at again until a line is written into its directory):
- rotation: a file past its segment size (or, for a load balancer shipped to an
  object store, past its interval) is renamed `<kind>.<time ns>.log`; the caller
  then sends rsyslogd a SIGHUP, so it opens a new file (until then it keeps writing
  to the renamed one: nothing is lost);
- quotas: a load balancer's files over its quota, then all files over the host's,
  lose their oldest closed segments;
- retention: the files of a load balancer that left the host (`lb.json` says
  when) are removed once the retention period is over.
`lb.json` in each directory records the LB's project, its instances on this host
and its delivery targets, so shipping and retention go on after the LB is gone.

Queries read the files backwards (newest first) for the last lines, or forwards from
a cursor (`<inode>:<offset>`, which follows a file through its renaming) to follow.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openha.agent.dirwatch import DirWatch

KINDS = ("access", "admin")
META = "lb.json"
SHIPPED = ".shipped"
_SEGMENT = re.compile(r"^(access|admin)\.(\d{19,20})\.log$")
_LB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_STATUS = re.compile(r"^([1-5])(xx|\d\d)$")
_CHUNK = 256 * 1024
# Rotation passes (two a second) without a change before a load balancer counts as quiet.
QUIET_AFTER = 10
# The root's listing is kept while its mtime says nothing was made or removed there,
# once that mtime is older than this (a coarse clock tick could hide a change).
_LISTING_SETTLED_NS = 1_000_000_000


def valid_lb_id(lb_id: str) -> bool:
    return bool(_LB_ID.fullmatch(lb_id))


@dataclass
class LbMeta:
    lb_id: str
    project_id: str = ""
    instance_ids: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    gone_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


@dataclass(frozen=True)
class Segment:
    lb_id: str
    kind: str
    path: Path
    closed_ns: int  # when it was closed; the current file counts as now

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class LogQuery:
    kind: str = "access"
    since: float | None = None
    until: float | None = None
    status: str | None = None  # "503" or "5xx"
    client: str | None = None  # an address or a CIDR
    limit: int = 100

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if self.status is not None and not _STATUS.fullmatch(self.status):
            raise ValueError("status must be a code (503) or a class (5xx)")
        if self.client is not None:
            try:
                ipaddress.ip_network(self.client, strict=False)
            except ValueError:
                raise ValueError("client must be an IP address or a CIDR") from None
        if not 1 <= self.limit <= 10000:
            raise ValueError("limit must be between 1 and 10000")

    def matches(self, record: dict[str, Any]) -> bool:
        ts = record.get("ts")
        if not isinstance(ts, int | float):
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts > self.until:
            return False
        if self.status is not None:
            status = record.get("status")
            if not isinstance(status, int):
                return False
            code = str(status)
            if self.status.endswith("xx"):
                if code[:1] != self.status[:1] or len(code) != 3:
                    return False
            elif code != self.status:
                return False
        if self.client is not None:
            try:
                address = ipaddress.ip_address(str(record.get("client", "")))
            except ValueError:
                return False
            if address not in ipaddress.ip_network(self.client, strict=False):
                return False
        return True


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a line cut short (past HAProxy's length) or not ours
    return record if isinstance(record, dict) else None


def _reverse_lines(path: Path) -> Iterator[bytes]:
    """The complete lines of a file, last first, read in chunks from its end."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with fh:
        end = fh.seek(0, os.SEEK_END)
        # A last line without its newline is still being written: not yet a line.
        rest = b""
        pos = end
        first = True
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + rest
            lines = data.split(b"\n")
            rest = lines[0]
            tail = lines[1:]
            if first:
                tail = tail[:-1] if tail else tail
                first = False
            yield from (line for line in reversed(tail) if line)
        if rest and not first:
            yield rest


class LogStore:
    def __init__(
        self,
        root: Path,
        *,
        lb_quota: int,
        host_quota: int,
        segment_bytes: int,
        retention: float,
    ) -> None:
        self.root = root
        self.lb_quota = lb_quota
        self.host_quota = host_quota
        self.segment_bytes = max(4096, min(segment_bytes, lb_quota // 4))
        self.retention = retention
        self._lock = threading.Lock()
        # (lb, kind) -> (inode, monotonic time first seen): the age of current files.
        self._born: dict[tuple[str, str], tuple[int, float]] = {}
        # lb.json of each load balancer, as last read or written: heartbeats and the
        # janitor look at them often, the disk is read once per LB and agent run.
        self._metas: dict[str, LbMeta | None] = {}
        self._shipped: set[str] = set()  # LBs with an object-store target (see `_note`)
        self.dropped_segments = 0  # unshipped segments a quota removed
        self._sizes: dict[str, tuple[int, int]] = {}  # lb -> (dir mtime, bytes) last seen
        self.total_bytes = 0  # all files, as the janitor's last pass found them
        # Quiet load balancers (see the module's docstring): the janitor skips them
        # until their directory is written. Their size is the one enforce found last.
        self._watch: DirWatch | None = None  # made when the first LB goes quiet
        self._quiet: set[str] = set()
        self._seen: dict[str, tuple[tuple[int, int] | None, ...]] = {}  # current files
        self._still: dict[str, int] = {}  # rotation passes since they last changed
        self._bytes: dict[str, int] = {}  # lb -> all its files, as enforce last found
        self._listing: tuple[int, list[str]] | None = None  # (root mtime, lb ids)
        self.looks = 0  # load balancer directories the janitor looked into (tests count)

    # -- metadata ---------------------------------------------------------------------

    def lb_dir(self, lb_id: str) -> Path:
        if not valid_lb_id(lb_id):
            raise ValueError(f"not a load balancer id: {lb_id!r}")
        return self.root / lb_id

    def meta(self, lb_id: str) -> LbMeta | None:
        """The LB's record (shared: only `register` and `release` change it, then save it)."""
        if lb_id in self._metas:
            return self._metas[lb_id]
        try:
            meta: LbMeta | None = LbMeta(**json.loads((self.lb_dir(lb_id) / META).read_text()))
        except (OSError, ValueError, TypeError):
            meta = None
        self._metas[lb_id] = meta
        self._note(lb_id, meta)
        return meta

    def _note(self, lb_id: str, meta: LbMeta | None) -> None:
        if meta is not None and any(t.get("type") == "s3" for t in meta.targets):
            self._shipped.add(lb_id)
        else:
            self._shipped.discard(lb_id)

    def shipped_ids(self) -> list[str]:
        """The LBs here with an object-store target: what shipping looks at, not the
        whole host (each LB's record is read once per agent run, then kept)."""
        out = []
        for lb_id in self.lb_ids():
            if lb_id not in self._metas:
                self.meta(lb_id)
            if lb_id in self._shipped:
                out.append(lb_id)
        return out

    def _save(self, meta: LbMeta) -> None:
        d = self.lb_dir(meta.lb_id)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = d / f".{META}.tmp"
        tmp.write_text(meta.to_json())
        os.replace(tmp, d / META)
        self._metas[meta.lb_id] = meta
        self._note(meta.lb_id, meta)

    def register(
        self, lb_id: str, project_id: str, instance_id: str, targets: list[dict[str, Any]]
    ) -> None:
        """An instance of `lb_id` runs here (idempotent; cheap when nothing changed)."""
        with self._lock:
            meta = self.meta(lb_id) or LbMeta(lb_id)
            before = meta.to_json()
            meta.project_id = project_id
            if instance_id not in meta.instance_ids:
                meta.instance_ids.append(instance_id)
            meta.targets = targets
            meta.gone_at = None
            if meta.to_json() != before or not (self.lb_dir(lb_id) / META).exists():
                # Saved before anything reads it again: the cached record is this one.
                self._save(meta)

    def release(self, lb_id: str, instance_id: str) -> None:
        """An instance left the host; with the last one the retention period starts."""
        with self._lock:
            meta = self.meta(lb_id)
            if meta is None:
                return
            if instance_id in meta.instance_ids:
                meta.instance_ids.remove(instance_id)
            if not meta.instance_ids and meta.gone_at is None:
                meta.gone_at = time.time()
            self._save(meta)

    def lb_ids(self) -> list[str]:
        """The load balancers with a directory here (listed again only when the root's
        mtime says one was made or removed)."""
        try:
            stamp = self.root.stat().st_mtime_ns
            if self._listing is not None and self._listing[0] == stamp:
                return list(self._listing[1])
            ids = sorted(d.name for d in os.scandir(self.root) if valid_lb_id(d.name))
        except FileNotFoundError:
            return []
        if time.time_ns() - stamp > _LISTING_SETTLED_NS:
            self._listing = (stamp, ids)
        return list(ids)

    def close(self) -> None:
        """Drop the watches (the janitor stopped): every LB is looked at again."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._quiet.clear()
        self._still.clear()

    def quiet(self) -> set[str]:
        """The load balancers the janitor does not look at until they are written."""
        return set(self._quiet)

    def _wake(self, lb_id: str) -> None:
        """Look at `lb_id` again from the next pass on."""
        self._quiet.discard(lb_id)
        if self._watch is not None:
            self._watch.disarm(lb_id)
        self._still[lb_id] = 0

    def _forget(self, lb_id: str) -> None:
        self._wake(lb_id)
        self._seen.pop(lb_id, None)
        self._still.pop(lb_id, None)
        self._bytes.pop(lb_id, None)
        self._sizes.pop(lb_id, None)

    def _current(self, lb_id: str) -> tuple[tuple[int, int] | None, ...]:
        """(inode, size) of each current file, None for one that does not exist."""
        out: list[tuple[int, int] | None] = []
        for kind in KINDS:
            try:
                st = (self.lb_dir(lb_id) / f"{kind}.log").stat()
                out.append((st.st_ino, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _settle(self, lb_id: str, seen: tuple[tuple[int, int] | None, ...], timed: bool) -> None:
        """After a look: count the passes its files stayed the same; once quiet, arm its
        watch (not for `timed` LBs, whose files are closed by time, not only by size)."""
        if self._seen.get(lb_id) != seen:
            self._seen[lb_id] = seen
            self._still[lb_id] = 0
            return
        self._still[lb_id] = still = self._still.get(lb_id, 0) + 1
        if timed or still < QUIET_AFTER:
            return
        if self._watch is None:
            self._watch = DirWatch()
        if not self._watch.arm(lb_id, self.lb_dir(lb_id)):
            return  # no inotify here, or no watch left: looked at as before
        # A line written between the look and the watch would go unheard: look again.
        if self._current(lb_id) == seen:
            self._quiet.add(lb_id)
        else:
            self._wake(lb_id)

    # -- files ------------------------------------------------------------------------

    def segments(self, lb_id: str, kind: str | None = None) -> list[Segment]:
        """Closed segments of a load balancer, oldest first."""
        out = []
        try:
            names = os.listdir(self.lb_dir(lb_id))
        except FileNotFoundError:
            return []
        for name in names:
            m = _SEGMENT.fullmatch(name)
            if m and (kind is None or m.group(1) == kind):
                out.append(Segment(lb_id, m.group(1), self.lb_dir(lb_id) / name, int(m.group(2))))
        return sorted(out, key=lambda s: (s.closed_ns, s.kind))

    def files(self, lb_id: str, kind: str) -> list[Path]:
        """Every file of one kind, oldest first, the current one last."""
        current = self.lb_dir(lb_id) / f"{kind}.log"
        paths = [s.path for s in self.segments(lb_id, kind)]
        return [*paths, current] if current.exists() else paths

    def disk_bytes(self, lb_id: str | None = None) -> int:
        ids = [lb_id] if lb_id else self.lb_ids()
        total = 0
        for i in ids:
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.lb_dir(i)):
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    # -- the janitor ------------------------------------------------------------------

    def rotate(self, intervals: dict[str, float] | None = None) -> bool:
        """Close current files past their size or interval; True when rsyslogd must reopen."""
        intervals = intervals or {}
        rotated = False
        now = time.monotonic()
        for lb_id in self._watch.fired() if self._watch is not None else ():
            self._wake(lb_id)
        for lb_id in self.lb_ids():
            if lb_id in self._quiet:
                if lb_id not in intervals:
                    continue
                self._wake(lb_id)  # shipped by time since it went quiet
            self.looks += 1
            seen: list[tuple[int, int] | None] = []
            for kind in KINDS:
                path = self.lb_dir(lb_id) / f"{kind}.log"
                try:
                    st = path.stat()
                except FileNotFoundError:
                    self._born.pop((lb_id, kind), None)
                    seen.append(None)
                    continue
                seen.append((st.st_ino, st.st_size))
                born = self._born.get((lb_id, kind))
                if born is None or born[0] != st.st_ino:
                    born = (st.st_ino, now)
                    self._born[(lb_id, kind)] = born
                interval = intervals.get(lb_id)
                due = st.st_size >= self.segment_bytes or (
                    interval is not None and st.st_size > 0 and now - born[1] >= interval
                )
                if due:
                    target = path.with_name(f"{kind}.{time.time_ns():020d}.log")
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(path, target)
                        rotated = True
                    self._born.pop((lb_id, kind), None)
                    seen[-1] = None  # changed: not quiet yet
            self._settle(lb_id, tuple(seen), lb_id in intervals)
        return rotated

    def enforce(self, shipped: Any = None) -> list[Path]:
        """Quotas and retention; returns what was removed.

        `shipped(segment)` tells whether a segment still waits for an object store
        (a removed one that did not ship is counted in `dropped_segments`).
        """
        with self._lock:  # a register() may be creating a directory meanwhile
            return self._enforce(shipped)

    def _enforce(self, shipped: Any) -> list[Path]:
        removed: list[Path] = []
        now = time.time()
        sizes: dict[str, int] = {}
        for lb_id in self.lb_ids():
            meta = self.meta(lb_id)
            if meta is None:
                # Lines of a load balancer this agent never registered (or rsyslogd
                # wrote again after its removal): kept as if it had just left.
                meta = LbMeta(lb_id, gone_at=now)
                self._save(meta)
            if meta.gone_at is not None and now - meta.gone_at >= self.retention:
                shutil.rmtree(self.lb_dir(lb_id), ignore_errors=True)
                self._metas.pop(lb_id, None)
                self._shipped.discard(lb_id)
                self._forget(lb_id)
                removed.append(self.lb_dir(lb_id))
                continue
            if lb_id in self._quiet and lb_id in self._bytes:
                sizes[lb_id] = self._bytes[lb_id]  # nothing written since it was counted
                continue
            self.looks += 1
            # Closed segments come and go by renames and removals, which change the
            # directory's mtime; current files are bounded by the segment size. An LB
            # whose directory did not change keeps the size found last: an idle host
            # costs a stat per LB here, not a directory scan.
            try:
                stamp = self.lb_dir(lb_id).stat().st_mtime_ns
            except FileNotFoundError:
                continue
            currents = self._current_bytes(lb_id)
            known = self._sizes.get(lb_id)
            if known is not None and known[0] == stamp and known[1] + currents <= self.lb_quota:
                sizes[lb_id] = self._bytes[lb_id] = known[1] + currents
                continue
            # (Over the quota although no segment came: the current files grew since
            # the scan, and the oldest segments must go now, not at the next rotation.)
            size = self.disk_bytes(lb_id)
            for seg in self.segments(lb_id):
                if size <= self.lb_quota:
                    break
                size -= self._remove(seg, shipped)
                removed.append(seg.path)
            sizes[lb_id] = self._bytes[lb_id] = size
            with contextlib.suppress(FileNotFoundError):
                stamp = self.lb_dir(lb_id).stat().st_mtime_ns
                self._sizes[lb_id] = (stamp, max(0, size - currents))
        total = sum(sizes.values())
        if total > self.host_quota:
            every = sorted(
                (seg for lb_id in sizes for seg in self.segments(lb_id)),
                key=lambda s: s.closed_ns,
            )
            for seg in every:
                if total <= self.host_quota:
                    break
                total -= self._remove(seg, shipped)
                removed.append(seg.path)
                self._wake(seg.lb_id)  # its size is counted again next pass
                self._bytes.pop(seg.lb_id, None)
        self.total_bytes = total
        return removed

    def _current_bytes(self, lb_id: str) -> int:
        total = 0
        for kind in KINDS:
            with contextlib.suppress(FileNotFoundError):
                total += (self.lb_dir(lb_id) / f"{kind}.log").stat().st_size
        return total

    def _remove(self, seg: Segment, shipped: Any) -> int:
        try:
            size = seg.path.stat().st_size
            seg.path.unlink()
        except FileNotFoundError:
            return 0
        if shipped is not None and not shipped(seg):
            self.dropped_segments += 1
        marks = self.lb_dir(seg.lb_id) / SHIPPED
        with contextlib.suppress(FileNotFoundError):
            for mark in marks.glob(f"{seg.name}.*"):
                mark.unlink()
        return size

    # -- reading ----------------------------------------------------------------------

    def cursor_end(self, lb_id: str, kind: str) -> str:
        """A cursor at the end of the current file: what follows it is new."""
        path = self.lb_dir(lb_id) / f"{kind}.log"
        try:
            st = path.stat()
        except FileNotFoundError:
            return "0:0"
        return f"{st.st_ino}:{st.st_size}"

    def tail(self, lb_id: str, query: LogQuery) -> list[dict[str, Any]]:
        """The last `query.limit` matching records, oldest first."""
        found: list[dict[str, Any]] = []
        for path in reversed(self.files(lb_id, query.kind)):
            if query.since is not None:
                with contextlib.suppress(FileNotFoundError):
                    # Lines are written after the time they carry: a file last
                    # written before `since` holds nothing newer.
                    if path.stat().st_mtime < query.since - 1:
                        break
            for line in _reverse_lines(path):
                record = _parse(line)
                if record is not None and query.matches(record):
                    found.append(record)
                    if len(found) >= query.limit:
                        return found[::-1]
        return found[::-1]

    def after(self, lb_id: str, query: LogQuery, cursor: str) -> tuple[list[dict[str, Any]], str]:
        """Matching records written after `cursor`, oldest first, and the next cursor.

        Not limited by `query.limit` (a follower must not skip lines): at most 8 MiB
        of a file is read per call, and the cursor says where the next call goes on.
        """
        try:
            inode, offset = (int(x) for x in cursor.split(":", 1))
        except ValueError:
            raise ValueError("invalid cursor") from None
        files = self.files(lb_id, query.kind)
        stats = []
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                stats.append((path, path.stat().st_ino))
        start = next((i for i, (_, ino) in enumerate(stats) if ino == inode), None)
        if start is None:
            # The file was removed (quota) or never existed: begin with the newest.
            start, offset = max(len(stats) - 1, 0), 0
        found: list[dict[str, Any]] = []
        next_cursor = cursor if start is not None and stats else "0:0"
        for i, (path, ino) in enumerate(stats[start:], start=start):
            pos = offset if i == start else 0
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    data = fh.read(8 << 20)
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1  # only complete lines
            for line in data[:end].split(b"\n"):
                if not line:
                    continue
                record = _parse(line)
                if record is not None and query.matches(record):
                    found.append(record)
            next_cursor = f"{ino}:{pos + end}"
            if end < len(data) or len(data) >= 8 << 20:
                break  # the rest comes with the next call
        return found, next_cursor
