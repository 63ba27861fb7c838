"""TLS in an instance's HAProxy configuration: bind and server options, and the files they name.

Octavia's amphora templates decide the semantics: a TERMINATED_HTTPS listener binds
with a crt-list (its default certificate first, then the SNI ones: HAProxy picks by
the names in each certificate), `ca-file … verify optional|required` and `crl-file`
for client authentication, the listener's ciphers split between `ciphers` (TLS 1.2
and older) and `ciphersuites` (TLS 1.3), one `no-<version>` per version not
allowed, and `alpn`; a pool with `tls_enabled` connects with `ssl`, `sni
ssl_fc_sni`, a client certificate (`crt`), and `verify required` against its CA
(else `verify none`).

Certificates and keys never appear in the configuration: they are files in the
instance's files directory (`InstanceSpec.files`, written 0600 by the agent and
removed with the instance). Their names are stable per listener/pool and position,
so a rotated certificate keeps its path; a digest of the files is written as a
comment so that a changed certificate changes the configuration.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from openha.domain import constants as c
from openha.domain import grammar
from openha.domain.spec import CertificateSpec, ListenerSpec, LoadBalancerSpec, PoolSpec

TLS_LISTENER = "TERMINATED_HTTPS"
# What crt-list lines and file names may hold: a path HAProxy reads as one word.
_PATH = re.compile(r"/[A-Za-z0-9_./-]+")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# OpenSSL's TLS 1.3 cipher suites: these go to `ciphersuites`, the rest to `ciphers`.
TLS13_CIPHERS = frozenset(
    {
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
        "TLS_AES_128_CCM_SHA256",
    }
)
_NO_VERSION = {
    "SSLv3": "no-sslv3",
    "TLSv1": "no-tlsv10",
    "TLSv1.1": "no-tlsv11",
    "TLSv1.2": "no-tlsv12",
    "TLSv1.3": "no-tlsv13",
}
_PRE_13 = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2")
_ALPN = ("h2", "http/1.1", "http/1.0")
_VERIFY = {"NONE": "none", "OPTIONAL": "optional", "MANDATORY": "required"}
# Octavia's X-SSL-* headers: the sample expressions are renderer constants.
SSL_HEADERS = {
    "X-SSL-Client-Verify": "%[ssl_c_verify]",
    "X-SSL-Client-Has-Cert": "%[ssl_c_used]",
    "X-SSL-Client-DN": "%{+Q}[ssl_c_s_dn]",
    "X-SSL-Client-CN": "%{+Q}[ssl_c_s_dn(cn)]",
    "X-SSL-Issuer": "%{+Q}[ssl_c_i_dn]",
    "X-SSL-Client-SHA1": "%{+Q}[ssl_c_sha1,hex]",
    "X-SSL-Client-Not-Before": "%{+Q}[ssl_c_notbefore]",
    "X-SSL-Client-Not-After": "%{+Q}[ssl_c_notafter]",
}


class TlsError(ValueError):
    """A TLS setting or its material that cannot be written into a configuration."""


@dataclass(frozen=True)
class Protocols:
    """Cipher and version options shared by bind and server lines (renderer-checked)."""

    ciphers: str | None
    ciphersuites: str | None
    no_versions: tuple[str, ...]
    alpn: str | None


@dataclass(frozen=True)
class BindTls:
    crt_list: str
    ca_file: str | None
    verify: str | None
    crl_file: str | None
    protocols: Protocols
    hsts: str | None
    headers: tuple[tuple[str, str], ...]
    digest: str


@dataclass(frozen=True)
class ServerTls:
    crt: str | None
    ca_file: str | None
    crl_file: str | None
    protocols: Protocols
    digest: str


def _id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise TlsError(f"refusing {value!r} as a file name")
    return value


def _dir(files_dir: str | None) -> str:
    if files_dir is None or not _PATH.fullmatch(files_dir) or "/../" in f"{files_dir}/":
        raise TlsError("TLS needs a files directory whose path is plain (letters, digits, _.-/)")
    return files_dir.rstrip("/")


def protocols(
    ciphers: str | None, versions: tuple[str, ...] | None, alpn: tuple[str, ...] | None
) -> Protocols:
    try:
        names = [n for n in grammar.check_ciphers(ciphers).split(":") if n] if ciphers else []
    except ValueError as exc:
        raise TlsError(f"tls_ciphers {ciphers!r}: {exc}") from None
    if versions is not None and any(v not in c.TLS_VERSIONS for v in versions):
        raise TlsError("unknown TLS version")
    if alpn is not None and any(p not in _ALPN for p in alpn):
        raise TlsError("unknown ALPN protocol")
    # Sorted, as Octavia, so the output is stable.
    pre = ":".join(sorted(set(names) - TLS13_CIPHERS)) or None
    suites = ":".join(sorted(set(names) & TLS13_CIPHERS)) or None
    if versions is not None:
        if "TLSv1.3" not in versions:
            suites = None
        if not any(v in _PRE_13 for v in versions):
            pre = None
    allowed = c.TLS_VERSIONS if versions is None else versions
    no_versions = tuple(flag for version, flag in _NO_VERSION.items() if version not in allowed)
    return Protocols(pre, suites, no_versions, ",".join(alpn) if alpn else None)


def _digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()[:16]


def _pem(cert: CertificateSpec) -> str:
    # Each part ends with a newline (`domain.certificates`); HAProxy needs the last one.
    return cert.pem if cert.pem.endswith("\n") else cert.pem + "\n"


def listener_files(listener: ListenerSpec, files_dir: str) -> dict[str, str]:
    """File name -> content for a TLS listener: its certificates, crt-list, CA and CRL."""
    if listener.protocol != TLS_LISTENER:
        return {}
    base = _id(listener.id)
    root = _dir(files_dir)
    files: dict[str, str] = {}
    lines = []
    for n, cert in enumerate(listener.tls_certificates):
        name = f"{base}-{n}.pem"
        files[name] = _pem(cert)
        lines.append(f"{root}/{name}\n")
    files[f"{base}.crt-list"] = "".join(lines)
    if listener.client_ca_certificates:
        files[f"{base}-ca.pem"] = listener.client_ca_certificates
    if listener.client_revocation_list:
        files[f"{base}-crl.pem"] = listener.client_revocation_list
    return files


def pool_files(pool: PoolSpec) -> dict[str, str]:
    if not pool.tls_enabled:
        return {}
    base = _id(pool.id)
    files: dict[str, str] = {}
    if pool.tls_certificate is not None:
        files[f"{base}-client.pem"] = _pem(pool.tls_certificate)
    if pool.ca_certificates:
        files[f"{base}-ca.pem"] = pool.ca_certificates
        if pool.revocation_list:
            files[f"{base}-crl.pem"] = pool.revocation_list
    return files


def instance_files(spec: LoadBalancerSpec, files_dir: str) -> dict[str, str]:
    """Every TLS file of a load balancer's enabled listeners and pools."""
    files: dict[str, str] = {}
    for listener in spec.listeners:
        if listener.admin_state_up:
            files |= listener_files(listener, files_dir)
    for pool in spec.pools:
        if pool.admin_state_up:
            files |= pool_files(pool)
    return files


def bind_tls(listener: ListenerSpec, files_dir: str | None) -> BindTls:
    if listener.tls_problem:
        raise TlsError(f"listener {listener.id}: {listener.tls_problem}")
    if not listener.tls_certificates:
        raise TlsError(f"listener {listener.id}: a TERMINATED_HTTPS listener needs a certificate")
    root = _dir(files_dir)
    files = listener_files(listener, root)
    base = _id(listener.id)
    ca = f"{root}/{base}-ca.pem" if listener.client_ca_certificates else None
    verify = None
    if ca is not None:
        if listener.client_authentication not in _VERIFY:
            raise TlsError(f"listener {listener.id}: unknown client_authentication")
        verify = _VERIFY[listener.client_authentication]
    hsts = None
    if listener.hsts_max_age is not None:
        if not 0 <= listener.hsts_max_age <= c.MAX_INT32:
            raise TlsError(f"listener {listener.id}: hsts_max_age out of range")
        hsts = f"max-age={int(listener.hsts_max_age)};"
        if listener.hsts_include_subdomains:
            hsts += " includeSubDomains;"
        if listener.hsts_preload:
            hsts += " preload;"
    enabled = {k for k, v in listener.insert_headers.items() if v.strip().lower() == "true"}
    return BindTls(
        crt_list=f"{root}/{base}.crt-list",
        ca_file=ca,
        verify=verify,
        crl_file=f"{root}/{base}-crl.pem" if ca and listener.client_revocation_list else None,
        protocols=protocols(listener.tls_ciphers, listener.tls_versions, listener.alpn_protocols),
        hsts=hsts,
        headers=tuple((h, expr) for h, expr in SSL_HEADERS.items() if h in enabled),
        digest=_digest(files),
    )


def server_tls(pool: PoolSpec, files_dir: str | None) -> ServerTls | None:
    if not pool.tls_enabled:
        return None
    if pool.tls_problem:
        raise TlsError(f"pool {pool.id}: {pool.tls_problem}")
    files = pool_files(pool)
    root = _dir(files_dir) if files else ""
    base = _id(pool.id)
    ca = f"{root}/{base}-ca.pem" if f"{base}-ca.pem" in files else None
    return ServerTls(
        crt=f"{root}/{base}-client.pem" if f"{base}-client.pem" in files else None,
        ca_file=ca,
        crl_file=f"{root}/{base}-crl.pem" if f"{base}-crl.pem" in files else None,
        protocols=protocols(pool.tls_ciphers, pool.tls_versions, pool.alpn_protocols),
        digest=_digest(files),
    )
