"""Keystone mode: tokens validated by keystonemiddleware's `auth_token`, as Octavia does.

keystonemiddleware is WSGI middleware; OpenHA's API is ASGI. `KeystoneAuth` runs
`auth_token` on a WSGI environ made of the request's headers: when it hands the
request on, the ``X-Project-Id``, ``X-Roles`` and ``X-User-Id`` headers it set (it
removes any a client sent) make the identity; when it answers on its own (401, or
503 with Keystone out of reach) its answer is the API's. Token caching, revocation
checks and the service user's own token are keystonemiddleware's.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from keystonemiddleware import auth_token

from openha.api.context import Identity
from openha.api.errors import APIError
from openha.settings import Settings

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class MiddlewareAnswer(APIError):
    """What `auth_token` answered on its own, replayed byte for byte as Octavia's API
    pipeline passes it on: 401 with its JSON body and ``WWW-Authenticate`` for a missing
    or invalid token, 503 "The Keystone service is temporarily unavailable." when
    Keystone cannot be reached to validate one."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code, _, reason = status.partition(" ")
        super().__init__(reason, int(code))
        self.raw = body
        self.headers = {name: value for name, value in headers if name.lower() != "content-length"}


def middleware_options(settings: Settings) -> dict[str, Any]:
    """keystonemiddleware's options (what an Octavia's [keystone_authtoken] says)."""
    return {
        "auth_type": "password",
        "auth_url": settings.keystone_auth_url,
        "www_authenticate_uri": settings.keystone_auth_url,
        "username": settings.keystone_username,
        "password": settings.keystone_password,
        "project_name": settings.keystone_project_name,
        "user_domain_name": settings.keystone_user_domain_name,
        "project_domain_name": settings.keystone_project_domain_name,
        "token_cache_time": settings.keystone_token_cache_time,
        # auth_token decides, as in Octavia's pipeline: a missing or invalid token is its
        # 401, Keystone out of reach its 503 (deferring would turn that into a 401 too).
        "delay_auth_decision": False,
        "include_service_catalog": False,
        "service_type": "load-balancer",
        "log_name": "openha.keystone",
    }


class KeystoneAuth:
    def __init__(self, settings: Settings) -> None:
        if not settings.keystone_auth_url:
            raise ValueError("auth = keystone needs keystone_auth_url")
        self._protocol = auth_token.AuthProtocol(_accept, middleware_options(settings))

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        environ = _environ(headers)
        answer: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer.append((status, headers))

        body: Iterable[bytes] = self._protocol(environ, start_response)
        try:
            content = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        if environ.get("openha.accepted") is None:
            status, answer_headers = answer[-1]
            if not status.startswith("401"):
                log.warning("keystonemiddleware answered %s: %s", status, content[:200])
            raise MiddlewareAnswer(status, answer_headers, content)
        roles = environ.get("HTTP_X_ROLES", "")
        return Identity(
            project_id=environ.get("HTTP_X_PROJECT_ID") or None,
            roles=frozenset(r.strip() for r in roles.split(",") if r.strip()),
            user_id=environ.get("HTTP_X_USER_ID") or None,
        )


def _accept(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    environ["openha.accepted"] = True
    start_response("204 No Content", [])
    return []


def _environ(headers: Mapping[str, str]) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "openha",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[f"HTTP_{key}"] = value
    return environ
