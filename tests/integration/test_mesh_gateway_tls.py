"""A gateway Envoy's TLS and TCP servers against real Envoy and a real nats-server, on loopback:
an HTTPS server terminates TLS with the certificate of a Secret (sealed in the log, opened by
the handler, sent over SDS) picked by SNI, a wrong SNI is refused, a MUTUAL server wants a
client certificate, an HTTP server with httpsRedirect answers 301, a new certificate applied
to the Secret is served by the same Envoy; a PASSTHROUGH server hands a connection unopened to
the backend its VirtualService's ``tls`` route names by SNI, and a TCP server proxies bytes."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.server import free_port
from tests.integration.meshkit import NS, apply, envoy, mesh_push, until
from tests.mesh_scenario import http_backends
from tests.mesh_tls import TlsMaterial, tls_material

pytestmark = pytest.mark.integration

HOST = "a.example.com"
INGRESS = {"istio": "ingressgateway"}


def _files(tmp_path: Path, made: TlsMaterial, tag: str) -> dict[str, str]:
    paths = {}
    for name in ("ca", "client_cert", "client_key"):
        path = tmp_path / f"{tag}-{name}.pem"
        path.write_text(getattr(made, name))
        paths[name] = str(path)
    return paths


def https_get(
    port: int, *, sni: str, ca: str, client: tuple[str, str] | None = None
) -> tuple[int, str]:
    """GET / over TLS to 127.0.0.1:``port`` with ``sni`` (the server verified by ``ca``)."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(*client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return response.status, response.read().decode()


def refused(port: int, **kwargs: Any) -> bool:
    """Whether the handshake or the request fails (no answer from the backend)."""
    try:
        https_get(port, **kwargs)
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return True
    return False


def served(port: int, body: str, **kwargs: Any) -> bool:
    with contextlib.suppress(ssl.SSLError, OSError, http.client.HTTPException):
        return https_get(port, **kwargs) == (200, body)
    return False


def _backend(name: str, port: int, *, port_name: str = "http", service_port: int = 80) -> list:
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "namespace": NS},
         "spec": {"ports": [{"name": port_name, "port": service_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-1", "namespace": NS,
                      "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4",
         "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
    ]  # fmt: skip


def _server(port: int, protocol: str, hosts: list[str], name: str, **tls: Any) -> dict:
    server: dict[str, Any] = {"port": {"number": port, "protocol": protocol, "name": name},
                              "hosts": hosts}  # fmt: skip
    if tls:
        server["tls"] = tls
    return server


def _gateway(*servers: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": NS},
            "spec": {"selector": INGRESS, "servers": list(servers)}}  # fmt: skip


def _vs(name: str, hosts: list[str], **routes: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"hosts": hosts, "gateways": ["edge"], **routes}}  # fmt: skip


async def _listener_modified(admin: int) -> int:
    async with httpx.AsyncClient(timeout=5) as http_client:
        text = (await http_client.get(f"http://127.0.0.1:{admin}/stats")).text
    for line in text.splitlines():
        if line.startswith("listener_manager.listener_modified:"):
            return int(line.split(":")[1])
    raise AssertionError("no listener_modified stat")


async def test_https_servers_terminate_tls_with_a_secret_by_sni_and_follow_its_rotation(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    first = tls_material(HOST)
    files = _files(tmp_path, first, "first")
    https, mutual, plain = free_port(), free_port(), free_port()
    with http_backends(tmp_path, ("a",)) as ports:
        for manifest in [
            *_backend("web-a", ports["a"]),
            first.secret("a-cert", NS, with_ca=True),
            _gateway(
                _server(https, "HTTPS", [HOST], "https", mode="SIMPLE", credentialName="a-cert"),
                _server(mutual, "HTTPS", [HOST], "mutual", mode="MUTUAL", credentialName="a-cert"),
                _server(plain, "HTTP", [HOST], "http", httpsRedirect=True),
            ),
            _vs("front", [HOST], http=[{"route": [{"destination": {"host": "web-a"}}]}]),
        ]:
            await apply(client, manifest)
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys) as push:
            with envoy(tmp_path, ads_port=push.port, labels=INGRESS) as admin:
                trusted = {"sni": HOST, "ca": files["ca"]}
                await until(lambda: asyncio.to_thread(served, https, "a", **trusted))
                # Another name matches no server's SNI: no chain, the handshake fails.
                assert await asyncio.to_thread(
                    refused, https, sni="other.example.com", ca=files["ca"]
                )
                # MUTUAL: no client certificate, refused; one signed by the Secret's ca.crt.
                certificate = (files["client_cert"], files["client_key"])
                assert await asyncio.to_thread(served, mutual, "a", **trusted, client=certificate)
                assert await asyncio.to_thread(refused, mutual, **trusted)
                # httpsRedirect: plain HTTP is sent to https.
                async with httpx.AsyncClient(timeout=10) as http_client:
                    answer = await http_client.get(
                        f"http://127.0.0.1:{plain}/x", headers={"Host": HOST}
                    )
                assert answer.status_code == 301, answer.text
                assert answer.headers["location"] == f"https://{HOST}/x"

                # Rotation: a new certificate (of another CA) applied to the Secret is served
                # by the same Envoy, its listener not even modified (SDS swaps it in).
                modified = await _listener_modified(admin)
                second = tls_material(HOST)
                new_files = _files(tmp_path, second, "second")
                await apply(client, second.secret("a-cert", NS))
                await until(
                    lambda: asyncio.to_thread(served, https, "a", sni=HOST, ca=new_files["ca"])
                )
                assert await asyncio.to_thread(refused, https, **trusted)
                assert await _listener_modified(admin) == modified
                # Without a ca.crt now (and no a-cert-cacert), the MUTUAL server is left out.
                await until(lambda: asyncio.to_thread(refused, mutual, **trusted))


async def _tls_backend(made: TlsMaterial, tmp_path: Path) -> asyncio.Server:
    """A TLS server of its own (the certificate of ``made``) answering ``b-tls`` over HTTP."""
    (tmp_path / "b.crt").write_text(made.cert)
    (tmp_path / "b.key").write_text(made.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tmp_path / "b.crt"), str(tmp_path / "b.key"))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nb-tls")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)


async def _echo_backend() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(4096):
                writer.write(b"echo:" + data)
                await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def tcp_echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        return conn.recv(4096)


def echoed(port: int, payload: bytes) -> bool:
    with contextlib.suppress(OSError):
        return tcp_echo(port, payload) == b"echo:" + payload
    return False


async def test_passthrough_servers_route_tls_by_sni_and_tcp_servers_proxy_bytes(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    made = tls_material("b.example.com")
    files = _files(tmp_path, made, "b")
    tls_server, echo_server = await _tls_backend(made, tmp_path), await _echo_backend()
    tls_port = tls_server.sockets[0].getsockname()[1]
    echo_port = echo_server.sockets[0].getsockname()[1]
    passthrough, tcp = free_port(), free_port()
    try:
        for manifest in [
            *_backend("tls-b", tls_port, port_name="tls", service_port=443),
            *_backend("echo", echo_port, port_name="tcp", service_port=7000),
            _gateway(
                _server(passthrough, "TLS", ["*.example.com"], "tls", mode="PASSTHROUGH"),
                _server(tcp, "TCP", ["*"], "echo"),
            ),
            _vs("pass", ["*.example.com"], tls=[
                {"match": [{"sniHosts": ["b.example.com"]}],
                 "route": [{"destination": {"host": "tls-b"}}]},
            ]),
            _vs("echo", ["*"], tcp=[{"match": [{"port": tcp}],
                                     "route": [{"destination": {"host": "echo"}}]}]),
        ]:  # fmt: skip
            await apply(client, manifest)
        async with mesh_push(projection, nc, secret_keys=gateway.secret_keys) as push:
            with envoy(tmp_path, ads_port=push.port, labels=INGRESS):
                # The backend's own certificate reaches the client: TLS was not terminated.
                await until(
                    lambda: asyncio.to_thread(
                        served, passthrough, "b-tls", sni="b.example.com", ca=files["ca"]
                    )
                )
                # A name no tls route has: no chain.
                assert await asyncio.to_thread(
                    refused, passthrough, sni="c.example.com", ca=files["ca"]
                )
                await until(lambda: asyncio.to_thread(echoed, tcp, b"ping"))
                assert await asyncio.to_thread(tcp_echo, tcp, b"hello") == b"echo:hello"
    finally:
        for server in (tls_server, echo_server):
            server.close()
