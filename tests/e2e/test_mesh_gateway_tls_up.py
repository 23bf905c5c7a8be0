"""End to end: ``fleetlog up`` with its node agent serves a Gateway's HTTPS server on the
node's own address. The certificate is a ``kubernetes.io/tls`` Secret applied with the CLI
(sealed in the log; ``up``'s mesh handler opens it with the cluster key and sends it over SDS
to the agent's ingress Envoy); a client verifying the Secret's CA with the server's SNI gets
the web pods' answers on ``127.0.0.1``, another SNI is refused, and a new certificate applied
to the Secret is served by the same Envoy. Real processes, real Envoy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.server import free_port
from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_mesh_sidecar_up import ingress_envoys, mesh_manifests, web_ready
from tests.integration.test_mesh_gateway_tls import https_get, refused
from tests.mesh_tls import TlsMaterial, tls_material

pytestmark = pytest.mark.e2e

HOST = "shop.example.com"


def https_manifests(port: int, made: TlsMaterial) -> list[dict[str, Any]]:
    return [
        made.secret("shop-cert", "shop"),
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "web-gateway", "namespace": "shop"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": port, "name": "https", "protocol": "HTTPS"},
                               "hosts": [HOST],
                               "tls": {"mode": "SIMPLE", "credentialName": "shop-cert"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "web-ingress", "namespace": "shop"},
         "spec": {"hosts": [HOST], "gateways": ["web-gateway"],
                  "http": [{"route": [{"destination": {"host": "web"}}]}]}},
    ]  # fmt: skip


def answer(port: int, ca: Path) -> str:
    try:
        status, body = https_get(port, sni=HOST, ca=str(ca))
    except OSError as exc:  # ssl.SSLError is an OSError
        return f"error {exc}"
    return body if status == 200 else f"status {status}"


def test_the_ingress_envoy_terminates_https_with_a_secrets_certificate_and_its_rotation(
    cluster: Cluster, tmp_path: Path
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    port = free_port()
    first, second = tls_material(HOST), tls_material(HOST)
    first_ca, second_ca = tmp_path / "first-ca.pem", tmp_path / "second-ca.pem"
    first_ca.write_text(first.ca)
    second_ca.write_text(second.ca)
    manifests = mesh_manifests() + https_manifests(port, first)
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests))
    wait_for(lambda: web_ready(cluster), timeout=120)
    wait_for(lambda: all(answer(port, first_ca) in ("v1", "v2") for _ in range(10)), timeout=120)
    [envoy] = ingress_envoys(cluster.data_dir)
    assert refused(port, sni="other.example.com", ca=str(first_ca))

    secret = json.dumps(second.secret("shop-cert", "shop"))
    cluster.cli("apply", "-f", "-", stdin=secret)
    wait_for(lambda: answer(port, second_ca) in ("v1", "v2"), timeout=60)
    assert answer(port, first_ca).startswith("error")
    assert ingress_envoys(cluster.data_dir) == [envoy]  # the same Envoy, no restart
    assert cluster.down() == 0
