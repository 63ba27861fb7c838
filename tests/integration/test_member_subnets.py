"""Members on a subnet other than the VIP's are reached through an extra instance leg."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stack import Stack, wait_for

from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(lab: Lab) -> Iterator[Stack]:
    stack = Stack(lab)
    try:
        stack.add_agent()
        yield stack
    finally:
        stack.close()


def test_member_on_another_subnet(stack: Stack, lab: Lab) -> None:
    with Lab() as backend_lab:
        backend = BackendServer(backend_lab, "far")
        net = stack.admin.post(
            "/v2.0/networks",
            json={
                "network": {
                    "name": "backend",
                    "shared": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": backend_lab.bridge,
                    "openha:bridge_managed": False,
                }
            },
        )
        assert net.status_code == 201, net.text
        hosts = list(backend_lab.network.hosts())
        sub = stack.admin.post(
            "/v2.0/subnets",
            json={
                "subnet": {
                    "network_id": net.json()["network"]["id"],
                    "cidr": str(backend_lab.network),
                    "ip_version": 4,
                    "gateway_ip": None,
                    "allocation_pools": [{"start": str(hosts[100]), "end": str(hosts[200])}],
                }
            },
        )
        assert sub.status_code == 201, sub.text
        subnet_id = sub.json()["subnet"]["id"]

        lb = stack.create(
            "loadbalancers",
            "loadbalancer",
            {
                "vip_subnet_id": stack.subnet_id,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": "far",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [
                                {
                                    "address": backend.ip,
                                    "protocol_port": backend.port,
                                    "subnet_id": subnet_id,
                                }
                            ],
                        },
                    }
                ],
            },
        )
        stack.wait_active(lb["id"])
        client = ClientNamespace(lab)
        url = f"http://{lb['vip_address']}/"
        resp = wait_for(lambda: _get(client, url), 15, what="member reached")
        assert resp.json()["server"] == "far"
        # The instance holds an address of its own on the member subnet.
        ports = stack.admin.get("/v2.0/ports", params={"network_id": net.json()["network"]["id"]})
        assert len(ports.json()["ports"]) == 1

        stack.tenant.delete(f"/v2/lbaas/loadbalancers/{lb['id']}", params={"cascade": "true"})
        wait_for(
            lambda: stack.tenant.get(f"/v2/lbaas/loadbalancers/{lb['id']}").status_code == 404,
            30,
            what="LB deleted",
        )
        assert stack.admin.get("/v2.0/ports").json()["ports"] == []


def _get(client: ClientNamespace, url: str):  # type: ignore[no-untyped-def]
    try:
        resp = client.request(url, timeout=2)
    except OSError:
        return None
    return resp if resp.status == 200 else None
