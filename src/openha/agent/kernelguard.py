"""Kernel help against floods in each instance namespace: SYN cookies and deep accept queues.

`net.ipv4.tcp_syncookies`, `net.core.somaxconn` and `net.ipv4.tcp_max_syn_backlog`
belong to a network namespace, not to the host: a value written under /proc/sys/net
by a thread that joined the namespace is that namespace's. The agent sets them on
every apply (idempotent, three small writes) and reports what the namespace holds in
its diagnostics, so an operator sees what the kernel actually does.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from openha.agent.netns import run_in_namespace

PROC_SYS = Path("/proc/sys")
# SYN cookies always on: a SYN flood filling the backlog then costs no memory and
# refuses no legitimate handshake. The queues are deep enough for HAProxy's listeners
# (a listen backlog is capped by somaxconn) to absorb a burst of new connections.
SYSCTLS: dict[str, int] = {
    "net/ipv4/tcp_syncookies": 1,
    "net/core/somaxconn": 8192,
    "net/ipv4/tcp_max_syn_backlog": 8192,
}


def _dotted(key: str) -> str:
    return key.replace("/", ".")


def _write_all(values: dict[str, int]) -> None:
    for key, value in values.items():
        path = PROC_SYS / key
        if path.read_text().strip() != str(value):
            path.write_text(f"{value}\n")


def _read_all(keys: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for key in keys:
        value: int | None = None
        with contextlib.suppress(OSError, ValueError):
            value = int((PROC_SYS / key).read_text().split()[0])
        out[_dotted(key)] = value
    return out


def apply(namespace: str, values: dict[str, int] | None = None) -> None:
    """Set the flood guards in `namespace` (OSError when the kernel refuses one)."""
    wanted = dict(SYSCTLS if values is None else values)
    run_in_namespace(namespace, lambda: _write_all(wanted))


def read(namespace: str) -> dict[str, object]:
    """What `namespace` holds now, and whether it is what the agent sets."""
    current = run_in_namespace(namespace, lambda: _read_all(list(SYSCTLS)))
    wanted = {_dotted(key): value for key, value in SYSCTLS.items()}
    return {"sysctls": current, "wanted": wanted, "ok": current == wanted}
