"""The mesh-push handler shares builds between proxies and scopes them by what changed (real
nats-server, objects applied through the command gateway, sidecars speaking ADS as gRPC
clients): three sidecars differing by their bind address get one build of their clusters,
endpoints and routes and one of listeners each; a VirtualService change builds listeners and
routes only, a DestinationRule clusters, endpoints, routes and credentials, an EndpointSlice
endpoints only; and after each, every proxy is served exactly what a build of its own gives."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from nats.aio.client import Client

from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import Proxy
from core.mesh.envoy.names import CLUSTER_TYPE, ENDPOINT_TYPE
from core.mesh.push import SHORT, node_id, resources_by_type
from handlers.gateway import Gateway
from handlers.mesh.push import MeshPush
from handlers.mesh.xds import Encoder
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from tests.integration.meshkit import NS, apply, mesh_push, until
from tests.integration.test_mesh_push import manifests

pytestmark = pytest.mark.integration

BINDS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NODES = [node_id(kind="sidecar", ip=b, pod=f"app-{i}", namespace=NS) for i, b in enumerate(BINDS)]


def _mesh_route(timeout: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web-a", "namespace": NS},
        "spec": {"hosts": ["web-a"], "http": [
            {"route": [{"destination": {"host": "web-a"}}], "timeout": timeout}]},
    }  # fmt: skip


def _rule(policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web-a", "namespace": NS},
        "spec": {"host": "web-a", "trafficPolicy": {"loadBalancer": {"simple": policy}}},
    }  # fmt: skip


def _slice(port: int, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-a-1", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": "web-a"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }  # fmt: skip


@contextlib.asynccontextmanager
async def sidecars(push: MeshPush) -> AsyncIterator[None]:
    """The three sidecars' ADS streams (each asks for clusters; the handler builds every type
    for it on connecting)."""
    async with grpc.aio.insecure_channel(push.address) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        calls = []
        for node, bind in zip(NODES, BINDS, strict=True):
            call = stub.StreamAggregatedResources()
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.id = node
            request.node.metadata.update({"BIND_ADDRESS": bind})
            await call.write(request)
            calls.append(call)
        try:
            yield
        finally:
            for call in calls:
                call.cancel()


def _own_build(push: MeshPush, bind: str) -> dict[str, str]:
    """What a build of the proxy's own, from the handler's model now, gives: each type's
    version."""
    proxy = Proxy(namespace=NS, bind_address=bind)
    snapshot = build_snapshot(push.model.state(), proxy)
    encoder = Encoder()
    own = {SHORT[t]: encoder.encode(r).version for t, r in resources_by_type(snapshot).items()}
    return {**own, "SDS": encoder.encode(snapshot.secrets).version}


def _served_as_own(push: MeshPush) -> bool:
    return all(
        push.serving_versions(node) == _own_build(push, bind)
        for node, bind in zip(NODES, BINDS, strict=True)
    )


async def _change(
    push: MeshPush, client: CommandClient, manifest: dict[str, Any], changes: str
) -> Counter[str]:
    """Apply ``manifest``; once every proxy is served the ``changes`` type's new version (and
    what its own build gives), how many builds of each type that push made."""
    before = {node: push.serving_versions(node)[changes] for node in NODES}
    built = Counter(push.built)
    await apply(client, manifest)
    await until(
        lambda: all(push.serving_versions(n)[changes] != before[n] for n in NODES), timeout=60
    )
    await until(lambda: _served_as_own(push), timeout=60)
    await asyncio.sleep(0.3)  # a late second push would show in the counts
    return push.built - built


async def test_sidecars_share_builds_and_a_change_builds_only_the_types_it_alters(
    gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel], nc: Client
) -> None:
    for manifest in [*manifests({"a": 18080, "b": 18081}, 18088, (80, 20)), _rule("RANDOM"),
                     _mesh_route("5s")]:  # fmt: skip
        await apply(client, manifest)
    await until(lambda: projection.model.get("VirtualService", NS, "web-a") is not None)
    async with mesh_push(projection, nc) as push, sidecars(push):
        await until(lambda: push.connected == len(NODES) and _served_as_own(push), timeout=60)
        # One build of each shared type for the three; listeners are each proxy's own. (VHDS:
        # an empty set, for proxies that take whole route configurations.)
        assert push.built == Counter(
            {"CDS": 1, "EDS": 1, "RDS": 1, "SDS": 1, "LDS": 3, "VHDS": 1}
        ), push.built

        assert await _change(push, client, _mesh_route("7s"), "RDS") == Counter(
            {"LDS": 3, "RDS": 1, "VHDS": 1}
        )
        assert await _change(push, client, _rule("ROUND_ROBIN"), "CDS") == Counter(
            {"CDS": 1, "EDS": 1, "RDS": 1, "VHDS": 1, "SDS": 1}
        )
        assert await _change(
            push, client, _slice(18080, ["127.0.0.1", "127.0.0.9"]), "EDS"
        ) == Counter({"EDS": 1})


async def test_a_changed_clusters_endpoints_follow_it_before_its_ack(
    gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel], nc: Client
) -> None:
    """Envoy answers a clusters response that re-creates a cluster only once the cluster is
    warm, which needs its endpoints: they must come without waiting for that answer (they
    did not, and every DestinationRule change took Envoy's 15 s warming timeout)."""
    for manifest in manifests({"a": 18080, "b": 18081}, 18088, (80, 20)):
        await apply(client, manifest)
    await until(lambda: projection.model.get("EndpointSlice", NS, "web-b-1") is not None)
    async with (
        mesh_push(projection, nc) as push,
        grpc.aio.insecure_channel(push.address) as channel,
    ):
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER_TYPE)
        first.node.id = NODES[0]
        await call.write(first)
        clusters = await asyncio.wait_for(call.read(), 30)
        names = [r.name for r in clusters.resources]
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            type_url=CLUSTER_TYPE, response_nonce=clusters.nonce))  # fmt: skip
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            type_url=ENDPOINT_TYPE, resource_names_subscribe=names))  # fmt: skip
        endpoints = await asyncio.wait_for(call.read(), 30)
        assert endpoints.type_url == ENDPOINT_TYPE
        await call.write(discovery_pb2.DeltaDiscoveryRequest(
            type_url=ENDPOINT_TYPE, response_nonce=endpoints.nonce))  # fmt: skip

        await apply(client, _rule("RANDOM"))
        changed = await asyncio.wait_for(call.read(), 30)
        assert changed.type_url == CLUSTER_TYPE
        assert {r.name for r in changed.resources} == {
            "outbound|80||web-a.default.svc.cluster.local"
        }
        # Not acked: the re-created cluster's endpoints come anyway, and nothing else does.
        following = await asyncio.wait_for(call.read(), 30)
        assert following.type_url == ENDPOINT_TYPE
        assert {r.name for r in following.resources} == {
            "outbound|80||web-a.default.svc.cluster.local"
        }
        call.cancel()


async def test_a_full_rebuild_names_the_resources_that_changed_for_every_stream(
    gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel], nc: Client
) -> None:
    """A DestinationRule change builds clusters and endpoints whole; the push marks them once
    with the names whose version changed since the last push (``since``), so no stream
    compares every resource with what its Envoy holds (each of ten did, one after another)."""
    for manifest in [*manifests({"a": 18080, "b": 18081}, 18088, (80, 20)), _rule("RANDOM")]:
        await apply(client, manifest)
    await until(lambda: projection.model.get("DestinationRule", NS, "web-a") is not None)
    async with mesh_push(projection, nc) as push, sidecars(push):
        await until(lambda: push.connected == len(NODES) and _served_as_own(push), timeout=60)
        before = {s: s.current[CLUSTER_TYPE].version for s in push._streams}
        await _change(push, client, _rule("ROUND_ROBIN"), "CDS")
        web_a = "outbound|80||web-a.default.svc.cluster.local"
        for stream, version in before.items():
            clusters = stream.current[CLUSTER_TYPE]
            assert clusters.replaced == (version, frozenset({web_a})), clusters.replaced
            assert web_a in {name for name, _ in clusters.resources}
        assert len({id(s.current[CLUSTER_TYPE]) for s in push._streams}) == 1  # one for all
