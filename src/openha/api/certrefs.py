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
from openha.certstore import material
from openha.certstore.material import RefError
from openha.domain.certificates import CertificateError
from openha.models import Listener, Pool

Loader = Callable[..., Any]


def _check(request: Request, session: Session, ctx: RequestContext, load: Loader, ref: str) -> None:
    scope = None if ctx.is_admin else ctx.project_id
    try:
        load(session, sealer(request), ref, scope)
    except RefError:
        raise BadRequest(f"Could not retrieve certificate: {quote_input(ref)}") from None
    except CertificateError as exc:
        raise BadRequest(
            f"Validation failure: certificate reference {quote_input(ref)}: {exc}."
        ) from None


def check_listener(
    request: Request, session: Session, ctx: RequestContext, listener: Listener
) -> None:
    for ref in [listener.default_tls_container_ref, *(listener.sni_container_refs or [])]:
        if ref:
            _check(request, session, ctx, material.server_certificate, ref)
    if listener.client_ca_tls_container_ref:
        _check(
            request, session, ctx, material.ca_certificates, listener.client_ca_tls_container_ref
        )
    if listener.client_crl_container_ref:
        _check(request, session, ctx, material.revocation_list, listener.client_crl_container_ref)


def check_pool(request: Request, session: Session, ctx: RequestContext, pool: Pool) -> None:
    if pool.tls_container_ref:
        _check(request, session, ctx, material.server_certificate, pool.tls_container_ref)
    if pool.ca_tls_container_ref:
        _check(request, session, ctx, material.ca_certificates, pool.ca_tls_container_ref)
    if pool.crl_container_ref:
        _check(request, session, ctx, material.revocation_list, pool.crl_container_ref)
