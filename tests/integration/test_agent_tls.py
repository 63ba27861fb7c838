"""Controller → agent calls over TLS: the agent serves HTTPS, the controller checks its CA."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stack import Stack, wait_for

from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration


def issue(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openha test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "agent.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def test_load_balancer_through_a_tls_agent(lab: Lab, tmp_path: Path) -> None:
    ca, cert, key = issue(tmp_path)
    backend = BackendServer(lab, "web1")
    stack = Stack(lab)
    try:
        stack.settings.agent_ca_file = ca
        agent = stack.add_agent(
            env={"OPENHA_AGENT_TLS_CERT": str(cert), "OPENHA_AGENT_TLS_KEY": str(key)}
        )
        hosts = stack.admin.get("/v2/manage/hosts").json()["hosts"]
        assert hosts[0]["management_url"].startswith("https://127.0.0.1:")
        lb = stack.create(
            "loadbalancers",
            "loadbalancer",
            {
                "vip_subnet_id": stack.subnet_id,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": "web",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [{"address": backend.ip, "protocol_port": backend.port}],
                        },
                    }
                ],
            },
        )
        stack.wait_active(lb["id"])
        client = ClientNamespace(lab)
        resp = wait_for(lambda: client.request(f"http://{lb['vip_address']}/", timeout=2), 15)
        assert resp.json()["server"] == "web1"
        # A controller that does not trust the agent's CA refuses to talk to it.
        stack.settings.agent_ca_file = None
        stack.tenant.put(
            f"/v2/lbaas/loadbalancers/{lb['id']}", json={"loadbalancer": {"name": "changed"}}
        )
        wait_for(
            lambda: stack.lb(lb["id"])["provisioning_status"] == "ERROR",
            20,
            what="untrusted agent refused",
        )
        events = stack.admin.get(
            "/v2/manage/events", params={"kind": "loadbalancer.apply_failed"}
        ).json()["events"]
        assert (
            "CERTIFICATE_VERIFY_FAILED" in events[-1]["message"]
            or "certificate" in events[-1]["message"].lower()
        ), events[-1]
        assert agent.data_plane_pids()  # the data plane kept running meanwhile
    finally:
        stack.close()
