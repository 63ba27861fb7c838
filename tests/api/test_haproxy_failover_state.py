"""A failover in progress lives in rows, not in a provider's memory.

Each test drives the haproxy driver against hosts whose agents cannot be reached
(a port nothing listens on), then drops that driver and goes on with a new one,
as a restarted or a second controller would: what the first one knew must
still decide what the second one does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.controller.snapshot import build
from openha.db import transaction
from openha.domain import constants as c
from openha.models import Event, Flavor, FlavorProfile, Host, Instance, LoadBalancer, utcnow
from openha.providers.base import ProviderContext
from openha.providers.haproxy.driver import HAProxyProvider
from openha.settings import Settings
from tests.api.fakeagents import FakeAgent
from tests.conftest import Client

NOBODY = "http://127.0.0.1:9"  # nothing listens: every agent call fails fast


def fresh_driver(settings: Settings, sessions: sessionmaker[Session]) -> HAProxyProvider:
    return HAProxyProvider(ProviderContext(settings, sessions))


def pair_lb(sessions: sessionmaker[Session], subnet_id: str, hosts: list[str]) -> dict[str, Any]:
    """An ACTIVE_STANDBY LB already placed: MASTER (holding the VIP) on hosts[0], BACKUP on
    hosts[1]; every named host up and schedulable."""
    with transaction(sessions) as s:
        for name in hosts:
            s.add(
                Host(
                    name=name,
                    credential_hash=f"hash-{name}",
                    status=c.HOST_UP,
                    last_heartbeat_at=utcnow(),
                    management_url=NOBODY,
                    agent_secret="x",
                    report={"agent_dir": "/nonexistent"},
                )
            )
        profile = FlavorProfile(
            provider_name="haproxy", flavor_data='{"loadbalancer_topology": "ACTIVE_STANDBY"}'
        )
        s.add(profile)
        s.flush()
        flavor = Flavor(name="pair", flavor_profile_id=profile.id)
        s.add(flavor)
        s.flush()
        lb = LoadBalancer(
            project_id="p",
            provider="haproxy",
            flavor_id=flavor.id,
            vip_subnet_id=subnet_id,
            vip_address="198.51.100.5",
        )
        s.add(lb)
        s.flush()
        ids = {h.name: h.id for h in s.scalars(select(Host))}
        master = Instance(
            load_balancer_id=lb.id,
            host_id=ids[hosts[0]],
            role=c.ROLE_MASTER,
            ip_address="198.51.100.21",
            status=c.INSTANCE_ACTIVE,
            health={"vrrp_state": "MASTER"},
        )
        backup = Instance(
            load_balancer_id=lb.id,
            host_id=ids[hosts[1]],
            role=c.ROLE_BACKUP,
            ip_address="198.51.100.22",
            status=c.INSTANCE_ACTIVE,
            health={"vrrp_state": "BACKUP"},
        )
        s.add_all([master, backup])
        s.flush()
        return {"lb": lb.id, "master": master.id, "backup": backup.id, "hosts": ids}


def instances(sessions: sessionmaker[Session], lb_id: str) -> dict[str, Instance]:
    with transaction(sessions) as s:
        rows = s.scalars(select(Instance).where(Instance.load_balancer_id == lb_id))
        return {i.role: i for i in rows}


def left_host(sessions: sessionmaker[Session], lb_id: str) -> str | None:
    with transaction(sessions) as s:
        lb = s.get(LoadBalancer, lb_id)
        assert lb is not None
        return lb.failover_left_host_id


def test_the_host_left_by_failover_is_avoided_by_the_next_controller(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    made = pair_lb(session_factory, subnet_id, ["h1", "h2", "h3"])
    fresh_driver(settings, session_factory).failover(made["lb"])
    left = instances(session_factory, made["lb"])
    assert set(left) == {c.ROLE_BACKUP}, "the VIP holder is the one rebuilt"
    assert left_host(session_factory, made["lb"]) == made["hosts"]["h1"]

    # Another controller (or this one restarted) applies: the replacement goes to h3,
    # not back to h1 which the least-loaded rule alone would pick (h1 now runs nothing).
    with transaction(session_factory) as s:
        spec = build(s, made["lb"], None)
    result = fresh_driver(settings, session_factory).apply(spec, failover_paused=None)
    assert result.error and "unreachable" in result.error  # placed, but no agent to take it
    after = instances(session_factory, made["lb"])
    assert after[c.ROLE_MASTER].host_id == made["hosts"]["h3"]
    assert after[c.ROLE_BACKUP].id == made["backup"]
    assert left_host(session_factory, made["lb"]) is None, "the hint is used once"


def test_a_repeated_failover_never_takes_the_survivor(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    """A controller that stopped after the rebuild's first half must not, once restarted,
    fail over the only instance left because the request flag was still set."""
    made = pair_lb(session_factory, subnet_id, ["h1", "h2", "h3"])
    fresh_driver(settings, session_factory).failover(made["lb"])
    fresh_driver(settings, session_factory).failover(made["lb"])
    left = instances(session_factory, made["lb"])
    assert list(left) == [c.ROLE_BACKUP] and left[c.ROLE_BACKUP].id == made["backup"]
    with transaction(session_factory) as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.load_balancer_id == made["lb"])))
    assert kinds.count("instance.failover") == 1
    assert "instance.failover_deferred" in kinds


def test_an_admin_marked_instance_survives_a_concurrent_push(
    settings: Settings,
    session_factory: sessionmaker[Session],
    subnet_id: str,
    admin: Client,
) -> None:
    made = pair_lb(session_factory, subnet_id, ["h1", "h2", "h3"])
    assert admin.put(f"/v2/octavia/amphorae/{made['backup']}/failover", {}).status_code == 202
    # A push that was in flight lands now and writes the instance's status over.
    with transaction(session_factory) as s:
        backup = s.get(Instance, made["backup"])
        assert backup is not None and backup.failover_requested_at is not None
        backup.status = c.INSTANCE_ACTIVE
    fresh_driver(settings, session_factory).failover(made["lb"])
    left = instances(session_factory, made["lb"])
    assert list(left) == [c.ROLE_MASTER], "the marked BACKUP is rebuilt, not the VIP holder"
    assert left_host(session_factory, made["lb"]) == made["hosts"]["h2"]


def test_a_chosen_target_is_kept_by_the_next_controller(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    """The VIP moved after a controller chose its target and stopped: the next one still
    rebuilds the instance that was chosen (and perhaps already half deleted)."""
    made = pair_lb(session_factory, subnet_id, ["h1", "h2", "h3"])
    with transaction(session_factory) as s:
        chosen = s.get(Instance, made["master"])
        assert chosen is not None
        chosen.failover_requested_at = utcnow()  # what the first controller wrote
        chosen.health = {"vrrp_state": "BACKUP"}
        peer = s.get(Instance, made["backup"])
        assert peer is not None
        peer.health = {"vrrp_state": "MASTER"}
    fresh_driver(settings, session_factory).failover(made["lb"])
    assert list(instances(session_factory, made["lb"])) == [c.ROLE_BACKUP]


def test_the_serving_peer_learns_of_its_new_partner_before_the_partner_starts(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    """A rebuilt instance's keepalived that heard no advert would take the VIP its peer
    still holds: the peer's push (with the newcomer among its unicast peers) must be
    done before the newcomer's begins."""
    made = pair_lb(session_factory, subnet_id, ["h1", "h2", "h3"])
    agent = FakeAgent(delay=0.2)
    try:
        with transaction(session_factory) as s:
            for host in s.scalars(select(Host)):
                host.management_url = agent.url
            survivor = s.get(Instance, made["backup"])
            assert survivor is not None
            survivor.applied_generation = 1  # it runs
            dead = s.get(Host, made["hosts"]["h1"])
            assert dead is not None
            dead.status = c.HOST_DOWN
        with transaction(session_factory) as s:
            spec = build(s, made["lb"], None)
        result = fresh_driver(settings, session_factory).apply(spec, failover_paused=None)
        assert result.done, result.error
        spans = {inst: (start, end) for inst, start, end in agent.spans}
        assert len(spans) == 2 and made["backup"] in spans
        newcomer = next(i for i in spans if i != made["backup"])
        assert spans[made["backup"]][1] <= spans[newcomer][0], "pushed together"
    finally:
        agent.close()
