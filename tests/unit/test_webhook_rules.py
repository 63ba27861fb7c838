"""Webhooks' pure rules: signatures a receiver can check, what a subscription hears,
which URLs and kinds it may name, and how retries back off."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from openha.domain.webhooks import (
    backoff,
    hears,
    kind_matches,
    kinds_problem,
    sign,
    url_problem,
    verify,
)

BODY = b'{"event":{"kind":"member.operating_status"}}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = sign("s3cret", BODY, timestamp=1_700_000_000)
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_only_the_same_secret_body_and_a_fresh_stamp() -> None:
    now = 1_700_000_000
    header = sign("s3cret", BODY, timestamp=now)
    assert verify("s3cret", header, BODY, now=now + 299)
    assert not verify("s3cret", header, BODY, now=now + 301)  # a replay, too late
    assert not verify("s3cret", header, BODY, now=now - 301)  # from the future
    assert not verify("other", header, BODY, now=now)
    assert not verify("s3cret", header, BODY + b" ", now=now)
    # The stamp is signed: moving it breaks the signature.
    moved = header.replace("t=1700000000", "t=1700000100")
    assert not verify("s3cret", moved, BODY, now=now + 100)
    for broken in ("", "t=abc,v1=00", "v1=" + header.split("v1=")[1], "t=1700000000"):
        assert not verify("s3cret", broken, BODY, now=now)
    # Several v1 values (a receiver rotating secrets) pass if one matches.
    assert verify("s3cret", f"{header},v1=deadbeef", BODY, now=now)


def test_kinds_and_filters() -> None:
    assert kind_matches([], "host.down")
    assert kind_matches(["member.*"], "member.operating_status")
    assert not kind_matches(["member.*"], "members.x")
    assert not kind_matches(["host.down"], "host.up")
    base = {
        "kinds": [],
        "min_severity": "INFO",
        "load_balancer_id": None,
        "project_id": "p1",
        "all_projects": False,
        "event_kind": "loadbalancer.apply_failed",
        "event_severity": "WARNING",
        "event_project_id": "p1",
        "event_load_balancer_id": "lb1",
    }
    assert hears(**base)  # type: ignore[arg-type]
    assert not hears(**base | {"event_project_id": "p2"})  # type: ignore[arg-type]
    assert not hears(**base | {"event_project_id": None})  # type: ignore[arg-type]
    assert hears(**base | {"event_project_id": None, "all_projects": True})  # type: ignore[arg-type]
    assert not hears(**base | {"min_severity": "ERROR"})  # type: ignore[arg-type]
    # Which host runs what is the operators' business, even for a project's LB.
    assert not hears(**base | {"event_kind": "instance.rebuilt"})  # type: ignore[arg-type]
    assert hears(**base | {"event_kind": "instance.rebuilt", "all_projects": True})  # type: ignore[arg-type]
    assert hears(**base | {"load_balancer_id": "lb1"})  # type: ignore[arg-type]
    assert not hears(**base | {"load_balancer_id": "lb2"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/",
        "javascript:alert(1)",
        "http://",
        "http://a b/",
        "http://h/\nX-Injected: 1",
        "http://u:p@h/",
        "http://h:0x50/",
        "https://h:70000/",
    ],
)
def test_bad_urls(url: str) -> None:
    assert url_problem(url) is not None


def test_good_urls_and_kinds() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://hooks.example.com/a?b=c", "http://[::1]/"):
        assert url_problem(url) is None, url
    assert kinds_problem(["member.*", "host.down", "quota.refused"]) is None
    for bad in ([".*"], ["a b"], ["x" * 65], ["member.*.*"], ["ok"] * 51):
        assert kinds_problem(bad) is not None, bad


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff(n, 2.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
