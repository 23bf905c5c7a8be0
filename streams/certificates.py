"""X.509 for fleetlog's own CAs: a CA, the leaf certificates it signs, and whether a kept one
still serves.

Why this exists: two listeners speak TLS with certificates ``fleetlog up`` makes and keeps —
the Kubernetes door (``handlers/apiserver/certs.py``: server and client certificates) and the
NATS listener (``ops/natstls.py``: a server certificate) — and both need the same few steps
done the same way: an ECDSA P-256 CA valid for ten years, leaves valid for one, made again
from the same CA when about to expire or no longer naming every address. Where the files live
and what each certificate says is theirs; the making is here.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)

CertifiedKey = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def subject_name(common: str, *organizations: str) -> x509.Name:
    """CN ``common`` and an O per organization (kube reads a client's groups from them)."""
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(parts)


def split_names(names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IP addresses, DNS names) of ``names``, for a certificate's alternative names."""
    ips, dns = [], []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            dns.append(name)
        else:
            ips.append(name)
    return tuple(ips), tuple(dns)


def load_ca(cert_file: Path, key_file: Path) -> CertifiedKey | None:
    """The CA kept in these files; None when missing, unreadable or expired."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc < now():
        return None
    return cert, key


def make_ca(common_name: str, *, lifetime: datetime.timedelta | None = None) -> CertifiedKey:
    """A self-signed CA valid for ``lifetime`` (ten years unless said)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = subject_name(common_name)
    start = now()
    lifetime = lifetime or datetime.timedelta(days=CA_DAYS)
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def leaf(
    ca: CertifiedKey,
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier | Sequence[x509.ObjectIdentifier],
    ips: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    lifetime: datetime.timedelta = datetime.timedelta(days=LEAF_DAYS),
) -> CertifiedKey:
    """A certificate ``ca`` signs for ``usage`` (server and/or client authentication),
    naming ``ips``, ``dns`` and ``uris`` (a SPIFFE id) as its alternative names, valid for
    ``lifetime``. With an empty subject the alternative names are critical (RFC 5280 4.2.1.6:
    they are then the only identity)."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    start = now()
    usages = [usage] if isinstance(usage, x509.ObjectIdentifier) else list(usage)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if ips or dns or uris:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.UniformResourceIdentifier(uri) for uri in uris]
        critical = len(subject) == 0
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=critical)
    return builder.sign(ca_key, hashes.SHA256()), key


def usable(path: Path, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> bool:
    """The certificate exists, is not about to expire and names every address asked for."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < now():
        return False
    if not ips and not dns:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    return set(ips) <= have_ips and set(dns) <= have_dns
