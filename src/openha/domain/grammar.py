"""Grammars for every user string the API stores, and for those that reach a config.

The API validates with these types (a refusal is a 400); the renderer checks
them again before writing. Safety in a HAProxy file comes from how a value is
written (`openha.render.haproxy.quote`: strong quotes, with quotes and control
characters as HAProxy escapes outside them), so the grammars accept what
Octavia accepts and refuse only what cannot be stored or expressed: a NUL
(neither PostgreSQL text nor HAProxy's C strings hold one) and text that is not
valid Unicode. Values with a shape of their own (host names, URLs, paths,
expected codes, regular expressions) keep that shape's grammar.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from openha.domain import pcre

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&*+\-.^_`|~]+$")  # RFC 7230 token, minus "'"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)
_PATH_CHARS = r"[A-Za-z0-9\-._~!$&()*+,;=:@/%?]"
_URL_PATH = re.compile(rf"^/{_PATH_CHARS}*$")
_URL = re.compile(
    r"^(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:(?P<port>\d{1,5}))?"
    rf"(?P<path>/{_PATH_CHARS}*)?$"
)
_EXPECTED_CODES = re.compile(r"^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$")
# Octavia's L7 grammars (octavia/common/constants.py). A header or cookie name: an RFC
# 7230 token plus the apostrophe and the comma Octavia's character range lets in; never a
# double quote, backslash, parenthesis or blank, so that it can be written as one quoted
# fetch argument.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+,\-.^_`|~]+")
# An RFC 7230 header value without blanks, or one quoted in double quotes with blanks.
_HEADER_VALUE = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\]^_`{|}~\\]+")
_QUOTED_HEADER_VALUE = re.compile(r"\"[A-Za-z0-9 \t!\"#$%&'()*+,\-./:;<=>?@\[\]^_`{|}~\\]*\"")
# An RFC 6265 cookie value.
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9!#$%&'()*+,\-./:<=>?@\[\]^_`{|}~]+")
# A certificate subject field name (octavia_lib's DISTINGUISHED_NAME_FIELD_REGEX).
_DN_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
MAX_TAG_LENGTH = 255


def check_storable(value: str) -> str:
    """Any text a database column and a HAProxy word can hold: no NUL, valid Unicode."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def check_free_text(value: str) -> str:
    """Names and descriptions: shown back to users, never written into a config.

    Octavia takes any string here, control characters included; so does OpenHA.
    """
    return check_storable(value)


def check_config_value(value: str) -> str:
    """A free-form value written into a HAProxy file (an ACL pattern, a header value).

    Anything storable can be written as one HAProxy word (see
    `openha.render.haproxy.quote`), an apostrophe or a tab included.
    """
    return check_storable(value)


def check_token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be an HTTP token: letters, digits and !#$%&*+-.^_`|~ only")
    return value


def check_hostname(value: str) -> str:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a valid DNS host name")
    return value


def check_header_name(value: str) -> str:
    """A header or cookie name an L7 rule compares (Octavia's HTTP_HEADER_NAME_REGEX)."""
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("must be an HTTP header name: letters, digits and !#$%&'*+,-.^_`|~")
    return value


def check_header_value(value: str) -> str:
    """What an L7 rule compares a header, host name, path or file type with (Octavia's
    header value: no blank, or blanks inside double quotes)."""
    if not (_HEADER_VALUE.fullmatch(value) or _QUOTED_HEADER_VALUE.fullmatch(value)):
        raise ValueError(
            "must be an HTTP header value: printable ASCII without blanks, or quoted "
            'in double quotes ("a b")'
        )
    return value


def check_cookie_value(value: str) -> str:
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError("must be an HTTP cookie value: printable ASCII without ;, \\ and blanks")
    return value


def check_dn_field(value: str) -> str:
    """A field of a certificate's subject (CN, OU, businessCategory ...)."""
    if not _DN_FIELD.fullmatch(value):
        raise ValueError("must be a distinguished name field: a letter, then letters, digits, -")
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
    check_config_value(value)
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


# OpenSSL cipher strings: names joined by ':' with the list operators (!, +, -, @=).
_CIPHERS = re.compile(r"[A-Za-z0-9_\-+!@=.:,]+")


def check_ciphers(value: str) -> str:
    """A TLS cipher list (listeners' and pools' tls_ciphers), written as one word."""
    if not _CIPHERS.fullmatch(value):
        raise ValueError("must be an OpenSSL cipher string (letters, digits and _-+!@=.:,)")
    return value


def check_tag(value: str) -> str:
    """Tags are never written into a config: any text up to 255 characters, commas and
    the empty string included (Octavia's StringType(max_length=255))."""
    if len(value) > MAX_TAG_LENGTH:
        raise ValueError(f"tags are at most {MAX_TAG_LENGTH} characters long")
    return check_storable(value)


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be a CIDR such as 192.0.2.0/24") from None


def check_network_cidr(value: str) -> str:
    """A subnet's CIDR: its address is the network's, no host bits set (Neutron's rule)."""
    normalized = check_cidr(value)
    if (
        ipaddress.ip_network(value, strict=False).network_address
        != ipaddress.ip_interface(value).ip
    ):
        raise ValueError(f"is not a network address; {normalized} is")
    return normalized


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


def tag_set(tags: list[str]) -> list[str]:
    """Tags are a set: Octavia keeps one row per (object, tag) and reads them back in key
    order, so a repeated tag counts once and the list comes back sorted."""
    return sorted(set(tags))


Tags = Annotated[list[Tag], AfterValidator(tag_set)]
Cidr = Annotated[str, AfterValidator(check_cidr)]
NetworkCidr = Annotated[str, AfterValidator(check_network_cidr)]
IPAddress = Annotated[str, AfterValidator(check_ip)]
