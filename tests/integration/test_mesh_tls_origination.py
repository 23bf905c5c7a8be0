"""DestinationRule TLS origination through real Envoy (Istio's "Egress TLS origination"): the
client speaks plain HTTP to the mesh, Envoy speaks TLS to the server.

A gateway Envoy, configured over ADS by the mesh-push handler (as in ``test_mesh_push.py``),
routes ``api.example.com`` to a ServiceEntry (resolution STATIC, one endpoint on loopback)
served by a Python ``ssl`` server with a test CA's certificate. The server records, per
request, the SNI it was sent and the client certificate it saw. SIMPLE with a CA file: TLS,
the Host as SNI, no client certificate; MUTUAL with ``credentialName`` (a Secret sealed in the
log, opened by the handler and served over SDS): the server requires a client certificate and
sees the Secret's; a wrong CA: Envoy refuses the server and answers 503 with its TLS error,
never plain text.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams import certificates
from streams.commandbus import CommandClient
from streams.server import free_port
from tests.integration.meshkit import NS, apply, envoy, mesh_push, synced, until

pytestmark = pytest.mark.integration

API = "api.example.com"
CLIENT_NAME = "fleetlog-egress"


class _Seen:
    """What the TLS server saw: one ``(sni, client certificate's CN)`` per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str | None, str | None]] = []
        self.lock = threading.Lock()


@contextlib.contextmanager
def tls_server(tmp_path: Path, *, require_client: bool) -> Iterator[tuple[int, _Seen, Path]]:
    """An HTTPS server on loopback with a certificate for ``api.example.com`` from a test CA;
    yields its port, what it saw and the CA's file. ``require_client``: a client certificate
    signed by the same CA is required."""
    ca = certificates.make_ca("egress test CA")
    cert, key = certificates.leaf(
        ca, subject=certificates.subject_name(API), usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns=(API,),
    )  # fmt: skip
    ca_file = tmp_path / "server-ca.pem"
    ca_file.write_bytes(certificates.cert_pem(ca[0]))
    # Kept beside it: the MUTUAL test signs its client certificate with the same CA.
    (tmp_path / "server-ca.key").write_bytes(certificates.key_pem(ca[1]))
    (tmp_path / "server.pem").write_bytes(certificates.cert_pem(cert))
    (tmp_path / "server.key").write_bytes(certificates.key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    context.load_verify_locations(ca_file)
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    seen = _Seen()
    names: dict[int, str | None] = {}

    def on_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        names[id(sock)] = name

    context.sni_callback = on_sni  # type: ignore[assignment]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sock = self.connection
            assert isinstance(sock, ssl.SSLSocket)
            peer = sock.getpeercert()
            common = None
            if peer:
                common = next(
                    (v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"),
                    None,
                )
            with seen.lock:
                seen.requests.append((names.get(id(sock)), common))
            body = b"secure\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen, ca_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def manifests(*, tls_port: int, gateway_port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "api", "namespace": NS},
         "spec": {"hosts": [API], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "127.0.0.1", "ports": {"http": tls_port}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "egress", "namespace": NS},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": gateway_port, "name": "http",
                                        "protocol": "HTTP"}, "hosts": [API]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "api", "namespace": NS},
         "spec": {"hosts": [API], "gateways": ["egress"],
                  "http": [{"route": [{"destination": {"host": API, "port": {"number": 80}}}],
                            "retries": {"attempts": 0}}]}},
    ]  # fmt: skip


def rule(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {"host": API, "trafficPolicy": {"tls": tls}},
    }  # fmt: skip


def _get(url: str) -> httpx.Response | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, headers={"Host": API}, timeout=5)
    return None


async def test_simple_originates_tls_with_the_host_as_sni_and_a_wrong_ca_is_a_503(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    with tls_server(tmp_path, require_client=False) as (tls_port, seen, ca_file):
        gateway_port = free_port()
        url = f"http://127.0.0.1:{gateway_port}/"
        for manifest in manifests(tls_port=tls_port, gateway_port=gateway_port):
            await apply(client, manifest)
        await apply(client, rule({"mode": "SIMPLE", "caCertificates": str(ca_file)}))
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys) as push:
            with envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}) as admin:
                await until(lambda: synced(push) and _status(url) == 200)
                response = _get(url)
                assert response is not None and response.text == "secure\n"
                # Plain HTTP in, TLS out: the server saw the Host as SNI (auto SNI) and no
                # client certificate (SIMPLE).
                assert seen.requests and set(seen.requests) == {(API, None)}
                # A CA that did not sign the server's certificate: Envoy refuses the server.
                other = tmp_path / "other-ca.pem"
                other.write_bytes(certificates.cert_pem(certificates.make_ca("other")[0]))
                await apply(client, rule({"mode": "SIMPLE", "caCertificates": str(other)}))
                await until(lambda: _status(url) == 503)
                before = len(seen.requests)
                refused = _get(url)
                assert refused is not None and refused.status_code == 503
                assert [_status(url) for _ in range(5)] == [503] * 5
                assert "remote connection failure" in refused.text, refused.text
                # Envoy's reason: the server's certificate failed verification.
                assert _stat(admin, "ssl.fail_verify_error") > 0
                assert len(seen.requests) == before  # no request reached it, in any form


async def test_mutual_presents_the_credential_secrets_client_certificate_over_sds(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    with tls_server(tmp_path, require_client=True) as (tls_port, seen, ca_file):
        gateway_port = free_port()
        url = f"http://127.0.0.1:{gateway_port}/"
        for manifest in manifests(tls_port=tls_port, gateway_port=gateway_port):
            await apply(client, manifest)
        # Without a client certificate the server refuses the handshake: SIMPLE is a 503.
        await apply(client, rule({"mode": "SIMPLE", "caCertificates": str(ca_file)}))
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys) as push:
            with envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}):
                await until(lambda: synced(push) and _status(url) == 503)
                assert not seen.requests
                await apply(client, _credential(tmp_path, ca_file))
                await apply(client, rule({"mode": "MUTUAL", "credentialName": "api-client"}))
                await until(lambda: _status(url) == 200)
                assert seen.requests and set(seen.requests) == {(API, CLIENT_NAME)}


def _stat(admin: int, suffix: str) -> int:
    """The Envoy counter of the API cluster ending with ``suffix``."""
    name = f"cluster.outbound|80||{API}.{suffix}"
    text = httpx.get(f"http://127.0.0.1:{admin}/stats", params={"filter": suffix}).text
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise AssertionError(f"no {name} in {text!r}")


def _status(url: str) -> int | None:
    response = _get(url)
    return response.status_code if response is not None else None


def _credential(tmp_path: Path, ca_file: Path) -> dict[str, Any]:
    key_file = tmp_path / "server-ca.key"
    ca = certificates.load_ca(ca_file, key_file)
    assert ca is not None
    cert, key = certificates.leaf(
        ca, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)]),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "api-client", "namespace": NS},
        "data": {"tls.crt": _b64(certificates.cert_pem(cert)),
                 "tls.key": _b64(certificates.key_pem(key)),
                 "ca.crt": _b64(ca_file.read_bytes())},
    }  # fmt: skip
