"""Keystone mode end to end: a real Keystone (`conformance.keystone`), OpenHA's API and
controller in Keystone mode, registered as Octavia is, and real clients.

- the `openstack` CLI with password auth (a stock clouds.yaml) creates and lists a
  load balancer;
- each role of both of Octavia's role sets gets what Octavia's policy gives it, call
  by call (the table below; `tests/api/test_role_matrix.py` covers every route with
  the same policy engine in token mode);
- missing, invalid, revoked and expired tokens are 401s with keystonemiddleware's body,
  and Keystone out of reach its 503;
- an operator's policy file, edited while OpenHA runs, overrides a rule.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conformance import keystone as harness
from conformance import servers
from conformance.tempest import keystone_auth, register_openha, vip_network

from openha.keystone_register import Keystone as KeystoneClient
from tests.tlscerts import issue, make_ca

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not harness.available(), reason="no .venv-keystone (make keystone-venv)"),
]

PASSWORD = "user-secret"
CACHE_SECONDS = 1
# Identity -> (project, roles). "demo" holds the objects under test.
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("admin",)),
    "member": ("demo", ("member",)),
    "reader": ("demo", ("reader",)),
    "lb_member": ("demo", ("load-balancer_member",)),
    "lb_observer": ("demo", ("load-balancer_observer",)),
    "lb_global": ("other", ("load-balancer_global_observer",)),
    "no_role": ("demo", ("unrelated",)),
    "other_member": ("other", ("member",)),
}


@dataclass
class Cloud:
    ks: harness.Keystone
    base: str
    admin: KeystoneClient
    subnet_id: str
    lb_id: str
    dir: Path
    policy: Path  # OpenHA's OPENHA_POLICY_FILE, empty: Octavia's defaults

    def token(self, who: str) -> str:
        project, _ = USERS[who]
        password = self.ks.admin_password if who == "admin" else PASSWORD
        return self.admin.issue(who, password, project)

    def call(self, who: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"X-Auth-Token": self.token(who)} if who else {}
        return httpx.request(method, f"{self.base}{path}", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    state = tmp_path_factory.mktemp("keystone-e2e")
    policy = state / "policy.yaml"
    policy.write_text("{}\n")
    with harness.Keystone.started(state / "keystone") as ks:
        auth = keystone_auth(ks, cache_time=CACHE_SECONDS) | {"OPENHA_POLICY_FILE": str(policy)}
        openha = servers.start_openha(state, auth)
        try:
            servers.wait_ready(openha)
            # No Neutron here: clients find subnets at OpenHA's networks API.
            admin = register_openha(ks, openha.base, key_manager=True)
            domain = admin.domain_id("Default")
            for name, (project, roles) in USERS.items():
                if name == "admin":
                    continue
                project_id = admin.project(project, domain)
                user_id = admin.user(name, PASSWORD, domain, project_id)
                for role in roles:
                    admin.grant(project_id, user_id, admin.role(role))
            _, subnet_id = vip_network(openha.base, admin.token)
            member = admin.issue("member", PASSWORD, "demo")
            resp = httpx.post(
                f"{openha.base}/v2/lbaas/loadbalancers",
                json={"loadbalancer": {"name": "demo-lb", "vip_subnet_id": subnet_id}},
                headers={"X-Auth-Token": member},
                timeout=30,
            )
            assert resp.status_code == 201, resp.text
            lb_id = resp.json()["loadbalancer"]["id"]
            yield Cloud(ks, openha.base, admin, subnet_id, lb_id, state, policy)
        finally:
            openha.stop()


def test_openstack_cli_with_password_auth(cloud: Cloud) -> None:
    clouds_yaml = cloud.dir / "clouds.yaml"
    clouds_yaml.write_text(
        json.dumps(
            {
                "clouds": {
                    "ks": {
                        "auth_type": "password",
                        "auth": {
                            "auth_url": cloud.ks.url,
                            "username": "member",
                            "password": PASSWORD,
                            "project_name": "demo",
                            "user_domain_name": "Default",
                            "project_domain_name": "Default",
                        },
                        "region_name": "RegionOne",
                    }
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "OPENHA_"))}
    env |= {"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "OS_CLOUD": "ks"}
    cli = str(Path(sys.executable).parent / "openstack")

    def openstack(*args: str) -> Any:
        done = subprocess.run(
            [cli, *args, "-f", "json"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    made = openstack(
        "loadbalancer", "create", "--name", "cli-lb", "--vip-subnet-id", cloud.subnet_id
    )
    assert made["name"] == "cli-lb"
    listed = {lb["name"] for lb in openstack("loadbalancer", "list")}
    assert {"cli-lb", "demo-lb"} <= listed

    # TLS as Octavia's cookbook does it, with the stock `openstack secret` commands (the
    # catalogue's key-manager is OpenHA's certificate store): a PKCS#12 secret, and a
    # certificate container of PEM secrets, each named by a TERMINATED_HTTPS listener.
    ca = make_ca()
    p12 = issue(ca, "p12.example", ("p12.example",)).pkcs12()
    stored = openstack(
        "secret", "store", "--name", "tls-p12", "-t", "application/octet-stream",
        "-e", "base64", "--payload", base64.b64encode(p12).decode(),
    )  # fmt: skip
    p12_ref = stored["Secret href"]
    leaf = issue(ca, "pem.example", ("pem.example",))
    refs = {
        part: openstack(
            "secret", "store", "--name", f"tls-{part}", "-t", "text/plain", "--payload", pem,
        )["Secret href"]
        for part, pem in (("certificate", leaf.cert_pem), ("private_key", leaf.key_pem()))
    }  # fmt: skip
    container = openstack(
        "secret", "container", "create", "--name", "tls-pem", "--type", "certificate",
        *(arg for part, ref in refs.items() for arg in ("--secret", f"{part}={ref}")),
    )  # fmt: skip
    listener = openstack(
        "loadbalancer", "listener", "create", made["id"], "--name", "https", "--protocol",
        "TERMINATED_HTTPS", "--protocol-port", "443", "--default-tls-container-ref", p12_ref,
        "--sni-container-refs", container["Container href"],
    )  # fmt: skip
    assert listener["default_tls_container_ref"] == p12_ref
    assert listener["sni_container_refs"] == [container["Container href"]]
    # Another project's member is told the secret does not exist.
    other = cloud.call("other_member", "GET", f"/key-manager/v1/secrets/{p12_ref.rsplit('/')[-1]}")
    assert other.status_code == 404, other.text


OK = (200, 201, 202, 204)
LB = "/v2/lbaas/loadbalancers"
ALL = tuple(USERS)
# (call, who may) -> everyone else gets 403. Targets are project demo's load balancer.
TABLE: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", LB, ("admin", "member", "reader", "lb_member", "lb_observer", "lb_global",
                 "other_member")),
    ("GET", f"{LB}/{{lb}}", ("admin", "member", "reader", "lb_member", "lb_observer",
                            "lb_global")),
    ("GET", f"{LB}/{{lb}}/status", ("admin", "member", "reader", "lb_member", "lb_observer",
                                   "lb_global")),
    ("PUT", f"{LB}/{{lb}}", ("admin", "member", "lb_member")),
    ("POST", LB, ("admin", "member", "lb_member", "other_member")),
    ("GET", "/v2/lbaas/quotas/{project}", ("admin", "member", "reader", "lb_member",
                                          "lb_observer", "lb_global")),
    ("PUT", "/v2/lbaas/quotas/{project}", ("admin",)),
    ("GET", "/v2/lbaas/flavorprofiles", ("admin",)),
    ("GET", "/v2/lbaas/flavors", ("admin", "member", "reader", "lb_member", "lb_observer",
                                  "lb_global", "other_member")),
    ("GET", "/v2/octavia/amphorae", ("admin",)),
    ("GET", "/v2/manage/hosts", ("admin",)),
    ("PUT", f"{LB}/{{lb}}/failover", ("admin",)),
]  # fmt: skip


def _body(method: str, path: str, cloud: Cloud) -> Any:
    if method == "POST":
        return {"loadbalancer": {"vip_subnet_id": cloud.subnet_id}}
    if path.endswith("}") and "quotas" in path:
        return {"quota": {"load_balancer": 10}}
    if method == "PUT" and path.endswith("{lb}"):
        return {"loadbalancer": {"description": "changed"}}
    return None


@pytest.mark.parametrize(("method", "path", "allowed"), TABLE)
def test_each_role_gets_what_octavias_policy_gives(
    cloud: Cloud, method: str, path: str, allowed: tuple[str, ...]
) -> None:
    demo = cloud.admin.find("projects", name="demo")
    assert demo is not None
    target = path.replace("{lb}", cloud.lb_id).replace("{project}", demo["id"])
    wrong = []
    for who in ALL:
        resp = cloud.call(who, method, target, _body(method, path, cloud))
        expected_ok = who in allowed
        if (resp.status_code in OK) != expected_ok or (not expected_ok and resp.status_code != 403):
            wrong.append(f"{who}: {resp.status_code} {resp.text[:200]}")
    assert not wrong, f"{method} {path}:\n" + "\n".join(wrong)


def test_lists_are_scoped_to_the_project(cloud: Cloud) -> None:
    names = lambda who: {lb["id"] for lb in cloud.call(who, "GET", LB).json()["loadbalancers"]}  # noqa: E731
    assert cloud.lb_id in names("reader")
    assert cloud.lb_id in names("lb_global")
    assert cloud.lb_id not in names("other_member")


def test_missing_and_invalid_tokens_are_401_with_keystones_answer(cloud: Cloud) -> None:
    for headers in ({}, {"X-Auth-Token": "not-a-token"}):
        resp = httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == 401
        assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.ks.url}"'


def test_revoked_token_is_refused_once_the_cache_lets_go(cloud: Cloud) -> None:
    token = cloud.token("member")
    headers = {"X-Auth-Token": token}
    assert httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30).status_code == 200
    cloud.admin.http.delete(f"{cloud.admin.base}/auth/tokens", headers={"X-Subject-Token": token})
    time.sleep(CACHE_SECONDS + 1)
    assert httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30).status_code == 401


def test_expired_token_is_refused(cloud: Cloud) -> None:
    with cloud.ks.sibling(token_expiration=3) as short:
        client = KeystoneClient(short.url, "admin", cloud.ks.admin_password, "admin", "Default")
        token = client.issue("member", PASSWORD, "demo")
        client.close()
    headers = {"X-Auth-Token": token}
    resp = httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30)
    if resp.status_code == 200:  # the sibling took less than 3 s to stop
        time.sleep(4)
        resp = httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30)
    assert resp.status_code == 401, resp.text


def test_keystone_out_of_reach_is_503_as_in_octavia(cloud: Cloud) -> None:
    """keystonemiddleware's own answer while it cannot validate a token (Octavia's
    API gives the same); once Keystone is back, the same token works."""
    token = cloud.token("member")  # not yet seen by OpenHA, so not in its cache
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    cloud.ks.stop()
    try:
        resp = httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=60)
        assert resp.status_code == 503, resp.text
        assert "The Keystone service is temporarily unavailable." in resp.text
        refused = httpx.post(
            f"{cloud.base}{LB}",
            json={"loadbalancer": {"name": "not-made", "vip_subnet_id": cloud.subnet_id}},
            headers=headers,
            timeout=60,
        )
        assert refused.status_code == 503, refused.text
    finally:
        cloud.ks.serve()
    listed = httpx.get(f"{cloud.base}{LB}", headers=headers, timeout=30)
    assert listed.status_code == 200, listed.text
    assert "not-made" not in {lb["name"] for lb in listed.json()["loadbalancers"]}


def _policy_says(cloud: Cloud, text: str, who: str, expected: int) -> None:
    """Write the policy file, then wait for `who`'s list to answer `expected` (OpenHA
    looks at the file once a second)."""
    cloud.policy.write_text(text)
    stat = cloud.policy.stat()  # a modification time that differs for sure
    os.utime(cloud.policy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    deadline = time.monotonic() + 10
    while (status := cloud.call(who, "GET", LB).status_code) != expected:
        assert time.monotonic() < deadline, f"{who}: {status}, not {expected}"
        time.sleep(0.2)


def test_an_operators_policy_file_overrides_a_rule(cloud: Cloud) -> None:
    rule = "os_load-balancer_api:loadbalancer:get_all"
    assert cloud.call("reader", "GET", LB).status_code == 200
    try:
        _policy_says(cloud, f'"{rule}": "role:admin"\n', "reader", 403)
        assert cloud.call("admin", "GET", LB).status_code == 200
        # The rules the file does not name keep Octavia's defaults.
        assert cloud.call("reader", "GET", f"{LB}/{cloud.lb_id}").status_code == 200
    finally:
        _policy_says(cloud, "{}\n", "reader", 200)
