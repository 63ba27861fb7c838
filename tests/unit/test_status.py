"""Status roll-up from HAProxy check results."""

from __future__ import annotations

import pytest

from openha.domain.spec import (
    HealthMonitorSpec,
    L7PolicySpec,
    ListenerSpec,
    LoadBalancerSpec,
    MemberSpec,
    PoolSpec,
    SubnetSpec,
)
from openha.domain.status import derive, member_status
from openha.providers.noop import NoopProvider

SUBNET = SubnetSpec(id="s", cidr="10.0.0.0/24", network_id="n")


def lb(members: tuple[MemberSpec, ...], hm: bool = True, lb_up: bool = True) -> LoadBalancerSpec:
    pool = PoolSpec(
        id="p",
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        members=members,
        health_monitor=HealthMonitorSpec(id="h", type="HTTP", delay=1, timeout=1, max_retries=1)
        if hm
        else None,
    )
    listener = ListenerSpec(id="l", protocol="HTTP", protocol_port=80, default_pool_id="p")
    return LoadBalancerSpec(
        id="lb",
        project_id="x",
        generation=1,
        vip_address="10.0.0.5",
        vip_subnet=SUBNET,
        listeners=(listener,),
        pools=(pool,),
        admin_state_up=lb_up,
    )


M1 = MemberSpec(id="m1", address="10.0.0.11", protocol_port=80)
M2 = MemberSpec(id="m2", address="10.0.0.12", protocol_port=80)


@pytest.mark.parametrize(
    ("reported", "admin_up", "monitored", "expected"),
    [
        ("UP", True, True, "ONLINE"),
        ("DOWN", True, True, "ERROR"),
        ("UP 1/3", True, True, "ONLINE"),
        ("DOWN 1/2", True, True, "ERROR"),
        ("MAINT", True, True, "OFFLINE"),
        ("DRAIN", True, True, "DRAINING"),
        ("UP", True, False, "NO_MONITOR"),
        ("no check", True, False, "NO_MONITOR"),
        (None, True, True, "OFFLINE"),
        (None, True, False, "NO_MONITOR"),
        # Admin-down: OFFLINE because HAProxy holds the server in maintenance...
        ("MAINT", False, True, "OFFLINE"),
        ("MAINT", False, False, "OFFLINE"),
        (None, False, True, "OFFLINE"),
        # ...and what HAProxy still serves shows: the data plane drifted.
        ("UP", False, True, "ONLINE"),
        ("no check", False, False, "NO_MONITOR"),
    ],
)
def test_member_status(
    reported: str | None, admin_up: bool, monitored: bool, expected: str
) -> None:
    assert member_status(reported, admin_up, monitored) == expected


def test_all_members_up_is_online() -> None:
    state = derive(lb((M1, M2)), {"m1": "UP", "m2": "UP"}, True)
    assert (state.load_balancer, state.listeners["l"], state.pools["p"]) == (
        "ONLINE",
        "ONLINE",
        "ONLINE",
    )


def test_one_member_down_degrades_up_the_tree() -> None:
    state = derive(lb((M1, M2)), {"m1": "UP", "m2": "DOWN"}, True)
    assert state.members == {"m1": "ONLINE", "m2": "ERROR"}
    assert state.pools["p"] == "DEGRADED"
    assert state.listeners["l"] == "DEGRADED"
    assert state.load_balancer == "DEGRADED"


def test_all_members_down_is_pool_error() -> None:
    state = derive(lb((M1, M2)), {"m1": "DOWN", "m2": "DOWN"}, True)
    assert state.pools["p"] == "ERROR"
    assert state.load_balancer == "DEGRADED"


def test_dead_haproxy_is_lb_error() -> None:
    assert derive(lb((M1,)), {"m1": "UP"}, False).load_balancer == "ERROR"


def test_admin_down_lb_is_offline() -> None:
    state = derive(lb((M1,), lb_up=False), {"m1": "UP"}, True)
    assert state.load_balancer == "OFFLINE"
    assert state.members["m1"] == "OFFLINE"


def test_no_monitor_members() -> None:
    state = derive(lb((M1,), hm=False), {}, True)
    assert state.members["m1"] == "NO_MONITOR"
    assert state.pools["p"] == "ONLINE"


def test_a_pool_no_listener_uses_is_offline() -> None:
    """Octavia's amphorae never report such a pool: it stays OFFLINE, members and all."""
    spec = lb((M1,))
    unused = spec.pools[0].model_copy(update={"id": "q"})
    redirected = spec.pools[0].model_copy(update={"id": "r"})
    policy = L7PolicySpec(id="pol", action="REDIRECT_TO_POOL", position=1, redirect_pool_id="r")
    listener = spec.listeners[0].model_copy(update={"l7policies": (policy,)})
    spec = spec.model_copy(
        update={"listeners": (listener,), "pools": (*spec.pools, unused, redirected)}
    )
    state = derive(spec, {"m1": "UP"}, True)
    assert (state.pools["p"], state.pools["q"], state.pools["r"]) == ("ONLINE", "OFFLINE", "ONLINE")


def test_the_noop_provider_reports_a_pool_no_listener_uses_offline() -> None:
    used = lb((M1,))
    unused = used.model_copy(update={"listeners": ()})
    provider = NoopProvider.__new__(NoopProvider)  # observe reads nothing of its context
    assert provider.observe(used).pools["p"] == "ONLINE"
    assert provider.observe(used).members["m1"] == "ONLINE"
    state = provider.observe(unused)
    assert state.pools["p"] == "OFFLINE"
    assert state.members["m1"] == "OFFLINE"  # its monitor never checks it
    assert state.health_monitors["h"] == "ONLINE"
