"""Whose view of the members counts for a load balancer's statuses (`serving_view`)."""

from __future__ import annotations

from typing import Any

from openha.providers.haproxy.driver import _SILENT, serving_view

UP = {"m1": "UP", "m2": "UP"}


def health(running: bool, vrrp: str | None, members: dict[str, str]) -> dict[str, Any]:
    return {"haproxy_running": running, "vrrp_state": vrrp, "members": members}


def test_the_master_of_a_pair_decides() -> None:
    master = health(True, "MASTER", UP)
    backup = health(True, "BACKUP", {"m1": "DOWN", "m2": "UP"})
    assert serving_view([backup, master]) is master


def test_a_master_on_a_host_declared_down_does_not_decide_during_a_failover() -> None:
    """The dead master is silenced (no VRRP state, no members); the survivor, not yet
    reported MASTER, checks the members: its view counts, none goes OFFLINE."""
    dead = {**health(True, "MASTER", UP), **_SILENT}
    survivor = health(True, "BACKUP", UP)
    assert serving_view([dead, survivor]) is survivor


def test_an_instance_outside_a_pair_decides_and_a_stopped_one_is_the_last_resort() -> None:
    single = health(True, None, UP)
    assert serving_view([single]) is single
    stopped = health(False, None, {})
    assert serving_view([stopped]) is stopped
    assert serving_view([stopped, health(True, "BACKUP", UP)])["haproxy_running"]
