"""The controller's client for agents: put, delete and probe instances over authenticated HTTP.

Every call has a short deadline (`agent_timeout`, 2 s to connect): a hung agent
costs the reconciles of its own host that long, and never more.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from openha.domain.spec import InstanceSpec

if TYPE_CHECKING:
    from openha.settings import Settings

CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class AgentAddress:
    url: str
    secret: str
    # TLS verification for https agents: a CA bundle path, or True for the system CAs.
    verify: str | bool = True
    timeout: float = 15.0


def address(settings: Settings, url: str, secret: str) -> AgentAddress:
    ca = settings.agent_ca_file
    return AgentAddress(url, secret, str(ca) if ca else True, settings.agent_timeout)


def key_refusal(url: str) -> str | None:
    """Why certificate keys may not be sent to the agent at `url`, or None when they may.

    Keys travel only over TLS, or to an agent on this machine's loopback (the
    all-in-one, the tests' stacks): never in clear across a network. Only literal
    loopback addresses and `localhost` count; any other name could resolve anywhere.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"certificate keys go to an agent only over TLS or on a loopback address, and "
        f"this agent is at {url}: give the agent OPENHA_AGENT_TLS_CERT and "
        f"OPENHA_AGENT_TLS_KEY (and the controller OPENHA_AGENT_CA_FILE)"
    )


class AgentError(Exception):
    """The agent could not be reached or answered with an unexpected status."""


class AgentRejected(Exception):
    """The agent refused the config (it keeps serving the last good one)."""


@functools.cache
def _tls(verify: str | bool) -> ssl.SSLContext:
    """The TLS context that checks agents' certificates, built once per CA setting.

    Building one loads a whole CA bundle (~50 ms of CPU here), and a client is made
    for every agent call, also to plain-HTTP agents: at fleet size that was a large
    part of the controller's work. A context is safe to share between threads.
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


def _client(agent: AgentAddress, timeout: float | None = None) -> httpx.Client:
    limit = timeout if timeout is not None else agent.timeout
    return httpx.Client(
        base_url=agent.url.rstrip("/"),
        headers={"Authorization": f"Bearer {agent.secret}"},
        timeout=httpx.Timeout(limit, connect=min(CONNECT_TIMEOUT, limit)),
        verify=_tls(agent.verify),
    )


def put_instance(agent: AgentAddress, spec: InstanceSpec, *, force: bool = False) -> dict[str, Any]:
    """Apply `spec`; `force` repairs drift even when the agent applied it already."""
    try:
        with _client(agent) as client:
            resp = client.put(
                f"/v1/instances/{spec.instance_id}",
                content=spec.model_dump_json(),
                headers={"Content-Type": "application/json"},
                params={"force": "true"} if force else None,
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


def retire_instance(agent: AgentAddress, instance_id: str) -> dict[str, Any] | None:
    """Have the agent give the instance's VIP away and drain it; None if it has no such."""
    return _call_or_none(agent, "POST", f"/v1/instances/{instance_id}/retire")


def get_instance(agent: AgentAddress, instance_id: str) -> dict[str, Any] | None:
    """The instance's status read now, or None if the agent has no such instance."""
    return _call_or_none(agent, "GET", f"/v1/instances/{instance_id}")


def answers(agent: AgentAddress, timeout: float) -> bool:
    """Whether the agent's process answers at all (`/v1/healthz`, no credential needed)."""
    try:
        with _client(agent, timeout) as client:
            return client.get("/v1/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def get_logs(
    agent: AgentAddress, lb_id: str, params: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """A load balancer's log records on one host: `{"records": [...], "cursor": "..."}`."""
    try:
        with _client(agent, timeout) as client:
            resp = client.get(f"/v1/loadbalancers/{lb_id}/logs", params=params)
    except httpx.HTTPError as exc:
        raise AgentError(f"agent {agent.url} unreachable: {exc}") from exc
    if resp.status_code != 200:
        raise AgentError(f"agent {agent.url} answered {resp.status_code}: {resp.text[:500]}")
    return _json(resp)


def get_diagnostics(
    agent: AgentAddress, instance_id: str, probe: bool, timeout: float
) -> dict[str, Any]:
    """One instance's diagnostics, read live by its agent (see `agent.diagnostics`)."""
    params = {"probe": "members"} if probe else {}
    return _call(agent, "GET", f"/v1/instances/{instance_id}/diagnostics", timeout, params)


def get_top_talkers(
    agent: AgentAddress, instance_id: str, limit: int, timeout: float
) -> dict[str, Any]:
    """One instance's busiest sources, from its protection stick table."""
    params = {"limit": str(limit)}
    return _call(agent, "GET", f"/v1/instances/{instance_id}/top-talkers", timeout, params)


def reload_instance(agent: AgentAddress, instance_id: str) -> dict[str, Any]:
    """A hitless reload of one instance's HAProxy from its last applied config."""
    return _call(agent, "POST", f"/v1/instances/{instance_id}/reload")


def get_config(agent: AgentAddress, instance_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """An instance's config files as its agent has them now."""
    return _call(agent, "GET", f"/v1/instances/{instance_id}/config", timeout)


def _call(
    agent: AgentAddress,
    method: str,
    path: str,
    timeout: float | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    found = _call_or_none(agent, method, path, timeout, params)
    if found is None:
        raise AgentError(f"agent {agent.url} has no {path}")
    return found


def _call_or_none(
    agent: AgentAddress,
    method: str,
    path: str,
    timeout: float | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The agent's JSON answer; None when it answers 404 (no such instance)."""
    try:
        with _client(agent, timeout) as client:
            resp = client.request(method, path, params=params)
    except httpx.HTTPError as exc:
        raise AgentError(f"agent {agent.url} unreachable: {exc}") from exc
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise AgentError(f"agent {agent.url} answered {resp.status_code}: {resp.text[:500]}")
    return _json(resp)
