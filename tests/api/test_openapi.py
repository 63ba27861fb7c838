"""/openapi.json says what the API does: its credentials, errors, list parameters, bodies."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from openha.api.app import create_app
from openha.db import make_engine, make_session_factory
from openha.settings import Settings

LIST_PARAMETERS = {"limit", "marker", "page_reverse", "sort", "sort_key", "sort_dir", "fields"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document as /openapi.json serves it, built once: it takes seconds, and only
    the routes decide it (the database is never opened)."""
    root = tmp_path_factory.mktemp("openapi")
    url = f"sqlite:///{root}/openha.db"
    app = create_app(
        Settings(state_dir=root, database_url=url), make_session_factory(make_engine(url))
    )
    resp = TestClient(app).get("/openapi.json")  # no lifespan: nothing starts
    assert resp.status_code == 200
    return dict(resp.json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in document["paths"].items() for m, op in ops.items()]


def test_errors_are_declared_as_the_api_answers_them(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        codes = set(op["responses"])
        assert "422" not in codes, f"{method} {path}"
        if op.get("security") and path != "/metrics":  # /metrics takes no input
            assert {"400", "401", "403", "404"} <= codes, f"{method} {path}"
            if method != "GET":
                assert "409" in codes, f"{method} {path}"


def test_credentials_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["token"] == {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
    assert schemes["agent"]["scheme"] == "bearer"
    by_route = {f"{m} {p}": op.get("security") for m, p, op in operations(document)}
    assert by_route["GET /v2/lbaas/loadbalancers"] == [{"token": []}]
    assert by_route["POST /v2/agent/heartbeat"] == [{"agent": []}]
    assert {"scrape": []} in by_route["GET /metrics"]
    assert by_route["GET /"] is None


def test_every_list_declares_its_query_parameters(document: dict[str, Any]) -> None:
    lists = [
        (p, op)
        for m, p, op in operations(document)
        if m == "GET" and op["operationId"].startswith("list_") and "tags" not in p
    ]
    # Octavia's provider list takes `fields` only; Neutron's extensions are a fixed list;
    # the certificate store pages as Barbican does (limit, offset).
    lists = [
        (p, op)
        for p, op in lists
        if p not in ("/v2/lbaas/providers", "/v2/extensions") and not p.startswith("/key-manager")
    ]
    assert len(lists) >= 18
    assert len(lists) >= 18
    for path, op in lists:
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert names >= LIST_PARAMETERS, path
    listeners = document["paths"]["/v2/lbaas/listeners"]["get"]["parameters"]
    port = next(p for p in listeners if p["name"] == "protocol_port")
    assert port["schema"]["items"] == {
        "type": "integer",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }


NO_BODY = {
    ("PUT", "/v2/lbaas/loadbalancers/{lb_id}/failover", "202"),
    ("PUT", "/v2/lbaas/pools/{pool_id}/members", "202"),
    ("DELETE", "/v2/lbaas/quotas/{project_id}", "202"),
    ("PUT", "/v2/octavia/amphorae/{amphora_id}/failover", "202"),
    ("PUT", "/v2/octavia/amphorae/{amphora_id}/config", "202"),
    ("PUT", "/v2/networks/{ident}/tags/{tag}", "201"),
}


def test_answers_without_a_body_declare_none(document: dict[str, Any]) -> None:
    empty = set()
    for method, path, op in operations(document):
        for code, answer in op["responses"].items():
            if code == "204" or (method, path, code) in NO_BODY:
                assert "content" not in answer, f"{method} {path} {code}"
                empty.add((method, path, code))
    assert empty >= NO_BODY
    assert len(empty) >= 20


def test_list_and_show_answers_are_envelopes(document: dict[str, Any]) -> None:
    def schema_of(path: str) -> dict[str, Any]:
        ref = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[-1]
        return dict(document["components"]["schemas"][name])

    listing = schema_of("/v2/lbaas/loadbalancers")
    assert set(listing["properties"]) == {"loadbalancers", "loadbalancers_links"}
    shown = schema_of("/v2/lbaas/loadbalancers/{ident}")
    assert set(shown["properties"]) == {"loadbalancer"}


def test_creates_and_updates_answer_their_envelope(document: dict[str, Any]) -> None:
    """Every tenant create (201) and update (200) documents the object it answers."""
    checked = 0
    for method, path, op in operations(document):
        if not path.startswith("/v2/lbaas/") or method not in ("POST", "PUT"):
            continue
        status = "201" if method == "POST" else "200"
        content = op["responses"].get(status, {}).get("content")
        if content is None:
            continue  # answers without a body (202 failover, batch members, 204)
        ref = content["application/json"]["schema"].get("$ref")
        assert ref, f"{method} {path} documents no answer"
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert len(schema["properties"]) == 1, f"{method} {path}"  # {"<object>": {...}}
        checked += 1
    assert checked >= 14  # seven kinds, a create and an update each
