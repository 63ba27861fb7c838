"""Strict grammars for every user string that can reach a HAProxy or keepalived file.

The API validates with these types (a refusal is a 400); the renderer checks
them again before quoting, so a value that slipped past the API still cannot
break out of its token. Anything that could end a line, a token or a quote is
refused, never escaped.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from openha.domain import pcre

# Printable ASCII without the single quote: values are rendered inside HAProxy's
# strong (single) quotes, where nothing else is interpreted.
_QUOTABLE = re.compile(r"^[\x20-\x26\x28-\x7e]*$")
_NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&*+\-.^_`|~]+$")  # RFC 7230 token, minus "'"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)
_WILDCARD_HOSTNAME = re.compile(r"^(\*\.)?" + _HOSTNAME.pattern[1:])
_PATH_CHARS = r"[A-Za-z0-9\-._~!$&()*+,;=:@/%?]"
_URL_PATH = re.compile(rf"^/{_PATH_CHARS}*$")
_URL = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:(?P<port>\d{1,5}))?"
    rf"(?P<path>/{_PATH_CHARS}*)?$"
)
_EXPECTED_CODES = re.compile(r"^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$")
_TAG = re.compile(r"^[^\x00-\x1f\x7f,]{1,255}$")


def check_free_text(value: str) -> str:
    """Names and descriptions: shown back to users, never written into a config."""
    if not _NO_CONTROL.fullmatch(value):
        raise ValueError("must not contain control characters")
    return value


def check_quotable(value: str) -> str:
    if not _QUOTABLE.fullmatch(value):
        raise ValueError("must be printable ASCII without quotes (')")
    return value


def check_token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be an HTTP token: letters, digits and !#$%&*+-.^_`|~ only")
    return value


def check_hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a valid DNS host name")
    return value


def check_wildcard_hostname(value: str) -> str:
    if not _WILDCARD_HOSTNAME.fullmatch(value):
        raise ValueError("must be a valid host name, optionally starting with '*.'")
    return value


def check_url_path(value: str) -> str:
    if not _URL_PATH.fullmatch(value) or len(value) > 2048:
        raise ValueError("must be a URL path starting with '/' made of RFC 3986 characters")
    return value


def check_url(value: str) -> str:
    m = _URL.fullmatch(value)
    if not m or len(value) > 2048:
        raise ValueError("must be an http:// or https:// URL made of RFC 3986 characters")
    if m.group("port") and not 0 < int(m.group("port")) < 65536:
        raise ValueError("has an invalid port")
    return value


def check_url_prefix(value: str) -> str:
    m = _URL.fullmatch(value)
    if not m or (m.group("path") not in (None, "", "/")):
        raise ValueError("must be a scheme and host such as https://www.example.com")
    return value


def check_regex(value: str) -> str:
    """A regex HAProxy will compile: judged by the system's PCRE2, as HAProxy does."""
    check_quotable(value)
    if pcre.available():
        error = pcre.compile_error(value)
    else:  # API-only hosts without libpcre2 still refuse what Python cannot compile
        try:
            re.compile(value)
            error = None
        except re.error as exc:
            error = str(exc)
    if error:
        raise ValueError(f"is not a valid regular expression: {error}")
    return value


def check_expected_codes(value: str) -> str:
    if not _EXPECTED_CODES.fullmatch(value):
        raise ValueError("must be a code (200), a list (200, 202) or a range (200-204)")
    return value


def check_tag(value: str) -> str:
    if not _TAG.fullmatch(value):
        raise ValueError("tags are 1-255 characters without commas or control characters")
    return value


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be a CIDR such as 192.0.2.0/24") from None


def check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address") from None


FreeText = Annotated[str, Field(max_length=255), AfterValidator(check_free_text)]
Token = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(check_token)]
HostName = Annotated[str, Field(max_length=255), AfterValidator(check_hostname)]
UrlPath = Annotated[str, AfterValidator(check_url_path)]
Url = Annotated[str, AfterValidator(check_url)]
UrlPrefix = Annotated[str, AfterValidator(check_url_prefix)]
ExpectedCodes = Annotated[str, AfterValidator(check_expected_codes)]
Tag = Annotated[str, AfterValidator(check_tag)]
Cidr = Annotated[str, AfterValidator(check_cidr)]
IPAddress = Annotated[str, AfterValidator(check_ip)]
