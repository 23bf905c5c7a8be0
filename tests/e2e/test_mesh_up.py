"""End to end: ``fleetlog up`` serves ADS at the address it writes, a proxy's ACK reaches the
``fleet_mesh_status`` bucket, and ``fleetlog mesh status`` reads it as the admin, through the
NATS wall; the address file goes with ``up``."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from core.mesh.push import CLUSTER_TYPE, node_id
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

    first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    first.node.id = node_id(kind="sidecar", ip="127.0.0.1", pod="app-1", namespace="default")
    with grpc.insecure_channel(address) as channel:
        responses = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            outgoing(), timeout=120
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
            return "app-1.default  SYNCED  NOT SENT" in out

        wait_for(shown, timeout=60)
        requests.put(None)
    assert cluster.down() == 0
    assert not address_file.exists()
