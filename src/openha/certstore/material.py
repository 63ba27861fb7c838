"""What a listener's or pool's reference names, read from the store and checked.

The API calls these with the caller's project (a reference the caller cannot read
is refused there); the controller calls them with the load balancer's project when
it builds the desired tree. A reference is a certificate container
(`certificate`, `private_key`, `intermediates`, `private_key_passphrase`) or a
secret: a PKCS#12 bundle for a server certificate, PEM for a CA or a CRL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from openha.certstore import store
from openha.certstore.refs import parse_ref
from openha.certstore.sealing import Sealer, SealError
from openha.domain import certificates
from openha.domain.certificates import CertificateError, ServerCertificate
from openha.models import StoredContainer, StoredSecret

SECRET = "secret"  # the part name of a reference that is a secret, not a container


class RefError(ValueError):
    """A reference that names nothing the caller may read."""


def _parts(
    session: Session, sealer: Sealer, ref: str, project_id: str | None
) -> dict[str, bytes | None]:
    parsed = parse_ref(ref)
    if parsed is not None:
        try:
            if parsed.kind in (None, "containers"):
                container = store.find(session, StoredContainer, parsed.id, project_id)
                if container is not None:
                    return store.container_parts(session, sealer, container)
            if parsed.kind in (None, "secrets"):
                secret = store.find(session, StoredSecret, parsed.id, project_id)
                if secret is not None:
                    return {SECRET: store.payload(sealer, secret)}
        except SealError:
            raise RefError(f"Could not retrieve certificate: {ref}") from None
    raise RefError(f"Could not retrieve certificate: {ref}")


def _required(parts: dict[str, bytes | None], name: str, ref: str) -> bytes:
    value = parts.get(name)
    if not value:
        raise CertificateError(f"the certificate reference {ref} has no {name.replace('_', ' ')}")
    return value


def server_certificate(
    session: Session, sealer: Sealer, ref: str, project_id: str | None
) -> ServerCertificate:
    parts = _parts(session, sealer, ref, project_id)
    if SECRET in parts:
        return certificates.server_certificate_pkcs12(_required(parts, SECRET, ref))
    return certificates.server_certificate(
        _required(parts, "certificate", ref),
        _required(parts, "private_key", ref),
        parts.get("intermediates") or None,
        parts.get("private_key_passphrase") or None,
    )


def _single(parts: dict[str, bytes | None], ref: str) -> bytes:
    return _required(parts, SECRET if SECRET in parts else "certificate", ref)


def ca_certificates(
    session: Session, sealer: Sealer, ref: str, project_id: str | None
) -> tuple[str, datetime]:
    return certificates.ca_bundle(_single(_parts(session, sealer, ref, project_id), ref))


def revocation_list(session: Session, sealer: Sealer, ref: str, project_id: str | None) -> str:
    return certificates.revocation_list(_single(_parts(session, sealer, ref, project_id), ref))
