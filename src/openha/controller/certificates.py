"""The certificates a load balancer's listeners and pools reference, read for its desired tree.

The API checked each reference when it was set; here they are read again (a secret
may have been deleted or a key dropped since), and what cannot be read becomes a
`tls_problem` the renderer refuses with: the apply fails with that reason and the
last good configuration keeps serving. The problem names the reference, never the
material.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from openha.certstore import material
from openha.certstore.material import RefError
from openha.certstore.sealing import Sealer
from openha.domain.certificates import CertificateError, ServerCertificate
from openha.domain.spec import CertificateSpec
from openha.models import Listener, Pool

TLS_LISTENER = "TERMINATED_HTTPS"


def _spec(cert: ServerCertificate) -> CertificateSpec:
    return CertificateSpec(pem=cert.pem, names=cert.names, not_after=cert.not_after)


def _problem(ref: str, exc: Exception) -> str:
    return f"certificate reference {ref}: {exc}"


def listener_tls(session: Session, sealer: Sealer, listener: Listener) -> dict[str, Any]:
    """The TLS fields of a listener's spec (nothing for a listener that does not terminate)."""
    if listener.protocol != TLS_LISTENER:
        return {}
    out: dict[str, Any] = {}
    refs = [listener.default_tls_container_ref, *(listener.sni_container_refs or [])]
    certs: list[CertificateSpec] = []
    try:
        for ref in dict.fromkeys(r for r in refs if r):
            certs.append(_spec(material.server_certificate(session, sealer, ref, None)))
        if listener.client_ca_tls_container_ref:
            ref = listener.client_ca_tls_container_ref
            out["client_ca_certificates"] = material.ca_certificates(session, sealer, ref, None)[0]
        if listener.client_crl_container_ref:
            ref = listener.client_crl_container_ref
            out["client_revocation_list"] = material.revocation_list(session, sealer, ref, None)
    except (RefError, CertificateError) as exc:
        return {"tls_problem": _problem(ref, exc)}
    out["tls_certificates"] = certs
    return out


def pool_tls(session: Session, sealer: Sealer, pool: Pool) -> dict[str, Any]:
    """The TLS material of a pool's spec (only for a pool speaking TLS to its members)."""
    if not pool.tls_enabled:
        return {}
    out: dict[str, Any] = {}
    ref = ""
    try:
        if pool.tls_container_ref:
            ref = pool.tls_container_ref
            out["tls_certificate"] = _spec(material.server_certificate(session, sealer, ref, None))
        if pool.ca_tls_container_ref:
            ref = pool.ca_tls_container_ref
            out["ca_certificates"] = material.ca_certificates(session, sealer, ref, None)[0]
        if pool.crl_container_ref:
            ref = pool.crl_container_ref
            out["revocation_list"] = material.revocation_list(session, sealer, ref, None)
    except (RefError, CertificateError) as exc:
        return {"tls_problem": _problem(ref, exc)}
    return out
