"""The haproxy provider's placement planner: pure, so every rule is checked without a database."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from openha.domain import constants as c
from openha.providers.haproxy.placement import (
    HostView,
    InstanceView,
    NoHostAvailable,
    Plan,
    choose_host,
    plan,
    roles_for,
)

PAIR = roles_for("ACTIVE_STANDBY")
SINGLE = roles_for("SINGLE")


def host(
    ident: str, zone: str = "az1", capacity: int = 10, up: bool = True, enabled: bool = True
) -> HostView:
    return HostView(
        id=ident,
        name=f"host-{ident}",
        availability_zone=zone,
        capacity=capacity,
        up=up,
        schedulable=up and enabled,
    )


HOSTS = [host("a"), host("b"), host("c", zone="az2"), host("d", enabled=False)]


def make(
    roles: tuple[str, ...],
    instances: list[InstanceView],
    hosts: list[HostView] = HOSTS,
    load: Mapping[str, int] | None = None,
    **kw: object,
) -> Plan:
    calls: list[int] = []

    def count() -> Mapping[str, int]:
        calls.append(1)
        return load or {}

    out = plan(
        roles,
        instances,
        hosts,
        count,
        availability_zone=kw.pop("availability_zone", None),  # type: ignore[arg-type]
        failover_paused=kw.pop("failover_paused", None),  # type: ignore[arg-type]
        avoid_host_id=kw.pop("avoid_host_id", None),  # type: ignore[arg-type]
        target_host_id=kw.pop("target_host_id", None),  # type: ignore[arg-type]
    )
    assert len(calls) <= 1, "the fleet's load is counted once at most"
    if all(step.keep for step in out.roles):
        assert not calls, "a plan that places nothing must not count the fleet's load"
    return out


def started(p: Plan) -> dict[str, str]:
    return {s.role: s.start_on.id for s in p.roles if s.start_on is not None}


# --- choose_host -------------------------------------------------------------------------


def test_least_loaded_in_zone() -> None:
    assert choose_host(HOSTS, {"a": 5, "b": 2}, availability_zone="az1").id == "b"


def test_anti_affinity_and_unschedulable() -> None:
    assert choose_host(HOSTS, {}, availability_zone="az1", avoid=["a"]).id == "b"
    with pytest.raises(NoHostAvailable, match="another healthy host"):
        choose_host(HOSTS, {}, availability_zone="az1", avoid=["a", "b"])


def test_full_hosts_are_skipped() -> None:
    with pytest.raises(NoHostAvailable, match="needs a healthy host in availability zone az2"):
        choose_host(HOSTS, {"c": 10}, availability_zone="az2")


# --- plan --------------------------------------------------------------------------------


def test_a_new_pair_lands_on_two_hosts() -> None:
    p = make(PAIR, [], load={"a": 1}, availability_zone="az1")
    assert started(p) == {"MASTER": "b", "BACKUP": "a"}
    assert p.drop == () and not any(s.evict for s in p.roles)


def test_healthy_instances_stay_and_cost_no_count() -> None:
    current = [InstanceView("m", "MASTER", "a"), InstanceView("b", "BACKUP", "b")]
    p = make(PAIR, current)
    assert [s.keep for s in p.roles] == current
    assert started(p) == {} and not p.avoid_hint_used


def test_an_instance_on_a_disabled_host_stays() -> None:
    p = make(SINGLE, [InstanceView("i", "STANDALONE", "d")])
    assert p.roles[0].keep is not None


def test_lost_host_is_left_for_another_but_never_the_peers() -> None:
    hosts = [host("a", up=False), host("b"), host("c")]
    current = [InstanceView("m", "MASTER", "a"), InstanceView("b", "BACKUP", "b")]
    p = make(PAIR, current, hosts, load={"a": 1, "b": 1, "c": 5})
    master = p.roles[0]
    assert master.evict == current[0] and master.start_on is not None
    assert master.start_on.id == "c"


def test_paused_failover_moves_nothing() -> None:
    hosts = [host("a", up=False), host("b"), host("c")]
    current = [InstanceView("m", "MASTER", "a"), InstanceView("b", "BACKUP", "b")]
    with pytest.raises(NoHostAvailable, match="paused: 2 of 3"):
        make(PAIR, current, hosts, failover_paused="automatic failover paused: 2 of 3")


def test_an_instance_whose_host_is_unknown_is_rebuilt_even_when_paused() -> None:
    # No host row to be down: nothing to wait for (the row was removed).
    p = make(SINGLE, [InstanceView("i", "STANDALONE", None)], failover_paused="paused")
    assert p.roles[0].evict is not None and started(p) == {"STANDALONE": "a"}


def test_topology_change_drops_roles_and_frees_their_load() -> None:
    # SINGLE -> ACTIVE_STANDBY: the STANDALONE goes, and its host counts one less.
    current = [InstanceView("s", "STANDALONE", "a")]
    p = make(PAIR, current, [host("a", capacity=2), host("b", capacity=2)], load={"a": 2, "b": 1})
    assert p.drop == (current[0],)
    assert started(p) == {"MASTER": "a", "BACKUP": "b"}


def test_a_second_instance_of_a_role_is_dropped() -> None:
    twins = [InstanceView("x", "STANDALONE", "a"), InstanceView("y", "STANDALONE", "b")]
    p = make(SINGLE, twins)
    assert p.drop == (twins[0],) and p.roles[0].keep == twins[1]


def test_new_instances_count_towards_the_load() -> None:
    hosts = [host("a", capacity=1), host("b", capacity=1)]
    assert started(make(PAIR, [], hosts)) == {"MASTER": "a", "BACKUP": "b"}
    with pytest.raises(NoHostAvailable, match="another healthy host"):
        make(PAIR, [], hosts, load={"b": 1})


def test_the_host_left_by_failover_is_avoided_once() -> None:
    hosts = [host("a"), host("b"), host("c")]
    current = [InstanceView("b", "BACKUP", "b")]
    p = make(PAIR, current, hosts, avoid_host_id="a")
    assert started(p) == {"MASTER": "c"} and p.avoid_hint_used


def test_the_host_left_by_failover_takes_it_back_when_alone() -> None:
    hosts = [host("a"), host("b")]
    current = [InstanceView("b", "BACKUP", "b")]
    p = make(PAIR, current, hosts, avoid_host_id="a")
    assert started(p) == {"MASTER": "a"} and p.avoid_hint_used


def test_the_hint_waits_while_nothing_is_placed() -> None:
    current = [InstanceView("m", "MASTER", "a"), InstanceView("b", "BACKUP", "b")]
    assert not make(PAIR, current, avoid_host_id="c").avoid_hint_used


def test_zone_is_respected() -> None:
    assert started(make(SINGLE, [], availability_zone="az2")) == {"STANDALONE": "c"}
    with pytest.raises(NoHostAvailable, match="in availability zone az3"):
        make(SINGLE, [], availability_zone="az3")


# --- a migration's target ----------------------------------------------------------------


def test_a_migrations_target_takes_the_rebuilt_half() -> None:
    """The BACKUP left for a migration: its replacement goes to the target, though another
    host is less loaded, and the hint counts for that one instance only."""
    current = [InstanceView("m", c.ROLE_MASTER, "a")]
    hosts = [*HOSTS, host("e")]
    p = make(PAIR, current, hosts, load={"a": 1, "b": 5}, target_host_id="b")
    assert started(p) == {c.ROLE_BACKUP: "b"}
    assert p.avoid_hint_used
    p = make(PAIR, [], hosts, load={"a": 1, "b": 5}, target_host_id="b")
    assert started(p)[c.ROLE_MASTER] == "b" and started(p)[c.ROLE_BACKUP] != "b"


@pytest.mark.parametrize("target", ["d", "a", "nowhere", "full"])
def test_a_target_that_cannot_take_it_is_passed_over(target: str) -> None:
    """Disabled, already holding the other half, unknown or full: the scheduler chooses."""
    current = [InstanceView("m", c.ROLE_MASTER, "a")]
    hosts = [*HOSTS, host("full", capacity=1)]
    p = make(PAIR, current, hosts, load={"full": 1}, target_host_id=target)
    assert started(p) == {c.ROLE_BACKUP: "b"}
