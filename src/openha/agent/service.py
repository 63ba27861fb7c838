"""The agent's core: applies instance specs, supervises HAProxy, reports to the API.

`AgentService` is what the HTTP API (`openha.agent.server`) calls. It keeps one
`_Instance` per instance id with a lock, so applies of one instance are serialized
while different instances proceed in parallel. Background work:
- adoption, at start: every instance on disk is known at once (so the first heartbeat,
  sent at once, reports them all); processes still running are adopted in a bounded
  pool, cheaply (no netlink, no `haproxy -c`) unless an apply was cut short, in which
  case the last applied spec is applied again. Nothing stopped is started again, and
  no lost namespace rebuilt, before the controller confirms it still wants the
  instance (a heartbeat answer that lists it, or a push);
- supervision: an exit watcher (pidfds) hears a dead HAProxy or keepalived at once and
  restarts it from the last good config; a pass every `supervise_interval` re-plumbs
  vanished namespaces and catches anything else. The pass looks at each instance only
  when something may have changed (a process exited or went unwatched, an instance was
  adopted or confirmed, the namespace directory changed), and at all of them every
  `FULL_PASS_INTERVAL`: an idle host's pass is one stat. For a pair, keepalived hears
  of a dead HAProxy from the agent (`_tell_keepalived`: a track file, no check
  process), and from `agent.keeper` while the agent is away;
- heartbeat: registers with the API, then reports status every `heartbeat_interval`
  and removes orphans the API no longer wants, once they have been unwanted for
  `orphan_grace_seconds` (at once when the API shows their LB running elsewhere):
  a restored database or a stale read does not wipe live traffic. The API being down only delays
  reports: the data plane never waits for the control plane, and no error ends the loop.
- logs: HAProxy's lines go to the agent's own rsyslogd (`agent.logpipe`), started
  and adopted like a data plane process; the agent only closes, removes and ships
  files and reads them to answer queries. Admin events also come straight to the
  agent (`agent.logs`), so a member going down is reported at once.
- sandbox: every instance's processes start in its cgroup, as its own uid in its chroot
  (`agent.sandbox`); what cannot be applied is in the instance's status
  (`sandbox_error`), which the API turns into an event.
Stopping the service stops this work and the log collector, never HAProxy or rsyslogd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pyroute2.netlink.exceptions import NetlinkError

from openha.agent import (
    cgroups,
    faults,
    handoff,
    kernelguard,
    keyfiles,
    retire,
    state,
    toptalkers,
)
from openha.agent.diagnostics import diagnose
from openha.agent.haproxy import HAProxyError, HAProxyInstance, atomic_write
from openha.agent.keepalived import KeepalivedError, KeepalivedInstance
from openha.agent.logpipe import LogPipeline
from openha.agent.logs import LogCollector
from openha.agent.logstore import LogQuery
from openha.agent.netns import (
    NETNS_DIR,
    NetworkError,
    apply_network,
    delete_network,
    ensure_namespace,
    namespace_exists,
    namespace_pids,
    remove_unused_bridges,
    vip_present,
)
from openha.agent.paths import NAMESPACE_PREFIX, InstancePaths, instance_paths, namespace_name
from openha.agent.protocol import (
    ACTIVE,
    BUILDING,
    DELETED,
    ERROR,
    VRRP_BACKUP,
    VRRP_MASTER,
    HeartbeatResponse,
    InstanceStatus,
    RegisterRequest,
    RegisterResponse,
)
from openha.agent.report import Probe, Reporter, fd_limit, memory_bytes, vrrp_mark
from openha.agent.sandbox import InstanceSandbox, SandboxHost, UidRegistry
from openha.agent.strays import StrayWatch
from openha.agent.watch import ExitWatcher
from openha.domain.spec import InstanceSpec
from openha.render.protection import LIMITS_MAP
from openha.settings import Settings

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
# How an operator's reload that failed reads in an instance's last error.
RELOAD_FAILED = "reload failed: "
# The supervision pass looks at every instance at least this often, changed or not.
FULL_PASS_INTERVAL = 30.0


class StaleGeneration(Exception):
    """A spec older than the one already applied."""


@dataclass
class _Instance:
    instance_id: str
    paths: InstancePaths
    namespace: str
    haproxy: HAProxyInstance
    keepalived: KeepalivedInstance
    sandbox: InstanceSandbox
    spec: InstanceSpec | None = None  # last applied
    desired_generation: int = 0
    last_error: str | None = None
    added_at: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleted: bool = False
    # False for an instance found on disk at start until its running processes were
    # adopted (or found gone).
    adopted: bool = True
    # Whether the controller wants this instance, as far as this agent run knows: it
    # pushed it, or a heartbeat answer listed it. Until then nothing is (re)started
    # and no lost namespace rebuilt: while this host was gone, the controller may have
    # deleted the load balancer or rebuilt it elsewhere, and its VIP may belong to
    # another one now.
    confirmed: bool = False
    # An apply was cut short while HAProxy was down: the namespace may not match the
    # spec, so it is plumbed again before HAProxy is started.
    replumb: bool = False
    # A migration replaced it (`openha.agent.retire`): nothing is restarted any more.
    retiring: bool = False


def _network_changed(applied: InstanceSpec | None, wanted: InstanceSpec) -> bool:
    """Whether plumbing must be converged (a member-only change skips the netlink work)."""
    if applied is None:
        return True
    fields = (
        "namespace",
        "interfaces",
        "vip_address",
        "vip_interface",
        "vip_managed_by_keepalived",
        "handoff_to",
    )
    return any(getattr(applied, f) != getattr(wanted, f) for f in fields)


class _Steps:
    """How long each step of an apply took, for its log line: where a slow apply's
    time went (the checks' subprocesses, netlink, HAProxy, keepalived)."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.times: list[tuple[str, float]] = []

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.times.append((step, now - self.last))
        self.last = now

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __str__(self) -> str:
        parts = ", ".join(f"{step} {seconds:.2f}" for step, seconds in self.times)
        return f"{self.last - self.start:.2f} s ({parts})"


def _safe_file_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and "\0" not in name


class AgentService:
    def __init__(self, settings: Settings, *, supervise_interval: float = 1.0) -> None:
        assert settings.agent_dir is not None
        self.settings = settings
        self.agent_dir: Path = settings.agent_dir
        self.supervise_interval = supervise_interval
        state.ensure_agent_dir(self.agent_dir)
        self.secret = state.load_or_create_secret(self.agent_dir)
        self.keys = keyfiles.KeyFiles(
            settings.agent_keys_dir or keyfiles.default_keys_dir(self.agent_dir)
        )
        # Why keys cannot be kept off the disk here, once that was tried (None: they can).
        self._keys_problem: str | None = None
        self._keys_ready = False
        self.host_id: str | None = state.load_agent_info(self.agent_dir).get("host_id")
        self.logs = LogCollector()
        self.logpipe = LogPipeline(settings, self.agent_dir)
        self.sandbox = SandboxHost.for_agent(
            self.agent_dir,
            cgroups.detect(),
            UidRegistry(
                settings.sandbox_uid_registry, settings.sandbox_uid_base, settings.sandbox_uid_count
            ),
            settings.sandbox_cgroup_parent,
        )
        # A new rsyslogd listens on a new socket: each chroot's link to it is renewed.
        self.logpipe.on_restart = self._link_syslog_everywhere
        self.watcher = ExitWatcher(self._exited)
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._deleting: set[str] = set()  # orphans whose removal is queued
        # Orphans kept through their grace period: since when (monotonic) unwanted.
        self._unwanted_since: dict[str, float] = {}
        # Set by whatever may leave an instance needing supervision (see supervise_once).
        self._look = threading.Event()
        self._look.set()
        self.netns_dir = NETNS_DIR  # whose modification time says a namespace came or went
        self._netns_mark: int | None = None
        self._full_pass_at = 0.0
        self.supervision_looks = 0  # instances the supervision passes looked at
        self.registered = threading.Event()
        self.last_heartbeat: HeartbeatResponse | None = None
        self.strays = StrayWatch(
            self._own_namespaces,
            grace=settings.stray_grace_seconds,
            interval=settings.stray_scan_interval,
        )
        self.reporter = Reporter(
            interval=settings.heartbeat_interval,
            stats_interval=settings.stats_interval,
            resync_interval=settings.report_resync_interval,
        )

    # -- lifecycle --------------------------------------------------------------------

    def start(self, *, heartbeat: bool = True) -> None:
        """Know every instance on disk, start the loops at once, adopt in the background."""
        # Before any HAProxy starts: one started before a tmpfs is mounted may not see it
        # (a host whose mounts do not propagate into the namespaces `ip netns exec` makes).
        self._prepare_keys()
        self.logs.start()
        try:
            self.logpipe.start()
        except Exception:
            # Traffic never waits for logging: HAProxy's rings hold lines meanwhile.
            log.exception("cannot start the log pipeline")
        self.watcher.start()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self.settings.agent_parallelism), thread_name_prefix="agent-work"
        )
        found: list[_Instance] = []
        on_disk = state.instance_ids(self.agent_dir)
        # Keys of instances whose directory went without this agent (a wiped state
        # directory, a stray reaped) have nothing left to serve.
        self.keys.prune_instances(set(on_disk))
        for instance_id in on_disk:
            try:
                inst = self._load(instance_id)
            except Exception:
                log.exception("cannot load instance %s", instance_id)
                continue
            if inst is not None:
                found.append(inst)
        # Inputs of instances gone while no agent ran (a delete cut short) are free again.
        self.logpipe.keep_only({inst.instance_id for inst in found})
        self._stop.clear()
        loops = [self._supervise_loop] + ([self._heartbeat_loop] if heartbeat else [])
        for loop in loops:
            thread = threading.Thread(target=loop, name=loop.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)
        for inst in found:
            self._submit(self._adopt, inst)

    def stop(self) -> None:
        """Stop the agent's own work; HAProxy and keepalived keep serving."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.watcher.stop()
        self.logs.stop()
        self.logpipe.stop()
        self.sandbox.remove_empty_levels()

    def _prepare_keys(self) -> None:
        """The keys directory on a tmpfs (`agent.keyfiles`), once; a failure is kept and
        refuses every spec with keys, which never go to a persistent disk instead."""
        if self._keys_ready:
            return
        self._keys_ready = True
        try:
            keyfiles.prepare(self.keys.keys_dir)
        except OSError as exc:
            self._keys_problem = str(exc)
            log.error("certificate keys cannot be accepted: %s", exc)

    def _submit(self, fn: Callable[[_Instance], None], inst: _Instance) -> None:
        """Run `fn(inst)` in the bounded pool; errors are logged, never lost."""
        pool = self._pool
        if pool is None or self._stop.is_set():
            return

        def run() -> None:
            try:
                fn(inst)
            except Exception:
                log.exception("instance %s: %s failed", inst.instance_id, fn.__name__)

        with contextlib.suppress(RuntimeError):  # the pool is shutting down
            pool.submit(run)

    def _load(self, instance_id: str) -> _Instance | None:
        """The record of an instance found on disk; nothing is touched yet."""
        paths = instance_paths(self.agent_dir, instance_id)
        spec = state.load_spec(paths)
        if spec is not None and not paths.deleting.exists():
            restored = self.keys.restore(spec)
            if restored is None:
                # The tmpfs lost its keys (a reboot): known, never applied, as below, so
                # the controller pushes it again, keys and all.
                log.warning(
                    "instance %s: its certificate keys are gone (host rebooted?); "
                    "waiting for the controller to send them again",
                    instance_id,
                )
                self._instance(instance_id, spec.namespace)
                return None
            spec = restored
            self._keys_off_disk(paths, spec)
        if paths.deleting.exists():
            # A delete was cut short: finish it (the controller asked for it).
            inst = self._instance(instance_id, spec.namespace if spec else None)
            inst.adopted = False
            self._submit(lambda i: self.delete(i.instance_id), inst)
            return None
        if spec is None:
            # Never applied (an agent killed during the first apply): nothing to adopt,
            # but known, so that the controller's answer decides: wanted, it is pushed
            # again; unwanted (placed elsewhere meanwhile, or deleted), the directory and
            # namespace the cut-short apply left are removed like any orphan's.
            self._instance(instance_id)
            return None
        inst = self._instance(instance_id, spec.namespace)
        with inst.lock:
            inst.spec = spec
            inst.adopted = False
            inst.desired_generation = spec.generation
            saved = state.load_status(paths)
            if saved is not None and saved.desired_generation > spec.generation:
                inst.desired_generation = saved.desired_generation
                inst.last_error = saved.last_error
        return inst

    def _keys_off_disk(self, paths: InstancePaths, spec: InstanceSpec) -> None:
        """Keys an older agent left in plain files and in the spec on disk: to the tmpfs
        (HAProxy loaded them already; the configuration's paths stay the same)."""
        names = spec.key_files()
        if not names or not paths.spec_file.exists():
            return
        if "PRIVATE KEY" not in paths.spec_file.read_text(errors="replace"):
            return
        self._prepare_keys()
        if self._keys_problem is not None:
            return
        for name in names:
            self.keys.place(spec.instance_id, paths.files_dir / name, spec.files[name])
        state.save_spec(paths, keyfiles.redacted(spec))

    def _adopt(self, inst: _Instance) -> None:
        with inst.lock:
            if not inst.deleted and not inst.adopted:
                self._adopt_locked(inst)
                if inst.confirmed:
                    self._converge_locked(inst)
        self._look.set()

    def _adopt_locked(self, inst: _Instance) -> None:
        """Take over what a previous agent left running; start nothing.

        Cheap when nothing is in doubt: a stat of the namespace, the pid and load
        records of HAProxy, no netlink and no `haproxy -c`. When an apply was cut
        short, the last applied spec is applied again (network and a reload).
        """
        inst.adopted = True
        spec = inst.spec
        assert spec is not None
        try:
            self._sandbox_locked(inst, spec)
        except OSError as exc:
            log.error("instance %s: cannot prepare its sandbox: %s", inst.instance_id, exc)
        self._register_logs(inst, spec)
        cut_short = inst.paths.candidate.exists()
        try:
            if not namespace_exists(spec.namespace):
                log.warning(
                    "instance %s: data plane lost (reboot?); waiting for the controller "
                    "before rebuilding it",
                    inst.instance_id,
                )
                return
            pid = inst.haproxy.pid()
            if pid is None:
                # Whatever the controller says later, this one must not hold the VIP.
                self._tell_keepalived(inst, spec, down=True)
                inst.replumb = cut_short
                log.warning(
                    "instance %s: haproxy is not running; waiting for the controller "
                    "before starting it",
                    inst.instance_id,
                )
            elif inst.haproxy.adopt(spec.haproxy_config):
                log.info("instance %s: adopted haproxy %d", inst.instance_id, pid)
                # Started before its group existed (an older agent): moved in now.
                inst.sandbox.adopt([pid, *filter(None, [inst.keepalived.pid()])])
                self._check_walls(inst)
            else:
                log.warning(
                    "instance %s: unsure what haproxy %d runs (an apply was cut short?); "
                    "applying generation %d again",
                    inst.instance_id,
                    pid,
                    spec.generation,
                )
                self._reapply_locked(inst, spec)
        finally:
            inst.haproxy.finish()
            self._watch(inst)
            self._tell_keepalived(inst, spec)

    def _reapply_locked(self, inst: _Instance, spec: InstanceSpec) -> None:
        """Make a running data plane run `spec` for sure (network, a reload, keepalived)."""
        try:
            self._plumb(inst, spec)
            inst.haproxy.reapply(spec.haproxy_config)
            if spec.keepalived_config and inst.keepalived.pid() is not None:
                inst.keepalived.apply(spec.keepalived_config, force=True)
        except (NetworkError, NetlinkError, HAProxyError, KeepalivedError, OSError) as exc:
            inst.last_error = f"{type(exc).__name__}: {exc}"
            log.error("instance %s: re-apply failed: %s", inst.instance_id, exc)

    def _plumb(self, inst: _Instance, spec: InstanceSpec) -> None:
        """Converge the instance's namespace to `spec`, noting a VIP announcement."""
        owner = str(inst.paths.instance_dir)
        if spec.handoff_to is not None or namespace_exists(spec.namespace):
            # Before the VIP can arrive: connections opened with the instance a
            # migration retires must find the hand-off at their next segment.
            self._handoff(spec, fresh=ensure_namespace(spec.namespace, owner))
        if apply_network(spec, owner).garp_sent:
            inst.haproxy.history.garp_sent(spec.vip_address, spec.vip_interface)

    @staticmethod
    def _handoff(spec: InstanceSpec, *, fresh: bool) -> None:
        """The connection hand-off `spec` asks for (a `fresh` namespace has seen no
        connection conntrack could have missed)."""
        try:
            held = spec.handoff_to is not None and not fresh and vip_present(spec)
            handoff.converge(spec.namespace, spec.vip_address, spec.handoff_to, vip_held=held)
        except (handoff.HandoffError, OSError, NetlinkError, subprocess.SubprocessError) as exc:
            # Serving goes on without it: a move then resets the connections in flight.
            log.warning("instance %s: no connection hand-off: %s", spec.instance_id, exc)

    def _limits(self, spec: InstanceSpec) -> cgroups.Limits:
        """The flavor's walls, the host's defaults where it sets none."""
        res, cfg = spec.resources, self.settings
        return cgroups.Limits(
            cpu_weight=res.cpu_weight or cfg.sandbox_cpu_weight,
            cpu_max=res.cpu_max or cfg.sandbox_cpu_max,
            memory_max_mb=res.memory_max_mb or cfg.sandbox_memory_max_mb,
            pids_max=res.pids_max or cfg.sandbox_pids_max,
        )

    def _sandbox_locked(self, inst: _Instance, spec: InstanceSpec) -> None:
        """The instance's uid, chroot and cgroup as `spec` wants (idempotent, cheap)."""
        inst.sandbox.prepare(self._limits(spec))

    def _link_syslog(self, inst: _Instance) -> None:
        """The instance's own log input, linked into its chroot as its uid's alone."""
        socket = self.logpipe.input_socket(inst.instance_id)
        if socket is None:
            return  # not registered yet: linked when it is
        try:
            inst.sandbox.link_syslog(socket)
        except OSError as exc:
            log.error("instance %s: no log socket in its chroot: %s", inst.instance_id, exc)

    def _link_syslog_everywhere(self) -> None:
        with self._lock:
            insts = [i for i in self._instances.values() if not i.deleted]
        for inst in insts:
            self._link_syslog(inst)

    def _check_walls(self, inst: _Instance) -> None:
        """Note a serving process that is not in its cgroup (reported, never ignored)."""
        pid = inst.haproxy.pid()
        problems = [p for p in inst.sandbox.problems if "not in its cgroup" not in p]
        if pid is not None:
            problems += inst.sandbox.check(pid)
        inst.sandbox.problems = problems

    def _watch(self, inst: _Instance) -> None:
        """Have the exit watcher report the instance's processes (after any start or reload)."""
        pid = inst.haproxy.pid()
        if pid is None or not self.watcher.watch(f"{inst.instance_id}/haproxy", pid):
            self._look.set()  # nobody hears this one: the supervision pass must look
        kpid = inst.keepalived.pid()
        if kpid is not None:
            if not self.watcher.watch(f"{inst.instance_id}/keepalived", kpid):
                self._look.set()
        elif inst.spec is not None and inst.spec.keepalived_config:
            self._look.set()

    def _tell_keepalived(
        self, inst: _Instance, spec: InstanceSpec | None, down: bool | None = None
    ) -> None:
        """A pair's keepalived learns whether its HAProxy serves (`down`, else read now):
        a write of its track file when that changed, nothing otherwise."""
        if spec is None or not spec.keepalived_config or inst.deleted:
            return
        if down is None:
            down = not inst.haproxy.running()
        try:
            if inst.keepalived.set_haproxy_down(down) and down:
                log.warning("instance %s: haproxy is down, keepalived gives up the VIP",
                            inst.instance_id)  # fmt: skip
        except OSError as exc:
            log.error("instance %s: cannot tell keepalived: %s", inst.instance_id, exc)

    def _unwatch(self, inst: _Instance) -> None:
        self.watcher.unwatch(f"{inst.instance_id}/haproxy")
        self.watcher.unwatch(f"{inst.instance_id}/keepalived")

    # -- instances --------------------------------------------------------------------

    def _instance(self, instance_id: str, namespace: str | None = None) -> _Instance:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                paths = instance_paths(self.agent_dir, instance_id)
                ns = namespace or namespace_name(instance_id)
                sandbox = InstanceSandbox(self.sandbox, paths, instance_id)
                inst = _Instance(
                    instance_id,
                    paths,
                    ns,
                    HAProxyInstance(paths, ns, sandbox),
                    KeepalivedInstance(paths, ns, sandbox),
                    sandbox,
                )
                self._instances[instance_id] = inst
            return inst

    def known(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._instances

    def instance_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._instances)

    def metric_sources(self) -> list[tuple[InstanceSpec, Path]]:
        """Each applied instance's spec and HAProxy stats socket, for `/metrics`."""
        with self._lock:
            insts = list(self._instances.values())
        return [
            (inst.spec, inst.paths.stats_socket)
            for inst in insts
            if inst.spec is not None and not inst.deleted
        ]

    def sandbox_sources(self) -> list[tuple[InstanceSpec, InstanceSandbox]]:
        """Each applied instance's spec and sandbox, for `/metrics`."""
        with self._lock:
            insts = list(self._instances.values())
        return [(i.spec, i.sandbox) for i in insts if i.spec is not None and not i.deleted]

    def adopting(self) -> int:
        """How many instances found at start are still waiting to be adopted."""
        with self._lock:
            return sum(1 for inst in self._instances.values() if not inst.adopted)

    def _register_logs(self, inst: _Instance, spec: InstanceSpec) -> None:
        self.logs.add(inst.instance_id, inst.paths.log_socket)
        with contextlib.suppress(OSError):
            # The chrooted process writes it as the instance's uid.
            inst.sandbox.own_socket(inst.paths.log_socket)
        try:
            self.logpipe.register(spec)
        except Exception:
            log.exception("instance %s: cannot register its logs", inst.instance_id)
        self._link_syslog(inst)

    def apply(self, spec: InstanceSpec, *, force: bool = False) -> tuple[bool, InstanceStatus]:
        """Apply `spec`; (True, status) when it is live, (False, status) when refused.

        On refusal the previous config keeps serving and `status.last_error` says why.
        Raises StaleGeneration for a spec older than the applied one. `force` (an
        operator's sync) repairs drift even when `spec` is the one applied: the
        namespace is plumbed again (rebuilt with its processes if it was deleted),
        the config files rewritten and HAProxy and keepalived reloaded.
        """
        if not spec.namespace.startswith(NAMESPACE_PREFIX) or len(spec.namespace) > 64:
            raise ValueError(f"namespace must start with {NAMESPACE_PREFIX!r}")
        while True:
            inst = self._instance(spec.instance_id, spec.namespace)
            with inst.lock:
                if inst.deleted:
                    continue  # deleted while we waited: start over with a fresh record
                return self._apply_locked(inst, spec, force)

    def _apply_locked(
        self, inst: _Instance, spec: InstanceSpec, force: bool = False
    ) -> tuple[bool, InstanceStatus]:
        inst.confirmed = True  # the controller pushed it: it is wanted
        if inst.retiring:
            # A migration replaced it: a push from a reconcile that began before the
            # controller knew must not start its HAProxy or keepalived again.
            return True, self._status(inst)
        if not inst.adopted:
            self._adopt_locked(inst)  # a push may come before the background adoption
        if inst.spec is not None:
            if spec.generation < inst.spec.generation:
                raise StaleGeneration(
                    f"generation {spec.generation} is older than applied {inst.spec.generation}"
                )
            if (
                spec == inst.spec
                and inst.last_error is None
                and inst.haproxy.running()
                and not force
            ):
                return True, self._status(inst)
            if spec.namespace != inst.namespace:
                raise ValueError("an instance cannot change namespace; delete it first")
        inst.namespace = spec.namespace
        inst.desired_generation = spec.generation
        try:
            return self._apply_spec(inst, spec, force)
        finally:
            inst.haproxy.finish()
            self._watch(inst)
            self._tell_keepalived(inst, inst.spec)

    def _apply_spec(
        self, inst: _Instance, spec: InstanceSpec, force: bool = False
    ) -> tuple[bool, InstanceStatus]:
        steps = _Steps()
        try:
            inst.paths.check()
            self._sandbox_locked(inst, spec)
            inst.paths.state_dir.mkdir(exist_ok=True, mode=0o700)
            # The candidate goes first and is removed last (`finish`): found after a
            # crash, it says this apply was cut short and what runs is in doubt.
            inst.haproxy.write_candidate(spec.haproxy_config)
            # The spec's files (notify scripts, later certificates) are referenced by the
            # configs, so they must exist for validation; nothing running reads them yet.
            changed_files = self._write_files(inst, spec)
            # Validate before touching anything else, so a bad spec leaves the running
            # instance as it was.
            error = inst.haproxy.validate(spec.haproxy_config)
            if error is None and spec.keepalived_config:
                error = inst.keepalived.validate(spec.keepalived_config)
            steps.done("checks")
            if error is not None:
                return self._fail(inst, spec, error, steps)
            if force and not namespace_exists(spec.namespace):
                # Its processes serve a namespace nobody reaches any more: they go, and
                # start again in the one plumbed below.
                self._unwatch(inst)
                inst.haproxy.stop()
                inst.keepalived.stop()
            if (
                force
                or inst.replumb
                or _network_changed(inst.spec, spec)
                or not namespace_exists(spec.namespace)
            ):
                self._plumb(inst, spec)
                inst.replumb = False
            if inst.spec is not None:
                # Legs the new spec dropped may leave a managed bridge with nothing on it.
                kept = {iface.bridge for iface in spec.interfaces}
                remove_unused_bridges(
                    [i.bridge for i in inst.spec.interfaces if i.bridge not in kept]
                )
            # Per-namespace kernel guards (SYN cookies, accept queues): idempotent writes.
            # A kernel that refuses one (a sandbox) costs the guard, never the LB:
            # diagnostics show what the namespace holds.
            try:
                kernelguard.apply(spec.namespace)
            except OSError as exc:
                log.warning("instance %s: kernel guards not set: %s", inst.instance_id, exc)
            steps.done("network")
            self._register_logs(inst, spec)
            if force:
                # Whatever the file or the running process say now (a hand edit, a
                # reload by hand): the spec's config, loaded by a hitless reload.
                inst.haproxy.reapply(spec.haproxy_config)
                action = "forced reload"
            else:
                result = inst.haproxy.apply(
                    spec.haproxy_config, validated=True, changed_files=changed_files
                )
                if result.error:
                    return self._fail(inst, spec, result.error, steps, result.action)
                action = result.action
            steps.done("haproxy")
            self._check_walls(inst)
            # At once, not in the caller's `finally`: until then the watcher holds the
            # old process, whose draining exit would read as a crash, and the status
            # below would report the old pid.
            self._watch(inst)
            if spec.keepalived_config:
                # The track file exists before keepalived reads its config.
                self._tell_keepalived(inst, spec)
                inst.keepalived.apply(spec.keepalived_config, force=force, validated=True)
            elif inst.keepalived.pid() is not None:
                self.watcher.unwatch(f"{inst.instance_id}/keepalived")
                inst.keepalived.stop()
            steps.done("keepalived")
            log.info(
                "instance %s: generation %d applied (%s) in %s",
                inst.instance_id,
                spec.generation,
                action,
                steps,
            )
        except (
            NetworkError,
            NetlinkError,
            HAProxyError,
            KeepalivedError,
            OSError,
            ValueError,
        ) as exc:
            log.warning("instance %s: apply failed: %s", inst.instance_id, exc)
            return self._fail(inst, spec, f"{type(exc).__name__}: {exc}", steps)
        inst.spec = spec
        inst.last_error = None
        self._remove_stale_files(inst, spec)
        state.save_spec(inst.paths, keyfiles.redacted(spec))
        inst.haproxy.history.applied(spec.generation, action, None, steps.elapsed())
        with contextlib.suppress(FileNotFoundError):
            inst.paths.rejected.unlink()
        status = self._status(inst)
        state.save_status(inst.paths, status)
        return True, status

    def _fail(
        self,
        inst: _Instance,
        spec: InstanceSpec,
        error: str,
        steps: _Steps,
        action: str = "none",
    ) -> tuple[bool, InstanceStatus]:
        inst.last_error = error
        # Kept for diagnostics: what was refused, beside the last good config.
        if inst.paths.instance_dir.is_dir():
            with contextlib.suppress(OSError):
                atomic_write(inst.paths.rejected, spec.haproxy_config, 0o600)
        inst.haproxy.history.applied(spec.generation, action, error, steps.elapsed())
        status = self._status(inst)
        with contextlib.suppress(OSError):
            state.save_status(inst.paths, status)
        return False, status

    def _write_files(self, inst: _Instance, spec: InstanceSpec) -> dict[str, str] | None:
        """Write the spec's files; those whose content changed (path -> content), for
        HAProxy's runtime API, or None when one is new (only a reload loads it)."""
        if not spec.files:
            return {}
        # Traversable, not listable: keepalived's script user runs the notify script here.
        inst.paths.files_dir.mkdir(exist_ok=True, mode=0o711)
        inst.paths.files_dir.chmod(0o711)
        changed: dict[str, str] | None = {}
        keys = set(spec.key_files())
        if keys:
            self._prepare_keys()
            if self._keys_problem is not None:
                raise keyfiles.KeyStoreError(self._keys_problem)
        for name, content in spec.files.items():
            if not _safe_file_name(name):
                raise ValueError("invalid file name in the spec")  # never quote: may be a key
            path = inst.paths.files_dir / name
            try:
                before: str | None = path.read_text()
            except (FileNotFoundError, UnicodeDecodeError):
                before = None
            if before == content and (name not in keys or self.keys.linked(inst.instance_id, path)):
                continue  # (a key in a plain file, an older agent's, moves to the tmpfs)
            if changed is not None:
                changed = None if before is None else {**changed, str(path): content}
            if name in keys:
                # On the tmpfs, linked from here: the configuration names this path.
                self.keys.place(inst.instance_id, path, content)
            elif content.startswith("#!"):
                # Scripts (keepalived's notify script) run as the unprivileged script
                # user: readable and executable by it, and for keepalived's script
                # security, writable by root only.
                atomic_write(path, content, 0o755)
            else:
                # Certificates, keys and maps: root's alone. HAProxy reads them before
                # it chroots and drops to the instance's uid, and that uid never needs
                # them again (runtime updates come over the stats socket). Not the
                # instance's uid either: HAProxy starts without CAP_DAC_OVERRIDE, so a
                # file of another owner would be unreadable to it.
                atomic_write(path, content, 0o600)
        return changed

    def _remove_stale_files(self, inst: _Instance, spec: InstanceSpec) -> None:
        """Once applied, files the spec no longer names (a removed listener's keys) go."""
        if not inst.paths.files_dir.is_dir():
            return
        for path in inst.paths.files_dir.iterdir():
            if path.name not in spec.files and not path.name.startswith("."):
                with contextlib.suppress(OSError):
                    path.unlink()
        self.keys.prune(inst.instance_id, set(spec.key_files()))

    def retire(self, instance_id: str) -> InstanceStatus | None:
        """Give the VIP away and soft-stop HAProxy (a migration replaced the instance);
        safe to repeat; None for an instance this agent does not know."""
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None:
            return None
        with inst.lock:
            spec = inst.spec
            if spec is None or inst.deleted:
                return None
            if not inst.retiring:
                (inst.paths.instance_dir / retire.MARKER).touch()
                inst.retiring = True
                self._unwatch(inst)
                if namespace_exists(spec.namespace):
                    retire.release_vip(spec)  # onto loopback first: flows keep landing
                inst.keepalived.stop()  # graceful: its priority-0 advert hands the VIP over
                pids = inst.haproxy.processes()
                retire.soft_stop(pids)
                log.info("instance %s retiring: %d haproxy draining", instance_id, len(pids))
            return self._status(inst)

    def delete(self, instance_id: str) -> None:
        """Remove an instance and everything it made; safe to repeat."""
        paths = instance_paths(self.agent_dir, instance_id)
        known = self.known(instance_id)
        spec = state.load_spec(paths)
        if not known and spec is None and not paths.instance_dir.exists():
            ns = namespace_name(instance_id)
            if not namespace_exists(ns):
                return
        inst = self._instance(instance_id, spec.namespace if spec else None)
        with inst.lock:
            spec = inst.spec or spec
            if paths.instance_dir.exists():
                # Should the agent die half-way, its next start finishes the delete
                # instead of adopting a half-removed instance.
                paths.deleting.touch()
            self._unwatch(inst)
            inst.haproxy.stop()
            inst.keepalived.stop()
            faults.crash_point(faults.DELETE_HAPROXY_STOPPED)
            # Anything else still in the namespace would keep it alive after unmount.
            for pid in namespace_pids(inst.namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.logs.remove(instance_id)
            if spec is not None:
                self.logpipe.release(spec.load_balancer_id, instance_id)
            bridges = [iface.bridge for iface in spec.interfaces] if spec else []
            delete_network(inst.namespace, bridges)
            for problem in inst.sandbox.remove():
                log.error("instance %s: cgroup left behind: %s", instance_id, problem)
            shutil.rmtree(paths.instance_dir, ignore_errors=True)
            self.keys.remove(instance_id)
            inst.deleted = True
            with self._lock:
                if self._instances.get(instance_id) is inst:
                    del self._instances[instance_id]
                self._deleting.discard(instance_id)
        log.info("instance %s deleted", instance_id)

    def reload(self, instance_id: str) -> InstanceStatus | None:
        """A hitless reload of the instance's HAProxy from its last applied spec (None:
        no such instance); a failed reload leaves the old process serving."""
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None or inst.spec is None:
            return None
        with inst.lock:
            if inst.deleted or inst.spec is None:
                return None
            try:
                inst.haproxy.reapply(inst.spec.haproxy_config)
                if (inst.last_error or "").startswith(RELOAD_FAILED):
                    inst.last_error = None  # an apply's error stays: this fixed nothing of it
            except (HAProxyError, OSError) as exc:
                inst.last_error = f"{RELOAD_FAILED}{exc}"
            finally:
                self._watch(inst)
                self._tell_keepalived(inst, inst.spec)
            return self._status(inst)

    def configs(self, instance_id: str) -> dict[str, object] | None:
        """What the instance's files say now, and whether its HAProxy loaded that file."""
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None:
            return None
        haproxy = inst.haproxy.current_config()
        keepalived = None
        with contextlib.suppress(OSError):
            keepalived = inst.paths.keepalived_config.read_text()
        known = inst.haproxy.known_config()
        return {
            "haproxy_config": haproxy,
            "keepalived_config": keepalived,
            "namespace_present": namespace_exists(inst.namespace),
            "haproxy_running": inst.haproxy.running(),
            # False when the file was changed after the serving process loaded it (or
            # the process was started by hand): what runs is then not what it says.
            "loaded_matches_file": known is not None and known == haproxy,
        }

    # -- status -----------------------------------------------------------------------

    def status(self, instance_id: str) -> InstanceStatus | None:
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None:
            return None
        return self._status(inst)

    def statuses(self) -> list[InstanceStatus]:
        """Every instance's status, read now (the agent API's list; heartbeats read less)."""
        with self._lock:
            insts = list(self._instances.values())
        return [self._status(inst) for inst in insts]

    def diagnostics(self, instance_id: str, probe: bool = False) -> dict[str, object] | None:
        """Everything about an instance, read now (`agent.diagnostics`); None if unknown."""
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None:
            return None
        return diagnose(self._status(inst), inst.spec, inst.haproxy, inst.keepalived, probe=probe)

    def top_talkers(self, instance_id: str, limit: int) -> dict[str, object] | None:
        """The instance's busiest sources (`openha.agent.toptalkers`); None if unknown."""
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None or inst.deleted:
            return None
        if not inst.haproxy.running():
            return {"protected": False, "sources": [], "tracked": 0, "error": "not running"}
        return toptalkers.top_talkers(inst.haproxy.runtime, limit)

    def _probe(self, inst: _Instance) -> Probe:
        """Read the instance's processes and HAProxy's stats: the costly part of a status."""
        # A process the exit watcher holds is alive (its exit would have dropped it):
        # no pid file and /proc reads for it.
        pid = self.watcher.watched(f"{inst.instance_id}/haproxy") or inst.haproxy.pid()
        stats = None
        if pid is not None:
            try:
                protected = inst.spec is not None and LIMITS_MAP in inst.spec.files
                stats = inst.haproxy.stats(trips=True) if protected else inst.haproxy.stats()
            except (OSError, HAProxyError) as exc:
                log.debug("stats of %s unavailable: %s", inst.instance_id, exc)
        return Probe(pid, stats, self._vrrp_state(inst))

    def _status(self, inst: _Instance, probe: Probe | None = None) -> InstanceStatus:
        """The instance's status, from `probe` when given (else read now)."""
        spec = inst.spec
        probe = probe or self._probe(inst)
        pid = probe.pid
        status = InstanceStatus(
            instance_id=inst.instance_id,
            load_balancer_id=spec.load_balancer_id if spec else "",
            applied_generation=spec.generation if spec else 0,
            desired_generation=inst.desired_generation,
            haproxy_running=pid is not None,
            haproxy_pid=pid,
            last_error=inst.last_error,
            vrrp_state=probe.vrrp_state,
            sandbox_error="; ".join(inst.sandbox.problems)[:4000] or None,
        )
        if inst.deleted:
            status.state = DELETED
        elif inst.last_error is not None:
            status.state = ERROR
        elif spec is None:
            status.state = BUILDING
        elif pid is None:
            status.state = ERROR
            status.last_error = "haproxy is not running (being restarted)"
        else:
            status.state = ACTIVE
        if probe.stats is not None:
            status.listeners, status.members, status.pools = (
                probe.stats.listeners,
                probe.stats.members,
                probe.stats.pools,
            )
            status.limit_trips = probe.stats.limit_trips
        return status

    def _mark(self, inst: _Instance) -> Hashable:
        """The instance's state as memory holds it: taken for every instance at every
        heartbeat, so it reads nothing but a pair's VRRP state file's time."""
        spec = inst.spec
        vrrp = vrrp_mark(inst.paths.vrrp_state_file) if spec and spec.keepalived_config else None
        return (
            spec.generation if spec else 0,
            inst.desired_generation,
            inst.last_error,
            inst.deleted,
            inst.confirmed,
            inst.adopted,
            vrrp,
            tuple(inst.sandbox.problems),
        )

    def _vrrp_state(self, inst: _Instance) -> str | None:
        spec = inst.spec
        if spec is None or not spec.keepalived_config:
            return None
        if inst.keepalived.pid() is None:
            return "STOPPED"
        reported = inst.keepalived.vrrp_state()  # from a notify script, when configured
        if reported:
            return reported
        # Otherwise the VIP tells: keepalived holds it on the master only.
        try:
            return VRRP_MASTER if vip_present(spec) else VRRP_BACKUP
        except (OSError, NetworkError):
            return None

    def logs_query(
        self, lb_id: str, query: LogQuery, cursor: str | None
    ) -> tuple[list[dict[str, object]], str]:
        """A load balancer's lines on this host (see `LogPipeline.query`)."""
        return self.logpipe.query(lb_id, query, cursor)

    # -- supervision ------------------------------------------------------------------

    def _exited(self, key: str) -> None:
        """The exit watcher saw an instance's HAProxy or keepalived die: act at once."""
        instance_id = key.partition("/")[0]
        self._look.set()
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is not None:
            log.warning("instance %s: %s exited", instance_id, key.partition("/")[2])
            if key.endswith("/haproxy") and inst.lock.acquire(blocking=False):
                # Here, not in the pool: a busy pool must not delay the failover. A
                # held lock is an apply under way (a reload's old process leaving),
                # and the apply tells keepalived itself.
                try:
                    self._tell_keepalived(inst, inst.spec)
                finally:
                    inst.lock.release()
            self._submit(self._supervise_instance, inst)

    def supervise_once(self) -> None:
        """One pass: a look at the instances when something may have changed, else a stat.

        Exits of watched processes come from the exit watcher; what else can need a
        look is flagged by `_look` (an unwatched process, an adoption, a confirmation)
        or shows in the namespace directory's modification time (a namespace created or
        removed). A full look every FULL_PASS_INTERVAL catches anything else.
        """
        now = time.monotonic()
        try:
            stat = os.stat(self.netns_dir)
            mark: int | None = stat.st_mtime_ns
            # Timestamps are coarse: a change in the same tick as this stat could leave
            # the time unchanged, so a recent one is looked at again next time.
            recent = time.time() - stat.st_mtime < 2.0
        except OSError:
            mark, recent = None, True
        due = now - self._full_pass_at >= FULL_PASS_INTERVAL
        if not (due or recent or self._look.is_set() or mark != self._netns_mark):
            return
        self._look.clear()
        self._netns_mark = mark
        if due:
            self._full_pass_at = now
        with self._lock:
            insts = list(self._instances.values())
        self.supervision_looks += len(insts)
        for inst in insts:
            if inst.spec is None or inst.deleted or not inst.adopted or not inst.confirmed:
                continue
            if inst.retiring:
                continue
            watched = self.watcher.watched(f"{inst.instance_id}/haproxy") is not None and (
                not inst.spec.keepalived_config
                or self.watcher.watched(f"{inst.instance_id}/keepalived") is not None
            )
            # The exit watcher reports deaths of watched processes: only namespaces
            # that vanished, and processes nobody watches, need a look here.
            if watched and namespace_exists(inst.namespace):
                continue
            self._supervise_instance(inst)

    def _supervise_instance(self, inst: _Instance) -> None:
        if not inst.lock.acquire(blocking=False):
            return  # an apply in progress is the better judge
        try:
            self._converge_locked(inst)
        except Exception as exc:
            log.error("instance %s: supervision failed: %s", inst.instance_id, exc)
            self._look.set()  # try again on the next pass
        finally:
            inst.lock.release()

    def _converge_locked(self, inst: _Instance) -> None:
        """Bring a wanted instance's data plane back from its last applied spec."""
        spec = inst.spec
        if spec is None or inst.deleted or not inst.adopted or not inst.confirmed:
            return
        if inst.retiring or (inst.paths.instance_dir / retire.MARKER).exists():
            inst.retiring = True
            return  # draining for good: its exit is expected
        if not namespace_exists(inst.namespace):
            log.warning("instance %s: namespace gone, re-plumbing", inst.instance_id)
            self._unwatch(inst)
            inst.haproxy.stop()
            inst.keepalived.stop()
            self._plumb(inst, spec)
        elif inst.replumb:
            self._plumb(inst, spec)
        inst.replumb = False
        if not inst.haproxy.running() and not self._reload_settles(inst):
            self._tell_keepalived(inst, spec, down=True)
            log.warning("instance %s: haproxy is not running, starting it", inst.instance_id)
            pid = inst.haproxy.restart(spec.haproxy_config)
            log.info("instance %s: haproxy %d serving", inst.instance_id, pid)
            self._check_walls(inst)
        self._tell_keepalived(inst, spec)
        if spec.keepalived_config and inst.keepalived.pid() is None:
            inst.keepalived.start()
        self._watch(inst)

    @staticmethod
    def _reload_settles(inst: _Instance, wait: float = 1.0) -> bool:
        """Whether a HAProxy of the instance, started by someone else (an operator's
        reload by hand), names itself in the pid file within `wait` seconds.

        A new HAProxy tells its predecessor to go before it writes its pid file: an
        idle predecessor exits in between, and its exit must not read as a crash
        (restarting then would start a second HAProxy beside the new one). Only
        when such a process lives is there anything to wait for.
        """
        if not inst.haproxy.processes():
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if inst.haproxy.running():
                return True
            time.sleep(0.05)
        return False

    def _supervise_loop(self) -> None:
        while not self._stop.wait(self.supervise_interval):
            try:
                self.supervise_once()
            except Exception:
                log.exception("supervision pass failed")

    # -- control plane ----------------------------------------------------------------

    def management_url(self) -> str:
        if self.settings.agent_public_url:
            return self.settings.agent_public_url.rstrip("/")
        host, port = self.settings.agent_host_port
        if host in ("0.0.0.0", "::", ""):
            host = self.settings.host_name
        scheme = "https" if self.settings.agent_tls_cert else "http"
        return f"{scheme}://{host}:{port}"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.agent_token}"}

    def register(self, client: httpx.Client) -> str:
        req = RegisterRequest(
            name=self.settings.host_name,
            availability_zone=self.settings.availability_zone,
            capacity=self.settings.host_capacity,
            memory_bytes=memory_bytes(),
            fd_limit=fd_limit(),
            management_url=self.management_url(),
            agent_secret=self.secret,
            version=AGENT_VERSION,
            agent_dir=str(self.agent_dir),
            sandbox=self.sandbox.describe(),
        )
        resp = client.post(
            f"{self.settings.agent_api_url.rstrip('/')}/v2/agent/register",
            json=req.model_dump(),
            headers=self._auth(),
        )
        resp.raise_for_status()
        host_id = RegisterResponse.model_validate(resp.json()).host_id
        self.host_id = host_id
        state.save_agent_info(self.agent_dir, {"host_id": host_id})
        self.registered.set()
        self.reporter.reset()  # a new registration hears everything again
        log.info("registered with %s as host %s", self.settings.agent_api_url, host_id)
        return host_id

    def heartbeat_once(self, client: httpx.Client) -> HeartbeatResponse:
        """Report what changed since the API's last acknowledgement (see `agent.report`)."""
        if self.host_id is None or not self.registered.is_set():
            self.register(client)
        assert self.host_id is not None
        sent_at = time.monotonic()
        with self._lock:
            insts = dict(self._instances)
        marks = {instance_id: self._mark(inst) for instance_id, inst in insts.items()}
        plan = self.reporter.plan(marks, self.logs.take_state_changes())
        fresh = {i: self._probe(insts[i]) for i in plan.probe}
        statuses = [
            self._status(insts[i], self.reporter.probes.get(i))
            for i in sorted(self.reporter.probed(plan, fresh, marks))
        ]
        report = self.reporter.report(
            plan,
            statuses,
            list(insts),
            host_id=self.host_id,
            name=self.settings.host_name,
            load_average=os.getloadavg(),
        )
        report.log_delivery = self.logpipe.due_report()
        report.strays = self.strays.due_report()
        if report.full:
            report.sandbox = self.sandbox.describe()
        resp = client.post(
            f"{self.settings.agent_api_url.rstrip('/')}/v2/agent/heartbeat",
            json=report.model_dump(mode="json"),
            headers=self._auth(),
        )
        if resp.status_code in (401, 404):
            # The API forgot this host (or rotated tokens): register again next time.
            self.registered.clear()
        resp.raise_for_status()
        answer = HeartbeatResponse.model_validate(resp.json())
        self.reporter.acknowledge(report, statuses, marks, answer)
        if report.log_delivery is not None:
            self.logpipe.reported(report.log_delivery)
        if report.strays is not None:
            self.strays.reported(report.strays)
        self.last_heartbeat = answer
        self.handle_heartbeat_response(answer, sent_at)
        if self.strays.due():
            threading.Thread(target=self._look_for_strays, name="strays", daemon=True).start()
        return answer

    def _look_for_strays(self) -> None:
        try:
            self.strays.run_pass()
        except Exception:
            log.exception("looking for strays failed")

    def _own_namespaces(self) -> dict[str, str]:
        with self._lock:
            return {i.namespace: str(i.paths.instance_dir) for i in self._instances.values()}

    def handle_heartbeat_response(self, answer: HeartbeatResponse, sent_at: float) -> list[str]:
        """Confirm the wanted instances, remove the others (orphans) once their grace
        period is over, or at once when the API says another instance took over.

        Instances added after the report was sent are kept. A confirmed instance whose
        data plane is down (found stopped at start, or its namespace lost) is brought
        back at once. An orphan kept through its grace period is left as it is: still
        serving if it runs, never restarted or rebuilt (it is not confirmed).
        """
        if answer.wanted_instance_ids is None:
            return []
        wanted = set(answer.wanted_instance_ids)
        with self._lock:
            insts = list(self._instances.values())
        for inst in insts:
            if inst.instance_id in wanted and not inst.confirmed:
                inst.confirmed = True
                self._look.set()
                if inst.adopted and not inst.deleted:
                    log.info("instance %s: confirmed by the controller", inst.instance_id)
                    self._submit(self._supervise_instance, inst)
        orphans = [i for i in insts if i.instance_id not in wanted and i.added_at < sent_at]
        orphans = [i for i in orphans if not i.deleted]
        superseded = set(answer.superseded_instance_ids)
        grace = self.settings.orphan_grace_seconds
        now = time.monotonic()
        due = []
        with self._lock:
            since = {i.instance_id: self._unwanted_since.get(i.instance_id) for i in orphans}
            self._unwanted_since = {k: v if v is not None else now for k, v in since.items()}
        for orphan in orphans:
            first = since[orphan.instance_id]
            if orphan.instance_id in superseded or now - (first or now) >= grace:
                due.append(orphan)
            elif first is None:
                log.warning(
                    "instance %s is not wanted by the API: removed in %.0f s unless wanted again",
                    orphan.instance_id,
                    grace,
                )
        for orphan in due:
            with self._lock:
                if orphan.instance_id in self._deleting:
                    continue
                self._deleting.add(orphan.instance_id)
            why = "another instance took over" if orphan.instance_id in superseded else "unwanted"
            log.warning(
                "instance %s is not wanted by the API (%s): removing it", orphan.instance_id, why
            )
            self._submit(self._remove_orphan, orphan)
        return [orphan.instance_id for orphan in due]

    def _remove_orphan(self, inst: _Instance) -> None:
        try:
            self.delete(inst.instance_id)
        finally:
            with self._lock:
                self._deleting.discard(inst.instance_id)

    def _heartbeat_loop(self) -> None:
        """Heartbeat at once, then every interval, whatever goes wrong in between."""
        failures = 0
        interval = self.settings.heartbeat_interval
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.heartbeat_once(client)
                    if failures:
                        log.info("control plane reachable again")
                    failures = 0
                except (httpx.HTTPError, ValueError) as exc:
                    failures += 1
                    # Say it once, then quietly keep trying: traffic does not depend on it.
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "heartbeat to %s failed: %s", self.settings.agent_api_url, exc)
                except Exception:
                    # A bug must not silence a healthy host: the API would declare it
                    # down a few seconds later. Log it and go on.
                    failures += 1
                    log.log(
                        logging.ERROR if failures == 1 else logging.DEBUG,
                        "heartbeat failed unexpectedly",
                        exc_info=True,
                    )
                self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
