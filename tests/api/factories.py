"""Small helpers that create a load balancer tree through the API, for every API test module.

Each helper POSTs a minimal valid body (overridable with keyword arguments),
asserts the 201 and returns the object from its envelope.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import Client, wait_for

# Octavia's 403 for a caller the policy refuses (another project's object included).
POLICY_REFUSED = "Policy does not allow this request to be performed."


def _create(client: Client, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(path, {key: body})
    assert resp.status_code == 201, resp.text
    return resp.json()[key]


def create_lb(client: Client, subnet_id: str, **extra: Any) -> dict[str, Any]:
    return _create(
        client, "/v2/lbaas/loadbalancers", "loadbalancer", {"vip_subnet_id": subnet_id, **extra}
    )


def create_listener(
    client: Client,
    lb_id: str,
    protocol: str = "HTTP",
    protocol_port: int = 80,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "loadbalancer_id": lb_id,
        "protocol": protocol,
        "protocol_port": protocol_port,
        **extra,
    }
    return _create(client, "/v2/lbaas/listeners", "listener", body)


def create_pool(
    client: Client,
    lb_id: str | None = None,
    listener_id: str | None = None,
    protocol: str = "HTTP",
    lb_algorithm: str = "ROUND_ROBIN",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"protocol": protocol, "lb_algorithm": lb_algorithm, **extra}
    if lb_id is not None:
        body["loadbalancer_id"] = lb_id
    if listener_id is not None:
        body["listener_id"] = listener_id
    return _create(client, "/v2/lbaas/pools", "pool", body)


def create_member(
    client: Client,
    pool_id: str,
    address: str = "192.0.2.10",
    protocol_port: int = 8080,
    **extra: Any,
) -> dict[str, Any]:
    body = {"address": address, "protocol_port": protocol_port, **extra}
    return _create(client, f"/v2/lbaas/pools/{pool_id}/members", "member", body)


def create_hm(
    client: Client,
    pool_id: str,
    type: str = "HTTP",
    delay: int = 5,
    timeout: int = 3,
    max_retries: int = 3,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "pool_id": pool_id,
        "type": type,
        "delay": delay,
        "timeout": timeout,
        "max_retries": max_retries,
        **extra,
    }
    return _create(client, "/v2/lbaas/healthmonitors", "healthmonitor", body)


def wait_lb_active(client: Client, lb_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait (with the `controller` fixture running) until the LB is ACTIVE again."""

    def active() -> Any:
        body = client.get(f"/v2/lbaas/loadbalancers/{lb_id}").json()["loadbalancer"]
        return body if body["provisioning_status"] == "ACTIVE" else None

    return wait_for(active, timeout=timeout)
