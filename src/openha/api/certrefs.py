"""Listener and pool certificate references, checked when a tenant sets them.

A reference the caller cannot read, or material that could not serve (a key that
does not match, a chain that does not parse, a CA certificate as the server's),
is a 400 here: never an apply failure later. Messages name the reference and the
fault, never the material.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from openha.api.context import RequestContext
from openha.api.errors import BadRequest, quote_input
from openha.api.keymanager import sealer
from openha.certstore import keys as key_managers
from openha.certstore import material
from openha.certstore.keys import KeyManager, LocalKeyManager
from openha.certstore.material import RefError
from openha.domain.certificates import CertificateError, crl_signed_by
from openha.models import Listener, Pool

Loader = Callable[..., Any]


def key_manager(request: Request) -> KeyManager:
    """The app's key manager (made once per settings): the embedded store with the
    app's sealer, or Barbican (`OPENHA_KEY_MANAGER`)."""
    settings = request.app.state.settings
    found: KeyManager | None = getattr(request.app.state, "key_manager", None)
    if found is None or request.app.state.key_manager_settings is not settings:
        local = settings.key_manager == key_managers.LOCAL
        found = LocalKeyManager(sealer(request)) if local else key_managers.from_settings(settings)
        request.app.state.key_manager = found
        request.app.state.key_manager_settings = settings
    return found


def _check(request: Request, session: Session, ctx: RequestContext, load: Loader, ref: str) -> Any:
    scope = None if ctx.is_admin else ctx.project_id
    keys = key_manager(request)
    try:
        # Barbican: the tenant's token lets OpenHA's service user read it (Octavia's ACLs).
        keys.grant(request.headers.get("x-auth-token"), ref)
        return load(keys.source(session, scope), ref)
    except RefError:
        raise BadRequest(f"Could not retrieve certificate: {quote_input(ref)}") from None
    except CertificateError as exc:
        raise BadRequest(
            f"Validation failure: certificate reference {quote_input(ref)}: {exc}."
        ) from None


def _check_ca_and_crl(
    request: Request, session: Session, ctx: RequestContext, ca_ref: str | None, crl_ref: str | None
) -> None:
    ca = _check(request, session, ctx, material.ca_certificates, ca_ref)[0] if ca_ref else None
    crl = _check(request, session, ctx, material.revocation_list, crl_ref) if crl_ref else None
    if ca and crl and not crl_signed_by(crl, ca):
        raise BadRequest(
            "Validation failure: The CRL specified is not valid for client certificate "
            "authority reference supplied."
        )


def check_listener(
    request: Request, session: Session, ctx: RequestContext, listener: Listener
) -> None:
    for ref in [listener.default_tls_container_ref, *(listener.sni_container_refs or [])]:
        if ref:
            _check(request, session, ctx, material.server_certificate, ref)
    _check_ca_and_crl(
        request,
        session,
        ctx,
        listener.client_ca_tls_container_ref,
        listener.client_crl_container_ref,
    )


def check_pool(request: Request, session: Session, ctx: RequestContext, pool: Pool) -> None:
    if pool.tls_container_ref:
        _check(request, session, ctx, material.server_certificate, pool.tls_container_ref)
    _check_ca_and_crl(request, session, ctx, pool.ca_tls_container_ref, pool.crl_container_ref)
