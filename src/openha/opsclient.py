"""What `openha migrate|drain|undrain|operation|sync|reload|recover` do: operations.

A thin client over `/v2/manage` for the CLI: it resolves names, starts an action
(202 and an operation), and shows or follows the operation with rich.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from openha import clouds
from openha.settings import Settings

FINAL = ("SUCCEEDED", "FAILED")


class OpsError(Exception):
    """The API refused or could not be reached: the message says why."""


def connect(settings: Settings, api_url: str | None, token: str | None) -> httpx.Client:
    url, secret = clouds.api_access(settings.state_dir, settings.api_bind, api_url, token)
    if not secret:
        raise OpsError(clouds.NO_TOKEN)
    return httpx.Client(base_url=url, headers={"X-Auth-Token": secret}, timeout=30, trust_env=False)


def _call(api: httpx.Client, method: str, path: str, **kw: Any) -> dict[str, Any]:
    try:
        resp = api.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise OpsError(f"cannot reach {api.base_url}: {exc}") from None
    if resp.status_code >= 400:
        raise OpsError(f"{resp.status_code}: {resp.text[:300]}")
    return dict(resp.json())


def lb_id(api: httpx.Client, ident: str) -> str:
    try:
        return str(uuid.UUID(ident))
    except ValueError:
        found = _call(api, "GET", "/v2/lbaas/loadbalancers", params={"name": ident})
        matches = found.get("loadbalancers", [])
        if len(matches) != 1:
            raise OpsError(f"{len(matches)} load balancers are named {ident!r}") from None
        return str(matches[0]["id"])


def migrate(api: httpx.Client, lb: str, host: str | None, zone: str | None) -> dict[str, Any]:
    body = {"host": host} if host else {"availability_zone": zone}
    path = f"/v2/manage/loadbalancers/{lb_id(api, lb)}/migrate"
    return dict(_call(api, "POST", path, json=body)["operation"])


def repair(api: httpx.Client, lb: str, kind: str) -> dict[str, Any]:
    """Start `sync`, `reload` or `force-recover` of a load balancer: its operation."""
    path = f"/v2/manage/loadbalancers/{lb_id(api, lb)}/{kind}"
    return dict(_call(api, "POST", path)["operation"])


def host_action(api: httpx.Client, host: str, action: str) -> dict[str, Any]:
    return _call(api, "POST", f"/v2/manage/hosts/{host}/{action}")


def operation(api: httpx.Client, op_id: str) -> dict[str, Any]:
    return dict(_call(api, "GET", f"/v2/manage/operations/{op_id}")["operation"])


def follow(
    api: httpx.Client, op_id: str, console: Console, interval: float = 1.0
) -> dict[str, Any]:
    """Poll until the operation is over, printing each new step as it lands."""
    shown = 0
    while True:
        op = operation(api, op_id)
        for step in op["steps"][shown:]:
            mark = "FAIL " if step.get("ok") is False else ""
            console.print(f"{step['at']}  {mark}{step['step']:<10} {step.get('detail', '')}")
        shown = len(op["steps"])
        if op["state"] in FINAL:
            return op
        time.sleep(interval)


def show(op: dict[str, Any], console: Console) -> None:
    table = Table(show_header=False, box=None)
    for key in ("id", "kind", "target_type", "target_id", "state", "requested_by", "error"):
        if op.get(key):
            table.add_row(key, str(op[key]))
    if op.get("progress"):
        table.add_row("progress", ", ".join(f"{k}={v}" for k, v in op["progress"].items()))
    console.print(table)
    steps = Table("at", "step", "detail", box=None)
    for step in op.get("steps", []):
        steps.add_row(step["at"], step["step"], step.get("detail", ""))
    console.print(steps)
