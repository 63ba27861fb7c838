"""What the agent remembers across restarts, under its `agent_dir`.

Per instance (in the instance directory): the last applied `InstanceSpec`
(`spec.json`), the last good HAProxy config (`haproxy.cfg`), what the serving HAProxy
process loaded (`haproxy.loaded.json`, see `agent.haproxy`), the candidate of an apply
in progress and the mark of a delete in progress (see `agent.paths`), and the last
status (`status.json`). Agent-wide: the secret the controller must present
(`agent_secret`, mode 600) and the host id the API gave at registration. With these,
a restarted agent adopts the HAProxy processes that kept running without touching
traffic, re-applies where an apply was cut short, finishes cut-short deletes, and
restarts stopped ones once the controller confirms it still wants them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from pathlib import Path

from pydantic import ValidationError

from openha.agent.haproxy import atomic_write
from openha.agent.paths import InstancePaths
from openha.agent.protocol import InstanceStatus
from openha.domain.spec import InstanceSpec

SECRET_FILE = "agent_secret"
AGENT_FILE = "agent.json"


def ensure_agent_dir(agent_dir: Path) -> None:
    # Traversable, not listable: keepalived's unprivileged script user must reach each
    # instance's notify script and vrrp/ directory; everything else in here is root's
    # alone by its own mode (`agent.sandbox`).
    (agent_dir / "instances").mkdir(parents=True, exist_ok=True)
    (agent_dir / "instances").chmod(0o711)
    agent_dir.chmod(0o711)


def load_or_create_secret(agent_dir: Path) -> str:
    """The agent's bearer secret, generated on first start and kept private."""
    path = agent_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        secret = path.read_text().strip()
        if secret:
            return secret
    secret = secrets.token_urlsafe(32)
    atomic_write(path, secret + "\n", 0o600)
    return secret


def load_agent_info(agent_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((agent_dir / AGENT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_agent_info(agent_dir: Path, info: dict[str, str]) -> None:
    atomic_write(agent_dir / AGENT_FILE, json.dumps(info, indent=1), 0o600)


def instance_ids(agent_dir: Path) -> list[str]:
    """Instances with a directory under this agent (applied or half-made)."""
    base = agent_dir / "instances"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir())


def save_spec(paths: InstancePaths, spec: InstanceSpec) -> None:
    atomic_write(paths.spec_file, spec.model_dump_json(indent=1), 0o600)


def load_spec(paths: InstancePaths) -> InstanceSpec | None:
    try:
        return InstanceSpec.model_validate_json(paths.spec_file.read_text())
    except (OSError, ValidationError):
        return None


def save_status(paths: InstancePaths, status: InstanceStatus) -> None:
    # Counters change every second; only the apply outcome is worth keeping.
    slim = status.model_copy(update={"listeners": {}, "members": {}, "pools": {}})
    atomic_write(paths.status_file, slim.model_dump_json(indent=1), 0o600)


def load_status(paths: InstancePaths) -> InstanceStatus | None:
    try:
        return InstanceStatus.model_validate_json(paths.status_file.read_text())
    except (OSError, ValidationError):
        return None
