"""The certificates a load balancer's listeners and pools reference, read for its desired tree.

The API checked each reference when it was set; here they are read again (a secret
may have been deleted or a key dropped since), and what cannot be read becomes a
`tls_problem` the renderer refuses with: the apply fails with that reason and the
last good configuration keeps serving. The problem names the reference, never the
material.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha import events
from openha.certstore import material
from openha.certstore.keys import KeyManager
from openha.certstore.material import RefError
from openha.domain import constants as c
from openha.domain.certificates import CertificateError, ServerCertificate
from openha.domain.spec import CertificateSpec, LoadBalancerSpec
from openha.models import CertificateExpiry, Listener, LoadBalancer, Pool, utcnow

TLS_LISTENER = "TERMINATED_HTTPS"


def _spec(cert: ServerCertificate) -> CertificateSpec:
    return CertificateSpec(pem=cert.pem, names=cert.names, not_after=cert.not_after)


def _problem(ref: str, exc: Exception) -> str:
    return f"certificate reference {ref}: {exc}"


def listener_tls(session: Session, keys: KeyManager, listener: Listener) -> dict[str, Any]:
    """The TLS fields of a listener's spec (nothing for a listener that does not terminate)."""
    if listener.protocol != TLS_LISTENER:
        return {}
    source = keys.source(session, None)
    out: dict[str, Any] = {}
    refs = [listener.default_tls_container_ref, *(listener.sni_container_refs or [])]
    certs: list[CertificateSpec] = []
    try:
        for ref in dict.fromkeys(r for r in refs if r):
            certs.append(_spec(material.server_certificate(source, ref)))
        if listener.client_ca_tls_container_ref:
            ref = listener.client_ca_tls_container_ref
            out["client_ca_certificates"] = material.ca_certificates(source, ref)[0]
        if listener.client_crl_container_ref:
            ref = listener.client_crl_container_ref
            out["client_revocation_list"] = material.revocation_list(source, ref)
    except (RefError, CertificateError) as exc:
        return {"tls_problem": _problem(ref, exc)}
    out["tls_certificates"] = certs
    return out


def pool_tls(session: Session, keys: KeyManager, pool: Pool) -> dict[str, Any]:
    """The TLS material of a pool's spec (only for a pool speaking TLS to its members)."""
    if not pool.tls_enabled:
        return {}
    source = keys.source(session, None)
    out: dict[str, Any] = {}
    ref = ""
    try:
        if pool.tls_container_ref:
            ref = pool.tls_container_ref
            out["tls_certificate"] = _spec(material.server_certificate(source, ref))
        if pool.ca_tls_container_ref:
            ref = pool.ca_tls_container_ref
            out["ca_certificates"] = material.ca_certificates(source, ref)[0]
        if pool.crl_container_ref:
            ref = pool.crl_container_ref
            out["revocation_list"] = material.revocation_list(source, ref)
    except (RefError, CertificateError) as exc:
        return {"tls_problem": _problem(ref, exc)}
    return out


# --- expiry ---------------------------------------------------------------------------------


def record_expiry(session: Session, lb: LoadBalancer, spec: LoadBalancerSpec) -> None:
    """Remember when each TLS listener's earliest certificate expires (for events, metrics)."""
    soonest = {
        li.id: min(cert.not_after for cert in li.tls_certificates if cert.not_after)
        for li in spec.listeners
        if any(cert.not_after for cert in li.tls_certificates)
    }
    rows = {
        row.listener_id: row
        for row in session.scalars(
            select(CertificateExpiry).where(CertificateExpiry.load_balancer_id == lb.id)
        )
    }
    for listener_id, row in rows.items():
        if listener_id not in soonest:
            session.delete(row)
    for listener_id, not_after in soonest.items():
        known = rows.get(listener_id)
        if known is None:
            known = CertificateExpiry(
                listener_id=listener_id, load_balancer_id=lb.id, project_id=lb.project_id
            )
            session.add(known)
        if known.not_after != not_after:
            known.not_after = not_after
            known.warned = ""  # a new certificate: tell about it again when its time comes


def check_expiry(session: Session, warning_days: int, now: datetime | None = None) -> int:
    """Emit `certificate.expiring` / `certificate.expired` once per certificate and state."""
    now = now or utcnow()
    due = session.scalars(
        select(CertificateExpiry).where(
            CertificateExpiry.not_after <= now + timedelta(days=warning_days)
        )
    ).all()
    count = 0
    for row in due:
        state = "expired" if row.not_after <= now else "expiring"
        # Told already; and an expired certificate stays so until it is replaced (a
        # clock stepped back must not announce it as expiring again).
        if row.warned in (state, "expired"):
            continue
        row.warned = state
        lb = session.get(LoadBalancer, row.load_balancer_id)
        days = (row.not_after - now).total_seconds() / 86400
        if state == "expired":
            message = f"listener {row.listener_id}: its certificate expired on {row.not_after}"
        else:
            message = (
                f"listener {row.listener_id}: its certificate expires on {row.not_after}"
                f" (in {days:.0f} days)"
            )
        events.emit(
            session,
            f"certificate.{state}",
            message,
            severity=c.SEVERITY_ERROR if state == "expired" else c.SEVERITY_WARNING,
            lb=lb,
            details={"listener_id": row.listener_id, "not_after": row.not_after.isoformat()},
        )
        count += 1
    return count
