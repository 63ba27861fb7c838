"""Benchmark: HTTPS through an OpenHA TERMINATED_HTTPS listener vs a hand-written haproxy.cfg.

Same HAProxy binary, same lab bridge, same three backends (HAProxy answering 200 by
itself), same certificate, same wrk from a client namespace. For each key type
(RSA 2048 and ECDSA P-256) two contenders:
- `openha-<key>`: a load balancer made through the API (certificate stored in the
  embedded certificate store, TERMINATED_HTTPS listener with Octavia's defaults for
  ciphers, versions and ALPN, round robin pool of the three backends), with a flavor
  whose `access_log` is "none" (the baseline logs nothing either);
- `baseline-<key>`: a minimal hand-written config, `bind <ip>:443 ssl crt <pem>`,
  same maxconn and thread count, no logs;
and `plain-http`: the baseline config on port 80 without TLS (what TLS costs at all).
Two measures each, run alternately for `--rounds` rounds:
- full handshakes per second: wrk with `Connection: close`, so every request is a
  new TCP connection and a full TLS handshake (wrk resumes no sessions);
- keep-alive requests per second: wrk on persistent connections.
Prints each round, the medians, and the ratios openha / baseline per key and measure
(target >= 0.97), and the TLS figures against plain HTTP.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from harness import (
    FastBackend,
    HAProxyProcess,
    Lab,
    RemoveDir,
    Stack,
    bench_stack,
    hand_config,
    machine_line,
    print_table,
    require_root,
    wait_for,
)

from openha.render.haproxy import DEFAULT_LISTENER_MAXCONN
from openha.settings import Settings

TARGET_RATIO = 0.97
NAME = "bench.example"


def certificate(kind: str) -> tuple[str, str]:
    """A self-signed server certificate for NAME: (certificate PEM, key PEM)."""
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def store(stack: Stack, cert: str, key: str) -> str:
    refs = []
    for name, payload in (("certificate", cert), ("private_key", key)):
        body = {"name": name, "payload": payload, "payload_content_type": "text/plain"}
        resp = stack.tenant.post("/key-manager/v1/secrets/", json=body)
        assert resp.status_code == 201, resp.text
        refs.append({"name": name, "secret_ref": resp.json()["secret_ref"]})
    resp = stack.tenant.post(
        "/key-manager/v1/containers/",
        json={"type": "certificate", "name": "bench", "secret_refs": refs},
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["container_ref"])


def quiet_flavor(stack: Stack) -> str:
    profile = stack.admin.post(
        "/v2/lbaas/flavorprofiles",
        json={
            "flavorprofile": {
                "name": "bench-tls",
                "provider_name": "haproxy",
                "flavor_data": json.dumps({"access_log": "none"}),
            }
        },
    )
    assert profile.status_code == 201, profile.text
    flavor = stack.admin.post(
        "/v2/lbaas/flavors",
        json={
            "flavor": {
                "name": "bench-tls",
                "flavor_profile_id": profile.json()["flavorprofile"]["id"],
            }
        },
    )
    assert flavor.status_code == 201, flavor.text
    return str(flavor.json()["flavor"]["id"])


def openha_lb(
    stack: Stack, backends: list[FastBackend], ref: str, flavor_id: str
) -> dict[str, Any]:
    body = {
        "name": "bench-tls",
        "vip_subnet_id": stack.subnet_id,
        "flavor_id": flavor_id,
        "listeners": [
            {
                "name": "https",
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": 443,
                "default_tls_container_ref": ref,
                "default_pool": {
                    "name": "pool",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [{"address": b.ip, "protocol_port": b.port} for b in backends],
                },
            }
        ],
    }
    resp = stack.tenant.post("/v2/lbaas/loadbalancers", json={"loadbalancer": body})
    assert resp.status_code == 201, resp.text
    lb = resp.json()["loadbalancer"]
    stack.wait_active(lb["id"], timeout=60)
    return dict(lb)


def baseline(
    lab: Lab, backends: list[FastBackend], name: str, pem: str | None, nbthread: int
) -> tuple[HAProxyProcess, str]:
    ip = lab.allocate_ip()
    ns = lab.add_namespace(name[:8], ip)
    port = 443 if pem else 80
    workdir = Path(tempfile.mkdtemp(prefix="ohb-tls-", dir="/tmp"))
    tls = ""
    if pem:
        path = workdir / "server.pem"
        path.write_text(pem)
        path.chmod(0o600)
        tls = f" ssl crt {path} alpn h2,http/1.1"
    cfg = hand_config(
        f"{ip}:{port}{tls}", backends, maxconn=DEFAULT_LISTENER_MAXCONN, nbthread=nbthread
    )
    proc = HAProxyProcess(ns, cfg, name, port)
    lab.on_close(proc)
    lab.on_close(RemoveDir(workdir))
    return proc, ip


def wrk(namespace: str, url: str, seconds: int, conns: int, close: bool) -> tuple[float, int]:
    """requests/s and errors (connect, read, write, timeout, non-2xx) of one wrk run."""
    threads = min(2, conns)  # wrk refuses fewer connections than threads
    cmd = ["ip", "netns", "exec", namespace, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(
        [*cmd, url], check=True, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    rps = float(next(x for x in out.splitlines() if x.startswith("Requests/sec:")).split()[1])
    errors = 0
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Socket errors:"):
            errors += sum(int(part.split()[-1]) for part in line.split(":", 1)[1].split(","))
        if line.startswith("Non-2xx or 3xx responses:"):
            errors += int(line.split(":")[1])
    return rps, errors


def run(args: argparse.Namespace) -> None:
    nbthread = Settings().haproxy_nbthread
    with bench_stack(agents=1) as (lab, stack):
        backends = [FastBackend(lab, f"web{i}") for i in range(1, 4)]
        client = lab.add_namespace("wrk", lab.allocate_ip())
        flavor = quiet_flavor(stack)
        urls: dict[str, str] = {}
        for kind in ("rsa", "ecdsa"):
            cert, key = certificate("rsa" if kind == "rsa" else "ec")
            lb = openha_lb(stack, backends, store(stack, cert, key), flavor)
            urls[f"openha-{kind}"] = f"https://{lb['vip_address']}/"
            _, ip = baseline(lab, backends, f"base{kind}", cert + key, nbthread)
            urls[f"baseline-{kind}"] = f"https://{ip}/"
        _, plain_ip = baseline(lab, backends, "plain", None, nbthread)
        urls["plain-http"] = f"http://{plain_ip}/"
        for name, url in urls.items():
            wait_for(
                lambda url=url: wrk(client, url, 1, 1, False)[0] > 0, 30, 0.5, f"{name} answers"
            )
            wrk(client, url, args.warmup, args.connections, False)
        results: dict[tuple[str, str], list[float]] = {}
        errors: dict[tuple[str, str], int] = {}
        rows = []
        for r in range(args.rounds):
            for measure, close in (("handshakes/s", True), ("keep-alive req/s", False)):
                for name, url in urls.items():
                    rps, errs = wrk(client, url, args.duration, args.connections, close)
                    results.setdefault((name, measure), []).append(rps)
                    errors[(name, measure)] = errors.get((name, measure), 0) + errs
                    rows.append([r + 1, measure, name, f"{rps:,.0f}", errs])
        print(machine_line())
        print_table("Rounds", ["round", "measure", "contender", "per second", "errors"], rows)
        medians = {k: statistics.median(v) for k, v in results.items()}
        summary = []
        for measure in ("handshakes/s", "keep-alive req/s"):
            plain = medians[("plain-http", measure)]
            for kind in ("rsa", "ecdsa"):
                ours = medians[(f"openha-{kind}", measure)]
                base = medians[(f"baseline-{kind}", measure)]
                ratio = ours / base if base else 0.0
                summary.append(
                    [
                        measure,
                        "RSA 2048" if kind == "rsa" else "ECDSA P-256",
                        f"{ours:,.0f}",
                        f"{base:,.0f}",
                        f"{ratio:.3f}",
                        "ok" if ratio >= TARGET_RATIO else "below",
                        f"{base / plain:.3f}" if plain else "-",
                        errors[(f"openha-{kind}", measure)] + errors[(f"baseline-{kind}", measure)],
                    ]
                )
            summary.append([measure, "plain HTTP", "-", f"{plain:,.0f}", "-", "-", "1", "-"])
        print_table(
            f"HTTPS through OpenHA vs hand-written haproxy.cfg (wrk -t2 -c{args.connections} "
            f"-d{args.duration}s, {args.rounds} alternate rounds, medians, nbthread {nbthread})",
            [
                "measure",
                "key",
                "openha",
                "baseline",
                "ratio",
                "target 0.97",
                "baseline / plain HTTP",
                "errors",
            ],
            summary,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    require_root()
    run(args)


if __name__ == "__main__":
    main()
