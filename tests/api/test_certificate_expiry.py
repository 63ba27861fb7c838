"""Certificates about to expire: the controller remembers when, events say so once, and
/metrics gives the days left per listener."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.controller import certificates
from openha.db import transaction
from openha.models import CertificateExpiry, Event, utcnow
from tests.api.certstore_helpers import store_server_cert
from tests.api.factories import create_lb, create_listener, wait_lb_active
from tests.conftest import Client
from tests.tlscerts import issue, make_ca


def test_expiring_certificate_events_and_metric(
    alice: Client,
    admin: Client,
    subnet_id: str,
    controller: Any,
    session_factory: sessionmaker[Session],
) -> None:
    ca = make_ca()
    soon = store_server_cert(alice, issue(ca, "soon.example", ("soon.example",), days=10))
    later = store_server_cert(alice, issue(ca, "later.example", ("later.example",), days=200))
    lb = create_lb(alice, subnet_id)
    li = create_listener(
        alice,
        lb["id"],
        protocol="TERMINATED_HTTPS",
        protocol_port=443,
        default_tls_container_ref=later,
        sni_container_refs=[soon],
    )
    wait_lb_active(alice, lb["id"])
    with transaction(session_factory) as s:
        row = s.get(CertificateExpiry, li["id"])
        assert row is not None
        left = row.not_after - utcnow()
        assert timedelta(days=9) < left < timedelta(days=11)  # the earliest of the two
        # Told by this call, or already by the running controller's resync.
        assert certificates.check_expiry(s, 30) in (0, 1)
    with transaction(session_factory) as s:
        assert certificates.check_expiry(s, 30) == 0  # told once
        # A day past expiry it is told again, as expired.
        assert certificates.check_expiry(s, 30, now=utcnow() + timedelta(days=11)) == 1
        # (The observer's status events may come in between: only certificates' count.)
        kinds = [
            e.kind
            for e in s.scalars(select(Event).order_by(Event.id))
            if e.kind.startswith("certificate.")
        ]
        assert kinds == ["certificate.expiring", "certificate.expired"]
        messages = " ".join(e.message for e in s.scalars(select(Event)))
        assert "BEGIN" not in messages
    metrics = admin.get("/metrics").text
    line = next(
        x for x in metrics.splitlines() if x.startswith("openha_listener_certificate_expiry_days{")
    )
    assert li["id"] in line and 9 < float(line.rsplit(" ", 1)[1]) < 11
    # Renewed: the row follows, and warnings start over.
    resp = alice.put(f"/v2/lbaas/listeners/{li['id']}", {"listener": {"sni_container_refs": []}})
    assert resp.status_code == 200
    wait_lb_active(alice, lb["id"])
    with transaction(session_factory) as s:
        row = s.get(CertificateExpiry, li["id"])
        assert row is not None and row.not_after - utcnow() > timedelta(days=150)
        assert row.warned == ""
