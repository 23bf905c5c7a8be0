"""SDS on the mesh-push handler's ADS stream: a proxy asking for Istio's ``default`` and
``ROOTCA`` secrets gets its identity's certificate (the SPIFFE id of its namespace and service
account) and the mesh CA's root, and a new certificate is pushed at half its life, on the same
stream. A gRPC client speaks to the handler as Envoy does (real nats-server behind it)."""

from __future__ import annotations

import asyncio
import datetime

import grpc
import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from nats.aio.client import Client

from core.mesh.envoy.names import SECRET_TYPE
from core.mesh.push import node_id
from handlers.mesh.ca import MeshCA
from projections.cluster import ClusterModel
from projections.runtime import Projection
from tests.integration.meshkit import mesh_push

pytestmark = pytest.mark.integration

TTL = datetime.timedelta(seconds=2)


def secrets_request(
    node: str, *, account: str | None = None, nonce: str = "", version: str = ""
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=SECRET_TYPE, resource_names=["default", "ROOTCA"],
        response_nonce=nonce, version_info=version,
    )  # fmt: skip
    request.node.id = node
    if account is not None:
        request.node.metadata.update({"SERVICE_ACCOUNT": account})
    return request


def unpack(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    found = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        assert packed.Unpack(secret)
        found[secret.name] = secret
    return found


def certificate(secret: secret_pb2.Secret) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        secret.tls_certificate.certificate_chain.inline_string.encode()
    )


def uri(cert: x509.Certificate) -> list[str]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(sans.get_values_for_type(x509.UniformResourceIdentifier))


async def test_a_proxy_gets_its_identitys_certificate_and_a_new_one_at_half_life(
    projection: Projection[ClusterModel], nc: Client
) -> None:
    node = node_id(kind="sidecar", ip="10.1.0.5", pod="web-1", namespace="shop")
    async with (
        mesh_push(projection, ca=MeshCA(ttl=TTL)) as push,
        grpc.aio.insecure_channel(push.address) as channel,
    ):
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()
        await call.write(secrets_request(node, account="web-sa"))
        first = await asyncio.wait_for(call.read(), 30)
        assert first.type_url == SECRET_TYPE
        secrets = unpack(first)
        assert set(secrets) == {"default", "ROOTCA"}
        cert = certificate(secrets["default"])
        assert uri(cert) == ["spiffe://cluster.local/ns/shop/sa/web-sa"]
        root = secrets["ROOTCA"].validation_context.trusted_ca.inline_string
        assert root == push.ca.root_pem
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(root.encode()))
        key = secrets["default"].tls_certificate.private_key.inline_string
        assert key.startswith("-----BEGIN PRIVATE KEY-----")
        await call.write(secrets_request(node, nonce=first.nonce, version=first.version_info))

        # Half of the 2 s life later, the next certificate comes on the same stream.
        second = await asyncio.wait_for(call.read(), 30)
        assert second.version_info != first.version_info
        renewed = certificate(unpack(second)["default"])
        assert renewed.serial_number != cert.serial_number
        assert uri(renewed) == uri(cert)
        assert unpack(second)["ROOTCA"].validation_context.trusted_ca.inline_string == root
        assert push.rotations >= 1
        call.cancel()

        # With no SERVICE_ACCOUNT and no pod in the read model: the namespace's default.
        other = node_id(kind="sidecar", ip="10.1.0.6", pod="db-1", namespace="data")
        call = stub.StreamAggregatedResources()
        await call.write(secrets_request(other))
        answer = await asyncio.wait_for(call.read(), 30)
        assert uri(certificate(unpack(answer)["default"])) == [
            "spiffe://cluster.local/ns/data/sa/default"
        ]
        call.cancel()
