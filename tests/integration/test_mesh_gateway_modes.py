"""A gateway Envoy's server TLS modes and host rules against real Envoy over ADS, a real
nats-server and the mesh CA, on loopback: an ISTIO_MUTUAL server presents the gateway's
workload certificate and serves only a client whose certificate chains to the mesh root and
names the allowed SPIFFE id; OPTIONAL_MUTUAL serves a client with or without a certificate
but not one from another CA; MUTUAL servers refuse a client whose SAN, SPKI or certificate
hash is not the one named; an AUTO_PASSTHROUGH server hands each connection, unterminated, to
the service its SNI (``outbound_.<port>_.<subset>_.<host>``) names; a plain HTTP server
serves only its own hosts, and an HTTPS server on the port an HTTP server took is skipped."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import http.client
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from nats.aio.client import Client

from handlers.gateway import Gateway
from handlers.mesh.ca import MeshCA
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.certificates import CertifiedKey, cert_pem, key_pem, leaf, make_ca, subject_name
from streams.commandbus import CommandClient
from streams.server import free_port
from tests.integration.meshkit import NS, apply, envoy, mesh_push, until
from tests.integration.test_mesh_gateway_tls import _backend, _gateway, _server, _vs
from tests.mesh_scenario import http_backends
from tests.mesh_tls import tls_material

pytestmark = pytest.mark.integration

HOST = "a.example.com"
INGRESS = {"istio": "ingressgateway"}
ALLOWED = f"spiffe://cluster.local/ns/{NS}/sa/client"


class Files:
    """PEM text written to files under the test's directory, for ``ssl``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, name: str, text: str) -> str:
        path = self.directory / f"{name}.pem"
        path.write_text(text)
        return str(path)

    def pair(self, name: str, made: CertifiedKey) -> tuple[str, str]:
        return (
            self.write(f"{name}-cert", cert_pem(made[0]).decode()),
            self.write(f"{name}-key", key_pem(made[1]).decode()),
        )


def _context(ca: str, client: tuple[str, str] | None) -> ssl.SSLContext:
    # The server is checked by its chain only: an Istio workload certificate names no host.
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    if client is not None:
        context.load_cert_chain(*client)
    return context


def https_get(
    port: int, *, sni: str, ca: str, client: tuple[str, str] | None = None
) -> tuple[int, str, bytes]:
    """GET / over TLS to 127.0.0.1:``port``: status, body and the server's certificate."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _context(ca, client).wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read().decode(), tls.getpeercert(binary_form=True) or b""


def served(port: int, body: str, **kwargs: Any) -> bool:
    with contextlib.suppress(ssl.SSLError, OSError, http.client.HTTPException):
        return https_get(port, **kwargs)[:2] == (200, body)
    return False


def refused(port: int, **kwargs: Any) -> bool:
    """The handshake or the request fails: no answer came from behind the gateway."""
    try:
        https_get(port, **kwargs)
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return True
    return False


def _spki(made: CertifiedKey) -> str:
    der = (
        made[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _hash(made: CertifiedKey) -> str:
    return hashlib.sha256(made[0].public_bytes(serialization.Encoding.DER)).hexdigest()


async def test_istio_mutual_optional_mutual_and_client_checks_through_envoy(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    files = Files(tmp_path)
    mesh = MeshCA(ttl=datetime.timedelta(hours=1))
    mesh_root = files.write("mesh-root", mesh.root_pem)
    allowed, other = mesh.issue(NS, "client"), mesh.issue(NS, "intruder")
    as_allowed = (files.write("allowed-cert", allowed.cert_pem),
                  files.write("allowed-key", allowed.key_pem))  # fmt: skip
    as_other = (files.write("other-cert", other.cert_pem), files.write("other-key", other.key_pem))
    # The Secret's CA, its server certificate and clients of it (by DNS SAN), and a stranger.
    secret_ca = make_ca("gateway test CA")
    server = leaf(secret_ca, subject=subject_name(HOST), usage=ExtendedKeyUsageOID.SERVER_AUTH,
                  dns=(HOST,))  # fmt: skip
    good, bad = (
        leaf(secret_ca, subject=subject_name(name), usage=ExtendedKeyUsageOID.CLIENT_AUTH,
             dns=(name,))
        for name in ("good.client.test", "bad.client.test")
    )  # fmt: skip
    stranger = tls_material("stranger.test")
    as_good, as_bad = files.pair("good", good), files.pair("bad", bad)
    as_stranger = (files.write("stranger-cert", stranger.client_cert),
                   files.write("stranger-key", stranger.client_key))  # fmt: skip
    secret_root = files.write("secret-ca", cert_pem(secret_ca[0]).decode())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a-cert", "namespace": NS},
              "type": "kubernetes.io/tls",
              "stringData": {"tls.crt": cert_pem(server[0]).decode(),
                             "tls.key": key_pem(server[1]).decode(),
                             "ca.crt": cert_pem(secret_ca[0]).decode()}}  # fmt: skip
    istio_mutual, optional, by_san, by_spki, by_hash = (free_port() for _ in range(5))
    credential = {"credentialName": "a-cert"}
    with http_backends(tmp_path, ("a",)) as ports:
        for manifest in [
            *_backend("web-a", ports["a"]),
            secret,
            _gateway(
                _server(istio_mutual, "HTTPS", [HOST], "mesh", mode="ISTIO_MUTUAL",
                        subjectAltNames=[ALLOWED]),
                _server(optional, "HTTPS", [HOST], "optional", mode="OPTIONAL_MUTUAL",
                        **credential),
                _server(by_san, "HTTPS", [HOST], "san", mode="MUTUAL",
                        subjectAltNames=["good.client.test"], **credential),
                _server(by_spki, "HTTPS", [HOST], "spki", mode="MUTUAL",
                        verifyCertificateSpki=[_spki(good)], **credential),
                _server(by_hash, "HTTPS", [HOST], "hash", mode="MUTUAL",
                        verifyCertificateHash=[_hash(good)], **credential),
            ),
            _vs("front", [HOST], http=[{"route": [{"destination": {"host": "web-a"}}]}]),
        ]:  # fmt: skip
            await apply(client, manifest)
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys, ca=mesh) as push:
            with envoy(tmp_path, ads_port=push.port, labels=INGRESS):
                mesh_peer = {"sni": HOST, "ca": mesh_root}
                await until(
                    lambda: asyncio.to_thread(served, istio_mutual, "a", **mesh_peer,
                                              client=as_allowed)
                )  # fmt: skip
                # ISTIO_MUTUAL: the gateway's own workload certificate, from the mesh CA.
                presented = await asyncio.to_thread(
                    https_get, istio_mutual, **mesh_peer, client=as_allowed
                )
                names = (
                    x509.load_der_x509_certificate(presented[2])
                    .extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    .value.get_values_for_type(x509.UniformResourceIdentifier)
                )
                assert [n.rsplit("/sa/", 1)[0] for n in names] == [
                    f"spiffe://cluster.local/ns/{NS}"
                ], names
                # No certificate, a mesh certificate of another identity, another CA: refused.
                for who in (None, as_other, as_stranger):
                    assert await asyncio.to_thread(
                        refused, istio_mutual, **mesh_peer, client=who
                    ), who
                # OPTIONAL_MUTUAL: with or without a certificate of the CA; not another CA's.
                own = {"sni": HOST, "ca": secret_root}
                await until(lambda: asyncio.to_thread(served, optional, "a", **own))
                assert await asyncio.to_thread(served, optional, "a", **own, client=as_good)
                assert await asyncio.to_thread(refused, optional, **own, client=as_stranger)
                # MUTUAL with checks: the right SAN / SPKI / hash only, both signed by the CA.
                for port in (by_san, by_spki, by_hash):
                    await until(
                        lambda p=port: asyncio.to_thread(served, p, "a", **own, client=as_good)
                    )
                    assert await asyncio.to_thread(refused, port, **own, client=as_bad), port
                    assert await asyncio.to_thread(refused, port, **own), port


async def _tls_backend(name: str, directory: Path) -> tuple[asyncio.Server, str]:
    """A TLS server of its own answering ``<name>-tls``; and its CA's file."""
    made = tls_material(f"{name}.backend.test")
    (directory / f"{name}.crt").write_text(made.cert)
    (directory / f"{name}.key").write_text(made.key)
    (directory / f"{name}-ca.pem").write_text(made.ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(directory / f"{name}.crt"), str(directory / f"{name}.key"))
    body = f"{name}-tls".encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)  # fmt: skip
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, str(directory / f"{name}-ca.pem")


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "state-of-the-world"])
async def test_an_auto_passthrough_server_reaches_the_service_its_sni_names(
    delta: bool,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    (a, a_ca), (b, b_ca) = [await _tls_backend(n, tmp_path) for n in ("a", "b")]
    port = free_port()
    try:
        for manifest in [
            *_backend("tls-a", a.sockets[0].getsockname()[1], port_name="tls", service_port=443),
            *_backend("tls-b", b.sockets[0].getsockname()[1], port_name="tls", service_port=443),
            # No VirtualService: the SNI itself names the cluster.
            _gateway(_server(port, "TLS", ["*.local"], "tls", mode="AUTO_PASSTHROUGH")),
        ]:  # fmt: skip
            await apply(client, manifest)
        sni = f"outbound_.443_._.tls-{{}}.{NS}.svc.cluster.local"
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys, ca=MeshCA()) as push:
            # The SNI-DNAT clusters take their endpoints by the outbound clusters' EDS names,
            # over either protocol.
            with envoy(tmp_path, ads_port=push.port, labels=INGRESS, delta=delta):
                # Each backend's own certificate reaches the client: not terminated.
                await until(
                    lambda: asyncio.to_thread(served, port, "a-tls", sni=sni.format("a"), ca=a_ca)
                )
                assert await asyncio.to_thread(served, port, "b-tls", sni=sni.format("b"), ca=b_ca)
                assert await asyncio.to_thread(refused, port, sni=sni.format("a"), ca=b_ca)
                # A name no cluster has, and one outside the server's hosts: nothing.
                assert await asyncio.to_thread(refused, port, sni=sni.format("c"), ca=a_ca)
                assert await asyncio.to_thread(refused, port, sni="tls-a.example.com", ca=a_ca)
    finally:
        for server in (a, b):
            server.close()


async def test_a_plain_http_server_serves_its_own_hosts_and_an_https_server_after_it_is_skipped(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    made = tls_material(HOST)
    ca = Files(tmp_path).write("ca", made.ca)
    port = free_port()
    with http_backends(tmp_path, ("a",)) as ports:
        for manifest in [
            *_backend("web-a", ports["a"]),
            made.secret("a-cert", NS),
            _gateway(
                _server(port, "HTTP", [HOST], "http"),
                # Istio's mergeGateways: the port is plain HTTP; this server conflicts.
                _server(port, "HTTPS", [HOST], "https", mode="SIMPLE", credentialName="a-cert"),
            ),
            _vs("any", ["*"], http=[{"route": [{"destination": {"host": "web-a"}}]}]),
        ]:  # fmt: skip
            await apply(client, manifest)
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys, ca=MeshCA()) as push:
            with envoy(tmp_path, ads_port=push.port, labels=INGRESS):

                async def status(host: str) -> int | None:
                    with contextlib.suppress(httpx.HTTPError):
                        async with httpx.AsyncClient(timeout=10) as http_client:
                            answer = await http_client.get(
                                f"http://127.0.0.1:{port}/", headers={"Host": host}
                            )
                            return answer.status_code
                    return None

                await until(lambda: _is(status(HOST), 200))
                # The VirtualService's "*" is served on the server's host only.
                assert await status("b.example.com") == 404
                assert await asyncio.to_thread(refused, port, sni=HOST, ca=ca)


async def _is(pending: Any, expected: int) -> bool:
    return bool(await pending == expected)
