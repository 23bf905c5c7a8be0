"""A sidecar's locality when its bootstrap gives none (the node agent's sidecars and ingress
Envoy set no ``node.locality``): the mesh-push handler takes its pod's node's topology labels,
and follows them when they change (real nats-server, objects applied through the command
gateway, the sidecars speaking ADS as gRPC clients). Without it locality-aware load balancing
(``localityLbSetting``) never applied to the mesh's own proxies."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from nats.aio.client import Client

from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import Proxy
from core.mesh.envoy.names import CLUSTER_TYPE
from core.mesh.proxytoken import INGRESS_NAMESPACE, ingress_pod
from core.mesh.push import SHORT, node_id, resources_by_type
from handlers.gateway import Gateway
from handlers.mesh.push import MeshPush
from handlers.mesh.xds import Encoder
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from tests.integration.meshkit import NS, apply, mesh_push, until
from tests.integration.test_mesh_push import manifests
from tests.integration.test_mesh_push_sharing import BINDS, NODES, sidecars

pytestmark = pytest.mark.integration


def _node(region: str, zone: str) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-1", "labels": labels}}


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app-0", "namespace": NS, "labels": {"app": "client"}},
        "spec": {"nodeName": "n-1", "containers": [{"name": "app", "image": "app"}]},
    }  # fmt: skip


def _failover_rule() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web-a", "namespace": NS},
        "spec": {"host": "web-a", "trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"failover": [{"from": "us", "to": "eu"}]}},
            "outlierDetection": {"consecutive5xxErrors": 5}}},
    }  # fmt: skip


def _locality(push: MeshPush, node: str = NODES[0]) -> str:
    for stream in push._streams:
        if stream.node is not None and stream.node.id == node and stream.proxy is not None:
            return stream.proxy.locality
    return "?"


def _served_for(push: MeshPush, locality: str) -> bool:
    """The first sidecar is served what a build for a proxy in ``locality`` gives."""
    proxy = Proxy(namespace=NS, labels={"app": "client"}, bind_address=BINDS[0],
                  locality=locality)  # fmt: skip
    snapshot = build_snapshot(push.model.state(), proxy)
    encoder = Encoder()
    own = {SHORT[t]: encoder.encode(r).version for t, r in resources_by_type(snapshot).items()}
    served = push.serving_versions(NODES[0])
    return all(served.get(short) == version for short, version in own.items())


async def test_a_sidecar_with_no_locality_takes_its_nodes_and_follows_it(
    gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel], nc: Client
) -> None:
    for manifest in [*manifests({"a": 18080, "b": 18081}, 18088, (80, 20)), _failover_rule(),
                     _node("us", "us-a"), _pod()]:  # fmt: skip
        await apply(client, manifest)
    await until(lambda: projection.model.get("Pod", NS, "app-0") is not None)
    async with mesh_push(projection, nc) as push, sidecars(push):
        await until(lambda: push.connected == len(NODES), timeout=60)
        # The stream's node.locality is empty: the pod's node's labels give it.
        await until(lambda: _locality(push) == "us/us-a", timeout=60)
        await until(lambda: _served_for(push, "us/us-a"), timeout=60)
        assert not _served_for(push, "")  # the locality does change what is served

        # The node moves (its labels change): the proxy follows, and is pushed for it.
        await apply(client, _node("eu", "eu-a"))
        await until(lambda: _locality(push) == "eu/eu-a", timeout=60)
        await until(lambda: _served_for(push, "eu/eu-a"), timeout=60)


async def test_a_nodes_ingress_envoy_takes_its_nodes_locality(
    gateway: Gateway, client: CommandClient, projection: Projection[ClusterModel], nc: Client
) -> None:
    """The node agent's ingress Envoy is named after its node (no pod of the model)."""
    await apply(client, _node("us", "us-b"))
    await until(lambda: projection.model.get("Node", "", "n-1") is not None)
    ingress = node_id(kind="gateway", ip="127.0.0.1", pod=ingress_pod("n-1"),
                      namespace=INGRESS_NAMESPACE)  # fmt: skip
    async with (
        mesh_push(projection, nc) as push,
        grpc.aio.insecure_channel(push.address) as channel,
    ):
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
        request.node.id = ingress
        await call.write(request)
        try:
            await until(lambda: _locality(push, ingress) == "us/us-b", timeout=60)
        finally:
            call.cancel()
