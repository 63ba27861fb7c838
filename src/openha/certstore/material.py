"""What a listener's or pool's reference names, read from a key store and checked.

The API calls these with the caller's view (a reference the caller cannot read is
refused there); the controller calls them with the load balancer's when it builds
the desired tree. A reference is a certificate container (`certificate`,
`private_key`, `intermediates`, `private_key_passphrase`) or a secret: a PKCS#12
bundle for a server certificate, PEM for a CA or a CRL. Where the parts come from
is a `Source`: the embedded store (`LocalSource`) or a real Barbican
(`openha.certstore.barbican`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

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


class Source(Protocol):
    def parts(self, ref: str) -> dict[str, bytes | None]:
        """A container's secrets by name, or `{SECRET: payload}` for a secret; RefError
        when `ref` names nothing readable."""
        ...


class LocalSource:
    """The embedded store, as one project sees it (`project_id=None`: every project)."""

    def __init__(self, session: Session, sealer: Sealer, project_id: str | None) -> None:
        self.session, self.sealer, self.project_id = session, sealer, project_id

    def parts(self, ref: str) -> dict[str, bytes | None]:
        parsed = parse_ref(ref)
        session, sealer, project_id = self.session, self.sealer, self.project_id
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


def server_certificate(source: Source, ref: str) -> ServerCertificate:
    parts = source.parts(ref)
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


def ca_certificates(source: Source, ref: str) -> tuple[str, datetime]:
    return certificates.ca_bundle(_single(source.parts(ref), ref))


def revocation_list(source: Source, ref: str) -> str:
    return certificates.revocation_list(_single(source.parts(ref), ref))
