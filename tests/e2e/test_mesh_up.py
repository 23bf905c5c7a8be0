"""End to end: ``fleetlog up`` serves ADS at the address it writes to proxies with a token its
node agents' key signed (a token-less one is refused), a proxy's ACK reaches the
``fleet_mesh_status`` bucket, and ``fleetlog mesh status`` reads it as the admin, through the
NATS wall; the address file goes with ``up``."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from core.mesh.proxytoken import ProxyClaims, ingress_pod, sign_token
from core.mesh.push import CLUSTER_TYPE, node_id
from streams.identity import read_seed_file
from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e


def test_up_serves_ads_and_mesh_status_shows_the_proxy(cluster: Cluster) -> None:
    cluster.up()
    address_file = cluster.data_dir / "mesh" / "ads-address"
    address = address_file.read_text().strip()
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()

    def outgoing() -> Iterator[discovery_pb2.DiscoveryRequest]:
        while (request := requests.get(timeout=60)) is not None:
            yield request

    node = cluster.data_dir.parent / "node.json"
    node.write_text('{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-1"}}')
    cluster.cli("apply", "-f", str(node))
    # The token a node agent gives its ingress proxy, signed with the agents' key up made.
    agents = read_seed_file(cluster.data_dir / "pki" / "nkeys" / "agent.nk")
    pod = ingress_pod("edge-1")
    token = sign_token(agents.seed, ProxyClaims(kind="gateway", namespace="istio-system",
                                                pod=pod, uid="", node="edge-1"))  # fmt: skip
    first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    first.node.id = node_id(kind="gateway", ip="127.0.0.1", pod=pod, namespace="istio-system")
    with grpc.insecure_channel(address) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.StreamAggregatedResources(iter([first]), timeout=60))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        responses = stub.StreamAggregatedResources(
            outgoing(), timeout=120, metadata=(("authorization", f"Bearer {token}"),)
        )
        requests.put(first)
        response = next(responses)
        assert response.type_url == CLUSTER_TYPE
        requests.put(
            discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER_TYPE,
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
        )

        def shown() -> bool:
            out = cluster.cli("mesh", "status").stdout
            return f"{pod}.istio-system  SYNCED  NOT SENT" in out

        wait_for(shown, timeout=60)
        requests.put(None)
    assert cluster.down() == 0
    assert not address_file.exists()
