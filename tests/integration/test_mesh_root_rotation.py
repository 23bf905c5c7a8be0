"""Rotating the mesh CA's root under traffic, through two real Envoys speaking mTLS to each
other with certificates from the mesh-push handler over SDS: no request fails.

The client is a gateway Envoy whose route goes to the Service ``web`` with a DestinationRule
``ISTIO_MUTUAL`` (its SDS certificate, the ``ROOTCA`` bundle, the server's SPIFFE id). The
server is a second Envoy, a sidecar of another identity (namespace ``backend``), given by the
``amend`` hook a listener that terminates mTLS as the captured sidecar's ``virtualInbound``
does (``core.mesh.envoy.tls.downstream_mtls``: a client certificate required, verified against
``ROOTCA``) and passes the connection on to a loopback ``http.server``. That server closes
each connection after its answer, so every request is a new TLS handshake between the two
Envoys. While a client calls without pause, ``fleetlog mesh rotate-ca`` rotates the root; the
test follows the transition (both roots in the proxies' bundle, certificates issued again from
the new root, the old root dropped) and counts the failures: none.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from nats.aio.client import Client

from core.mesh.envoy.model import Snapshot
from core.mesh.envoy.names import CLUSTER_TYPE, LISTENER_TYPE, TCP_PROXY_TYPE
from core.mesh.envoy.tls import downstream_mtls
from core.mesh.push import ProxyNode, node_id
from handlers.gateway import Gateway
from handlers.mesh.ca import MeshCA
from handlers.mesh.push import MeshPush
from ops.cli.mesh import rotate_ca
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams import certificates
from streams.commandbus import CommandClient
from streams.server import free_port
from tests.integration.meshkit import NS, apply, envoy, mesh_push, synced, until
from tests.integration.test_mesh_push import HOST
from tests.mesh_scenario import http_backends

pytestmark = pytest.mark.integration

SERVER_NS = "backend"
SERVER_NODE = node_id(kind="sidecar", ip="127.0.0.1", pod="web-1", namespace=SERVER_NS)
SERVER_ID = f"spiffe://cluster.local/ns/{SERVER_NS}/sa/default"


def _inbound(port: int, backend: int) -> Any:
    """The amend hook: the server sidecar's mTLS-terminating listener on ``port``."""

    def amend(node: ProxyNode, snapshot: Snapshot) -> Snapshot:
        if node.kind != "sidecar":
            return snapshot
        listener = {
            "@type": LISTENER_TYPE, "name": "mtls-inbound",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{
                "transport_socket": downstream_mtls(),
                "filters": [{"name": "envoy.filters.network.tcp_proxy",
                             "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": "in",
                                              "cluster": "app"}}],
            }],
        }  # fmt: skip
        app = {
            "@type": CLUSTER_TYPE, "name": "app", "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": backend}}}}]}]},
        }  # fmt: skip
        return Snapshot(
            [*snapshot.clusters, app], snapshot.endpoints, [*snapshot.listeners, listener],
            snapshot.routes,
        )  # fmt: skip

    return amend


def manifests(*, inbound: int, gateway_port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": NS,
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": inbound, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "web", "namespace": NS},
         "spec": {"host": "web", "trafficPolicy": {"tls": {
             "mode": "ISTIO_MUTUAL", "subjectAltNames": [SERVER_ID]}}}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "edge", "namespace": NS},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": gateway_port, "name": "http",
                                        "protocol": "HTTP"}, "hosts": [HOST]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "shop", "namespace": NS},
         "spec": {"hosts": [HOST], "gateways": ["edge"],
                  "http": [{"route": [{"destination": {"host": "web"}}],
                            "retries": {"attempts": 0}}]}},
    ]  # fmt: skip


def _certs(admin: int) -> dict[str, set[str]]:
    """What an Envoy holds (its admin ``/certs``): the serials of its trusted roots and of
    its own certificates."""
    found: dict[str, set[str]] = {"roots": set(), "own": set()}
    for entry in httpx.get(f"http://127.0.0.1:{admin}/certs", timeout=5).json()["certificates"]:
        found["roots"] |= {_hex(c["serial_number"]) for c in entry.get("ca_cert") or ()}
        found["own"] |= {_hex(c["serial_number"]) for c in entry.get("cert_chain") or ()}
    return found


def _hex(serial: str) -> str:
    """A serial number as Python prints it (Envoy keeps the leading zeros of its bytes)."""
    return f"{int(serial, 16):x}"


def _serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


def _issued_serial(push: MeshPush, identity: tuple[str, str]) -> str:
    issued = push._certificates[identity].issued  # the handler's current certificate
    return _serial(x509.load_pem_x509_certificate(issued.cert_pem.encode()))


async def test_rotating_the_root_under_traffic_fails_no_request(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ca = MeshCA(data_dir / "pki" / "mesh", ttl=datetime.timedelta(minutes=10))
    old_root = _serial(ca.root)
    gateway_port, inbound = free_port(), free_port()
    url = f"http://127.0.0.1:{gateway_port}/"
    with http_backends(tmp_path, ("a",)) as backends:
        for manifest in manifests(inbound=inbound, gateway_port=gateway_port):
            await apply(client, manifest)
        async with mesh_push(
            projection, nc, ca=ca, amend=_inbound(inbound, backends["a"]), root_tick_s=0.2
        ) as push:
            with (
                envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}) as edge,
                envoy(tmp_path, ads_port=push.port, labels={"app": "web"},
                      node=SERVER_NODE) as server,
            ):  # fmt: skip
                await until(lambda: synced(push) and _status(url) == 200)
                results: Counter[str] = Counter()
                stop = threading.Event()
                load = threading.Thread(target=_call, args=(url, stop, results), daemon=True)
                load.start()
                try:
                    await until(lambda: results["a"] >= 20)
                    outcome = await asyncio.to_thread(
                        CliRunner().invoke, rotate_ca,
                        ["--data-dir", str(data_dir), "--overlap", "8"],
                    )  # fmt: skip
                    assert outcome.exit_code == 0, outcome.output
                    assert "mesh root rotated" in outcome.output
                    # The handler reads the directory the command wrote (its own tick).
                    await until(lambda: _serial(ca.root) != old_root)
                    new_root = _serial(ca.root)
                    # Both roots in both proxies' bundles, then their certificates from the
                    # new root, then the old root gone.
                    both = {old_root, new_root}
                    await until(lambda: all(_certs(a)["roots"] == both for a in (edge, server)))
                    await until(lambda: not ca.staged)
                    for admin, identity in (
                        (edge, (NS, "default")),
                        (server, (SERVER_NS, "default")),
                    ):
                        issued = _issued_serial(push, identity)
                        await until(lambda a=admin, s=issued: _certs(a)["own"] == {s})
                    await until(lambda: ca.previous is None)
                    await until(
                        lambda: all(_certs(a)["roots"] == {new_root} for a in (edge, server))
                    )
                    mark = results["a"]
                    await until(lambda: results["a"] >= mark + 20)
                finally:
                    stop.set()
                    await asyncio.to_thread(load.join, 30)
                failures = {k: v for k, v in results.items() if k != "a"}
                assert not failures, (failures, results["a"])
                assert results["a"] >= 40


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, headers={"Host": HOST}, timeout=5).status_code
    except httpx.HTTPError:
        return None


def _call(url: str, stop: threading.Event, results: Counter[str]) -> None:
    """Calls without pause until ``stop``: the body of each answer, or what went wrong."""
    with httpx.Client(headers={"Host": HOST}, timeout=10) as http:
        while not stop.is_set():
            try:
                answer = http.get(url)
                key = (
                    answer.text.strip()
                    if answer.status_code == 200
                    else str(answer.status_code) + " " + json.dumps(answer.text[:200])
                )
            except httpx.HTTPError as exc:
                key = f"error {type(exc).__name__}"
            results[key] += 1


async def test_a_root_near_its_end_is_rotated_by_the_handler(
    projection: Projection[ClusterModel], tmp_path: Path
) -> None:
    directory = tmp_path / "mesh"
    directory.mkdir(mode=0o700)
    # A root with an hour left, workload certificates of 40 minutes: less than two lifetimes.
    short = certificates.make_ca("short-lived", lifetime=datetime.timedelta(hours=1))
    (directory / "ca.pem").write_bytes(certificates.cert_pem(short[0]))
    (directory / "ca.key").write_bytes(certificates.key_pem(short[1]))
    ca = MeshCA(directory, ttl=datetime.timedelta(minutes=40))
    assert _serial(ca.root) == _serial(short[0])
    push = MeshPush(projection, ca=ca, insecure=True)
    push.roots_tick()
    assert _serial(ca.root) != _serial(short[0]) and ca.previous is not None
    assert ca.root.not_valid_after_utc - ca.root.not_valid_before_utc > datetime.timedelta(
        days=3000
    )
    assert (directory / "previous.json").exists()
    # With no proxy connected, nothing waits: the next tick issues from the new root.
    push.roots_tick()
    assert not ca.staged
    # A healthy root is left alone.
    push.roots_tick()
    assert (
        ca.previous is not None and len(x509.load_pem_x509_certificates(ca.root_pem.encode())) == 2
    )
