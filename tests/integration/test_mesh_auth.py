"""The mesh-push handler admits a proxy's ADS stream only with a proxy token a trusted node key
signed for it, backed by the read model: a gRPC client speaks to the handler as Envoy does
(real nats-server and command gateway behind it). A missing, forged or borrowed token, one for
a pod that does not exist, is bound elsewhere or was deleted and created again, is refused with
the gRPC status and a reason, before anything — above all the pod's Secret — is sent."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from nats.aio.client import Client

from core.mesh.envoy.names import CLUSTER_TYPE, SECRET_TYPE
from core.mesh.proxytoken import (
    ProxyClaims,
    ingress_pod,
    sign_token,
    token_from_metadata,
    verify_token,
)
from core.mesh.push import node_id, parse_node_id
from handlers.agent.ingress import IngressGateway
from handlers.agent.sidecar import MeshOptions, MeshSidecars
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.identity import Credentials, generate_seed
from tests.integration.meshkit import mesh_push, until
from tests.integration.test_mesh_sds import certificate, unpack, uri

pytestmark = pytest.mark.integration

AGENTS = Credentials(generate_seed())
STRANGER = Credentials(generate_seed())
NS = "shop"


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"}}}  # fmt: skip


def pod(name: str, *, account: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"serviceAccountName": account,
                     "containers": [{"name": "c", "image": "x"}]}}  # fmt: skip


def sidecar(name: str) -> str:
    return node_id(kind="sidecar", ip="10.1.0.5", pod=name, namespace=NS)


async def ask(
    stub: Any, proxy: str, token: str | None, *, delta: bool = False
) -> discovery_pb2.DiscoveryResponse | grpc.aio.AioRpcError:
    """The first answer to a proxy asking for its secrets and clusters: a response, or the
    error the stream ended with."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    if delta:
        call = stub.DeltaAggregatedResources(metadata=metadata)
        request: Any = discovery_pb2.DeltaDiscoveryRequest(
            type_url=SECRET_TYPE, resource_names_subscribe=["default", "ROOTCA"]
        )
    else:
        call = stub.StreamAggregatedResources(metadata=metadata)
        request = discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE, resource_names=["default", "ROOTCA"]
        )
    request.node.id = proxy
    try:
        await call.write(request)
        await call.write(type(request)(type_url=CLUSTER_TYPE))
        return await asyncio.wait_for(call.read(), 30)
    except grpc.aio.AioRpcError as error:
        return error
    finally:
        call.cancel()


def refused(answer: Any, code: grpc.StatusCode, words: str) -> None:
    assert isinstance(answer, grpc.aio.AioRpcError), f"served: {answer}"
    assert answer.code() == code, (answer.code(), answer.details())
    assert words in (answer.details() or ""), answer.details()


def sidecar_token(name: str, uid: str, *, on: str = "n1", key: Credentials = AGENTS) -> str:
    claims = ProxyClaims(kind="sidecar", namespace=NS, pod=name, uid=uid, node=on)
    return sign_token(key.seed, claims)


async def test_only_a_proxy_with_its_own_signed_token_gets_its_secret(
    gateway: Gateway, nc: Client, projection: Projection[ClusterModel]
) -> None:
    setup = CommandClient(nc, actor="test:setup")
    await setup.send("Namespace", "apply", {"manifest": {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": NS}}})  # fmt: skip
    for name in ("n1", "n2"):
        await setup.send("Node", "apply", {"manifest": node(name)})
    for name, bound in (("web-1", "n1"), ("db-1", "n2")):
        await setup.send("Pod", "apply", {"manifest": pod(name, account=f"{name}-sa")})
        await setup.send("Pod", "bind", {"name": name, "namespace": NS, "node": bound})
    await setup.send("Pod", "apply", {"manifest": pod("pending")})
    model = projection.model

    def bound(name: str) -> bool:
        record = model.get("Pod", NS, name)
        return record is not None and bool((record.manifest.get("spec") or {}).get("nodeName"))

    await until(
        lambda: bound("web-1") and bound("db-1") and model.get("Pod", NS, "pending") is not None
    )
    web = model.get("Pod", NS, "web-1")
    assert web is not None
    good = sidecar_token("web-1", web.uid)

    trusted = {AGENTS.public_key: "node agents"}
    async with (
        mesh_push(projection, trusted_keys=trusted, admission_wait_s=0.5) as push,
        grpc.aio.insecure_channel(push.address) as channel,
    ):
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        # No token, over both protocols.
        refused(await ask(stub, sidecar("web-1"), None), grpc.StatusCode.UNAUTHENTICATED,
                "no proxy token")  # fmt: skip
        refused(await ask(stub, sidecar("web-1"), None, delta=True),
                grpc.StatusCode.UNAUTHENTICATED, "no proxy token")  # fmt: skip
        # Signed by a key the handler does not trust; or the right claims, altered.
        refused(await ask(stub, sidecar("web-1"), sidecar_token("web-1", web.uid, key=STRANGER)),
                grpc.StatusCode.UNAUTHENTICATED, "does not trust")  # fmt: skip
        scheme, signer, claims, _ = good.split(".")
        forged = f"{scheme}.{signer}.{claims}.{sidecar_token('web-1', 'x').split('.')[3]}"
        refused(await ask(stub, sidecar("web-1"), forged), grpc.StatusCode.UNAUTHENTICATED,
                "forged")  # fmt: skip
        # web-1's good token, presented by another pod's node id.
        refused(await ask(stub, sidecar("db-1"), good), grpc.StatusCode.PERMISSION_DENIED,
                "presents the token of web-1.shop")  # fmt: skip
        # A trusted key's token the log does not back: another uid, another node, no pod.
        refused(await ask(stub, sidecar("web-1"), sidecar_token("web-1", "old-uid")),
                grpc.StatusCode.PERMISSION_DENIED, "created again")  # fmt: skip
        db = model.get("Pod", NS, "db-1")
        assert db is not None
        refused(await ask(stub, sidecar("db-1"), sidecar_token("db-1", db.uid, on="n1")),
                grpc.StatusCode.PERMISSION_DENIED, "bound to 'n2'")  # fmt: skip
        pending = model.get("Pod", NS, "pending")
        assert pending is not None
        refused(await ask(stub, sidecar("pending"), sidecar_token("pending", pending.uid)),
                grpc.StatusCode.PERMISSION_DENIED, "bound to no node")  # fmt: skip
        refused(await ask(stub, sidecar("ghost"), sidecar_token("ghost", "u")),
                grpc.StatusCode.PERMISSION_DENIED, "does not exist")  # fmt: skip
        # A gateway token for a node that does not exist, or not the node's ingress name.
        ingress = node_id(kind="gateway", ip="127.0.0.1", pod=ingress_pod("n9"),
                          namespace="istio-system")  # fmt: skip
        gateway_claims = ProxyClaims(kind="gateway", namespace="istio-system",
                                     pod=ingress_pod("n9"), uid="", node="n9")  # fmt: skip
        refused(await ask(stub, ingress, sign_token(AGENTS.seed, gateway_claims)),
                grpc.StatusCode.PERMISSION_DENIED, "does not exist")  # fmt: skip
        assert push.connected == 0
        assert push.status_of(sidecar("web-1")) is None  # nothing recorded for the refused
        assert push.refusals["UNAUTHENTICATED"] == 4
        assert push.refusals["PERMISSION_DENIED"] == 6

        # The pod's own token: its SPIFFE certificate, from the log's service account.
        answer = await ask(stub, sidecar("web-1"), good)
        assert isinstance(answer, discovery_pb2.DiscoveryResponse)
        assert answer.type_url == SECRET_TYPE
        assert uri(certificate(unpack(answer)["default"])) == [
            "spiffe://cluster.local/ns/shop/sa/web-1-sa"
        ]
        answer = await ask(stub, sidecar("web-1"), good, delta=True)
        assert isinstance(answer, discovery_pb2.DeltaDiscoveryResponse)
        assert answer.type_url == SECRET_TYPE
        # The node's ingress proxy.
        mine = node_id(kind="gateway", ip="127.0.0.1", pod=ingress_pod("n1"),
                       namespace="istio-system")  # fmt: skip
        claims_n1 = ProxyClaims(kind="gateway", namespace="istio-system", pod=ingress_pod("n1"),
                                uid="", node="n1")  # fmt: skip
        answer = await ask(stub, mine, sign_token(AGENTS.seed, claims_n1))
        assert isinstance(answer, discovery_pb2.DiscoveryResponse)

        # Deleted and created again under the same name: the old pod's token is refused.
        old = sidecar_token("pending", pending.uid)
        await setup.send("Pod", "delete", {"name": "pending", "namespace": NS})
        await until(lambda: model.get("Pod", NS, "pending") is None)
        await setup.send("Pod", "apply", {"manifest": pod("pending")})
        await setup.send("Pod", "bind", {"name": "pending", "namespace": NS, "node": "n1"})
        await until(lambda: bound("pending"))
        again = model.get("Pod", NS, "pending")
        assert again is not None and again.uid != pending.uid
        refused(await ask(stub, sidecar("pending"), old), grpc.StatusCode.PERMISSION_DENIED,
                "created again")  # fmt: skip
        answer = await ask(stub, sidecar("pending"), sidecar_token("pending", again.uid))
        assert isinstance(answer, discovery_pb2.DiscoveryResponse)


def _token_of(config: dict[str, Any]) -> str | None:
    service = config["dynamic_resources"]["ads_config"]["grpc_services"][0]
    return token_from_metadata({m["key"]: m["value"] for m in service.get("initial_metadata", [])})


async def test_the_agent_gives_each_proxy_its_own_token_readable_by_the_agent_only(
    store: EventStore, tmp_path: Path
) -> None:
    options = MeshOptions(ads_address_file=tmp_path / "ads-address", envoy=Path("envoy"))
    sidecars = MeshSidecars(store, root=tmp_path / "agent", options=options, node="n1",
                            signer=AGENTS)  # fmt: skip
    path = sidecars.write_bootstrap(uid="uid-1", namespace=NS, name="web-1", pod_ip="10.1.0.5",
                                    labels={"app": "web"})  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = json.loads(path.read_text())
    proxy = parse_node_id(config["node"]["id"])
    claims = verify_token(_token_of(config), node=proxy, trusted={AGENTS.public_key: "agents"})
    assert (claims.pod, claims.namespace, claims.uid, claims.node) == ("web-1", NS, "uid-1", "n1")
    # Envoy's admin (its /config_dump shows the bootstrap, token and all): the agent's only.
    assert config["admin"]["address"]["pipe"]["mode"] == 0o600

    ingress = IngressGateway(store, node="n1", root=tmp_path / "agent", sidecars=sidecars)
    config = ingress.bootstrap()
    claims = verify_token(_token_of(config), node=parse_node_id(config["node"]["id"]),
                          trusted={AGENTS.public_key: "agents"})  # fmt: skip
    assert (claims.kind, claims.pod, claims.node) == ("gateway", ingress_pod("n1"), "n1")
    assert config["admin"]["address"]["pipe"]["mode"] == 0o600
    await ingress.gateways.stop()
    await sidecars.namespaces.stop()

    # An agent with no key writes no token (the handler will refuse it, and says why).
    keyless = MeshSidecars(store, root=tmp_path / "other", options=options, node="n1")
    config = keyless.bootstrap(uid="uid-1", namespace=NS, name="web-1", pod_ip="10.1.0.5",
                               labels={})  # fmt: skip
    assert _token_of(config) is None
    await keyless.namespaces.stop()
