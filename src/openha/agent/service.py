"""The agent's core: applies instance specs, supervises HAProxy, reports to the API.

`AgentService` is what the HTTP API (`openha.agent.server`) calls. It keeps one
`_Instance` per instance id with a lock, so applies of one instance are serialized
while different instances proceed in parallel. Background threads:
- supervision: restarts a dead HAProxy (or keepalived) from the last good config and
  re-plumbs a vanished namespace;
- heartbeat: registers with the API, then reports status every `heartbeat_interval`
  and removes orphans the API no longer wants. The API being down only delays
  reports: the data plane never waits for the control plane.
Stopping the service stops these threads and the log collector, never HAProxy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pyroute2.netlink.exceptions import NetlinkError

from openha.agent import faults, state
from openha.agent.haproxy import HAProxyError, HAProxyInstance, atomic_write, pid_alive
from openha.agent.keepalived import KeepalivedError, KeepalivedInstance
from openha.agent.logs import LogCollector, frontends_of
from openha.agent.netns import (
    NetworkError,
    apply_network,
    delete_network,
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
    HeartbeatReport,
    HeartbeatResponse,
    InstanceStatus,
    LogRecord,
    RegisterRequest,
    RegisterResponse,
)
from openha.domain.spec import InstanceSpec
from openha.settings import Settings

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


class StaleGeneration(Exception):
    """A spec older than the one already applied."""


@dataclass
class _Instance:
    instance_id: str
    paths: InstancePaths
    namespace: str
    haproxy: HAProxyInstance
    keepalived: KeepalivedInstance
    spec: InstanceSpec | None = None  # last applied
    desired_generation: int = 0
    last_error: str | None = None
    added_at: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleted: bool = False
    # Found on disk without its namespace (the host rebooted): rebuilt only once the
    # controller says it still wants it, or a pair could have two VIP holders.
    held: bool = False


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
    )
    return any(getattr(applied, f) != getattr(wanted, f) for f in fields)


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
        self.host_id: str | None = state.load_agent_info(self.agent_dir).get("host_id")
        self.logs = LogCollector()
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.registered = threading.Event()
        self.last_heartbeat: HeartbeatResponse | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self, *, heartbeat: bool = True) -> None:
        """Adopt what previous runs left, then start the background loops."""
        self.logs.start()
        for instance_id in state.instance_ids(self.agent_dir):
            try:
                self._adopt(instance_id)
            except Exception:
                log.exception("cannot adopt instance %s", instance_id)
        self._stop.clear()
        loops = [self._supervise_loop] + ([self._heartbeat_loop] if heartbeat else [])
        for loop in loops:
            thread = threading.Thread(target=loop, name=loop.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the agent's own work; HAProxy and keepalived keep serving."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self.logs.stop()

    def _adopt(self, instance_id: str) -> None:
        paths = instance_paths(self.agent_dir, instance_id)
        spec = state.load_spec(paths)
        if spec is None:
            return  # never applied successfully; the controller will push it again
        inst = self._instance(instance_id, spec.namespace)
        with inst.lock:
            inst.spec = spec
            inst.desired_generation = spec.generation
            saved = state.load_status(paths)
            if saved is not None and saved.desired_generation > spec.generation:
                inst.desired_generation = saved.desired_generation
                inst.last_error = saved.last_error
            self._register_logs(inst, spec)
            if not namespace_exists(spec.namespace):
                # While this host was gone the controller may have rebuilt the instance
                # elsewhere: wait for the heartbeat answer before bringing it back.
                inst.held = True
                log.warning(
                    "instance %s: data plane lost (reboot?); waiting for the "
                    "controller before rebuilding it",
                    instance_id,
                )
                return
            # Idempotent: on a healthy instance this changes nothing on the wire.
            apply_network(spec)
            pid = inst.haproxy.master_pid()
            if pid is None:
                log.info("instance %s: haproxy not running, starting it", instance_id)
                inst.haproxy.start()
            else:
                log.info("instance %s: adopted haproxy master %d", instance_id, pid)
            if spec.keepalived_config:
                inst.keepalived.start()

    # -- instances --------------------------------------------------------------------

    def _instance(self, instance_id: str, namespace: str | None = None) -> _Instance:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                paths = instance_paths(self.agent_dir, instance_id)
                ns = namespace or namespace_name(instance_id)
                inst = _Instance(
                    instance_id,
                    paths,
                    ns,
                    HAProxyInstance(paths, ns),
                    KeepalivedInstance(paths, ns),
                )
                self._instances[instance_id] = inst
            return inst

    def known(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._instances

    def instance_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._instances)

    def _register_logs(self, inst: _Instance, spec: InstanceSpec) -> None:
        tags = {
            **spec.log_tags,
            "load_balancer_id": spec.load_balancer_id,
            "project_id": spec.project_id,
        }
        self.logs.add(
            inst.instance_id,
            inst.paths.log_socket,
            inst.paths.logs_dir,
            tags,
            frontends_of(spec.haproxy_config),
        )

    def apply(self, spec: InstanceSpec) -> tuple[bool, InstanceStatus]:
        """Apply `spec`; (True, status) when it is live, (False, status) when refused.

        On refusal the previous config keeps serving and `status.last_error` says why.
        Raises StaleGeneration for a spec older than the applied one.
        """
        if not spec.namespace.startswith(NAMESPACE_PREFIX) or len(spec.namespace) > 64:
            raise ValueError(f"namespace must start with {NAMESPACE_PREFIX!r}")
        while True:
            inst = self._instance(spec.instance_id, spec.namespace)
            with inst.lock:
                if inst.deleted:
                    continue  # deleted while we waited: start over with a fresh record
                return self._apply_locked(inst, spec)

    def _apply_locked(self, inst: _Instance, spec: InstanceSpec) -> tuple[bool, InstanceStatus]:
        if inst.spec is not None:
            if spec.generation < inst.spec.generation:
                raise StaleGeneration(
                    f"generation {spec.generation} is older than applied {inst.spec.generation}"
                )
            if spec == inst.spec and inst.last_error is None and inst.haproxy.running():
                return True, self._status(inst)
            if spec.namespace != inst.namespace:
                raise ValueError("an instance cannot change namespace; delete it first")
        inst.namespace = spec.namespace
        inst.desired_generation = spec.generation
        inst.held = False  # the controller pushed it: it is wanted
        try:
            inst.paths.check()
            inst.paths.instance_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            inst.paths.state_dir.mkdir(exist_ok=True)
            # The spec's files (check scripts, later certificates) are referenced by the
            # configs, so they must exist for validation; nothing running reads them yet.
            self._write_files(inst, spec)
            # Validate before touching anything else, so a bad spec leaves the running
            # instance as it was.
            error = inst.haproxy.validate(spec.haproxy_config)
            if error is None and spec.keepalived_config:
                error = inst.keepalived.validate(spec.keepalived_config)
            if error is not None:
                return self._fail(inst, error)
            if _network_changed(inst.spec, spec) or not namespace_exists(spec.namespace):
                apply_network(spec)
            if inst.spec is not None:
                # Legs the new spec dropped may leave a managed bridge with nothing on it.
                kept = {iface.bridge for iface in spec.interfaces}
                remove_unused_bridges(
                    [i.bridge for i in inst.spec.interfaces if i.bridge not in kept]
                )
            self._register_logs(inst, spec)
            result = inst.haproxy.apply(spec.haproxy_config, validated=True)
            if result.error:
                return self._fail(inst, result.error)
            if spec.keepalived_config:
                inst.keepalived.apply(spec.keepalived_config)
            elif inst.keepalived.pid() is not None:
                inst.keepalived.stop()
            log.info(
                "instance %s: generation %d applied (%s)",
                inst.instance_id,
                spec.generation,
                result.action,
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
            return self._fail(inst, f"{type(exc).__name__}: {exc}")
        inst.spec = spec
        inst.last_error = None
        state.save_spec(inst.paths, spec)
        status = self._status(inst)
        state.save_status(inst.paths, status)
        return True, status

    def _fail(self, inst: _Instance, error: str) -> tuple[bool, InstanceStatus]:
        inst.last_error = error
        status = self._status(inst)
        with contextlib.suppress(OSError):
            state.save_status(inst.paths, status)
        return False, status

    def _write_files(self, inst: _Instance, spec: InstanceSpec) -> None:
        if not spec.files:
            return
        inst.paths.files_dir.mkdir(exist_ok=True, mode=0o700)
        for name, content in spec.files.items():
            if not _safe_file_name(name):
                raise ValueError(f"invalid file name {name!r}")
            # Scripts (keepalived's health check) must be executable, and for keepalived's
            # script security, writable by root only.
            mode = 0o700 if content.startswith("#!") else 0o600
            atomic_write(inst.paths.files_dir / name, content, mode)

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
            inst.haproxy.stop()
            inst.keepalived.stop()
            faults.crash_point(faults.DELETE_HAPROXY_STOPPED)
            # Anything else still in the namespace would keep it alive after unmount.
            for pid in namespace_pids(inst.namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.logs.remove(instance_id)
            bridges = [iface.bridge for iface in spec.interfaces] if spec else []
            delete_network(inst.namespace, bridges)
            shutil.rmtree(paths.instance_dir, ignore_errors=True)
            inst.deleted = True
            with self._lock:
                if self._instances.get(instance_id) is inst:
                    del self._instances[instance_id]
        log.info("instance %s deleted", instance_id)

    # -- status -----------------------------------------------------------------------

    def status(self, instance_id: str) -> InstanceStatus | None:
        with self._lock:
            inst = self._instances.get(instance_id)
        if inst is None:
            return None
        return self._status(inst)

    def statuses(self) -> list[InstanceStatus]:
        with self._lock:
            insts = list(self._instances.values())
        return [self._status(inst) for inst in insts]

    def _status(self, inst: _Instance) -> InstanceStatus:
        spec = inst.spec
        pid = inst.haproxy.master_pid()
        status = InstanceStatus(
            instance_id=inst.instance_id,
            load_balancer_id=spec.load_balancer_id if spec else "",
            applied_generation=spec.generation if spec else 0,
            desired_generation=inst.desired_generation,
            haproxy_running=pid is not None,
            haproxy_pid=pid,
            last_error=inst.last_error,
            vrrp_state=self._vrrp_state(inst),
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
        if pid is not None:
            try:
                stats = inst.haproxy.stats()
                status.listeners, status.members, status.pools = (
                    stats.listeners,
                    stats.members,
                    stats.pools,
                )
            except (OSError, HAProxyError) as exc:
                log.debug("stats of %s unavailable: %s", inst.instance_id, exc)
        return status

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

    def logs_tail(self, instance_id: str, lines: int) -> list[LogRecord]:
        return self.logs.tail(
            instance_id, lines, instance_paths(self.agent_dir, instance_id).logs_dir
        )

    def logs_since(self, instance_id: str, since: float) -> list[LogRecord]:
        return self.logs.read(
            instance_id, since, instance_paths(self.agent_dir, instance_id).logs_dir
        )

    # -- supervision ------------------------------------------------------------------

    def supervise_once(self) -> None:
        with self._lock:
            insts = list(self._instances.values())
        for inst in insts:
            if inst.spec is None or not inst.lock.acquire(blocking=False):
                continue  # an apply in progress is the better judge
            try:
                if inst.deleted or inst.spec is None or inst.held:
                    continue
                if not namespace_exists(inst.namespace):
                    log.warning("instance %s: namespace vanished, re-plumbing", inst.instance_id)
                    inst.haproxy.stop()
                    apply_network(inst.spec)
                if not inst.haproxy.running():
                    log.warning("instance %s: haproxy is dead, restarting", inst.instance_id)
                    self._kill_leftover_workers(inst)
                    inst.haproxy.start()
                if inst.spec.keepalived_config and inst.keepalived.pid() is None:
                    inst.keepalived.start()
            except Exception as exc:
                log.error("instance %s: supervision failed: %s", inst.instance_id, exc)
            finally:
                inst.lock.release()

    def _kill_leftover_workers(self, inst: _Instance) -> None:
        """Workers orphaned by a killed master still hold the listening sockets."""
        config = str(inst.paths.config)
        for pid in namespace_pids(inst.namespace):
            if not pid_alive(pid):
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if config.encode() in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(
            pid_alive(p) for p in namespace_pids(inst.namespace)
        ):
            time.sleep(0.02)

    def _supervise_loop(self) -> None:
        while not self._stop.wait(self.supervise_interval):
            self.supervise_once()

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
            management_url=self.management_url(),
            agent_secret=self.secret,
            version=AGENT_VERSION,
            agent_dir=str(self.agent_dir),
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
        log.info("registered with %s as host %s", self.settings.agent_api_url, host_id)
        return host_id

    def heartbeat_once(self, client: httpx.Client) -> HeartbeatResponse:
        if self.host_id is None or not self.registered.is_set():
            self.register(client)
        assert self.host_id is not None
        sent_at = time.monotonic()
        statuses = self.statuses()
        report = HeartbeatReport(
            host_id=self.host_id,
            name=self.settings.host_name,
            instances=statuses,
            capacity=self.settings.host_capacity,
            instance_count=len(statuses),
            load_average=os.getloadavg(),
        )
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
        self.last_heartbeat = answer
        self.handle_heartbeat_response(answer, sent_at)
        return answer

    def handle_heartbeat_response(self, answer: HeartbeatResponse, sent_at: float) -> list[str]:
        """Remove orphans; instances added after the report was sent are kept."""
        if answer.wanted_instance_ids is None:
            return []
        wanted = set(answer.wanted_instance_ids)
        with self._lock:
            for inst in self._instances.values():
                if inst.held and inst.instance_id in wanted:
                    log.info("instance %s: still wanted, rebuilding it", inst.instance_id)
                    inst.held = False  # the supervision loop brings it back
        with self._lock:
            orphans = [
                i.instance_id
                for i in self._instances.values()
                if i.instance_id not in wanted and i.added_at < sent_at
            ]
        for instance_id in orphans:
            log.warning("instance %s is not wanted by the API: removing it", instance_id)
            try:
                self.delete(instance_id)
            except Exception:
                log.exception("cannot remove orphan %s", instance_id)
        return orphans

    def _heartbeat_loop(self) -> None:
        failures = 0
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
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
                self._stop.wait(self.settings.heartbeat_interval)
