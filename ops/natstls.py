"""TLS on the NATS listener of ``fleetlog up``: the certificates it uses and the server's
``tls {}`` block.

Why this exists: nkeys prove who a client is, but without TLS everything on the wire (events,
Secret values on their way to an agent, the admin's reads) crosses the network in clear, and a
client cannot tell the real server from one that answers in its place. ``fleetlog up --tls``
makes, on its first start, a CA and a server certificate for the local cluster under
``<data dir>/pki/nats/`` (keys 0600, directory 0700; SANs for 127.0.0.1, localhost and the
listen address) and reuses them on every later start, as kubeadm keeps its PKI; ``--tls-cert``
and ``--tls-key`` give a certificate of one's own instead (``--tls-ca`` names its CA for the
clients). The CA is written into the admin's context (``certificate-authority``, as a
kubeconfig's cluster holds it), so every client of this machine verifies the server with it
(``streams.connection.tls_context``). The server then requires TLS of every client: a
plain-text connection is refused by the server itself.

Only server authentication: clients still prove who they are with their nkeys (the wall,
``streams.natsauth``), so there are no client certificates to hand out or revoke.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streams.identity import private_directory, write_private

DIRECTORY = Path("pki") / "nats"
CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
LOCAL_NAMES = ("127.0.0.1", "localhost")
HANDSHAKE_TIMEOUT_S = 5
"""How long the server waits for a client's TLS handshake (its default, 0.5 s, is short for
a loaded machine whose clients are busy at start)."""


@dataclass(frozen=True)
class ServerTLS:
    """The files the server's ``tls {}`` block names, and the CA its clients trust (None:
    the system's trust store, for a certificate of a public CA)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def config(self) -> str:
        """The nats-server ``tls`` block: every client must speak TLS (no client
        certificates: clients authenticate with their nkeys)."""
        lines = [
            "tls {",
            f"  cert_file: {json.dumps(str(self.cert.resolve()))}",
            f"  key_file: {json.dumps(str(self.key.resolve()))}",
            f"  timeout: {HANDSHAKE_TIMEOUT_S}",
            "}",
        ]
        return "\n".join(lines) + "\n"


def tls_url(host: str, port: int) -> str:
    """The URL clients use for a TLS listener: ``tls://`` makes them refuse a server that
    does not speak TLS (``streams.connection``)."""
    return f"tls://{host}:{port}"


def ensure_local_tls(data_dir: Path, *, host: str) -> ServerTLS:
    """The local cluster's CA and server certificate under ``<data_dir>/pki/nats/``: made on
    the first start, reused after; a server certificate about to expire, or not naming
    ``host``, is made again from the same CA (its clients keep trusting it)."""
    private_directory(data_dir / DIRECTORY.parent)
    directory = private_directory(data_dir / DIRECTORY)
    ca_file, ca_key_file = directory / "ca.crt", directory / "ca.key"
    tls = ServerTLS(cert=directory / "server.crt", key=directory / "server.key", ca=ca_file)
    names = tuple(dict.fromkeys((*LOCAL_NAMES, host)))
    ca = _load_ca(ca_file, ca_key_file)
    fresh = ca is None
    if ca is None:
        ca = _make_ca()
        write_private(ca_key_file, _key_pem(ca[1]).decode())
        write_private(ca_file, ca[0].public_bytes(serialization.Encoding.PEM).decode())
    if fresh or not _names_all(tls.cert, names):
        cert, key = _server_certificate(ca, names)
        write_private(tls.key, _key_pem(key).decode())
        write_private(tls.cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    return tls


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(
    cert_file: Path, key_file: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc < _now():
        return None
    return cert, key


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetlog-nats-ca")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(names: tuple[str, ...]) -> list[x509.GeneralName]:
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            found.append(x509.DNSName(name))
    return found


def _server_certificate(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], names: tuple[str, ...]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetlog-nats")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _names_all(cert_file: Path, names: tuple[str, ...]) -> bool:
    """The certificate exists, is not about to expire and names every one of ``names``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    have |= set(sans.get_values_for_type(x509.DNSName))
    return set(names) <= have
