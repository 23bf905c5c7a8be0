"""The API server's certificates and the local admin's kubeconfig, made once and kept.

Why this exists: secure by default (DESIGN.md, "Trust"): ``fleetlog up`` serves the Kubernetes
API over HTTPS only, and only to clients that present a certificate its own CA signed. On first
start it makes a CA, a server certificate for every name the server is reached by (127.0.0.1,
localhost, the ``kubernetes`` service's ClusterIP and DNS names) and a client certificate for
the local admin (CN ``admin``, O ``system:masters``, as kubeadm's admin), keeps them in
``<data dir>/pki/`` (files 0600, directory 0700) and writes ``<data dir>/kubeconfig`` so kubectl
works at once. A restart reuses them; a server certificate that no longer names every address
(the service range changed) or is about to expire is made again from the same CA.
:func:`issue_client_certificate` signs one for any user (``fleetlog user kubeconfig
--client-certificate``), and :func:`user_kubeconfig` writes a kubeconfig for a user with a
certificate or a bearer token.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"


@dataclass(frozen=True)
class PKI:
    """Where the files are."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"


def _write(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (a crash leaves the old one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common: str, *organizations: str) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(parts)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc < _now():
        return None
    return cert, key


def _make_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = _name("fleetlog-ca")
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
    _write(pki.ca_key, _key_pem(key))
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    ips: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if ips or dns:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _usable(path: Path, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> bool:
    """The certificate exists, is not about to expire and names every address asked for."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
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


def server_names(service_ip: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IP SANs, DNS SANs) of the server certificate."""
    ips = ("127.0.0.1", *([service_ip] if service_ip else []))
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    return ips, dns


def ensure_pki(directory: Path, *, service_ip: str | None) -> PKI:
    """The CA, server and admin certificates in ``directory``: reused when still good."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    pki = PKI(directory)
    ca = _load_ca(pki)
    fresh_ca = ca is None
    if ca is None:
        ca = _make_ca(pki)
    ips, dns = server_names(service_ip)
    if fresh_ca or not _usable(pki.server_cert, ips=ips, dns=dns):
        cert, key = _leaf(
            ca, subject=_name("fleetlog-apiserver"), usage=ExtendedKeyUsageOID.SERVER_AUTH,
            ips=ips, dns=dns,
        )  # fmt: skip
        _write(pki.server_key, _key_pem(key))
        _write(pki.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    if fresh_ca or not _usable(pki.admin_cert):
        cert, key = _leaf(
            ca,
            subject=_name(ADMIN_USER, ADMIN_GROUP),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        _write(pki.admin_key, _key_pem(key))
        _write(pki.admin_cert, cert.public_bytes(serialization.Encoding.PEM))
    return pki


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, pki: PKI, *, server: str, name: str = "fleetlog") -> None:
    """A kubeconfig for the local admin (certificates embedded), readable by its owner only."""
    credentials = {
        "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
        "client-key-data": _b64(pki.admin_key.read_bytes()),
    }
    user_kubeconfig(
        path, server=server, ca_pem=pki.ca_cert.read_bytes(), cluster=name,
        user=f"{name}-admin", credentials=credentials,
    )  # fmt: skip


def user_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    cluster: str,
    user: str,
    credentials: dict[str, str],
    namespace: str | None = None,
) -> None:
    """A kubeconfig with one context ``cluster`` for ``user`` (``credentials``: kubeconfig's
    ``token``, or ``client-certificate-data`` and ``client-key-data``), owner-only."""
    context: dict[str, str] = {"cluster": cluster, "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
        "preferences": {},
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode())


def issue_client_certificate(
    pki: PKI, *, user: str, groups: tuple[str, ...] = ()
) -> tuple[bytes, bytes]:
    """A client certificate (PEM) and its key (PEM) from the door's CA: CN ``user``, an O per
    group, as kube's x509 authenticator reads them."""
    ca = _load_ca(pki)
    if ca is None:
        raise FileNotFoundError(f"no usable CA in {pki.directory} (has fleetlog up run here?)")
    cert, key = _leaf(ca, subject=_name(user, *groups), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
