"""Where an agent keeps certificate keys: a tmpfs, never a persistent disk.

A spec's files that hold a private key (`InstanceSpec.key_files`) are written to
`<keys_dir>/<instance id>/<name>` (root's, 0600, in a 0700 directory) and the
instance's files directory holds a symlink of the same name to it, so HAProxy's
configuration (rendered by the controller) names the usual path. HAProxy reads
them as root before it chroots, and rotations go over its runtime API, so nothing
else ever needs them. `keys_dir` is per agent (several agents may share a
machine) under `/run/openha/keys`; when its filesystem is not a tmpfs (a
container whose /run is on disk), the agent mounts one there at start, before it
starts or adopts anything, so that every HAProxy it runs sees it.

A reboot empties the tmpfs: the agent then knows the instance's spec but not its
keys, so it treats the instance as never applied and the controller pushes it
again (see `AgentService._load`). The last applied spec on disk (`spec.json`)
keeps only a mark in place of each key file's content (`redacted`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from openha.agent.haproxy import atomic_write
from openha.domain.spec import InstanceSpec

KEYS_ROOT = Path("/run/openha/keys")
# What a key file's content reads in the spec kept on disk.
ON_TMPFS = "# kept on the agent's tmpfs\n"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
MOUNT_SOURCE = "openha-keys"
MOUNT_OPTIONS = "mode=0700,size=64m,nosuid,nodev,noexec"


class KeyStoreError(OSError):
    """The keys directory cannot be put on a memory filesystem."""


def default_keys_dir(agent_dir: Path) -> Path:
    """The agent's keys directory: named after its agent directory, which is unique."""
    digest = hashlib.sha256(str(agent_dir.absolute()).encode()).hexdigest()[:16]
    return KEYS_ROOT / digest


def _unescape(field: str) -> str:
    """A mountinfo path (spaces and the like are octal escapes there)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount `path` (or its nearest existing
    parent) is on, from /proc/self/mountinfo; None if it cannot be read."""
    target = Path(os.path.realpath(path))
    while not target.exists() and target != target.parent:
        target = target.parent
    best: tuple[str, str] | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        fstype = right.split()[0] if right.split() else ""
        inside = str(target) == point or str(target).startswith(point.rstrip("/") + "/")
        # The last of equal mount points is the one on top.
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def on_memory_filesystem(path: Path) -> bool:
    found = mount_of(path)
    return found is not None and found[1] in MEMORY_FILESYSTEMS


def prepare(keys_dir: Path) -> None:
    """Make `keys_dir` a root-only directory on a memory filesystem (mounting a tmpfs
    there if it is not on one); KeyStoreError when that cannot be done."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not on_memory_filesystem(keys_dir):
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", MOUNT_OPTIONS, MOUNT_SOURCE, str(keys_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not on_memory_filesystem(keys_dir):
            raise KeyStoreError(
                f"cannot mount a tmpfs for certificate keys at {keys_dir}: "
                f"{result.stderr.strip() or 'not a tmpfs after mounting'}"
            )
    keys_dir.chmod(0o700)


def release(keys_dir: Path) -> None:
    """Remove the keys directory and the tmpfs the agent mounted there (`purge`)."""
    found = mount_of(keys_dir)
    if found is not None and found[0] == str(keys_dir.absolute()):
        subprocess.run(["umount", "-l", str(keys_dir)], capture_output=True, check=False)
    shutil.rmtree(keys_dir, ignore_errors=True)
    if keys_dir.parent == KEYS_ROOT:
        # The shared parents too, once no agent's directory is left in them.
        for parent in (KEYS_ROOT, KEYS_ROOT.parent):
            try:
                parent.rmdir()
            except OSError:
                break


class KeyFiles:
    """One agent's key files, per instance."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir

    def instance_dir(self, instance_id: str) -> Path:
        return self.keys_dir / instance_id

    def linked(self, instance_id: str, link: Path) -> bool:
        """Whether `link` is the symlink to its key file on the tmpfs."""
        target = self.instance_dir(instance_id) / link.name
        return link.is_symlink() and os.readlink(link) == str(target)

    def place(self, instance_id: str, link: Path, content: str) -> None:
        """Write `content` to the tmpfs and make `link` (in the files directory) point
        to it, replacing whatever `link` was (an older agent's plain file) at once."""
        home = self.instance_dir(instance_id)
        home.mkdir(mode=0o700, exist_ok=True)
        target = home / link.name
        atomic_write(target, content, 0o600)
        if self.linked(instance_id, link):
            return
        tmp = link.with_name(f".{link.name}.link")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def read(self, instance_id: str, name: str) -> str | None:
        try:
            return (self.instance_dir(instance_id) / name).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def prune(self, instance_id: str, keep: set[str]) -> None:
        """Remove the instance's key files not in `keep` (a removed listener's)."""
        home = self.instance_dir(instance_id)
        if not home.is_dir():
            return
        for path in home.iterdir():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    def prune_instances(self, keep: set[str]) -> None:
        """Remove the key directories of instances not in `keep`."""
        if self.keys_dir.is_dir():
            for path in self.keys_dir.iterdir():
                if path.is_dir() and path.name not in keep:
                    shutil.rmtree(path, ignore_errors=True)

    def remove(self, instance_id: str) -> None:
        shutil.rmtree(self.instance_dir(instance_id), ignore_errors=True)

    def restore(self, spec: InstanceSpec) -> InstanceSpec | None:
        """`spec` as read from disk with its key files' contents read back from the tmpfs;
        None when one is missing there (the host rebooted: the keys are gone)."""
        kept = [name for name, content in spec.files.items() if content == ON_TMPFS]
        if not kept:
            return spec
        files = dict(spec.files)
        for name in kept:
            content = self.read(spec.instance_id, name)
            if content is None:
                return None
            files[name] = content
        return spec.model_copy(update={"files": files})


def redacted(spec: InstanceSpec) -> InstanceSpec:
    """`spec` as it may rest on disk: each key file's content replaced by a mark."""
    names = spec.key_files()
    if not names:
        return spec
    return spec.model_copy(update={"files": {**spec.files, **dict.fromkeys(names, ON_TMPFS)}})
