"""HAProxy provider bookkeeping: VRRP router ids per segment, placement errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openha.controller.snapshot import build
from openha.db import transaction
from openha.models import LoadBalancer, Subnet, VrrpRouterId
from openha.providers.haproxy import allocation
from openha.providers.haproxy.placement import NoHostAvailable


def make_lb(s: Session, subnet: Subnet) -> LoadBalancer:
    lb = LoadBalancer(
        project_id="p",
        provider="haproxy",
        vip_subnet_id=subnet.id,
        vip_network_id=subnet.network_id,
        vip_address="198.51.100.5",
    )
    s.add(lb)
    s.flush()
    return lb


def test_vrrp_ids_are_unique_per_segment_and_run_out_clearly(
    session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    with transaction(session_factory) as s:
        subnet = s.get(Subnet, subnet_id)
        assert subnet is not None
        first = make_lb(s, subnet)
        spec = build(s, first.id, None)
        vrid = allocation.hold_vrid(s, first, spec)
        assert vrid == 1
        assert allocation.hold_vrid(s, first, spec) == 1  # held, not allocated twice
        for _ in range(254):
            lb = make_lb(s, subnet)
            allocation.hold_vrid(s, lb, build(s, lb.id, None))
        assert s.query(VrrpRouterId).count() == 255
        last = make_lb(s, subnet)
        with pytest.raises(NoHostAvailable, match="All 255 VRRP router ids are in use"):
            allocation.hold_vrid(s, last, build(s, last.id, None))


def test_zone_comes_from_the_profile_or_the_zone_name(
    session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    from openha.models import AvailabilityZone, AvailabilityZoneProfile

    with transaction(session_factory) as s:
        subnet = s.get(Subnet, subnet_id)
        assert subnet is not None
        plain = AvailabilityZoneProfile(provider_name="haproxy", availability_zone_data="{}")
        mapped = AvailabilityZoneProfile(
            provider_name="haproxy", availability_zone_data='{"host_zone": "rack-7"}'
        )
        s.add_all([plain, mapped])
        s.flush()
        s.add_all(
            [
                AvailabilityZone(name="az-a", availability_zone_profile_id=plain.id),
                AvailabilityZone(name="az-b", availability_zone_profile_id=mapped.id),
            ]
        )
        lb = make_lb(s, subnet)
        assert allocation.host_zone(s, lb) is None
        lb.availability_zone = "az-a"
        assert allocation.host_zone(s, lb) == "az-a"
        lb.availability_zone = "az-b"
        assert allocation.host_zone(s, lb) == "rack-7"


def test_haproxy_flavor_options_are_checked(admin: Any) -> None:
    def profile(data: str) -> int:
        return int(
            admin.post(
                "/v2/lbaas/flavorprofiles",
                {"flavorprofile": {"name": "p", "provider_name": "haproxy", "flavor_data": data}},
            ).status_code
        )

    assert profile('{"loadbalancer_topology": "ACTIVE_STANDBY", "access_log": "errors"}') == 201
    assert profile('{"access_log": "verbose"}') == 400
    assert profile('{"loadbalancer_topology": "ACTIVE_ACTIVE"}') == 400
    assert profile('{"compute_flavor": "x"}') == 400
    # Log targets reach rsyslog's configuration: only strictly valid ones are stored.
    good = (
        '{"request_id_header": true, "log_targets": [{"type": "syslog", "host": "logs.example.com",'
        ' "port": 6514, "protocol": "tls"}, {"type": "s3", "endpoint": "https://s3.example.com",'
        ' "bucket": "lb-logs", "interval": 60}]}'
    )
    assert profile(good) == 201
    for bad in (
        '{"log_targets": [{"type": "syslog", "host": "x\\" action(type=\\"omfile\\")"}]}',
        '{"log_targets": [{"type": "syslog", "host": "logs.example.com", "port": 70000}]}',
        '{"log_targets": [{"type": "s3", "endpoint": "https://s3/x?y", "bucket": "b-1"}]}',
        '{"log_targets": {"type": "syslog"}}',
        '{"request_id_header": "yes"}',
    ):
        assert profile(bad) == 400, bad


def test_haproxy_provider_refuses_what_it_cannot_serve(alice: Any, subnet_id: str) -> None:
    lb = alice.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": subnet_id, "provider": "haproxy"}},
    ).json()["loadbalancer"]

    def listener(protocol: str) -> Any:
        return alice.post(
            "/v2/lbaas/listeners",
            {
                "listener": {
                    "loadbalancer_id": lb["id"],
                    "protocol": protocol,
                    "protocol_port": 443,
                }
            },
        )

    for protocol in ("UDP", "SCTP"):
        resp = listener(protocol)
        assert resp.status_code == 400, resp.text
        assert "Provider 'haproxy' does not support a requested option" in resp.text
    assert listener("TCP").status_code == 201
    pool = alice.post(
        "/v2/lbaas/pools",
        {
            "pool": {
                "loadbalancer_id": lb["id"],
                "protocol": "TCP",
                "lb_algorithm": "SOURCE_IP_PORT",
            }
        },
    )
    assert pool.status_code == 400 and "SOURCE_IP_PORT" in pool.text


def test_every_installed_provider_loads(app: Any) -> None:
    # The registry logs a broken third-party driver instead of failing: ours must load.
    assert {"haproxy", "noop"} <= set(app.state.providers.names)
