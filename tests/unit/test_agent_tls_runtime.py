"""Certificate rotation through HAProxy's runtime API: which changes can, and what is logged."""

from __future__ import annotations

from openha.agent.haproxy import describe_command, runtime_answer_ok, tls_runtime_changes

PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n"  # noqa: E501


def test_changed_certificates_become_transactions() -> None:
    changed = {"/a/files/l1-0.pem": PEM, "/a/files/p1-client.pem": "X"}
    commands = tls_runtime_changes(changed)
    assert commands is not None
    assert [c.split("\n", 1)[0] for c in commands] == [
        "set ssl cert /a/files/l1-0.pem <<",
        "commit ssl cert /a/files/l1-0.pem",
        "set ssl cert /a/files/p1-client.pem <<",
        "commit ssl cert /a/files/p1-client.pem",
    ]
    assert commands[0] == f"set ssl cert /a/files/l1-0.pem <<\n{PEM}"
    assert commands[2].endswith("X\n")  # the payload ends with a line end


def test_what_needs_a_reload() -> None:
    assert tls_runtime_changes(None) is None  # a new file
    assert tls_runtime_changes({"/a/files/l1.crt-list": "/a/files/l1-0.pem\n"}) is None
    # A new CA or CRL must hold at once: resumed TLS sessions would skip it.
    assert tls_runtime_changes({"/a/files/l1-ca.pem": "CA\n"}) is None
    assert tls_runtime_changes({"/a/files/p1-crl.pem": "X\n"}) is None
    assert tls_runtime_changes({"/a/fi les/l1-0.pem": PEM}) is None
    assert tls_runtime_changes({"/a/files/vrrp_notify.sh": "#!/bin/sh\n"}) == []
    assert tls_runtime_changes({}) == []


def test_answers_and_logs() -> None:
    set_cmd = f"set ssl cert /a/x.pem <<\n{PEM}"
    assert runtime_answer_ok("Transaction created for certificate /a/x.pem!\n", set_cmd)
    assert not runtime_answer_ok("unable to load the certificate\n", set_cmd)
    assert runtime_answer_ok("Committing /a/x.pem.\nSuccess!\n", "commit ssl cert /a/x.pem")
    assert not runtime_answer_ok("No ongoing transaction!\n", "commit ssl cert /a/x.pem")
    assert describe_command(set_cmd) == "set ssl cert /a/x.pem"
    assert "PRIVATE" not in describe_command(set_cmd)
