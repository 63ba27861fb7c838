"""Least privilege and resource walls for each instance's data plane.

Why a uid per instance rather than one shared `openha-lb` user: processes of one
uid can signal each other, so a worker of one load balancer could kill another's.
Each instance gets its own uid (and gid of the same number) from a reserved range
(`Settings.sandbox_uid_base`, `sandbox_uid_count`) that no passwd entry uses; the
host-wide registry (`Settings.sandbox_uid_registry`, one file per uid taken, made
with O_EXCL) keeps two agents on one host from handing out the same one.

HAProxy starts as root in the instance's namespace and cgroup, binds its listeners
and stats socket, reads its config, certificates and server state, then chroots to
the instance's empty `root/` and drops to that uid with no capability left (its own
`chroot`, `uid`, `gid`: the renderer writes them, the uid comes from this module
through the environment). What a reload needs stays with the agent, not with a
privileged master: the agent starts the next process (root, with a bounding set cut
to what binding and dropping need), which takes the listeners over the stats socket
(root-owned, bound before the drop) and tells the old one to leave. After the drop,
only two paths are reached, both inside the chroot: the agent's admin-event socket
(`log.sock`, owned by the instance's uid) and a hard link to the instance's own input
of the host rsyslogd (`syslog.sock`, owned by its uid: whatever is written there is
filed under its load balancer, see `render.rsyslog`), renewed whenever rsyslogd makes
a new one.

keepalived runs as root with its bounding set cut to what VRRP needs
(`KEEPALIVED_CAPS`); its notify script runs as the host's `openha-lb` user
(`script_user`, `enable_script_security`) with no capability, and may write only the
instance's `vrrp/` directory.

Resource walls are `agent.cgroups`; every process of the instance is placed in its
group between fork and exec (`Spawn`), so it and whatever it forks start inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from openha.agent.cgroups import (
    Hierarchy,
    InstanceCgroup,
    Limits,
    Usage,
    agent_key,
    agent_levels,
    balance_levels,
    own_groups,
    remove_agent_levels,
    remove_levels,
)
from openha.agent.paths import InstancePaths
from openha.render.haproxy import SANDBOX_GID_ENV, SANDBOX_UID_ENV
from openha.render.keepalived import SCRIPT_USER

log = logging.getLogger(__name__)

RECORD = "sandbox.json"
PR_CAPBSET_DROP = 24
# What the agent's HAProxy process needs as root before it drops to the instance's
# uid: signal the old process (another uid), set its ids, bind low ports, chroot,
# raise its fd limit. Everything else leaves the bounding set before exec.
HAPROXY_CAPS = {
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_RESOURCE": 24,
}
# What keepalived's VRRP process needs, all it keeps: raw VRRP sockets and the VIP's
# address and routes (NET_RAW, NET_ADMIN, inside the instance's namespace), and
# running its notify script as the host's script user (SETUID, SETGID) and stopping
# that script should it outlive its timeout (KILL: it runs as another uid). No
# DAC_OVERRIDE, SYS_ADMIN, SYS_MODULE, SYS_PTRACE, ...: a taken keepalived cannot
# read another instance's files, load modules or enter other namespaces.
KEEPALIVED_CAPS = {
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
}


def ensure_user(name: str = SCRIPT_USER) -> str | None:
    """Create the host's unprivileged system user if absent; the problem, if any."""
    try:
        pwd.getpwnam(name)
        return None
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode not in (0, 9):  # 9: created meanwhile by another agent
        return f"cannot create user {name}: {proc.stderr.strip()}"
    return None


def user_ids(name: str = SCRIPT_USER) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    with contextlib.suppress(KeyError):
        return entry.pw_uid, grp.getgrnam(name).gr_gid
    return entry.pw_uid, entry.pw_gid


def last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


class UidRegistry:
    """Host-wide record of the uids handed to instances: `<dir>/<uid>` names its owner."""

    def __init__(self, directory: Path, base: int, count: int) -> None:
        self.dir = directory
        self.base = base
        self.count = count

    def owner(self, uid: int) -> str | None:
        try:
            return (self.dir / str(uid)).read_text().strip()
        except OSError:
            return None

    def allocate(self, owner: Path, hint: str) -> int:
        """A uid for `owner` (an instance directory): its own if it has one, else a free one.

        The search starts at a point derived from `hint` (the instance id): usually
        the first try is free. A uid whose owner directory is gone is taken back.
        """
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        start = zlib.crc32(hint.encode()) % self.count
        for step in range(self.count):
            uid = self.base + (start + step) % self.count
            path = self.dir / str(uid)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                holder = self.owner(uid)
                if holder == str(owner):
                    return uid
                if holder and not Path(holder).exists():
                    path.write_text(f"{owner}\n")  # its instance is gone: reuse
                    return uid
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{owner}\n")
            return uid
        raise OSError(f"no free uid left in {self.base}..{self.base + self.count - 1}")

    def release(self, uid: int, owner: Path) -> None:
        if self.owner(uid) == str(owner):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / str(uid)).unlink()


@dataclass
class SandboxHost:
    """The host side: cgroup layout, where groups go, the uid registry, the script user."""

    hierarchy: Hierarchy
    parent: dict[str, str]
    agent: str  # this agent's key (its subtree of groups)
    registry: UidRegistry
    script_ids: tuple[int, int] | None
    problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_agent(
        cls,
        agent_dir: Path,
        hierarchy: Hierarchy,
        registry: UidRegistry,
        cgroup_parent: str = "",
    ) -> SandboxHost:
        problems = []
        if (problem := ensure_user()) is not None:
            problems.append(problem)
        # keepalived's script user must reach each pair's notify script below here.
        for level in [agent_dir.absolute(), *agent_dir.absolute().parents][1:]:
            with contextlib.suppress(OSError):
                if not level.stat().st_mode & stat.S_IXOTH:
                    problems.append(
                        f"{SCRIPT_USER} cannot enter {level}: keepalived notify scripts of "
                        "pairs on this host will not run (let others traverse it: o+x)"
                    )
                    break
        if cgroup_parent:
            parent = dict.fromkeys(hierarchy.mounts, cgroup_parent)
        elif hierarchy.mode == "v1":
            # Below the agent's own groups: limits a supervisor put on the agent still hold.
            try:
                mine = own_groups(Path("/proc/self/cgroup").read_text())
            except OSError:
                mine = {}
            parent = {name: mine.get(name, "/") for name in hierarchy.mounts}
        else:
            parent = dict.fromkeys(hierarchy.mounts, "/")
        return cls(hierarchy, parent, agent_key(agent_dir), registry, user_ids(), problems)

    def balance(self) -> list[str]:
        """This agent's level and the one above weighed as the sum of their instances
        (`cgroups.balance_levels`), after an instance came, changed or went."""
        with self._lock:
            return balance_levels(
                self.hierarchy, agent_levels(self.hierarchy, self.parent, self.agent)
            )

    def remove_empty_levels(self) -> None:
        """Remove this agent's level of groups where it holds no instance (an agent that
        stops leaves nothing behind; one whose HAProxies keep serving keeps their groups)."""
        levels = agent_levels(self.hierarchy, self.parent, self.agent)
        remove_levels(list(dict.fromkeys(levels.values())))

    def describe(self) -> dict[str, object]:
        return {
            "cgroup": self.hierarchy.describe(),
            "uid_range": [self.registry.base, self.registry.base + self.registry.count - 1],
            "script_user": SCRIPT_USER,
            "problems": list(self.problems),
        }


class InstanceSandbox:
    """One instance's uid, directories and cgroup (see the module's docstring)."""

    def __init__(self, host: SandboxHost, paths: InstancePaths, instance_id: str) -> None:
        self.host = host
        self.paths = paths
        self.instance_id = instance_id
        self.uid: int | None = None
        self.limits = Limits()
        self.problems: list[str] = []  # limits or walls that could not be applied
        self.cgroup = InstanceCgroup.for_instance(
            host.hierarchy, host.parent, host.agent, instance_id
        )
        self._load()

    def _load(self) -> None:
        try:
            record = json.loads((self.paths.instance_dir / RECORD).read_text())
        except (OSError, ValueError):
            return
        if isinstance(record.get("uid"), int):
            self.uid = record["uid"]

    def _save(self) -> None:
        record = {
            "uid": self.uid,
            "uid_registry": str(self.host.registry.dir),
            "cgroup": self.cgroup.record(),
            "limits": self.limits.as_dict(),
        }
        path = self.paths.instance_dir / RECORD
        tmp = path.with_name(f".{RECORD}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record))
        os.replace(tmp, path)

    def env(self) -> dict[str, str]:
        """What HAProxy's `uid` and `gid` lines read (see `render.haproxy`)."""
        uid = str(self.uid if self.uid is not None else self.host.registry.base)
        return {**os.environ, SANDBOX_UID_ENV: uid, SANDBOX_GID_ENV: uid}

    def prepare(self, limits: Limits) -> list[str]:
        """Make the instance's uid, directories and cgroup as `limits` say (idempotent).

        Returns what could not be applied (also kept in `problems`). Raises OSError
        only when the instance cannot be sandboxed at all (no uid, no chroot).
        """
        paths = self.paths
        paths.instance_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        # Traversable (keepalived's script user runs files/ and writes vrrp/), not listable.
        os.chmod(paths.instance_dir, 0o711)
        self.uid = self.host.registry.allocate(paths.instance_dir, self.instance_id)
        paths.chroot_dir.mkdir(exist_ok=True)
        os.chown(paths.chroot_dir, 0, 0)
        os.chmod(paths.chroot_dir, 0o755)
        paths.vrrp_dir.mkdir(exist_ok=True)
        if self.host.script_ids is not None:
            os.chown(paths.vrrp_dir, *self.host.script_ids)
        os.chmod(paths.vrrp_dir, 0o700)
        self.limits = limits
        problems = list(self.host.problems) + self.cgroup.create(limits)
        problems += self.host.balance()
        self.problems = problems
        self._save()
        for problem in problems:
            log.warning("instance %s: %s", self.instance_id, problem)
        return problems

    def own_socket(self, path: Path) -> None:
        """Let the instance's dropped process write to a socket in its chroot."""
        if self.uid is not None and path.exists():
            os.chown(path, self.uid, self.uid)
            os.chmod(path, 0o600)

    def link_syslog(self, syslog_socket: Path) -> None:
        """(Re)make the chroot's hard link to the instance's own rsyslogd input, and give
        that socket to the instance's uid alone: nothing else may write lines that are
        filed under its load balancer."""
        target = self.paths.chroot_syslog_socket
        if not self.paths.chroot_dir.is_dir() or self.uid is None:
            return
        try:
            st = os.stat(syslog_socket)
        except FileNotFoundError:
            return  # rsyslogd not listening yet: linked when it is
        if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (self.uid, self.uid, 0o600):
            os.chown(syslog_socket, self.uid, self.uid)
            os.chmod(syslog_socket, 0o600)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(target).st_ino == st.st_ino:
                return
        tmp = target.with_name(f".{target.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.link(syslog_socket, tmp)
        os.replace(tmp, target)

    def spawn(self, namespace_exec: object, *, caps: dict[str, int] | None) -> Spawn:
        return Spawn(namespace_exec, self.cgroup if self.cgroup.exists() else None, caps)

    def check(self, pid: int) -> list[str]:
        """What is wrong with a running process of the instance (not in its group)."""
        if self.cgroup.exists() and not self.cgroup.holds(pid):
            return [f"process {pid} is not in its cgroup {self.cgroup.path()}"]
        return []

    def adopt(self, pids: list[int]) -> None:
        """Put running processes (left by an earlier agent) in the group if they are not."""
        for pid in pids:
            if self.cgroup.exists() and not self.cgroup.holds(pid):
                with contextlib.suppress(OSError):
                    self.cgroup.attach(pid)
                    log.info("instance %s: process %d moved into its cgroup", self.instance_id,
                             pid)  # fmt: skip

    def usage(self) -> Usage:
        return self.cgroup.usage() if self.cgroup.exists() else Usage()

    def describe(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "gid": self.uid,
            "chroot": str(self.paths.chroot_dir),
            "cgroup_mode": self.host.hierarchy.mode,
            "cgroup": self.cgroup.path() if self.cgroup.dirs else None,
            "limits": self.limits.as_dict(),
            "usage": self.usage().as_dict(),
            "problems": list(self.problems),
        }

    def remove(self) -> list[str]:
        """Delete the cgroup and give the uid back (the processes are gone)."""
        left = self.cgroup.remove()
        self.host.balance()
        if self.uid is not None:
            self.host.registry.release(self.uid, self.paths.instance_dir)
        return left


def purge_instance(paths: InstancePaths) -> list[str]:
    """Remove what `InstanceSandbox` made for an instance, from its record alone
    (`openha purge`, no agent running); its processes must be gone. What is left."""
    try:
        record = json.loads((paths.instance_dir / RECORD).read_text())
    except (OSError, ValueError):
        return []
    left: list[str] = []
    if isinstance(record.get("cgroup"), dict):
        group = InstanceCgroup.from_record(record["cgroup"])
        left += group.remove()
        remove_agent_levels(group)
    uid, registry = record.get("uid"), record.get("uid_registry")
    if isinstance(uid, int) and isinstance(registry, str):
        path = Path(registry) / str(uid)
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(paths.instance_dir):
                path.unlink()
    return left


class Spawn:
    """`preexec_fn`: enter the namespace, then the cgroup, then cut the bounding set.

    Everything is opened in the parent; the child only makes syscalls on inherited fds.
    A failed move into the group is left to the caller's check (`InstanceSandbox.check`):
    the process must start either way, and the failure is reported, not hidden.
    """

    def __init__(
        self, namespace_exec: object, cgroup: InstanceCgroup | None, caps: dict[str, int] | None
    ) -> None:
        self.nsexec = namespace_exec
        self.fds: list[int] = []
        if cgroup is not None:
            for path in cgroup.distinct():
                with contextlib.suppress(OSError):
                    self.fds.append(os.open(path / "cgroup.procs", os.O_WRONLY))
        keep = set((caps or {}).values())
        self.drop = [c for c in range(last_cap() + 1) if c not in keep] if caps is not None else []
        self.prctl = ctypes.CDLL(None, use_errno=True).prctl

    def __call__(self) -> None:
        if callable(self.nsexec):
            self.nsexec()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.write(fd, b"0")  # 0: the writing process
        for cap in self.drop:
            self.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def __enter__(self) -> Spawn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
