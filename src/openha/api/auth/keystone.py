"""Keystone mode: tokens validated by keystonemiddleware's `auth_token`, as Octavia does.

keystonemiddleware is WSGI middleware; OpenHA's API is ASGI. `KeystoneAuth` runs
`auth_token` on a WSGI environ made of the request's headers, with
``delay_auth_decision`` so that it always hands the request on, and reads the
``X-Identity-Status``, ``X-Project-Id``, ``X-Roles`` and ``X-User-Id`` headers it
sets (it removes any a client sent). Token caching, revocation checks and the
service user's own token are keystonemiddleware's.
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


class TokenRejected(APIError):
    """A missing or invalid token: answered with keystonemiddleware's own 401 (what a
    client of Octavia sees), pointing at Keystone."""

    status_code = 401

    def __init__(self, auth_url: str) -> None:
        super().__init__("The request you have made requires authentication.")
        self.headers = {"WWW-Authenticate": f'Keystone uri="{auth_url}"'}
        self.body = {"error": {"code": 401, "title": "Unauthorized", "message": self.message}}


class KeystoneUnavailable(APIError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("The identity service cannot be reached to validate the token.")


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
        "delay_auth_decision": True,
        "include_service_catalog": False,
        "service_type": "load-balancer",
        "log_name": "openha.keystone",
    }


class KeystoneAuth:
    def __init__(self, settings: Settings) -> None:
        if not settings.keystone_auth_url:
            raise ValueError("auth = keystone needs keystone_auth_url")
        self.auth_url = settings.keystone_auth_url
        self._protocol = auth_token.AuthProtocol(_accept, middleware_options(settings))

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        environ = _environ(headers)
        answer: list[str] = []

        def start_response(status: str, _headers: list[tuple[str, str]], *_: Any) -> None:
            answer.append(status)

        body: Iterable[bytes] = self._protocol(environ, start_response)
        if hasattr(body, "close"):
            body.close()
        if environ.get("openha.accepted") is None:
            # auth_token answered on its own: Keystone unreachable (503), or worse.
            log.warning("keystonemiddleware refused the request: %s", answer)
            raise KeystoneUnavailable()
        if environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            raise TokenRejected(self.auth_url)
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
