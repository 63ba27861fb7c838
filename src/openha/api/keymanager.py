"""/key-manager/v1: the Barbican v1 subset that python-barbicanclient and Octavia's users need.

Secrets (with payloads, one-step or two-step), certificate/generic/rsa containers,
list/show/delete and payload fetch, scoped by the caller's project as the rest of
the API (administrators see every project). Payloads are sealed at rest
(`openha.certstore.sealing`) and leave only through the payload routes. Errors
have Barbican's shape (`code`, `title`, `description`), which the client parses.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from openha.api import idempotency
from openha.api.context import RequestContext, get_context, get_session
from openha.api.errors import RoutingError, quote_input
from openha.api.versions import base_url
from openha.certstore import store
from openha.certstore.sealing import Sealer, SealError
from openha.domain import constants as c
from openha.domain.certificates import MAX_MATERIAL_BYTES
from openha.models import StoredContainer, StoredSecret

router = APIRouter(prefix="/key-manager", tags=["key-manager"])

TEXT = "text/plain"
# Content types Barbican accepts; all but text/plain travel base64-encoded in JSON.
CONTENT_TYPES = (
    TEXT,
    "application/octet-stream",
    "application/pkcs8",
    "application/pkix-cert",
    "application/pkix-crl",
    "application/x-pem-file",
)
MAX_LIMIT = 100


class KeyManagerError(RoutingError):
    """A refusal in Barbican's shape."""


def sealer(request: Request) -> Sealer:
    """The store's sealer for this app's settings (made once: it may create the key file)."""
    found: Sealer | None = getattr(request.app.state, "sealer", None)
    if found is None or request.app.state.sealer_settings is not request.app.state.settings:
        found = Sealer.from_settings(request.app.state.settings)
        request.app.state.sealer = found
        request.app.state.sealer_settings = request.app.state.settings
    return found


def _scope(ctx: RequestContext) -> str | None:
    return None if ctx.is_admin else ctx.project_id


def _owner(ctx: RequestContext) -> str:
    if not ctx.project_id:
        raise KeyManagerError("A project is required to store secrets.", 400)
    return ctx.project_id


def _v1(request: Request) -> str:
    return f"{base_url(request)}/key-manager/v1"


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise KeyManagerError(
            f"Provided object does not match schema 'Secret': {quote_input(field)}: "
            f"{quote_input(err.get('msg', 'invalid'))}",
            400,
        ) from None


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise KeyManagerError("Malformed JSON", 400) from None


def _content_type(value: str) -> str:
    main = value.split(";")[0].strip().lower()
    if main not in CONTENT_TYPES:
        raise KeyManagerError(f"Unsupported content type: {quote_input(value)}", 415)
    return main


def _decode(payload: str, content_type: str, encoding: str | None) -> bytes:
    if not payload:
        raise KeyManagerError("If 'payload' specified, must be non empty", 400)
    if content_type == TEXT and not encoding:
        raw = payload.encode()
    elif (encoding or "").lower() == "base64":
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise KeyManagerError("Invalid payload: not base64", 400) from None
    else:
        raise KeyManagerError(
            "payload_content_encoding must be 'base64' for binary content types", 400
        )
    if not raw or len(raw) > MAX_MATERIAL_BYTES:
        raise KeyManagerError(f"The payload must hold 1 to {MAX_MATERIAL_BYTES} bytes", 413)
    return raw


# --- versions ---------------------------------------------------------------------------


def _v1_version(request: Request) -> dict[str, Any]:
    return {
        "id": "v1",
        # "stable": barbicanclient then speaks microversion 1.0.
        "status": "stable",
        "links": [{"rel": "self", "href": f"{_v1(request)}/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.key-manager-v1+json"}
        ],
    }


@router.get("", include_in_schema=False)
@router.get("/")
def key_manager_versions(request: Request) -> dict[str, Any]:
    return {"versions": {"values": [_v1_version(request)]}}


# Found through the catalogue (`openstack secret …`), keystoneauth follows the version
# document to v1's own link and asks it which microversions it speaks.
@router.get("/v1", include_in_schema=False)
@router.get("/v1/")
def key_manager_v1(request: Request) -> dict[str, Any]:
    return {"version": _v1_version(request)}


# --- secrets ----------------------------------------------------------------------------


class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(max_length=255)] | None = None
    payload: Annotated[str, Field(max_length=2 * MAX_MATERIAL_BYTES)] | None = None
    payload_content_type: Annotated[str, Field(max_length=255)] | None = None
    payload_content_encoding: Annotated[str, Field(max_length=255)] | None = None
    secret_type: Annotated[str, Field(pattern=f"^({'|'.join(store.SECRET_TYPES)})$")] = "opaque"
    algorithm: Annotated[str, Field(max_length=255)] | None = None
    bit_length: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    mode: Annotated[str, Field(max_length=255)] | None = None
    expiration: datetime | None = None


def _secret_view(request: Request, secret: StoredSecret) -> dict[str, Any]:
    view: dict[str, Any] = {
        "secret_ref": f"{_v1(request)}/secrets/{secret.id}",
        "name": secret.name,
        "status": c.ACTIVE,
        "secret_type": secret.secret_type,
        "algorithm": secret.algorithm,
        "bit_length": secret.bit_length,
        "mode": secret.mode,
        "expiration": _time(secret.expiration),
        "created": _time(secret.created_at),
        "updated": _time(secret.updated_at or secret.created_at),
        "creator_id": secret.creator_id,
    }
    if secret.sealed_payload is not None:
        view["content_types"] = {"default": secret.payload_content_type or TEXT}
    return view


def _find_secret(session: Session, ctx: RequestContext, secret_id: str) -> StoredSecret:
    secret = store.find(session, StoredSecret, secret_id, _scope(ctx))
    if secret is None:
        raise KeyManagerError("Secret not found.", 404)
    return secret


@router.post("/v1/secrets", status_code=201, include_in_schema=False)
@router.post("/v1/secrets/", status_code=201)
async def create_secret(
    request: Request,
    response: Response,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, str]:
    body: SecretCreate = _parse(SecretCreate, await _json(request))
    if body.expiration is not None:
        expires = body.expiration
        if expires.tzinfo is not None:
            expires = expires.astimezone(UTC).replace(tzinfo=None)
        if expires <= datetime.now(UTC).replace(tzinfo=None):
            raise KeyManagerError("'expiration' is before current time", 400)
        body.expiration = expires
    payload = None
    content_type = None
    if body.payload is not None:
        if not body.payload_content_type:
            raise KeyManagerError(
                "If 'payload' is supplied, 'payload_content_type' must be too", 400
            )
        content_type = _content_type(body.payload_content_type)
        payload = _decode(body.payload, content_type, body.payload_content_encoding)
    secret = store.add_secret(
        session,
        sealer(request),
        payload,
        project_id=_owner(ctx),
        creator_id=ctx.project_id,
        name=body.name,
        secret_type=body.secret_type,
        algorithm=body.algorithm,
        bit_length=body.bit_length,
        mode=body.mode,
        expiration=body.expiration,
        payload_content_type=content_type,
    )
    ref = f"{_v1(request)}/secrets/{secret.id}"
    answer = {"secret_ref": ref}
    idempotency.commit(session, keyed, answer)
    response.headers["Location"] = ref
    return answer


@router.get("/v1/secrets", include_in_schema=False)
@router.get("/v1/secrets/")
def list_secrets(
    request: Request,
    limit: Annotated[int, Query(ge=0)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    name: Annotated[str | None, Query(max_length=255)] = None,
    secret_type: Annotated[str | None, Query(max_length=32)] = None,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    filters = {k: v for k, v in (("name", name), ("secret_type", secret_type)) if v}
    limit = min(limit, MAX_LIMIT)
    rows, total = store.listing(session, StoredSecret, _scope(ctx), filters, limit, offset)
    return _page(request, "secrets", [_secret_view(request, s) for s in rows], total, limit, offset)


def _page(
    request: Request, key: str, items: list[dict[str, Any]], total: int, limit: int, offset: int
) -> dict[str, Any]:
    page: dict[str, Any] = {key: items, "total": total}
    url = f"{_v1(request)}/{key}"
    if offset + limit < total:
        page["next"] = f"{url}?limit={limit}&offset={offset + limit}"
    if offset > 0:
        page["previous"] = f"{url}?limit={limit}&offset={max(0, offset - limit)}"
    return page


def _payload_response(request: Request, secret: StoredSecret) -> Response:
    try:
        raw = store.payload(sealer(request), secret)
    except SealError:
        raise KeyManagerError("The secret's payload cannot be opened.", 500) from None
    if raw is None:
        raise KeyManagerError("Secret payload not found.", 404)
    return Response(content=raw, media_type=secret.payload_content_type or TEXT)


@router.get("/v1/secrets/{secret_id}", response_model=None)
def show_secret(
    secret_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any] | Response:
    secret = _find_secret(session, ctx, secret_id)
    accept = request.headers.get("accept", "application/json")
    if "json" in accept or "*/*" in accept or not accept:
        return _secret_view(request, secret)
    return _payload_response(request, secret)  # Barbican's older payload form


@router.get("/v1/secrets/{secret_id}/payload", include_in_schema=False)
@router.get("/v1/secrets/{secret_id}/payload/")
def secret_payload(
    secret_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    return _payload_response(request, _find_secret(session, ctx, secret_id))


@router.put("/v1/secrets/{secret_id}", status_code=204)
async def put_secret_payload(
    secret_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    """The second step of a two-step create: the payload in the body, once."""
    secret = _find_secret(session, ctx, secret_id)
    if secret.sealed_payload is not None:
        raise KeyManagerError("Secret already has data, cannot modify it.", 409)
    content_type = _content_type(request.headers.get("content-type", TEXT))
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "base64":
        raw = _decode(raw.decode("ascii", "replace"), "application/octet-stream", "base64")
    if not raw or len(raw) > MAX_MATERIAL_BYTES:
        raise KeyManagerError(f"The payload must hold 1 to {MAX_MATERIAL_BYTES} bytes", 413)
    store.store_payload(sealer(request), secret, raw, content_type)
    session.commit()
    return Response(status_code=204)


@router.delete("/v1/secrets/{secret_id}", status_code=204)
def delete_secret(
    secret_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    session.delete(_find_secret(session, ctx, secret_id))
    session.commit()
    return Response(status_code=204)


# --- containers -------------------------------------------------------------------------


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(min_length=1, max_length=255)]
    secret_ref: Annotated[str, Field(min_length=1, max_length=1024)]


class ContainerCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(max_length=255)] | None = None
    type: Annotated[str, Field(pattern=f"^({'|'.join(store.CONTAINER_TYPES)})$")]
    secret_refs: Annotated[list[SecretRef], Field(max_length=32)] = []


def _container_view(request: Request, container: StoredContainer) -> dict[str, Any]:
    return {
        "container_ref": f"{_v1(request)}/containers/{container.id}",
        "name": container.name,
        "type": container.type,
        "status": c.ACTIVE,
        "secret_refs": [
            {"name": e["name"], "secret_ref": f"{_v1(request)}/secrets/{e['secret_id']}"}
            for e in container.secret_refs
        ],
        "consumers": [],
        "created": _time(container.created_at),
        "updated": _time(container.updated_at or container.created_at),
        "creator_id": container.creator_id,
    }


def _secret_id(ref: str) -> str:
    return ref.rstrip("/").rsplit("/", 1)[-1]


@router.post("/v1/containers", status_code=201, include_in_schema=False)
@router.post("/v1/containers/", status_code=201)
async def create_container(
    request: Request,
    response: Response,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
    keyed: idempotency.Guard | None = Depends(idempotency.guard),
) -> dict[str, str]:
    body: ContainerCreate = _parse(ContainerCreate, await _json(request))
    names = [e.name for e in body.secret_refs]
    if len(set(names)) != len(names):
        raise KeyManagerError("Duplicate reference names are not allowed.", 400)
    allowed = store.CONTAINER_NAMES.get(body.type)
    if allowed is not None:
        unknown = sorted(set(names) - set(allowed))
        missing = [n for n in store.REQUIRED_NAMES[body.type] if n not in names]
        if unknown or missing:
            raise KeyManagerError(
                f"A {body.type} container takes the secrets {', '.join(allowed)}"
                f" and needs {', '.join(store.REQUIRED_NAMES[body.type])}.",
                400,
            )
    entries = []
    for entry in body.secret_refs:
        secret = store.find(session, StoredSecret, _secret_id(entry.secret_ref), _scope(ctx))
        if secret is None:
            raise KeyManagerError(
                f"Secret provided for '{quote_input(entry.name)}' doesn't exist.", 404
            )
        entries.append({"name": entry.name, "secret_id": secret.id})
    container = StoredContainer(
        project_id=_owner(ctx),
        creator_id=ctx.project_id,
        name=body.name,
        type=body.type,
        secret_refs=entries,
    )
    session.add(container)
    session.flush()
    ref = f"{_v1(request)}/containers/{container.id}"
    answer = {"container_ref": ref}
    idempotency.commit(session, keyed, answer)
    response.headers["Location"] = ref
    return answer


@router.get("/v1/containers", include_in_schema=False)
@router.get("/v1/containers/")
def list_containers(
    request: Request,
    limit: Annotated[int, Query(ge=0)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    name: Annotated[str | None, Query(max_length=255)] = None,
    type: Annotated[str | None, Query(max_length=32)] = None,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    filters = {k: v for k, v in (("name", name), ("type", type)) if v}
    limit = min(limit, MAX_LIMIT)
    rows, total = store.listing(session, StoredContainer, _scope(ctx), filters, limit, offset)
    items = [_container_view(request, c) for c in rows]
    return _page(request, "containers", items, total, limit, offset)


def _find_container(session: Session, ctx: RequestContext, container_id: str) -> StoredContainer:
    container = store.find(session, StoredContainer, container_id, _scope(ctx))
    if container is None:
        raise KeyManagerError("Container not found.", 404)
    return container


@router.get("/v1/containers/{container_id}")
def show_container(
    container_id: str,
    request: Request,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> dict[str, Any]:
    return _container_view(request, _find_container(session, ctx, container_id))


@router.delete("/v1/containers/{container_id}", status_code=204)
def delete_container(
    container_id: str,
    session: Session = Depends(get_session),
    ctx: RequestContext = Depends(get_context),
) -> Response:
    session.delete(_find_container(session, ctx, container_id))
    session.commit()
    return Response(status_code=204)
