"""`OPENHA_KEY_MANAGER=barbican` against a real Barbican behind a real Keystone.

Barbican 23 from PyPI (`conformance.barbican`: simple_crypto, SQLite) is the cloud's
`key-manager`; OpenHA runs in Keystone mode reading certificate references from it
as its service user. A tenant stores a PKCS#12 bundle and a certificate container in
Barbican with python-barbicanclient, as the `openstack secret …` commands do, and
creates a TERMINATED_HTTPS listener naming them: OpenHA grants its service user read
access with the tenant's token (Barbican ACLs, as Octavia does) and checks the
certificates; another project's secret, or one that does not exist, is a 400. The
controller's reader (the same `Source`) gives the certificates back.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from barbicanclient import client as barbican_client
from conformance import barbican as bb_harness
from conformance import keystone as harness
from conformance import servers
from conformance.tempest import SERVICE_PASSWORD, keystone_auth, register_openha, vip_network
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from openha.certstore import material
from openha.certstore.barbican import BarbicanKeyManager
from openha.keystone_register import Keystone as KeystoneClient
from openha.settings import Settings
from tests.tlscerts import issue, make_ca

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not harness.available(), reason="no .venv-keystone (make keystone-venv)"),
    pytest.mark.skipif(not bb_harness.available(), reason="no .venv-barbican (make barbican-venv)"),
]

PASSWORD = "user-secret"


@dataclass
class Cloud:
    ks: harness.Keystone
    barbican: bb_harness.Barbican
    base: str
    admin: KeystoneClient
    subnet_id: str

    def token(self, who: str) -> str:
        return self.admin.issue(who, PASSWORD, {"alice": "demo", "bob": "other"}[who])

    def store(self, who: str) -> Any:
        """python-barbicanclient as `who`, with the catalogue's key-manager endpoint."""
        auth = v3.Password(
            auth_url=self.ks.url,
            username=who,
            password=PASSWORD,
            project_name={"alice": "demo", "bob": "other"}[who],
            user_domain_name="Default",
            project_domain_name="Default",
        )
        return barbican_client.Client(session=ks_session.Session(auth=auth))

    def post(self, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"X-Auth-Token": self.token(who)}
        return httpx.post(f"{self.base}{path}", json=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state = tmp_path_factory.mktemp("barbican-e2e")
    with (
        harness.Keystone.started(state / "keystone") as ks,
        bb_harness.Barbican.started(state / "barbican", ks) as barbican,
    ):
        openha = servers.start_openha(state, keystone_auth(ks) | {"OPENHA_KEY_MANAGER": "barbican"})
        try:
            servers.wait_ready(openha)
            admin = register_openha(ks, openha.base)
            domain = admin.domain_id("Default")
            for name, project in (("alice", "demo"), ("bob", "other")):
                project_id = admin.project(project, domain)
                user_id = admin.user(name, PASSWORD, domain, project_id)
                admin.grant(project_id, user_id, admin.role("member"))
            _, subnet_id = vip_network(openha.base, admin.token)
            yield Cloud(ks, barbican, openha.base, admin, subnet_id)
            admin.close()
        finally:
            openha.stop()


def _lb(cloud: Cloud) -> str:
    resp = cloud.post(
        "alice", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": cloud.subnet_id}}
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["loadbalancer"]["id"])


def test_listener_certificates_from_barbican(cloud: Cloud) -> None:
    ca = make_ca()
    default = issue(ca, "default.example", ("default.example",))
    sni = issue(ca, "sni.example", ("sni.example",))
    alice = cloud.store("alice")
    # A PKCS#12 bundle as one secret (the tempest plugin's and Octavia's own form) ...
    p12 = alice.secrets.create(name="sni", payload=sni.pkcs12([ca.cert]))
    p12_ref = p12.store()
    # ... and a certificate container of PEM secrets (`openstack secret container create`).
    parts = {
        "certificate": alice.secrets.create(name="c", payload=default.cert_pem),
        "private_key": alice.secrets.create(name="k", payload=default.key_pem()),
        "intermediates": alice.secrets.create(name="i", payload=ca.cert_pem),
    }
    for secret in parts.values():
        secret.store()
    container = alice.containers.create_certificate(name="tls", **parts)
    container_ref = container.store()
    assert container_ref.startswith(cloud.barbican.url)

    lb_id = _lb(cloud)
    resp = cloud.post(
        "alice",
        "/v2/lbaas/listeners",
        {
            "listener": {
                "loadbalancer_id": lb_id,
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": 443,
                "default_tls_container_ref": container_ref,
                "sni_container_refs": [p12_ref],
            }
        },
    )
    assert resp.status_code == 201, resp.text

    # The tenant's token granted OpenHA's service user read access, as Octavia's does.
    openha_user = cloud.admin.find("users", name="openha")
    assert openha_user is not None
    for ref in (p12_ref, container_ref, *(s.secret_ref for s in parts.values())):
        assert openha_user["id"] in alice.acls.get(ref).get("read").users, ref

    # What the controller reads (the same Source, as the service user) is the material.
    settings = Settings(
        auth="keystone",
        key_manager="barbican",
        keystone_auth_url=cloud.ks.url,
        keystone_password=SERVICE_PASSWORD,
    )
    source = BarbicanKeyManager(settings).source(None, None)  # type: ignore[arg-type]
    got = material.server_certificate(source, container_ref)
    assert got.names == ("default.example",)
    assert "PRIVATE KEY" in got.pem
    assert material.server_certificate(source, p12_ref).names == ("sni.example",)
    assert material.server_certificate(source, p12_ref.rsplit("/", 1)[1]).names == (
        "sni.example",
    )  # a bare UUID, as Octavia accepts


def test_references_the_tenant_cannot_read_are_refused(cloud: Cloud) -> None:
    ca = make_ca()
    other = issue(ca, "bob.example", ("bob.example",))
    bob = cloud.store("bob")
    bobs = bob.secrets.create(name="bob", payload=other.pkcs12())
    bobs_ref = bobs.store()
    lb_id = _lb(cloud)
    missing = f"{cloud.barbican.url}/v1/secrets/0b5e1a4c-6f0e-4a55-8f3e-0d9c1f2a3b4c"
    for ref in (bobs_ref, missing):
        resp = cloud.post(
            "alice",
            "/v2/lbaas/listeners",
            {
                "listener": {
                    "loadbalancer_id": lb_id,
                    "protocol": "TERMINATED_HTTPS",
                    "protocol_port": 443,
                    "default_tls_container_ref": ref,
                }
            },
        )
        assert resp.status_code == 400, resp.text
        assert "Could not retrieve certificate" in resp.text
        assert (
            "PRIVATE" not in resp.text
            and base64.b64encode(other.pkcs12())[:20].decode() not in resp.text
        )
    # Bob's secret was not opened to OpenHA by Alice's attempt.
    assert bob.acls.get(bobs_ref).get("read").users == []

    # Bob opens it to OpenHA for a listener of his own; Alice still cannot use it,
    # though OpenHA's service user could now read it (as in Octavia: the grant decides).
    bobs_lb = cloud.post(
        "bob", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": cloud.subnet_id}}
    )
    assert bobs_lb.status_code == 201, bobs_lb.text
    listener = {
        "loadbalancer_id": bobs_lb.json()["loadbalancer"]["id"],
        "protocol": "TERMINATED_HTTPS",
        "protocol_port": 443,
        "default_tls_container_ref": bobs_ref,
    }
    assert cloud.post("bob", "/v2/lbaas/listeners", {"listener": listener}).status_code == 201
    assert bob.acls.get(bobs_ref).get("read").users != []
    resp = cloud.post(
        "alice",
        "/v2/lbaas/listeners",
        {"listener": {**listener, "loadbalancer_id": lb_id, "protocol_port": 8443}},
    )
    assert resp.status_code == 400, resp.text
