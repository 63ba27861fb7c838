"""Facts about host processes, read from /proc: alive, command line, children, pid files.

Standard library only: `agent.keeper` imports it too, and stays a small process.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(entry))
    return kids


def pid_from_file(pid_file: Path, config: Path) -> int | None:
    """The live process whose pid `pid_file` holds and whose argv names `config`.

    Pids get reused: the config path in the command line says the process is still
    the one that wrote the file.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) and str(config) in cmdline(pid) else None


def confinement(pid: int) -> dict[str, object] | None:
    """How `pid` is walled in, from /proc: its ids, effective capabilities (hex), root
    directory and cgroups; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        root = os.readlink(f"/proc/{pid}/root")
        with open(f"/proc/{pid}/cgroup") as fh:
            groups = sorted({line.strip().split(":", 2)[2] for line in fh if line.count(":") >= 2})
    except (OSError, ValueError):
        return None
    return {
        "uid": int(fields["Uid"].split()[1]),  # effective
        "gid": int(fields["Gid"].split()[1]),
        "cap_eff": fields["CapEff"].strip(),
        "root": root,
        "cgroups": groups,
    }
