"""The connection hand-off: its table rendered from addresses only, one IP version at a
time, and whom the controller names as its target."""

from __future__ import annotations

import pydantic
import pytest

from openha.agent import handoff
from openha.domain import constants as c
from openha.domain.spec import InstanceSpec
from openha.models import Host, Instance
from openha.providers.haproxy.allocation import handoff_address


def test_the_table_hands_unknown_tcp_to_the_vip_on_to_the_old_instance() -> None:
    text = handoff.ruleset("10.0.0.5", "10.0.0.7")
    assert "table ip openha_handoff {" in text
    assert "ip daddr 10.0.0.5 meta l4proto tcp ct state invalid dup to 10.0.0.7 drop" in text
    # Loaded as one transaction that replaces whatever table was there.
    assert text.startswith("add table ip openha_handoff\ndelete table ip openha_handoff\n")


def test_ipv6_gets_an_ip6_table() -> None:
    text = handoff.ruleset("2001:db8::5", "2001:db8::7")
    assert "ip6 daddr 2001:db8::5 meta l4proto tcp ct state invalid dup to 2001:db8::7" in text


@pytest.mark.parametrize(
    ("vip", "target"),
    [("10.0.0.5", "10.0.0.7 drop\n}\n"), ("10.0.0.5;", "10.0.0.7"), ("10.0.0.5", "eth0")],
)
def test_anything_but_an_address_is_refused(vip: str, target: str) -> None:
    with pytest.raises(ValueError):
        handoff.ruleset(vip, target)


def test_mixed_ip_versions_are_refused() -> None:
    with pytest.raises(handoff.HandoffError):
        handoff.ruleset("10.0.0.5", "2001:db8::7")


def _spec(**changes: object) -> InstanceSpec:
    return InstanceSpec.model_validate(
        {
            "instance_id": "i",
            "load_balancer_id": "lb",
            "project_id": "p",
            "generation": 1,
            "namespace": "openha-i",
            "interfaces": [],
            "vip_address": "10.0.0.5",
            "haproxy_config": "",
            **changes,
        }
    )


def test_the_spec_takes_only_an_address_and_writes_it_canonically() -> None:
    assert _spec(handoff_to="2001:DB8:0::7").handoff_to == "2001:db8::7"
    assert _spec().handoff_to is None
    with pytest.raises(pydantic.ValidationError):
        _spec(handoff_to="10.0.0.7 drop")


def test_the_hand_off_goes_to_the_retiring_instance_only_while_its_host_is_up() -> None:
    up = Host(id="h-up", status=c.HOST_UP)
    down = Host(id="h-down", status=c.HOST_DOWN)
    hosts = {h.id: h for h in (up, down)}
    serving = Instance(id="new", host_id="h-up", ip_address="10.0.0.8", migration=None)
    staged = Instance(
        id="staged", host_id="h-up", ip_address="10.0.0.9", migration=c.MIGRATION_STAGED
    )
    retiring = Instance(
        id="old", host_id="h-up", ip_address="10.0.0.7", migration=c.MIGRATION_RETIRING
    )
    assert handoff_address([serving, staged, retiring], hosts) == "10.0.0.7"
    assert handoff_address([serving, staged], hosts) == ""  # nothing retires
    retiring.host_id = "h-down"  # nothing to hand to: its connections are gone
    assert handoff_address([serving, retiring], hosts) == ""
