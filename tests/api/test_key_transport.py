"""Certificate keys travel to an agent only over TLS or to a loopback address.

The haproxy driver refuses, before sending anything, a spec holding a private key
for an agent reached by plain HTTP on any other address: the apply fails with the
reason and one event says it (not one per retry). Specs without keys, and specs
for loopback or HTTPS agents, go as before.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.controller.snapshot import build
from openha.db import transaction
from openha.domain import constants as c
from openha.domain.spec import CertificateSpec, ListenerSpec, LoadBalancerSpec, holds_private_key
from openha.models import Event, Host, Instance, LoadBalancer, utcnow
from openha.providers.base import ProviderContext
from openha.providers.haproxy.agent_client import key_refusal
from openha.providers.haproxy.driver import HAProxyProvider
from openha.settings import Settings
from tests.api.fakeagents import FakeAgent
from tests.tlscerts import issue, make_ca

# TEST-NET-3: no agent is there; a push that were tried would fail otherwise.
FAR_AWAY = "http://203.0.113.9:9877"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://203.0.113.9:9877", True),
        ("https://agent.example:9877", True),
        ("http://127.0.0.1:9877", True),
        ("http://127.8.0.3:9877", True),
        ("http://[::1]:9877", True),
        ("http://localhost:9877", True),
        ("http://LOCALHOST:9877", True),
        (FAR_AWAY, False),
        ("http://agent.example:9877", False),
        ("http://127.0.0.1.example:9877", False),  # a name, not the address
        ("http://[::ffff:10.0.0.1]:9877", False),
        ("http://0.0.0.0:9877", False),
    ],
)
def test_which_agent_addresses_may_receive_keys(url: str, allowed: bool) -> None:
    refusal = key_refusal(url)
    assert (refusal is None) is allowed, refusal
    if refusal is not None:
        assert url in refusal and "TLS" in refusal and "OPENHA_AGENT_TLS_CERT" in refusal


def test_a_private_key_of_any_pem_kind_is_recognised() -> None:
    issued = issue(make_ca(), "k.example", ("k.example",))
    assert holds_private_key(issued.cert_pem + issued.key_pem())
    assert holds_private_key(issued.key_pem(b"secret"))  # ENCRYPTED PRIVATE KEY
    assert holds_private_key("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n")
    assert not holds_private_key(issued.cert_pem)
    assert not holds_private_key("# a map\n10.0.0.0/8 1\n")


def _single_lb(sessions: sessionmaker[Session], subnet_id: str, url: str) -> dict[str, str]:
    with transaction(sessions) as s:
        host = Host(
            name="h1",
            credential_hash="hash-h1",
            status=c.HOST_UP,
            last_heartbeat_at=utcnow(),
            management_url=url,
            agent_secret="x",
            report={"agent_dir": "/nonexistent"},
        )
        s.add(host)
        lb = LoadBalancer(
            project_id="p", provider="haproxy", vip_subnet_id=subnet_id, vip_address="198.51.100.5"
        )
        s.add(lb)
        s.flush()
        return {"lb": lb.id, "host": host.id}


def _with_tls(spec: LoadBalancerSpec) -> LoadBalancerSpec:
    issued = issue(make_ca(), "tls.example", ("tls.example",))
    listener = ListenerSpec(
        id="8d2c6a8e-0c1f-4b5e-9a43-5a4a1c2b3d4e",
        protocol="TERMINATED_HTTPS",
        protocol_port=443,
        tls_certificates=(
            CertificateSpec(pem=issued.cert_pem + issued.key_pem(), names=("tls.example",)),
        ),
    )
    return spec.model_copy(update={"listeners": (listener,)})


def _events(sessions: sessionmaker[Session]) -> list[Event]:
    with transaction(sessions) as s:
        rows = list(s.scalars(select(Event).where(Event.kind == "instance.keys_withheld")))
        s.expunge_all()
        return rows


def test_keys_are_withheld_from_a_plain_http_agent_elsewhere(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    made = _single_lb(session_factory, subnet_id, FAR_AWAY)
    driver = HAProxyProvider(ProviderContext(settings, session_factory))
    with transaction(session_factory) as s:
        spec = _with_tls(build(s, made["lb"], None))
    for _ in range(2):  # a retry of the same refusal says nothing new
        result = driver.apply(spec, failover_paused=None)
        assert not result.done
        assert result.error is not None
        assert "only over TLS or on a loopback address" in result.error
        assert FAR_AWAY in result.error
        assert "answered" not in result.error and "unreachable" not in result.error
        assert "BEGIN" not in result.error
    events = _events(session_factory)
    assert len(events) == 1
    assert events[0].severity == c.SEVERITY_ERROR
    assert events[0].load_balancer_id == made["lb"]
    assert FAR_AWAY in events[0].message
    with transaction(session_factory) as s:
        inst = s.scalar(select(Instance).where(Instance.load_balancer_id == made["lb"]))
        assert inst is not None and inst.status == c.INSTANCE_ERROR
        assert inst.last_error is not None and "loopback" in inst.last_error

    # Without keys the same agent is called (and fails as it does: no agent is there).
    with transaction(session_factory) as s:
        plain = build(s, made["lb"], None)
    result = driver.apply(plain, failover_paused=None)
    assert result.error is not None and FAR_AWAY in result.error
    assert "loopback" not in result.error


def test_keys_go_to_an_agent_on_loopback(
    settings: Settings, session_factory: sessionmaker[Session], subnet_id: str
) -> None:
    agent = FakeAgent()
    try:
        assert agent.url.startswith("http://127.0.0.1:")
        made = _single_lb(session_factory, subnet_id, agent.url)
        driver = HAProxyProvider(ProviderContext(settings, session_factory))
        with transaction(session_factory) as s:
            spec = _with_tls(build(s, made["lb"], None))
        result = driver.apply(spec, failover_paused=None)
        assert result.done, result.error
        assert len(agent.applied) == 1
        assert _events(session_factory) == []
    finally:
        agent.close()
