"""The controller's client for agents: put, delete and read instances over authenticated HTTP."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from openha.domain.spec import InstanceSpec

TIMEOUT = httpx.Timeout(30.0, connect=3.0)


@dataclass(frozen=True)
class AgentAddress:
    url: str
    secret: str
    # TLS verification for https agents: a CA bundle path, or True for the system CAs.
    verify: str | bool = True


class AgentError(Exception):
    """The agent could not be reached or answered with an unexpected status."""


class AgentRejected(Exception):
    """The agent refused the config (it keeps serving the last good one)."""


def _client(agent: AgentAddress) -> httpx.Client:
    return httpx.Client(
        base_url=agent.url.rstrip("/"),
        headers={"Authorization": f"Bearer {agent.secret}"},
        timeout=TIMEOUT,
        verify=ssl.create_default_context(cafile=agent.verify)
        if isinstance(agent.verify, str)
        else agent.verify,
    )


def put_instance(agent: AgentAddress, spec: InstanceSpec) -> dict[str, Any]:
    try:
        with _client(agent) as client:
            resp = client.put(
                f"/v1/instances/{spec.instance_id}",
                content=spec.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
    except httpx.HTTPError as exc:
        raise AgentError(f"agent {agent.url} unreachable: {exc}") from exc
    if resp.status_code == 422:
        body = _json(resp)
        raise AgentRejected(str(body.get("last_error") or body.get("detail") or resp.text))
    if resp.status_code != 200:
        raise AgentError(f"agent {agent.url} answered {resp.status_code}: {resp.text[:500]}")
    return _json(resp)


def delete_instance(agent: AgentAddress, instance_id: str) -> None:
    try:
        with _client(agent) as client:
            resp = client.delete(f"/v1/instances/{instance_id}")
    except httpx.HTTPError as exc:
        raise AgentError(f"agent {agent.url} unreachable: {exc}") from exc
    if resp.status_code not in (200, 204, 404):
        raise AgentError(f"agent {agent.url} answered {resp.status_code}: {resp.text[:500]}")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
