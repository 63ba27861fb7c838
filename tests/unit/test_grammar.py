"""The value grammars: shaped values keep their shape; free-form text only has to be storable.

Free-form values (names, descriptions, tags, L7 values, regexes) are written into
configs by how they are quoted, not by refusing them (tests/unit/test_render_haproxy.py
checks that with the real HAProxy); the grammars refuse only a NUL and text that is
not valid Unicode, which no database column or HAProxy word can hold.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from openha.domain import grammar as g

HOSTILE = [
    "a\n",
    "a\r",
    "a\nserver evil 1.2.3.4:80",
    "a\x00b",
    "it's",
    "a\tb",
    "caf\u00e9",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "check",
    [
        g.check_token,
        g.check_hostname,
        g.check_url_path,
        g.check_url,
        g.check_expected_codes,
        g.check_ciphers,
    ],
)
def test_hostile_values_are_refused(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


# Octavia's L7 grammars take an apostrophe (the renderer writes it safely) but no line
# break, blank, NUL or non-ASCII text.
L7_GRAMMARS = [g.check_header_name, g.check_header_value, g.check_cookie_value]


@pytest.mark.parametrize("value", [v for v in HOSTILE if v != "it's"])
@pytest.mark.parametrize("check", [*L7_GRAMMARS, g.check_dn_field])
def test_l7_grammars_refuse_breakouts(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


@pytest.mark.parametrize("check", L7_GRAMMARS)
def test_l7_grammars_take_an_apostrophe(check: Callable[[str], str]) -> None:
    assert check("it's") == "it's"


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (g.check_header_name, 'a"b'),
        (g.check_header_name, "a(b)"),
        (g.check_header_name, "a\\b"),
        (g.check_header_value, "a b"),
        (g.check_header_value, '"a\nb"'),
        (g.check_cookie_value, "a;b"),
        (g.check_dn_field, "1CN"),
    ],
)
def test_l7_grammars_refuse_what_octavia_refuses(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (g.check_config_value, "X-Anything goes #here"),
        (g.check_token, "JSESSIONID"),
        (g.check_hostname, "www.example.com"),
        (g.check_header_name, "X-It's,odd"),
        (g.check_header_value, "www.example.com:8080"),
        (g.check_header_value, '"two words"'),
        (g.check_cookie_value, "a,b"),
        (g.check_dn_field, "businessCategory"),
        (g.check_url_path, "/healthz?full=1"),
        (g.check_url, "https://example.com:8443/a/b?c=d"),
        (g.check_url_prefix, "https://example.com"),
        (g.check_regex, "^/api/v[0-9]+/"),
        (g.check_expected_codes, "200-204"),
        (g.check_expected_codes, "200, 202"),
        (g.check_tag, "team blue"),
    ],
)
def test_ordinary_values_pass(check: Callable[[str], str], value: str) -> None:
    assert check(value) == value


def test_prefix_refuses_a_path() -> None:
    with pytest.raises(ValueError):
        g.check_url_prefix("https://example.com/path")


FREE_FORM = [g.check_free_text, g.check_config_value, g.check_tag]
UNSTORABLE = ["a\x00b", "\x00", "a\ud800b"]  # a NUL; a lone surrogate is not Unicode text


@pytest.mark.parametrize("value", [v for v in HOSTILE if "\x00" not in v])
@pytest.mark.parametrize("check", FREE_FORM)
def test_free_form_text_takes_what_octavia_takes(check: Callable[[str], str], value: str) -> None:
    assert check(value) == value


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize("check", [*FREE_FORM, g.check_regex])
def test_unstorable_text_is_refused(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


def test_regexes_may_hold_quotes_and_control_characters() -> None:
    for pattern in ("it's", "^a\tb$", "x\ny"):
        assert g.check_regex(pattern) == pattern


def test_tags_take_commas_and_nothing_up_to_255_characters() -> None:
    assert g.check_tag("a,b") == "a,b"
    assert g.check_tag("") == ""  # Octavia takes an empty tag too
    assert g.check_tag("x" * 255) == "x" * 255
    with pytest.raises(ValueError):
        g.check_tag("x" * 256)


def test_addresses_are_normalised() -> None:
    assert g.check_ip("2001:DB8::1") == "2001:db8::1"
    assert g.check_cidr("10.1.2.3/8") == "10.0.0.0/8"


@pytest.mark.parametrize("pattern", [r"\N{DIGIT ONE}", r"\u0041", r"[z-a]", r"(?<=a+)b"])
def test_regexes_haproxy_cannot_compile_are_refused(pattern: str) -> None:
    # Python's `re` accepts some of these; HAProxy's PCRE2 does not.
    with pytest.raises(ValueError, match="not a valid regular expression"):
        g.check_regex(pattern)


def test_pcre_only_syntax_is_accepted() -> None:
    assert g.check_regex("^[[:digit:]]+$") == "^[[:digit:]]+$"


def test_cipher_lists() -> None:
    default = "ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384:!aNULL:+SHA1:@STRENGTH"
    assert g.check_ciphers(default) == default
    for bad in ("AES128-SHA crt /etc/shadow", "A'B", "A;B", ""):
        with pytest.raises(ValueError):
            g.check_ciphers(bad)
