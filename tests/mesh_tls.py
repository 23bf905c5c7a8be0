"""Certificates for the gateway TLS tests: a CA, a server certificate for some DNS names and a
client certificate, as PEM text (what a ``kubernetes.io/tls`` Secret holds), made with the
X.509 helpers fleetlog's own PKI uses."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.x509.oid import ExtendedKeyUsageOID

from streams.certificates import cert_pem, key_pem, leaf, make_ca, subject_name


@dataclass(frozen=True)
class TlsMaterial:
    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str

    def secret(self, name: str, namespace: str, *, with_ca: bool = False) -> dict[str, object]:
        """A ``kubernetes.io/tls`` Secret of the server certificate (and ``ca.crt``)."""
        data = {"tls.crt": self.cert, "tls.key": self.key}
        if with_ca:
            data["ca.crt"] = self.ca
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
            "stringData": data,
        }


def tls_material(*hosts: str) -> TlsMaterial:
    ca = make_ca("fleetlog test CA")
    server = leaf(ca, subject=subject_name(hosts[0]), usage=ExtendedKeyUsageOID.SERVER_AUTH,
                  dns=hosts)  # fmt: skip
    client = leaf(ca, subject=subject_name("client"), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return TlsMaterial(
        ca=cert_pem(ca[0]).decode(),
        cert=cert_pem(server[0]).decode(),
        key=key_pem(server[1]).decode(),
        client_cert=cert_pem(client[0]).decode(),
        client_key=key_pem(client[1]).decode(),
    )
