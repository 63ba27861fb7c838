"""Where an instance's files live on an agent host.

Shared by the agent (which creates and uses them) and the controller-side HAProxy
renderer (which writes the socket paths into the config it renders), so both sides
agree without talking to each other.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

# sun_path is 108 bytes including the terminating NUL; HAProxy and Python share that limit.
UNIX_PATH_MAX = 107
NAMESPACE_PREFIX = "ohi-"
# HAProxy chroots to `InstancePaths.chroot_dir` (see `agent.sandbox`): the two sockets
# it still reaches afterwards are named in its config as seen from inside.
CHROOT_LOG_SOCKET = "/log.sock"
CHROOT_SYSLOG_SOCKET = "/syslog.sock"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class InstancePaths:
    """Every path of one instance, under `<agent_dir>/instances/<instance_id>/`."""

    instance_dir: Path
    config: Path  # the last good HAProxy config: what a start or reload reads
    # The config being applied. Written first and removed last by every apply, so
    # finding it after a restart means an apply was cut short: what HAProxy runs is
    # then in doubt and the agent re-applies its last applied spec.
    candidate: Path
    pid_file: Path  # the HAProxy process currently serving
    next_pid_file: Path  # written by a starting HAProxy, renamed over pid_file once it runs
    # What the serving HAProxy process loaded (its pid and config text), recorded only
    # once its start, reload or runtime commands took.
    loaded: Path
    stats_socket: Path  # runtime API of the serving process; passes listeners on reload
    # The protection profile's refresh listener: a connection re-reads the limits map.
    protect_socket: Path
    # HAProxy's chroot: empty but for the two sockets below, root-owned.
    chroot_dir: Path
    # Datagram socket where the agent hears admin events (inside the chroot, owned by
    # the instance's uid).
    log_socket: Path
    chroot_syslog_socket: Path  # a hard link to the host rsyslogd's socket
    state_dir: Path  # HAProxy server-state files and the like
    spec_file: Path  # last applied InstanceSpec (JSON)
    deleting: Path  # present once a delete began: a restarted agent finishes it
    status_file: Path  # last status (JSON)
    files_dir: Path  # extra files of the spec (certificates, maps)
    keepalived_config: Path
    keepalived_pid: Path
    vrrp_pid: Path
    vrrp_dir: Path  # the one place keepalived's unprivileged notify script writes
    vrrp_state_file: Path  # keepalived notify scripts write MASTER/BACKUP/FAULT here
    # keepalived's track file: the agent writes 1 when HAProxy died, 0 when it serves.
    haproxy_down: Path
    history: Path  # counters and last outcomes for diagnostics (`agent.history`)
    # The config of the last apply HAProxy refused, until one succeeds (diagnostics
    # show it beside the last good one).
    rejected: Path

    def check(self) -> None:
        """Refuse paths that a unix socket cannot bind to (too long)."""
        for sock in (self.stats_socket, self.protect_socket, self.log_socket):
            if len(str(sock).encode()) > UNIX_PATH_MAX:
                raise ValueError(f"socket path too long for AF_UNIX: {sock}")


def instance_paths(agent_dir: Path | str, instance_id: str) -> InstancePaths:
    """Paths of `instance_id` under `agent_dir` (absolute; nothing is created)."""
    if not _ID_RE.match(instance_id):
        raise ValueError(f"invalid instance id: {instance_id!r}")
    base = Path(agent_dir).absolute() / "instances" / instance_id
    return InstancePaths(
        instance_dir=base,
        config=base / "haproxy.cfg",
        candidate=base / "haproxy.cfg.candidate",
        pid_file=base / "haproxy.pid",
        next_pid_file=base / "haproxy.pid.next",
        loaded=base / "haproxy.loaded.json",
        stats_socket=base / "stats.sock",
        protect_socket=base / "protect.sock",
        chroot_dir=base / "root",
        log_socket=base / "root" / CHROOT_LOG_SOCKET.lstrip("/"),
        chroot_syslog_socket=base / "root" / CHROOT_SYSLOG_SOCKET.lstrip("/"),
        state_dir=base / "state",
        spec_file=base / "spec.json",
        deleting=base / "deleting",
        status_file=base / "status.json",
        files_dir=base / "files",
        keepalived_config=base / "keepalived.conf",
        keepalived_pid=base / "keepalived.pid",
        vrrp_pid=base / "vrrp.pid",
        vrrp_dir=base / "vrrp",
        vrrp_state_file=base / "vrrp" / "state",
        haproxy_down=base / "haproxy.down",
        history=base / "history.json",
        rejected=base / "haproxy.cfg.rejected",
    )


def namespace_name(instance_id: str) -> str:
    """The namespace an instance runs in: `ohi-` + the 32 hex digits of its uuid.

    The whole uuid, so two instances never share a namespace (namespace names may be
    long; only interface names are limited to 15 characters, see `agent.netns`). The
    controller names HAProxy peers with it too.
    """
    try:
        parsed = uuid.UUID(instance_id)
    except ValueError:
        parsed = None
    # Only the canonical spelling: two spellings of one uuid would share a namespace.
    if parsed is None or str(parsed) != instance_id:
        raise ValueError(f"instance id must be a lowercase uuid: {instance_id!r}")
    return NAMESPACE_PREFIX + parsed.hex


@dataclass(frozen=True)
class LogPaths:
    """The host's log pipeline under `<agent_dir>`: the agent's own rsyslogd and the files.

    Each instance's HAProxy forwards its log ring to an input socket of its own in
    `inputs_dir` (unix stream sockets work from any network namespace), reached through
    a hard link in its chroot; `syslog_socket` is root's own input.
    """

    syslog_dir: Path  # rsyslog.conf, pid file, work (queues), stats, lookup tables
    syslog_socket: Path
    inputs_dir: Path  # <n>.sock: one input per instance (`render.rsyslog`)
    logs_root: Path  # <logs_root>/<lb id>/{access,admin}.log and closed segments

    def check(self) -> None:
        # The longest instance input: slot numbers stay below 65536.
        for sock in (self.syslog_socket, self.inputs_dir / "65535.sock"):
            if len(str(sock).encode()) > UNIX_PATH_MAX:
                raise ValueError(f"socket path too long for AF_UNIX: {sock}")


def log_paths(agent_dir: Path | str) -> LogPaths:
    base = Path(agent_dir).absolute()
    return LogPaths(
        syslog_dir=base / "syslog",
        syslog_socket=base / "syslog" / "in.sock",
        inputs_dir=base / "syslog" / "in",
        logs_root=base / "logs",
    )
