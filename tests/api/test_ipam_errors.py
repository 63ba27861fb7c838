"""ipam raises its own errors; the API answers them with Octavia's status codes and words."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openha import ipam
from openha.db import transaction
from openha.models import Subnet
from tests.conftest import Client


def create(client: Client, subnet_id: str, address: str | None = None) -> Any:
    body: dict[str, object] = {"vip_subnet_id": subnet_id}
    if address is not None:
        body["vip_address"] = address
    return client.post("/v2/lbaas/loadbalancers", {"loadbalancer": body})


def test_allocate_raises_its_own_errors(
    session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    with transaction(session_factory) as s:
        subnet = s.get(Subnet, subnet_id)
        assert subnet is not None
        kw = {"project_id": "p", "device_owner": "test", "device_id": "d"}
        with pytest.raises(ipam.AddressOutsideSubnet):
            ipam.allocate(s, subnet, ip_address="203.0.113.9", **kw)
        with pytest.raises(ipam.AddressInUse):
            ipam.allocate(s, subnet, ip_address="198.51.100.1", **kw)  # the gateway
        subnet.allocation_pools = [{"start": "198.51.100.10", "end": "198.51.100.10"}]
        ipam.allocate(s, subnet, **kw)
        with pytest.raises(ipam.SubnetExhausted):
            ipam.allocate(s, subnet, **kw)


def test_the_api_maps_them_to_http(
    alice: Client, subnet_id: str, session_factory: sessionmaker[Session]
) -> None:
    outside = create(alice, subnet_id, "203.0.113.9")
    assert outside.status_code == 400
    assert outside.json()["faultstring"] == (
        f"IP address 203.0.113.9 is not in subnet {subnet_id} (198.51.100.0/24)."
    )
    assert create(alice, subnet_id, "198.51.100.77").status_code == 201
    taken = create(alice, subnet_id, "198.51.100.77")
    assert taken.status_code == 409
    assert taken.json()["faultstring"] == (
        f"IP address 198.51.100.77 is already allocated in subnet {subnet_id}."
    )
    with transaction(session_factory) as s:
        subnet = s.get(Subnet, subnet_id)
        assert subnet is not None
        subnet.allocation_pools = [{"start": "198.51.100.77", "end": "198.51.100.77"}]
    full = create(alice, subnet_id)
    assert full.status_code == 409
    assert full.json() == {
        "faultcode": "Client",
        "faultstring": f"No more IP addresses available on subnet {subnet_id}.",
        "debuginfo": None,
    }
