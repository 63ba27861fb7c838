"""Certificates and keys a tenant hands over: parsed, checked, and written back out canonically.

Everything that reaches a host comes out of this module re-serialised by the
`cryptography` package (PEM of the parsed objects, keys unencrypted PKCS#8), never
as the text a tenant uploaded: stray lines, comments or a passphrase cannot ride
along into a file HAProxy reads. Errors name what is wrong and never quote the
input (a key must not end up in an error message or a log).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

# Private keys HAProxy (OpenSSL) serves with.
_SERVER_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
MAX_MATERIAL_BYTES = 64 * 1024


class CertificateError(ValueError):
    """Material that cannot serve: the message says why without quoting it."""


@dataclass(frozen=True)
class ServerCertificate:
    """A certificate with its key and chain, as HAProxy's `crt` file wants it."""

    certificate: str  # PEM
    private_key: str  # PEM, PKCS#8, unencrypted
    intermediates: tuple[str, ...]  # PEM each
    names: tuple[str, ...]  # DNS names (SAN, else the CN), lowercased, for SNI
    not_after: datetime  # naive UTC

    @property
    def pem(self) -> str:
        """Certificate, chain, then key: one file HAProxy loads with `crt`."""
        return self.certificate + "".join(self.intermediates) + self.private_key


def _bytes(data: bytes | str, what: str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    if not raw:
        raise CertificateError(f"the {what} is empty")
    if len(raw) > MAX_MATERIAL_BYTES:
        raise CertificateError(f"the {what} is larger than {MAX_MATERIAL_BYTES} bytes")
    return raw


def _certificates(data: bytes | str, what: str) -> list[x509.Certificate]:
    raw = _bytes(data, what)
    try:
        if b"-----BEGIN" in raw:
            certs = x509.load_pem_x509_certificates(raw)
        else:
            certs = [x509.load_der_x509_certificate(raw)]
    except ValueError:
        raise CertificateError(f"the {what} is not a PEM or DER X.509 certificate") from None
    if not certs:
        raise CertificateError(f"the {what} holds no certificate")
    return certs


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n).lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return tuple(dict.fromkeys(names))


def _not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc.astimezone(UTC).replace(tzinfo=None)


def _private_key(data: bytes | str, passphrase: bytes | str | None) -> PrivateKeyTypes:
    raw = _bytes(data, "private key")
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        if b"-----BEGIN" in raw:
            key = serialization.load_pem_private_key(raw, password=password or None)
        else:
            key = serialization.load_der_private_key(raw, password=password or None)
    except TypeError:
        raise CertificateError(
            "the private key is encrypted and no passphrase was given, or the other way round"
        ) from None
    except ValueError:
        raise CertificateError(
            "the private key cannot be read (not a key, or a wrong passphrase)"
        ) from None
    if not isinstance(key, _SERVER_KEYS):
        raise CertificateError("the private key is of a kind TLS servers do not use")
    return key


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _server(
    cert: x509.Certificate, key: object, chain: list[x509.Certificate]
) -> ServerCertificate:
    if _is_ca(cert):
        raise CertificateError("the certificate is a CA certificate, not a server certificate")
    if _spki(cert.public_key()) != _spki(key.public_key()):  # type: ignore[attr-defined]
        raise CertificateError("the private key does not match the certificate")
    pem_key = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ServerCertificate(
        certificate=_pem(cert),
        private_key=pem_key,
        intermediates=tuple(_pem(c) for c in chain),
        names=_names(cert),
        not_after=_not_after(cert),
    )


def server_certificate(
    certificate: bytes | str,
    private_key: bytes | str,
    intermediates: bytes | str | None = None,
    passphrase: bytes | str | None = None,
) -> ServerCertificate:
    """Check a container's parts: one leaf certificate, its key, an optional chain."""
    certs = _certificates(certificate, "certificate")
    key = _private_key(private_key, passphrase)
    # A certificate secret may carry its chain after the leaf, as many CAs deliver it.
    chain = certs[1:] + (_certificates(intermediates, "intermediates") if intermediates else [])
    return _server(certs[0], key, chain)


def server_certificate_pkcs12(
    data: bytes, passphrase: bytes | str | None = None
) -> ServerCertificate:
    """A PKCS#12 bundle (Octavia's other form of TLS reference)."""
    raw = _bytes(data, "PKCS#12 bundle")
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(raw, password or None)
    except ValueError:
        raise CertificateError(
            "the PKCS#12 bundle cannot be read (not PKCS#12, or a wrong passphrase)"
        ) from None
    if cert is None or key is None:
        raise CertificateError("the PKCS#12 bundle needs a certificate and its private key")
    if not isinstance(key, _SERVER_KEYS):
        raise CertificateError("the private key is of a kind TLS servers do not use")
    return _server(cert, key, list(extra))


def ca_bundle(data: bytes | str) -> tuple[str, datetime]:
    """CA certificates to verify peers against: PEM, and the earliest expiry among them."""
    certs = _certificates(data, "CA certificate")
    return "".join(_pem(c) for c in certs), min(_not_after(c) for c in certs)


def crl_signed_by(crl_pem: str, ca_pem: str) -> bool:
    """Whether one of the CA certificates signed the revocation list (Octavia checks it)."""
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    for ca in x509.load_pem_x509_certificates(ca_pem.encode()):
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return True
        except (TypeError, ValueError):
            continue
    return False


def revocation_list(data: bytes | str) -> str:
    """A certificate revocation list, as PEM."""
    raw = _bytes(data, "revocation list")
    try:
        crl = x509.load_pem_x509_crl(raw) if b"-----BEGIN" in raw else x509.load_der_x509_crl(raw)
    except ValueError:
        raise CertificateError("the revocation list is not a PEM or DER X.509 CRL") from None
    return crl.public_bytes(serialization.Encoding.PEM).decode()
