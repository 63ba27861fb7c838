"""TLS in the rendered HAProxy configuration: TERMINATED_HTTPS listeners (crt-list, SNI,
client authentication, HSTS, X-SSL-* headers, ciphers, versions, ALPN) and pools speaking
TLS to members, checked by `haproxy -c` with the files the spec ships; secrets never reach
the configuration, and hostile values are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openha.domain import certificates
from openha.domain.spec import CertificateSpec, LoadBalancerSpec
from openha.render import tls
from openha.render.haproxy import HAProxyPaths, RenderError, render_haproxy
from tests.tlscerts import Issued, issue, make_ca, make_crl
from tests.unit.test_render_haproxy import (  # noqa: F401 (fixtures)
    assert_valid,
    listener,
    loadbalancer,
    member,
    monitor,
    paths,
    pool,
    section,
    workdir,
)

CA = make_ca()
LEAVES = {
    name: issue(CA, name, (name,), kind="rsa" if n == 0 else "ec")
    for n, name in enumerate(("default.example", "one.example", "two.example"))
}


def cert_spec(issued: Issued) -> CertificateSpec:
    checked = certificates.server_certificate(issued.cert_pem, issued.key_pem(), CA.cert_pem)
    return CertificateSpec(pem=checked.pem, names=checked.names, not_after=checked.not_after)


@pytest.fixture()
def tls_paths(paths: HAProxyPaths, workdir: Path) -> HAProxyPaths:  # noqa: F811
    files = workdir / "files"
    files.mkdir(exist_ok=True)
    return paths.model_copy(update={"files_dir": str(files)})


def render_with_files(spec: LoadBalancerSpec, tls_paths: HAProxyPaths, workdir: Path) -> str:  # noqa: F811
    assert tls_paths.files_dir
    for name, content in tls.instance_files(spec, tls_paths.files_dir).items():
        (Path(tls_paths.files_dir) / name).write_text(content)
    cfg = render_haproxy(spec, tls_paths)
    assert_valid(cfg, workdir)
    return cfg


def https_lb(pool_kw: dict[str, Any] | None = None, **kw: Any) -> LoadBalancerSpec:
    p = pool(**(pool_kw or {}))
    fields: dict[str, Any] = {
        "protocol_port": 443,
        "default_pool_id": p.id,
        "tls_certificates": tuple(cert_spec(leaf) for leaf in LEAVES.values()),
        "tls_ciphers": "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "TLS_AES_256_GCM_SHA384",
        "tls_versions": ("TLSv1.2", "TLSv1.3"),
        "alpn_protocols": ("h2", "http/1.1"),
        **kw,
    }
    return loadbalancer((listener("TERMINATED_HTTPS", **fields),), (p,))


def test_terminated_https_listener(tls_paths: HAProxyPaths, workdir: Path) -> None:  # noqa: F811
    spec = https_lb(
        insert_headers={"X-Forwarded-Proto": "true", "X-SSL-Client-CN": "true"},
        hsts_max_age=31536000,
        hsts_include_subdomains=True,
        hsts_preload=True,
    )
    cfg = render_with_files(spec, tls_paths, workdir)
    li = spec.listeners[0]
    fe = section(cfg, "frontend", li.id)
    files = tls_paths.files_dir
    assert (
        f"bind {'10.0.0.5'}:443 ssl crt-list '{files}/{li.id}.crt-list'"
        " ciphers 'ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384'"
        " ciphersuites 'TLS_AES_256_GCM_SHA384' no-sslv3 no-tlsv10 no-tlsv11 alpn h2,http/1.1"
    ) in fe
    assert "mode http" in fe
    assert "http-request set-header X-Forwarded-Proto https" in fe
    assert "http-request set-header X-SSL-Client-CN %{+Q}[ssl_c_s_dn(cn)]" in fe
    assert (
        "http-response set-header Strict-Transport-Security"
        " 'max-age=31536000; includeSubDomains; preload;'"
    ) in fe
    crt_list = (Path(files or "") / f"{li.id}.crt-list").read_text().splitlines()
    assert crt_list == [f"{files}/{li.id}-{n}.pem" for n in range(3)]  # default first
    # Secrets live in the files only.
    assert "PRIVATE KEY" not in cfg and "BEGIN" not in cfg


def test_client_authentication(tls_paths: HAProxyPaths, workdir: Path) -> None:  # noqa: F811
    for mode, verify in (("OPTIONAL", "optional"), ("MANDATORY", "required")):
        spec = https_lb(
            client_authentication=mode,
            client_ca_certificates=CA.cert_pem,
            client_revocation_list=make_crl(CA),
        )
        li = spec.listeners[0]
        cfg = render_with_files(spec, tls_paths, workdir)
        bind = next(x for x in section(cfg, "frontend", li.id) if x.startswith("bind"))
        files = tls_paths.files_dir
        assert (
            f" ca-file '{files}/{li.id}-ca.pem' verify {verify} crl-file '{files}/{li.id}-crl.pem'"
        ) in bind


def test_versions_and_ciphers_follow_octavia(tls_paths: HAProxyPaths, workdir: Path) -> None:  # noqa: F811
    only13 = tls.protocols("ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256", ("TLSv1.3",), None)
    assert only13.ciphers is None and only13.ciphersuites == "TLS_AES_128_GCM_SHA256"
    assert only13.no_versions == ("no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12")
    only12 = tls.protocols("ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256", ("TLSv1.2",), None)
    assert only12.ciphersuites is None and only12.ciphers == "ECDHE-RSA-AES128-GCM-SHA256"
    render_with_files(https_lb(tls_versions=("TLSv1.3",)), tls_paths, workdir)


def test_pool_reencryption(tls_paths: HAProxyPaths, workdir: Path) -> None:  # noqa: F811
    client = issue(CA, "client", client=True)
    m = member(protocol_port=443)
    p_kw = {
        "tls_enabled": True,
        "members": (m,),
        "health_monitor": monitor("HTTPS"),
        "tls_certificate": cert_spec(client),
        "ca_certificates": CA.cert_pem,
        "revocation_list": make_crl(CA),
        "tls_versions": ("TLSv1.2", "TLSv1.3"),
        "alpn_protocols": ("http/1.1",),
    }
    spec = https_lb(p_kw)
    cfg = render_with_files(spec, tls_paths, workdir)
    pid = spec.pools[0].id
    server = section(cfg, "backend", pid)[-1]
    files = tls_paths.files_dir
    assert (
        f" ssl crt '{files}/{pid}-client.pem' ca-file '{files}/{pid}-ca.pem' verify required"
        f" crl-file '{files}/{pid}-crl.pem' sni ssl_fc_sni no-sslv3 no-tlsv10 no-tlsv11"
        " alpn http/1.1"
    ) in server
    # Without a CA the members are not verified (Octavia's `verify none`).
    plain = https_lb({"tls_enabled": True, "members": (m,)})
    cfg = render_with_files(plain, tls_paths, workdir)
    assert section(cfg, "backend", plain.pools[0].id)[-1].endswith(
        " ssl verify none sni ssl_fc_sni"
    )


def test_a_changed_certificate_changes_the_configuration(tls_paths: HAProxyPaths) -> None:
    one = render_haproxy(https_lb(), tls_paths)
    again = render_haproxy(https_lb(), tls_paths)
    other = https_lb(tls_certificates=(cert_spec(issue(CA, "x", ("x",))),))
    # Ids differ per call: compare the digest lines only.
    digest = [x for x in one.splitlines() if "TLS files" in x]
    assert digest and digest != [
        x for x in render_haproxy(other, tls_paths).splitlines() if "TLS files" in x
    ]
    assert len(again) == len(one)


@pytest.mark.parametrize(
    "fields",
    [
        {"tls_ciphers": "AES128-SHA' crt /etc/shadow"},
        {"tls_ciphers": "AES128-SHA\n    bind :1"},
        {"tls_versions": ("TLSv1.2\n",)},
        {"alpn_protocols": ("h2 crt /x",)},
        {"client_authentication": "REQUIRED", "client_ca_certificates": CA.cert_pem},
        {"tls_certificates": ()},
        {"tls_problem": "certificate reference x: the private key does not match"},
    ],
)
def test_hostile_or_broken_tls_values_are_refused(
    fields: dict[str, Any], tls_paths: HAProxyPaths
) -> None:
    with pytest.raises(RenderError):
        render_haproxy(https_lb(**fields), tls_paths)


def test_files_dir_must_be_plain(paths: HAProxyPaths) -> None:  # noqa: F811
    for bad in (None, "/tmp/a b", "/tmp/../etc", "relative"):
        with pytest.raises(RenderError):
            render_haproxy(https_lb(), paths.model_copy(update={"files_dir": bad}))


def test_hostile_pem_text_never_reaches_a_file() -> None:
    leaf = LEAVES["one.example"]
    sneaky = "# crt /etc/shadow\n" + leaf.cert_pem + "\nbind :1\n"
    checked = certificates.server_certificate(sneaky, "junk\n" + leaf.key_pem() + "more junk")
    assert "shadow" not in checked.pem and "junk" not in checked.pem and "bind" not in checked.pem
    with pytest.raises(certificates.CertificateError):
        certificates.server_certificate(leaf.cert_pem, "no key here")
