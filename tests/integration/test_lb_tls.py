"""TLS through the whole stack: certificate store → API → controller → agent → HAProxy, on the wire.

Certificates are made here (`tests.tlscerts`), stored through the embedded Barbican API
and referenced by listeners and pools as a tenant would. Clients are the real `curl`
and `openssl s_client`, run inside a lab client namespace: SNI picks the certificate
for each name and the default otherwise, h2 is negotiated, HSTS and the
X-Forwarded-Proto / X-SSL-* headers arrive, MANDATORY client authentication refuses
a client without a certificate and one the CRL revokes, and a pool re-encrypts to a
TLS member it verifies (and refuses one its CA did not sign). Certificates with their
keys live on the agent's tmpfs (0600, root's), linked from the instance directory,
never in its spec on disk, and go with it; an agent restart adopts HAProxy as it
runs, and after a reboot (the tmpfs emptied) the controller sends them again.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lbhelpers import delete_lb, update
from stack import Stack, wait_for
from tests.tlscerts import Issued, issue, make_ca, make_crl

from openha.agent.keyfiles import default_keys_dir, mount_of
from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

V1 = "/key-manager/v1"
NAMES = ("one.example", "two.example")


@dataclass
class World:
    lab: Lab
    stack: Stack
    client: ClientNamespace
    web: BackendServer
    tmp: Path
    ca: Issued

    def secret(self, payload: str, name: str = "s") -> str:
        body = {"name": name, "payload": payload, "payload_content_type": "text/plain"}
        resp = self.stack.tenant.post(f"{V1}/secrets/", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["secret_ref"])

    def container(self, leaf: Issued) -> str:
        refs = [
            {"name": "certificate", "secret_ref": self.secret(leaf.cert_pem)},
            {"name": "private_key", "secret_ref": self.secret(leaf.key_pem())},
            {"name": "intermediates", "secret_ref": self.secret(self.ca.cert_pem)},
        ]
        body = {"type": "certificate", "name": "c", "secret_refs": refs}
        resp = self.stack.tenant.post(f"{V1}/containers/", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["container_ref"])

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        path.chmod(0o600)
        return str(path)

    def run(self, *cmd: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.client.namespace, *cmd],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="ohtls-") as tmp:
        stack = Stack(lab)
        try:
            stack.add_agent()
            web = BackendServer(lab, "web1")
            yield World(lab, stack, ClientNamespace(lab, "c1"), web, Path(tmp), make_ca())
        finally:
            stack.close()


@pytest.fixture(autouse=True)
def _delete_lbs(world: World) -> Iterator[None]:
    yield
    stack = world.stack
    for lb in stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        delete_lb(stack, lb["id"])
    # Certificate files went with their instance, from the disk and from the tmpfs.
    assert stack.agents[0].instance_dirs() == []
    keys = default_keys_dir(stack.agents[0].dir)
    assert not keys.exists() or list(keys.iterdir()) == []


def https_lb(world: World, backend: BackendServer, pool: dict[str, Any] | None = None,
             **listener: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:  # fmt: skip
    stack = world.stack
    default = issue(world.ca, "default.example", ("default.example",), kind="rsa")
    sni = [issue(world.ca, name, (name,)) for name in NAMES]
    lb = stack.create("loadbalancers", "loadbalancer", {"vip_subnet_id": stack.subnet_id})
    li = stack.create(
        "listeners",
        "listener",
        {
            "loadbalancer_id": lb["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": 443,
            "default_tls_container_ref": world.container(default),
            "sni_container_refs": [world.container(leaf) for leaf in sni],
            "insert_headers": {
                "X-Forwarded-Proto": "true",
                "X-SSL-Client-CN": "true",
                "X-SSL-Client-Has-Cert": "true",
            },
            "hsts_max_age": 3600,
            "hsts_include_subdomains": True,
            **listener,
        },
    )
    po = stack.create(
        "pools",
        "pool",
        {
            "listener_id": li["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            **(pool or {}),
        },
    )
    stack.create(
        f"pools/{po['id']}/members",
        "member",
        {"address": backend.ip, "protocol_port": backend.port},
    )
    lb = stack.wait_active(lb["id"])
    return lb, li, po


def curl(world: World, vip: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """GET https://<name>/ at the VIP, checking the certificate against the test CA."""
    ca = world.file("ca.pem", world.ca.cert_pem)
    return world.run(
        "curl", "-sS", "--max-time", "5", "--cacert", ca, "--resolve", f"{name}:443:{vip}",
        "-D", "-", *extra, f"https://{name}/",
    )  # fmt: skip


def wait_serving(world: World, vip: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result: list[subprocess.CompletedProcess[str]] = []

    def ok() -> bool:
        result[:] = [curl(world, vip, NAMES[0], *extra)]
        return result[0].returncode == 0

    wait_for(ok, 20, 0.2, what="HTTPS answers")
    return result[0]


def served_subject(world: World, vip: str, servername: str | None) -> str:
    cmd = ["openssl", "s_client", "-connect", f"{vip}:443", "-brief"]
    if servername:
        cmd += ["-servername", servername]
    out = world.run(*cmd, stdin="")
    text = out.stdout + out.stderr
    line = next((x for x in text.splitlines() if x.startswith("Peer certificate:")), "")
    assert line, text
    return line


def body_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    body = dict(json.loads(result.stdout.split("\n\n", 1)[1]))
    # HAProxy sends header names in lower case.
    body["headers"] = {k.lower(): v for k, v in body["headers"].items()}
    return body


def test_sni_default_headers_h2_and_files(world: World) -> None:
    lb, li, _ = https_lb(world, world.web)
    vip = lb["vip_address"]
    first = wait_serving(world, vip)
    # Each name gets its own certificate (curl checks the name against the CA-signed cert).
    for name in NAMES:
        result = curl(world, vip, name)
        assert result.returncode == 0, result.stderr
        assert served_subject(world, vip, name).endswith(f"CN = {name}")
    # Any other name, or none, gets the default certificate.
    assert served_subject(world, vip, "other.example").endswith("CN = default.example")
    assert served_subject(world, vip, None).endswith("CN = default.example")
    # HSTS to the client; X-Forwarded-Proto and X-SSL-* to the member.
    head = first.stdout.split("\n\n", 1)[0].lower()
    assert "strict-transport-security: max-age=3600; includesubdomains;" in head
    seen = body_of(first)["headers"]
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-ssl-client-has-cert"] == "0"
    # h2 is negotiated (ALPN h2, http/1.1 by default).
    h2 = curl(world, vip, NAMES[1], "--http2", "-o", "/dev/null", "-w", "%{http_version}")
    assert h2.returncode == 0 and h2.stdout.endswith("2"), h2.stdout
    h1 = curl(world, vip, NAMES[1], "--http1.1", "-o", "/dev/null", "-w", "%{http_version}")
    assert h1.stdout.endswith("1.1"), h1.stdout
    # Keys live on the agent's tmpfs, readable by root alone, linked from the instance's
    # files directory (the path the configuration names); nowhere on its disk.
    (instance,) = world.stack.agents[0].instance_dirs()
    pems = sorted((instance / "files").glob(f"{li['id']}-*.pem"))
    assert len(pems) == 3
    keys = default_keys_dir(world.stack.agents[0].dir) / instance.name
    for pem in pems:
        assert pem.is_symlink()
        real = pem.resolve()
        assert real.parent == keys
        found = mount_of(real)
        assert found is not None and found[1] == "tmpfs", found
        st = real.stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
        assert "PRIVATE KEY" in real.read_text()
    assert keys.stat().st_mode & 0o777 == 0o700
    for path in instance.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_socket():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    # An operator's sync pushes the whole tree again: the certificates go with it (a
    # tree without them would leave HAProxy's files stale-marked and removed).
    resp = world.stack.admin.post(f"/v2/manage/loadbalancers/{lb['id']}/sync")
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]  # the sync is an operation the controller runs
    synced = wait_for(
        lambda: (
            (op := world.stack.admin.get(location).json()["operation"])["state"]
            in ("SUCCEEDED", "FAILED")
            and op
        ),
        30,
        what="the sync over",
    )
    assert synced["state"] == "SUCCEEDED", synced
    diff = world.stack.admin.get(f"/v2/manage/loadbalancers/{lb['id']}/diff").json()
    assert diff["in_sync"] is True, diff
    assert sorted((instance / "files").glob(f"{li['id']}-*.pem")) == pems
    assert curl(world, vip, NAMES[1]).returncode == 0


def test_mandatory_client_authentication_with_crl(world: World) -> None:
    good = issue(world.ca, "alice-client", client=True)
    revoked = issue(world.ca, "mallory-client", client=True)
    lb, li, _ = https_lb(
        world,
        world.web,
        client_authentication="MANDATORY",
        client_ca_tls_container_ref=world.secret(world.ca.cert_pem, "ca"),
        client_crl_container_ref=world.secret(make_crl(world.ca, [revoked.cert]), "crl"),
    )
    vip = lb["vip_address"]
    good_cert = world.file("good.pem", good.cert_pem + good.key_pem())
    ok = wait_serving(world, vip, "--cert", good_cert)
    seen = body_of(ok)["headers"]
    # HAProxy's set-header does not apply the %{+Q} quoting: the bare name arrives.
    assert seen["x-ssl-client-cn"] == "alice-client"
    assert seen["x-ssl-client-has-cert"] == "1"
    # No certificate: the handshake is refused.
    assert curl(world, vip, NAMES[0]).returncode != 0
    # A certificate the CRL revokes: refused as well.
    bad_cert = world.file("revoked.pem", revoked.cert_pem + revoked.key_pem())
    assert curl(world, vip, NAMES[0], "--cert", bad_cert).returncode != 0
    # OPTIONAL lets the certificate-less client in, and says so.
    update(world.stack, f"listeners/{li['id']}", "listener", {"client_authentication": "OPTIONAL"})
    world.stack.wait_active(lb["id"])
    anonymous = curl(world, vip, NAMES[0])
    assert anonymous.returncode == 0, anonymous.stderr
    assert body_of(anonymous)["headers"]["x-ssl-client-has-cert"] == "0"


def test_reencryption_verifies_members(world: World) -> None:
    # HAProxy checks the member's certificate against the SNI it forwards (the client's).
    member_cert = issue(world.ca, "member.internal", ("member.internal", *NAMES))
    member_ca = make_ca("member clients CA")
    pool_client = issue(member_ca, "openha-pool", client=True)
    tls_web = BackendServer(
        world.lab,
        "tlsweb",
        port=8443,
        tls_cert=world.file("member.pem", member_cert.cert_pem + member_cert.key_pem()),
        tls_client_ca=world.file("member-ca.pem", member_ca.cert_pem),
    )
    ca_ref = world.secret(world.ca.cert_pem, "ca")
    lb, _, po = https_lb(
        world,
        tls_web,
        pool={
            "tls_enabled": True,
            "ca_tls_container_ref": ca_ref,
            "tls_container_ref": world.container(pool_client),
        },
    )
    vip = lb["vip_address"]
    result = wait_serving(world, vip)
    # The member saw HAProxy's client certificate: the pool re-encrypted with it.
    assert body_of(result)["tls_client"] == "commonName=openha-pool"
    # A CA that did not sign the member's certificate: HAProxy refuses the member.
    other_ca = make_ca("unrelated CA")
    update(
        world.stack,
        f"pools/{po['id']}",
        "pool",
        {"ca_tls_container_ref": world.secret(other_ca.cert_pem, "other-ca")},
    )
    world.stack.wait_active(lb["id"])
    codes: list[str] = []

    def refused() -> bool:
        out = curl(world, vip, NAMES[0], "-o", "/dev/null", "-w", "%{http_code}").stdout
        codes.append(out[-3:])
        return out.endswith("503")

    try:
        wait_for(refused, 20, 0.3, what="the unverified member refused")
    except AssertionError:
        (instance,) = world.stack.agents[0].instance_dirs()
        backend = (instance / "haproxy.cfg").read_text().split("\nbackend ", 1)[1]
        raise AssertionError(f"codes {codes[-5:]}, backend:\n{backend}") from None


def _handshake_serial(vip: str, name: str, cafile: str) -> int:
    """One full TLS handshake and request from inside the namespace: the served serial."""
    import socket
    import ssl

    from cryptography import x509

    context = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection((vip, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        answer = tls.recv(64)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise OSError(f"unexpected answer {answer!r}")
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_rotation_keeps_the_worker_and_loses_nothing(world: World) -> None:
    lb, li, _ = https_lb(world, world.web)
    vip = lb["vip_address"]
    wait_serving(world, vip)
    ca = world.file("ca.pem", world.ca.cert_pem)
    (instance,) = world.stack.agents[0].instance_dirs()
    pid = (instance / "haproxy.pid").read_text().split()[0]
    old_serial = world.client.run(_handshake_serial, vip, "default.example", ca)
    new_cert = issue(world.ca, "default.example", ("default.example",))
    new_ref = world.container(new_cert)

    failures: list[str] = []
    handshakes = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                world.client.run(_handshake_serial, vip, "default.example", ca)
                handshakes[0] += 1
            except Exception as exc:  # every failure counts, whatever it is
                failures.append(repr(exc))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        wait_for(lambda: handshakes[0] >= 20, 20, 0.05, what="handshakes before")
        update(
            world.stack, f"listeners/{li['id']}", "listener", {"default_tls_container_ref": new_ref}
        )
        world.stack.wait_active(lb["id"])
        wait_for(
            lambda: (
                world.client.run(_handshake_serial, vip, "default.example", ca)
                == new_cert.cert.serial_number
            ),
            20,
            0.1,
            what="the new certificate served",
        )
        seen = handshakes[0]
        wait_for(lambda: handshakes[0] >= seen + 20, 20, 0.05, what="handshakes after")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert old_serial != new_cert.cert.serial_number
    assert failures == []
    # Same worker: the certificate went in through the runtime API, not a reload.
    assert (instance / "haproxy.pid").read_text().split()[0] == pid


def test_keys_after_an_agent_restart_and_a_reboot(world: World) -> None:
    """Restarted, the agent adopts HAProxy with the keys it loaded (nothing pushed, the
    same process); rebooted (the tmpfs emptied), it waits for the controller, which
    sends the keys again, and HAProxy serves with them."""
    lb, li, _ = https_lb(world, world.web)
    vip = lb["vip_address"]
    wait_serving(world, vip)
    agent = world.stack.agents[0]
    (instance,) = agent.instance_dirs()
    pid = (instance / "haproxy.pid").read_text().split()[0]
    keys = default_keys_dir(agent.dir)
    assert mount_of(keys) == (str(keys), "tmpfs")
    agent.stop()
    since = time.time()
    agent.start()
    wait_for(lambda: agent.heartbeat_after(since), 10, what="a heartbeat")
    assert curl(world, vip, NAMES[0]).returncode == 0
    assert (instance / "haproxy.pid").read_text().split()[0] == pid
    log = (world.stack.root / f"{agent.name}.log").read_text()
    assert "certificate keys are gone" not in log

    # The machine dies; it boots with its disk but an empty tmpfs.
    agent.kill_host()
    subprocess.run(["umount", "-l", str(keys)], check=True)
    assert mount_of(keys) != (str(keys), "tmpfs")
    agent.revive()
    # Mounted again by the agent's start (the host may still read UP: not waited for).
    wait_for(lambda: mount_of(keys) == (str(keys), "tmpfs"), 20, what="the keys' tmpfs")
    wait_serving(world, vip)
    # (The same instance, or its replacement if the host was declared down meanwhile.)
    wait_for(lambda: len(agent.instance_dirs()) == 1, 20, what="one instance")
    (instance,) = agent.instance_dirs()
    assert (instance / "haproxy.pid").read_text().split()[0] != pid
    pems = sorted((instance / "files").glob(f"{li['id']}-*.pem"))
    assert len(pems) == 3 and all(p.resolve().parent == keys / instance.name for p in pems)
    log = (world.stack.root / f"{agent.name}.log").read_text()
    assert "certificate keys are gone" in log
