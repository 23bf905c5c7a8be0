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

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from streams.certificates import (
    cert_pem,
    key_pem,
    leaf,
    load_ca,
    make_ca,
    split_names,
    subject_name,
    usable,
)
from streams.identity import private_directory, write_private

DIRECTORY = Path("pki") / "nats"
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
    ips, dns = split_names(names)
    ca = load_ca(ca_file, ca_key_file)
    fresh = ca is None
    if ca is None:
        ca = make_ca("fleetlog-nats-ca")
        write_private(ca_key_file, key_pem(ca[1]).decode())
        write_private(ca_file, cert_pem(ca[0]).decode())
    if fresh or not usable(tls.cert, ips=ips, dns=dns):
        cert, key = leaf(
            ca, subject=subject_name("fleetlog-nats"), usage=ExtendedKeyUsageOID.SERVER_AUTH,
            ips=ips, dns=dns,
        )  # fmt: skip
        write_private(tls.key, key_pem(key).decode())
        write_private(tls.cert, cert_pem(cert).decode())
    return tls
