"""The embedded certificate store: Barbican v1 secrets and containers, sealed, project-scoped."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openha.models import StoredSecret
from tests.api.certstore_helpers import V1, store_container, store_secret
from tests.conftest import Client
from tests.tlscerts import issue, make_ca


def _req(client: Client, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    return client.http.request(method, path, headers={**client.headers, **headers}, **kw)


def _id(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def test_secret_round_trip_text_and_binary(alice: Client) -> None:
    ref = store_secret(alice, "hello world", name="greeting")
    assert ref.startswith("http://testserver/key-manager/v1/secrets/")
    meta = alice.get(f"{V1}/secrets/{_id(ref)}").json()
    assert meta["name"] == "greeting"
    assert meta["status"] == "ACTIVE"
    assert meta["secret_type"] == "opaque"
    assert meta["content_types"] == {"default": "text/plain"}
    assert "payload" not in meta
    payload = _req(alice, "GET", f"{V1}/secrets/{_id(ref)}/payload", {"Accept": "text/plain"})
    assert payload.status_code == 200 and payload.text == "hello world"

    blob = bytes(range(256))
    ref2 = store_secret(alice, blob, name="blob")
    got = alice.get(f"{V1}/secrets/{_id(ref2)}/payload")
    assert got.content == blob
    assert got.headers["content-type"] == "application/octet-stream"


def test_payloads_are_sealed_at_rest(alice: Client, session_factory: sessionmaker[Session]) -> None:
    ref = store_secret(alice, "very-secret-text")
    with session_factory() as s:
        row = s.scalars(select(StoredSecret).where(StoredSecret.id == _id(ref))).one()
        assert row.sealed_payload and "very-secret-text" not in row.sealed_payload
        assert base64.urlsafe_b64decode(row.sealed_payload)[0] == 0x80  # a Fernet token


def test_two_step_secret(alice: Client) -> None:
    resp = alice.post(f"{V1}/secrets/", {"name": "later"})
    assert resp.status_code == 201
    sid = _id(resp.json()["secret_ref"])
    assert "content_types" not in alice.get(f"{V1}/secrets/{sid}").json()
    put = _req(alice, "PUT", f"{V1}/secrets/{sid}", {"Content-Type": "text/plain"}, content=b"abc")
    assert put.status_code == 204, put.text
    assert alice.get(f"{V1}/secrets/{sid}/payload").text == "abc"
    again = _req(alice, "PUT", f"{V1}/secrets/{sid}", {"Content-Type": "text/plain"}, content=b"x")
    assert again.status_code == 409


def test_secrets_are_project_scoped(alice: Client, bob: Client, admin: Client) -> None:
    ref = store_secret(alice, "alice only")
    sid = _id(ref)
    assert bob.get(f"{V1}/secrets/{sid}").status_code == 404
    assert bob.get(f"{V1}/secrets/{sid}/payload").status_code == 404
    assert bob.delete(f"{V1}/secrets/{sid}").status_code == 404
    assert bob.get(f"{V1}/secrets").json()["total"] == 0
    assert alice.get(f"{V1}/secrets").json()["total"] == 1
    assert admin.get(f"{V1}/secrets/{sid}").status_code == 200
    assert alice.delete(f"{V1}/secrets/{sid}").status_code == 204
    assert alice.get(f"{V1}/secrets/{sid}").status_code == 404


def test_listing_pages_and_filters(alice: Client) -> None:
    for n in range(5):
        store_secret(alice, f"p{n}", name=f"n{n % 2}")
    page = alice.get(f"{V1}/secrets?limit=2&offset=0").json()
    assert page["total"] == 5 and len(page["secrets"]) == 2 and "next" in page
    assert "previous" not in page
    last = alice.get(f"{V1}/secrets?limit=2&offset=4").json()
    assert len(last["secrets"]) == 1 and "next" not in last and "previous" in last
    assert alice.get(f"{V1}/secrets?name=n1").json()["total"] == 2


def test_bad_secrets_are_refused_in_barbican_shape(alice: Client) -> None:
    cases: list[dict[str, Any]] = [
        {"payload": "x"},  # no content type
        {"payload": "", "payload_content_type": "text/plain"},
        {
            "payload": "!!",
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64",
        },
        {"payload": "eA==", "payload_content_type": "application/octet-stream"},
        {"secret_type": "nonsense"},
        {"expiration": "2001-01-01T00:00:00"},
        {"bit_length": -1},
    ]
    for body in cases:
        resp = alice.post(f"{V1}/secrets/", body)
        assert resp.status_code == 400, (body, resp.text)
        assert set(resp.json()) == {"code", "title", "description"}
    assert (
        alice.post(f"{V1}/secrets/", {"payload": "x", "payload_content_type": "a/b"}).status_code
        == 415
    )
    bad_json = _req(
        alice, "POST", f"{V1}/secrets/", {"Content-Type": "application/json"}, content=b"{"
    )
    assert bad_json.status_code == 400
    assert alice.get(f"{V1}/secrets").json()["total"] == 0


def test_certificate_container(alice: Client, bob: Client) -> None:
    ca = make_ca()
    leaf = issue(ca, "www.example.com", ("www.example.com",))
    cert = store_secret(alice, leaf.cert_pem)
    key = store_secret(alice, leaf.key_pem())
    ref = store_container(alice, {"certificate": cert, "private_key": key}, name="web")
    shown = alice.get(f"{V1}/containers/{_id(ref)}").json()
    assert shown["type"] == "certificate" and shown["name"] == "web"
    assert {e["name"]: e["secret_ref"] for e in shown["secret_refs"]} == {
        "certificate": cert,
        "private_key": key,
    }
    assert alice.get(f"{V1}/containers").json()["total"] == 1
    assert bob.get(f"{V1}/containers/{_id(ref)}").status_code == 404
    # Bob cannot put Alice's secrets in his containers.
    resp = bob.post(
        f"{V1}/containers/",
        {"type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": cert}]},
    )
    assert resp.status_code == 404
    # A certificate container needs its certificate and takes only its four names.
    no_cert = [{"name": "private_key", "secret_ref": key}]
    other = [{"name": "certificate", "secret_ref": cert}, {"name": "other", "secret_ref": key}]
    for refs in (no_cert, other):
        resp = alice.post(f"{V1}/containers/", {"type": "certificate", "secret_refs": refs})
        assert resp.status_code == 400, resp.text
    assert alice.delete(f"{V1}/containers/{_id(ref)}").status_code == 204
    assert alice.get(f"{V1}/containers/{_id(ref)}").status_code == 404


def test_version_document(alice: Client) -> None:
    doc = alice.get("/key-manager").json()
    assert doc["versions"]["values"][0]["id"] == "v1"
