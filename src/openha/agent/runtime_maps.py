"""Replace a running HAProxy's map with a file's content through the runtime API, atomically.

HAProxy reads map files at start-up only; afterwards its copy changes through the
runtime API. A whole new content goes in as a new version of the map (`prepare
map`), filled in chunks (`add map @<version> <map> <<` followed by lines, each chunk
well under the CLI's buffer), then made current at once (`commit map`): requests
see either the old entries or the new ones, never a half-filled map, and a map of
thousands of entries costs a few round trips. The file itself is written first
by the agent, so a process started later reads the same content.

A protection profile's rules read their thresholds from process-wide variables,
not from the limits map (`openha.render.protection`): once the map changed, a
connection to the process's refresh listener reads it into them again
(`refresh_limits`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

# Bytes of map lines per `add map` payload: HAProxy keeps a payload in one buffer
# (tune.bufsize, 16 KiB by default).
CHUNK_BYTES = 8000

_VERSION = re.compile(r"New version created:\s*(\d+)")


class MapUpdateError(Exception):
    """HAProxy refused a map command; the caller reloads instead."""


def chunks(content: str, limit: int = CHUNK_BYTES) -> list[str]:
    """`content`'s non-empty lines grouped into payloads of at most `limit` bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in content.splitlines():
        if not line.strip():
            continue
        if current and size + len(line) + 1 > limit:
            out.append("".join(current))
            current, size = [], 0
        current.append(line + "\n")
        size += len(line) + 1
    if current:
        out.append("".join(current))
    return out


def replace_map(runtime: Callable[[str], str], path: str, content: str) -> int:
    """Make `content` the entries of the running map loaded from `path`; the entry count.

    `runtime` sends one command and returns HAProxy's answer (`HAProxyInstance.runtime`).
    """
    if any(ch.isspace() for ch in path):
        raise MapUpdateError(f"refusing map path {path!r}")
    answer = runtime(f"prepare map {path}")
    found = _VERSION.search(answer)
    if not found:
        raise MapUpdateError(f"prepare map {path}: {answer.strip() or 'no answer'}")
    version = found.group(1)
    count = 0
    for payload in chunks(content):
        # The payload ends with an empty line: the command's own newline after it.
        answer = runtime(f"add map @{version} {path} <<\n{payload}")
        if answer.strip():
            raise MapUpdateError(f"add map {path}: {answer.strip()[:300]}")
        count += payload.count("\n")
    answer = runtime(f"commit map @{version} {path}")
    if answer.strip():
        raise MapUpdateError(f"commit map {path}: {answer.strip()[:300]}")
    return count


def refresh_limits(refresh_socket: Path, timeout: float = 2.0) -> None:
    """Have the HAProxy listening on `refresh_socket` read its limits map into its
    threshold variables again; returns once it has.

    The listener's rules set the variables then reject the connection: the close
    (or a reset) the agent reads says they ran.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(refresh_socket))
            while sock.recv(64):
                pass
    except ConnectionResetError:
        return
    except OSError as exc:
        raise MapUpdateError(f"refresh of the limits through {refresh_socket}: {exc}") from exc
