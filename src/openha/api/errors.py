"""API errors rendered the way Octavia renders them.

Octavia has two shapes. What its controllers refuse (validation, a missing
object, a conflict) WSME renders as `faultcode`, `faultstring`, `debuginfo`.
What is refused before a controller runs (an unknown route, a method the
route lacks, pagination parameters its hooks reject) WebOb renders as `code`,
`title`, `description`: `RoutingError` and the Starlette handlers below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from openha import ipam

log = logging.getLogger(__name__)

# An error quotes at most this much of what it refuses (a 5 MB name is not echoed back).
QUOTED_INPUT_LIMIT = 100
# And no reply says more than this, whatever a message quotes.
MESSAGE_LIMIT = 2000


def quote_input(value: Any, limit: int = QUOTED_INPUT_LIMIT) -> str:
    """`value` as an error message may quote it: cut to `limit` characters (with an
    ellipsis) and encodable (a lone surrogate is shown as its escape)."""
    text = encodable(str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def encodable(text: str) -> str:
    """`text` with whatever UTF-8 cannot encode (lone surrogates) shown as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _message(text: str | None) -> str | None:
    if text is None:
        return None
    text = encodable(text)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


class APIError(Exception):
    status_code = 500
    faultcode = "Server"
    # An answer made elsewhere (keystonemiddleware's 401 and 503), replayed as it is
    # with its headers (which give its content type) instead of WSME's fault.
    raw: bytes | None = None
    headers: dict[str, str] | None = None

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
            self.faultcode = "Client" if status_code < 500 else "Server"


class BadRequest(APIError):
    status_code = 400
    faultcode = "Client"


class Forbidden(APIError):
    status_code = 403
    faultcode = "Client"


class PolicyForbidden(Forbidden):
    def __init__(self) -> None:
        super().__init__("Policy does not allow this request to be performed.")


class NotFound(APIError):
    status_code = 404
    faultcode = "Client"

    @classmethod
    def resource(cls, resource: str, ident: str) -> NotFound:
        return cls(f"{resource} {ident} not found.")


class Conflict(APIError):
    status_code = 409
    faultcode = "Client"


class Unauthorized(APIError):
    status_code = 401
    faultcode = "Client"


# Lower layers raise their own errors; this is where they become HTTP answers.
ADDRESS_ERROR_STATUS: dict[type[ipam.AddressError], int] = {
    ipam.AddressOutsideSubnet: 400,
    ipam.AddressNotUsable: 400,
    ipam.AddressInUse: 409,
    ipam.SubnetExhausted: 409,
}


class RoutingError(APIError):
    """A refusal Octavia makes before its controllers run, in WebOb's shape."""

    status_code = 400
    faultcode = "Client"


# WebOb's titles for the statuses routing-level errors use.
_TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def fault(status_code: int, message: str, debuginfo: Any = None) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={
            "faultcode": "Client" if status_code < 500 else "Server",
            "faultstring": _message(message),
            "debuginfo": debuginfo,
        },
    )


def webob_fault(
    status_code: int, description: str | None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    title = _TITLES.get(status_code) or HTTPStatus(status_code).phrase
    return JSONResponse(
        status_code=status_code,
        content={"code": status_code, "title": title, "description": _message(description)},
        headers=dict(headers or {}),
    )


def describe_validation_error(errors: list[Any], body: Any = None) -> str:
    """One Octavia-style sentence per error: which field, which value, why."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        # Drop the envelope key and union tags so the field name reads like Octavia's.
        field = quote_input(".".join(loc[1:] if len(loc) > 1 else loc) or "body")
        value = err.get("input")
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            parts.append(f"Unknown attribute for argument {field}.")
            continue
        if err.get("type") == "missing":
            parts.append(f"Mandatory field missing: {field}.")
            continue
        shown = quote_input(value) if not isinstance(value, dict | list) else "..."
        parts.append(
            f"Invalid input for field/attribute {field}. Value: '{shown}'. "
            f"{quote_input(msg, MESSAGE_LIMIT)}"
        )
    return " ".join(parts) or "Invalid input."


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        if isinstance(exc, RoutingError):
            return webob_fault(exc.status_code, exc.message)
        if exc.raw is not None:
            return Response(exc.raw, status_code=exc.status_code, headers=exc.headers)
        return fault(exc.status_code, exc.message)

    @app.exception_handler(ipam.AddressError)
    async def _address_error(_: Request, exc: ipam.AddressError) -> JSONResponse:
        return fault(ADDRESS_ERROR_STATUS.get(type(exc), 409), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return fault(400, describe_validation_error(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return fault(400, describe_validation_error(list(exc.errors())))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return fault(409, "The request conflicts with an existing resource.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            # Pecan's own 404/405 under the v2 controllers carry an empty
            # description; at the root, where no controller matched, a null one.
            versioned = request.url.path.startswith(("/v2/", "/v2.0/"))
            return webob_fault(exc.status_code, "" if versioned else None, exc.headers)
        return fault(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return fault(500, "An unexpected error occurred.")
