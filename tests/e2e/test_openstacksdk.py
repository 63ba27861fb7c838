"""openstacksdk's load_balancer proxy against a live OpenHA, configured by clouds.yaml only."""

from __future__ import annotations

import os
from typing import Any

import openstack
import pytest

from tests.e2e.conftest import SUBNET_NAME, OpenHA

pytestmark = pytest.mark.e2e
INTERVAL = 0.2  # the SDK's waits poll every `interval` seconds
WAIT = 30


@pytest.fixture
def conn(openha: OpenHA, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(openha.clouds_path))
    connection = openstack.connect(cloud="openha")
    yield connection
    connection.close()


def test_sdk_full_tree(conn: Any, openha: OpenHA) -> None:
    lbs = conn.load_balancer
    subnet = conn.network.find_subnet(SUBNET_NAME, ignore_missing=False)
    assert subnet.id == openha.subnet_id

    lb = lbs.create_load_balancer(name="sdk-lb", vip_subnet_id=subnet.id, tags=["e2e"])
    assert lb.provisioning_status == "PENDING_CREATE"

    def settled() -> Any:
        return lbs.wait_for_load_balancer(lb.id, interval=INTERVAL, wait=WAIT)

    lb = settled()
    assert lb.provisioning_status == "ACTIVE"
    assert lb.vip_subnet_id == subnet.id

    listener = lbs.create_listener(
        name="sdk-l", protocol="HTTP", protocol_port=8080, load_balancer_id=lb.id
    )
    settled()
    pool = lbs.create_pool(
        name="sdk-p", protocol="HTTP", lb_algorithm="LEAST_CONNECTIONS", listener_id=listener.id
    )
    settled()
    member = lbs.create_member(pool, address="192.0.2.20", protocol_port=80, weight=3)
    settled()
    hm = lbs.create_health_monitor(
        pool_id=pool.id, type="HTTP", delay=2, timeout=1, max_retries=2, url_path="/healthz"
    )
    settled()
    policy = lbs.create_l7_policy(
        listener_id=listener.id, action="REDIRECT_TO_POOL", redirect_pool_id=pool.id, position=1
    )
    settled()
    rule = lbs.create_l7_rule(
        policy, type="HOST_NAME", compare_type="EQUAL_TO", value="www.example.com"
    )
    settled()

    assert lbs.get_listener(listener.id).provisioning_status == "ACTIVE"
    assert lbs.get_pool(pool.id).provisioning_status == "ACTIVE"
    got_member = lbs.get_member(member.id, pool)
    assert (got_member.provisioning_status, got_member.weight) == ("ACTIVE", 3)
    got_hm = lbs.get_health_monitor(hm.id)
    assert (got_hm.provisioning_status, got_hm.url_path) == ("ACTIVE", "/healthz")
    assert lbs.get_l7_policy(policy.id).redirect_pool_id == pool.id
    assert lbs.get_l7_rule(rule.id, policy).rule_value == "www.example.com"

    # An update goes through the same pending → active cycle.
    lbs.update_member(member, pool, weight=7)
    settled()
    assert lbs.get_member(member.id, pool).weight == 7

    assert lbs.find_load_balancer("sdk-lb", ignore_missing=False).id == lb.id
    assert [x.id for x in lbs.load_balancers(tags="e2e")] == [lb.id]
    stats = lbs.get_load_balancer_statistics(lb.id)
    assert stats.bytes_in == 0 and stats.total_connections == 0

    lbs.delete_load_balancer(lb.id, cascade=True)
    lbs.wait_for_delete(lb, interval=INTERVAL, wait=WAIT)
    with pytest.raises(openstack.exceptions.NotFoundException):
        lbs.find_load_balancer("sdk-lb", ignore_missing=False)
