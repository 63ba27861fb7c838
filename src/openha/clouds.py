"""clouds.yaml for OpenHA: lets openstacksdk and the `openstack` CLI talk to OpenHA unchanged.

OpenHA has no Keystone. keystoneauth's `admin_token` plugin sends a fixed token
as X-Auth-Token to a fixed endpoint for every service, which is exactly what
OpenHA's API expects: the load-balancer service and the network service
(subnets, for `--vip-subnet-id NAME`) both live at that endpoint.

The file holds a secret, so it is written atomically with mode 0600. It is
written without PyYAML (a client-side dependency only): every value is emitted
as a double-quoted JSON string, which is also a valid YAML scalar.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

CLOUD_NAME = "openha"
FILE_NAME = "clouds.yaml"
# Every service the clients may look up lives at the one endpoint.
REGION = "RegionOne"


NO_TOKEN = "no token: give --token (or OS_TOKEN), or start `openha up` first"


def api_access(
    state_dir: Path, api_bind: str, api_url: str | None, token: str | None
) -> tuple[str, str | None]:
    """The API's URL and a token for a command: those given, else what `openha up`
    wrote to <state_dir>/clouds.yaml (None: no token anywhere)."""
    found = read(state_dir / FILE_NAME)
    url = api_url or (found[0] if found else endpoint_for_bind(api_bind))
    return url.rstrip("/"), token or (found[1] if found else None)


def endpoint_for_bind(api_bind: str) -> str:
    """The URL a local client uses to reach an API bound to `host:port`."""
    host, _, port = api_bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def cloud_config(endpoint: str, token: str) -> dict[str, Any]:
    return {
        "auth_type": "admin_token",
        "auth": {"endpoint": endpoint, "token": token},
        "region_name": REGION,
        "interface": "public",
    }


def render(endpoint: str, token: str, cloud: str = CLOUD_NAME) -> str:
    cfg = cloud_config(endpoint, token)
    q = json.dumps
    lines = [
        "# Written by `openha up`: an admin token for the local OpenHA API.",
        f"# Try: OS_CLIENT_CONFIG_FILE=<this file> openstack --os-cloud {cloud} loadbalancer list",
        "clouds:",
        f"  {cloud}:",
        f"    auth_type: {q(cfg['auth_type'])}",
        "    auth:",
        f"      endpoint: {q(endpoint)}",
        f"      token: {q(token)}",
        f"    region_name: {q(cfg['region_name'])}",
        f"    interface: {q(cfg['interface'])}",
        "",
    ]
    return "\n".join(lines)


def write(path: Path, endpoint: str, token: str, cloud: str = CLOUD_NAME) -> Path:
    """Write the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".clouds-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render(endpoint, token, cloud))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_TOKEN_LINE = re.compile(r'^\s+token:\s*"(?P<token>[^"\\]*)"\s*$', re.MULTILINE)
_ENDPOINT_LINE = re.compile(r'^\s+endpoint:\s*"(?P<endpoint>[^"\\]*)"\s*$', re.MULTILINE)


def read(path: Path) -> tuple[str, str] | None:
    """(endpoint, token) from a file this module wrote, or None when absent or foreign."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    token = _TOKEN_LINE.search(text)
    endpoint = _ENDPOINT_LINE.search(text)
    if token is None or endpoint is None:
        return None
    return endpoint.group("endpoint"), token.group("token")
