"""The mesh's own CA: short-lived SPIFFE certificates for the proxies' mutual TLS, issued by
the mesh-push handler and served to Envoy over SDS.

Why this exists: Istio's istiod is a CA; each proxy gets a certificate naming its workload
identity ``spiffe://cluster.local/ns/<ns>/sa/<sa>`` (a URI SAN, an empty subject, server and
client authentication) valid for a day by default, renewed at half its life. fleetlog's
handler does the same with ``streams.certificates`` (the X.509 code the HTTP door and NATS TLS
use). The CA lives **outside the log**, like fleetlog's other keys: ``<data dir>/pki/mesh/``
(``ca.pem``, ``ca.key``; the directory and key owner-only), made on the first start and kept,
so proxies keep trusting each other across restarts of ``up``. With no directory (tests) it
lives in memory.

The proxy's key is made here, in the handler, and sent to its Envoy inline over the ADS
stream (Istio's agent makes the key in the pod and sends a CSR; that path, where the key never
leaves the node, is not built: the stream is a Unix socket relayed by the node agent to the
handler's loopback port).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.mesh.envoy import spiffe_id
from streams import certificates
from streams.identity import private_directory, write_private

DEFAULT_TTL: Final = datetime.timedelta(hours=24)
"""Istio's ``DEFAULT_WORKLOAD_CERT_TTL``."""
CA_NAME: Final = "fleetlog mesh CA"


@dataclass(frozen=True, kw_only=True)
class Issued:
    """One proxy identity's certificate and key (PEM), and when it stops being valid."""

    identity: str
    cert_pem: str
    key_pem: str
    expires: datetime.datetime


class MeshCA:
    """Issues the proxies' certificates; ``directory`` keeps the CA across restarts."""

    def __init__(
        self, directory: Path | None = None, *, ttl: datetime.timedelta = DEFAULT_TTL
    ) -> None:
        self.ttl = ttl
        self.directory = directory
        self._ca = self._load_or_make()
        self.root_pem = certificates.cert_pem(self._ca[0]).decode()

    def _load_or_make(self) -> certificates.CertifiedKey:
        if self.directory is None:
            return certificates.make_ca(CA_NAME)
        cert_file, key_file = self.directory / "ca.pem", self.directory / "ca.key"
        found = certificates.load_ca(cert_file, key_file)
        if found is not None:
            return found
        private_directory(self.directory)
        made = certificates.make_ca(CA_NAME)
        write_private(key_file, certificates.key_pem(made[1]).decode())
        write_private(cert_file, certificates.cert_pem(made[0]).decode())
        return made

    def issue(self, namespace: str, service_account: str) -> Issued:
        """A certificate for the workload identity, valid for ``ttl``."""
        identity = spiffe_id(namespace, service_account)
        cert, key = certificates.leaf(
            self._ca,
            subject=x509.Name([]),
            usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            uris=(identity,),
            lifetime=self.ttl,
        )
        return Issued(
            identity=identity,
            cert_pem=certificates.cert_pem(cert).decode(),
            key_pem=certificates.key_pem(key).decode(),
            expires=cert.not_valid_after_utc,
        )
