"""The host's access-log pipeline, as the agent runs it: rsyslogd, files, delivery.

HAProxy → (its log ring, a unix stream) → the agent's rsyslogd → per-LB files, and
remote syslog collectors through disk-assisted queues. No Python is on that path.
Each instance has an input of its own (a slot: its socket, linked into the instance's
chroot, and the LB its lines are filed under, whatever tag they carry); slots are
kept in `slots.json` so a restarted agent finds rsyslogd as it left it.
The agent's part, in one janitor thread, twice a second for closing files (so a busy
load balancer's files stay small next to its quota), once a second for the rest:
- keep rsyslogd running with the configuration the load balancers here need (a new
  collector, or more instances than the inputs rendered, restarts it; a load
  balancer joining a known collector, or an instance taking a free input, only
  rewrites the lookup tables and sends SIGHUP);
- close, remove and retain files (`LogStore`), ship closed ones to object stores
  (`Shipper`), and read rsyslogd's counters (impstats) for the delivery state: what
  is queued and spooled per collector, what was dropped past the spool limit.
`delivery()` is that state; heartbeats carry it when it changed (the API turns a
rise of `dropped` into a `logs.dropped` event).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openha.agent.logship import Shipper
from openha.agent.logstore import LogQuery, LogStore
from openha.agent.paths import log_paths
from openha.agent.syslogd import Syslogd, SyslogdError
from openha.domain.logtargets import SyslogTarget, merged, parse_targets
from openha.domain.spec import InstanceSpec
from openha.render.rsyslog import (
    Forward,
    RsyslogLayout,
    input_slots,
    inputs_table,
    lookup_table,
    render_rsyslog,
)
from openha.settings import Settings

log = logging.getLogger(__name__)

STATS_INTERVAL = 2  # seconds between two impstats reports
_STATS_MAX = 4 << 20  # the stats file is closed past this size, as log files are
# A heartbeat carries the delivery state when a drop count rose, else at most this often.
REPORT_INTERVAL = 5.0


class _Counters:
    """rsyslogd's cumulative counters per collector, carried across its restarts."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, int]] = {}
        self.base: dict[str, dict[str, int]] = {}

    def update(self, name: str, values: dict[str, int]) -> None:
        last = self.last.get(name, {})
        base = self.base.setdefault(name, {})
        for key, value in values.items():
            if value < last.get(key, 0):  # rsyslogd restarted: its counters began again
                base[key] = base.get(key, 0) + last[key]
        self.last[name] = values

    def get(self, name: str, key: str) -> int:
        return self.last.get(name, {}).get(key, 0) + self.base.get(name, {}).get(key, 0)

    def current(self, name: str, key: str) -> int:
        return self.last.get(name, {}).get(key, 0)


class LogPipeline:
    def __init__(self, settings: Settings, agent_dir: Path) -> None:
        self.settings = settings
        self.paths = log_paths(agent_dir)
        self.paths.check()
        self.syslogd = Syslogd(self.paths.syslog_dir)
        self.store = LogStore(
            self.paths.logs_root,
            lb_quota=settings.log_lb_quota_bytes,
            host_quota=settings.log_host_quota_bytes,
            segment_bytes=settings.log_segment_bytes,
            retention=settings.log_retention_seconds,
        )
        self.shipper = Shipper(self.store, settings.host_name)
        self.deployment_targets = parse_targets(settings.log_targets)
        self.layout = RsyslogLayout(
            socket=str(self.paths.syslog_socket),
            work_dir=str(self.syslogd.work_dir),
            logs_root=str(self.paths.logs_root),
            stats_file=str(self.paths.syslog_dir / "stats.json"),
            lookup_file=str(self.paths.syslog_dir / "lookup.json"),
            own_log=str(self.paths.syslog_dir / "rsyslogd.log"),
            inputs_dir=str(self.paths.inputs_dir),
            inputs_file=str(self.paths.syslog_dir / "inputs.json"),
        )
        self.slots_file = self.paths.syslog_dir / "slots.json"
        # instance id -> (its input's slot, its LB id)
        self.slots: dict[str, tuple[int, str]] = self._load_slots()
        self.counters = _Counters()
        self._stats_pos = (0, 0)  # (inode, offset) read so far
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: tuple[float, dict[str, Any] | None] = (0.0, None)
        self._reported_drops: list[int] = []
        self.last_error: str | None = None
        self.started = False
        self.forwards: list[Forward] = []  # the collectors of the running configuration
        # Called once rsyslogd runs anew (a new socket): the agent renews each chroot's
        # link to it (`agent.sandbox`).
        self.on_restart: Callable[[], None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.paths.logs_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.started = True
        self.converge()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="log-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the agent's part; rsyslogd keeps filing lines (the data plane)."""
        self._stop.set()
        self.started = False
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.store.close()

    # -- load balancers ---------------------------------------------------------------

    def register(self, spec: InstanceSpec) -> None:
        """An instance runs here: its input, its LB's files, delivery and collectors are known."""
        targets = merged(self.deployment_targets, spec.log_targets)
        lb_id = spec.load_balancer_id
        with self._lock:
            # Only this LB's route and this instance's input can change: cheap when they
            # do not (every adoption at start comes here).
            before = self._route(lb_id)
            new_slot = self._take_slot(spec.instance_id, lb_id)
            self.store.register(
                lb_id, spec.project_id, spec.instance_id, [t.model_dump() for t in targets]
            )
            if (new_slot or self._route(lb_id) != before) and self.started:
                self.converge()

    def release(self, lb_id: str, instance_id: str) -> None:
        with self._lock:
            before = self._route(lb_id)
            freed = self._free_slot(instance_id)
            self.store.release(lb_id, instance_id)
            if (freed or self._route(lb_id) != before) and self.started:
                self.converge()

    def keep_only(self, instance_ids: set[str]) -> None:
        """Free the inputs of instances no longer on the host (an agent that died
        while deleting one)."""
        with self._lock:
            freed = [i for i in list(self.slots) if i not in instance_ids and self._free_slot(i)]
            if freed and self.started:
                self.converge()

    def input_socket(self, instance_id: str) -> Path | None:
        """The socket of the instance's own input (None before it registered)."""
        with self._lock:
            taken = self.slots.get(instance_id)
        return Path(self.layout.input_socket(taken[0])) if taken is not None else None

    # -- the instances' inputs --------------------------------------------------------

    def _load_slots(self) -> dict[str, tuple[int, str]]:
        try:
            raw = json.loads(self.slots_file.read_text())
        except (OSError, ValueError):
            return {}
        slots: dict[str, tuple[int, str]] = {}
        if isinstance(raw, dict):
            for instance_id, value in raw.items():
                with contextlib.suppress(TypeError, ValueError):
                    slot, lb_id = int(value[0]), str(value[1])
                    if 0 <= slot < 1 << 16:
                        slots[str(instance_id)] = (slot, lb_id)
        return slots

    def _save_slots(self) -> None:
        self.paths.syslog_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.slots_file.with_name(".slots.json.tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in sorted(self.slots.items())}))
        os.replace(tmp, self.slots_file)

    def _take_slot(self, instance_id: str, lb_id: str) -> bool:
        """Give the instance an input if it has none; True when it got a new one."""
        if instance_id in self.slots:
            return False
        used = {slot for slot, _ in self.slots.values()}
        slot = next(n for n in range(len(used) + 1) if n not in used)
        if slot >= 1 << 16:
            raise OSError("no free log input left on this host")
        self.slots[instance_id] = (slot, lb_id)
        self._save_slots()
        return True

    def _free_slot(self, instance_id: str) -> bool:
        taken = self.slots.pop(instance_id, None)
        if taken is None:
            return False
        self._save_slots()
        # Back to root's alone until another instance gets it (its chroot link is gone
        # with the instance's directory).
        with contextlib.suppress(OSError):
            os.chown(self.layout.input_socket(taken[0]), 0, 0)
        return True

    def _route(self, lb_id: str) -> tuple[str, ...]:
        """The ids of the syslog collectors of an LB still on the host."""
        meta = self.store.meta(lb_id)
        if meta is None or meta.gone_at is not None:
            return ()
        return tuple(
            sorted(SyslogTarget(**t).id for t in meta.targets if t.get("type") == "syslog")
        )

    def _syslog_routes(self) -> dict[str, tuple[str, ...]]:
        """LB id → the ids of its syslog collectors, for LBs still on the host."""
        return {lb_id: ids for lb_id in self.store.lb_ids() if (ids := self._route(lb_id))}

    def _forwards(self) -> list[Forward]:
        targets: dict[str, SyslogTarget] = {
            t.id: t for t in self.deployment_targets if isinstance(t, SyslogTarget)
        }
        for lb_id in self.store.lb_ids():
            meta = self.store.meta(lb_id)
            if meta is None or meta.gone_at is not None:
                continue
            for t in meta.targets:
                if t.get("type") == "syslog":
                    target = SyslogTarget(**t)
                    targets.setdefault(target.id, target)
        spool = self.settings.log_spool_bytes // max(1, len(targets))
        ca = str(self.settings.log_tls_ca_file)
        return [Forward(t, spool, ca) for _, t in sorted(targets.items())]

    def converge(self) -> None:
        """rsyslogd running with the configuration and lookup table wanted now."""
        with self._lock:
            changed_table = False
            for path, table in (
                (Path(self.layout.lookup_file), lookup_table(self._syslog_routes())),
                (
                    Path(self.layout.inputs_file),
                    inputs_table({slot: lb_id for slot, lb_id in self.slots.values()}),
                ),
            ):
                if not path.exists() or path.read_text() != table:
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.name}.tmp")
                    tmp.write_text(table)
                    os.replace(tmp, path)
                    changed_table = True
            forwards = self._forwards()
            inputs = input_slots(max((slot for slot, _ in self.slots.values()), default=None))
            try:
                self.paths.inputs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                restarted = self.syslogd.ensure(
                    render_rsyslog(self.layout, forwards, STATS_INTERVAL, inputs)
                )
                self.forwards = forwards
                self.last_error = None
            except (SyslogdError, OSError, ValueError) as exc:
                # Lines wait in each HAProxy's ring meanwhile; the next pass tries again.
                if self.last_error != str(exc):
                    log.error("log pipeline: %s", exc)
                self.last_error = str(exc)
                return
            if changed_table and not restarted:
                self.syslogd.hup()
            if restarted and self.on_restart is not None:
                self.on_restart()

    # -- the janitor ------------------------------------------------------------------

    def _loop(self) -> None:
        passes = 0
        while not self._stop.wait(0.5):
            passes += 1
            try:
                self.tick(full=passes % 2 == 0)
            except Exception:
                log.exception("log janitor pass failed")

    def tick(self, full: bool = True) -> None:
        """Close files past their size (and, when `full`, everything else the janitor does)."""
        if not full:
            if self.store.rotate(self.shipper.intervals()):
                self.syslogd.hup()
            return
        if self.syslogd.pid() is None:
            self.converge()
        rotated = self.store.rotate(self.shipper.intervals())
        stats = Path(self.layout.stats_file)
        with contextlib.suppress(FileNotFoundError):
            if stats.stat().st_size > _STATS_MAX:
                self._read_stats()
                os.replace(stats, stats.with_name("stats.old.json"))
                rotated = True
        own = Path(self.layout.own_log)
        with contextlib.suppress(FileNotFoundError):
            if own.stat().st_size > _STATS_MAX:
                os.replace(own, own.with_name("rsyslogd.old.log"))
                rotated = True
        if rotated:
            self.syslogd.hup()
        self.shipper.ship_once()
        self.store.enforce(self.shipper.is_shipped)
        self._read_stats()

    def _read_stats(self) -> None:
        path = Path(self.layout.stats_file)
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        inode, offset = self._stats_pos
        if st.st_ino != inode or st.st_size < offset:
            offset = 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._stats_pos = (st.st_ino, offset + end)
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            name = entry.get("name")
            if isinstance(name, str) and name.startswith("oh_fwd_"):
                values = {k: v for k, v in entry.items() if isinstance(v, int)}
                self.counters.update(name, values)

    # -- reading ----------------------------------------------------------------------

    def query(
        self, lb_id: str, query: LogQuery, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        if cursor is None:
            # The cursor first: a line written meanwhile comes again rather than never.
            end = self.store.cursor_end(lb_id, query.kind)
            return self.store.tail(lb_id, query), end
        return self.store.after(lb_id, query, cursor)

    def delivery(self) -> dict[str, Any]:
        """Delivery state per collector and store, and the disk the files use."""
        syslog = []
        for fwd in self.forwards:
            t, name = fwd.target, f"oh_fwd_{fwd.target.id}"
            queue, disk = f"{name} queue", f"{name} queue[DA]"
            spool = 0
            with contextlib.suppress(FileNotFoundError):
                spool = sum(
                    e.stat().st_size
                    for e in os.scandir(self.syslogd.work_dir)
                    if e.name.startswith(name)
                )
            syslog.append(
                {
                    "target": t.id,
                    "type": "syslog",
                    "host": t.host,
                    "port": t.port,
                    "protocol": t.protocol,
                    "delivered": self.counters.get(name, "processed"),
                    "queued": self.counters.current(queue, "size")
                    + self.counters.current(disk, "size"),
                    "spool_bytes": spool,
                    "dropped": self.counters.get(queue, "discarded.full")
                    + self.counters.get(queue, "discarded.nf")
                    + self.counters.get(disk, "discarded.full")
                    + self.counters.get(disk, "discarded.nf"),
                    "suspended": self.counters.current(name, "suspended") > 0
                    and self.counters.current(queue, "size") > 0,
                }
            )
        return {
            "rsyslogd_running": self.syslogd.pid() is not None,
            "error": self.last_error,
            "disk_bytes": self.store.total_bytes,
            "load_balancers": len(self.store.lb_ids()),
            "dropped_segments": self.store.dropped_segments,
            "syslog": syslog,
            "s3": [state.view() for _, state in sorted(self.shipper.states.items())],
        }

    def _drops(self) -> list[int]:
        """What was dropped so far, per collector and for object stores (cheap to read)."""
        out = []
        for fwd in self.forwards:
            queue = f"oh_fwd_{fwd.target.id} queue"
            out += [
                self.counters.get(q, key)
                for q in (queue, f"{queue}[DA]")
                for key in ("discarded.full", "discarded.nf")
            ]
        return [*out, self.store.dropped_segments]

    def due_report(self) -> dict[str, Any] | None:
        """The delivery state for the next heartbeat, when it should carry one: at once
        when something was dropped, else when it changed, at most every REPORT_INTERVAL."""
        at, last = self._reported
        dropped = self._drops() != self._reported_drops
        if last is not None and not dropped and time.monotonic() - at < REPORT_INTERVAL:
            return None
        now = self.delivery()
        if last is None or dropped or _steady(now) != _steady(last):
            return now
        self._reported = (time.monotonic(), last)
        return None

    def reported(self, view: dict[str, Any]) -> None:
        self._reported = (time.monotonic(), view)
        self._reported_drops = self._drops()


def _steady(view: dict[str, Any]) -> str:
    """The delivery state without what moves all the time (ages)."""
    s3 = [{k: v for k, v in t.items() if k != "lag_seconds"} for t in view["s3"]]
    return json.dumps({**view, "s3": s3, "disk_bytes": view["disk_bytes"] >> 20}, sort_keys=True)
