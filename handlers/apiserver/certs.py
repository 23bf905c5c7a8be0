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
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from streams.certificates import (
    CertifiedKey,
    cert_pem,
    key_pem,
    leaf,
    load_ca,
    make_ca,
    subject_name,
    usable,
)

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


def _make_ca(pki: PKI) -> CertifiedKey:
    ca = make_ca("fleetlog-ca")
    _write(pki.ca_key, key_pem(ca[1]))
    _write(pki.ca_cert, cert_pem(ca[0]))
    return ca


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
    ca = load_ca(pki.ca_cert, pki.ca_key)
    fresh_ca = ca is None
    if ca is None:
        ca = _make_ca(pki)
    ips, dns = server_names(service_ip)
    if fresh_ca or not usable(pki.server_cert, ips=ips, dns=dns):
        cert, key = leaf(
            ca, subject=subject_name("fleetlog-apiserver"), usage=ExtendedKeyUsageOID.SERVER_AUTH,
            ips=ips, dns=dns,
        )  # fmt: skip
        _write(pki.server_key, key_pem(key))
        _write(pki.server_cert, cert_pem(cert))
    if fresh_ca or not usable(pki.admin_cert):
        cert, key = leaf(
            ca,
            subject=subject_name(ADMIN_USER, ADMIN_GROUP),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        _write(pki.admin_key, key_pem(key))
        _write(pki.admin_cert, cert_pem(cert))
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
    ca = load_ca(pki.ca_cert, pki.ca_key)
    if ca is None:
        raise FileNotFoundError(f"no usable CA in {pki.directory} (has fleetlog up run here?)")
    cert, key = leaf(ca, subject=subject_name(user, *groups), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return cert_pem(cert), key_pem(key)
