"""End to end: ``fleetlog up`` with its node agent meshes the pods that ask for it. A client pod
in a namespace labelled ``istio-injection: enabled`` gets an Envoy sidecar in its own network
namespace, its calls to plain ``http://web.shop:80`` are captured and routed by the
VirtualService (an 80/20 split between two versions, and a fault abort no un-meshed call
sees); the same client in an unlabelled namespace goes through the node's service proxy
untouched; the sidecar's output is ``fleetlog logs -c istio-proxy``, and it stops after the
client's container has; a PASSTHROUGH DestinationRule sends the client's request on to the
address it called. Real processes, real Envoy, real network namespaces and nftables."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.server import free_port
from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

SERVES_ITS_VERSION = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = sys.argv[1].encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.send_header('X-Peer', self.client_address[0])\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "http.server.ThreadingHTTPServer.request_queue_size = 128\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)

CALLS_WEB = (
    "import collections, json, time, urllib.error, urllib.request\n"
    "def get(headers):\n"
    "    request = urllib.request.Request('http://web.shop:80/', headers=headers)\n"
    "    try:\n"
    "        with urllib.request.urlopen(request, timeout=5) as answer:\n"
    "            return answer.read().decode()\n"
    "    except urllib.error.HTTPError as exc:\n"
    "        return f'status {exc.code}'\n"
    "    except OSError as exc:\n"
    "        return f'error {exc}'\n"
    "first = get({})\n"
    "deadline = time.time() + 60\n"
    "while get({}).startswith('error') and time.time() < deadline:\n"
    "    time.sleep(0.5)\n"
    "counts = collections.Counter(get({}) for _ in range(300))\n"
    "print(json.dumps({'counts': counts, 'fault': get({'x-fault': 'yes'}), 'first': first}),\n"
    "      flush=True)\n"
)
REQUESTS = 300


def web_pod(version: str, *, meshed: bool = False) -> dict[str, Any]:
    labels = {"app": "web", "version": version}
    if meshed:
        labels["sidecar.istio.io/inject"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{version}", "namespace": "shop", "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "process",
                    "command": [sys.executable, "-c", SERVES_ITS_VERSION, version],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ]
        },
    }


def client_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": "process",
                    "command": [sys.executable, "-c", CALLS_WEB],
                }
            ],
        },
    }


def mesh_manifests() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "meshed", "labels": {"istio-injection": "enabled"}}},
        web_pod("v1"),
        web_pod("v2", meshed=True),  # its inbound traffic goes through its sidecar
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                             {"name": "v2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"hosts": ["web"], "http": [
             {"match": [{"headers": {"x-fault": {"exact": "yes"}}}],
              "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
              "route": [{"destination": {"host": "web", "subset": "v1"}}]},
             {"route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 80},
                        {"destination": {"host": "web", "subset": "v2"}, "weight": 20}]},
         ]}},
    ]  # fmt: skip


def pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    shown = cluster.cli("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


def finished(cluster: Cluster, namespace: str) -> bool:
    return (pod(cluster, namespace, "client").get("status") or {}).get("phase") == "Succeeded"


def report(cluster: Cluster, namespace: str) -> dict[str, Any]:
    out = cluster.cli("logs", "client", "-n", namespace).stdout
    return json.loads(out.strip().splitlines()[-1])


def envoys_of(uid: str) -> list[int]:
    """The processes running the pod's Envoy (by its bootstrap, which is named after it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"/mesh/{uid}/envoy.json" in text:
            found.append(int(cmdline.parent.name))
    return found


def web_ready(cluster: Cluster) -> bool:
    return all(
        any(c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod(cluster, "shop", f"web-{v}").get("status") or {}).get(
                "conditions") or [])
        for v in ("v1", "v2")
    )  # fmt: skip


def peer_seen_by(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as answer:
        return str(answer.headers["X-Peer"])


def serving_web_v1(cluster: Cluster, *extra: dict[str, Any]) -> str:
    """``up`` with an agent, the namespaces ``shop`` (web-v1, un-meshed, and ``extra``) and
    ``meshed`` (injection on), once web-v1 is Ready: its pod address."""
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "meshed", "labels": {"istio-injection": "enabled"}}},
        web_pod("v1"),
        *extra,
    ]  # fmt: skip
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests))
    wait_for(
        lambda: any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod(cluster, "shop", "web-v1").get("status") or {}).get("conditions") or []
        ),
        timeout=120,
    )
    return str(pod(cluster, "shop", "web-v1")["status"]["podIP"])


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_a_meshed_client_goes_through_its_sidecar_and_an_unmeshed_one_does_not(
    cluster: Cluster,
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in mesh_manifests()))

    wait_for(lambda: web_ready(cluster), timeout=120)
    # Inbound capture: a connection to the meshed server's address reaches it from its own
    # sidecar (Envoy passes it on from the pod's address); the un-meshed one sees the node.
    v1_ip, v2_ip = (pod(cluster, "shop", f"web-{v}")["status"]["podIP"] for v in ("v1", "v2"))
    assert peer_seen_by(v2_ip) == v2_ip
    assert peer_seen_by(v1_ip) not in (v1_ip, v2_ip)
    cluster.cli("apply", "-f", "-", stdin=json.dumps(client_pod("meshed")))
    cluster.cli("apply", "-f", "-", stdin=json.dumps(client_pod("default")))
    wait_for(lambda: finished(cluster, "meshed") and finished(cluster, "default"), timeout=180)

    meshed = report(cluster, "meshed")
    assert sum(meshed["counts"].values()) == REQUESTS, meshed
    v1, v2 = meshed["counts"].get("v1", 0), meshed["counts"].get("v2", 0)
    assert v1 + v2 == REQUESTS, meshed
    assert 0.70 <= v1 / REQUESTS <= 0.90, meshed  # 80/20 (±10 points over 300 requests)
    assert meshed["fault"] == "status 418", meshed
    # The sidecar had its configuration before the client started (native sidecar order).
    assert meshed["first"] in ("v1", "v2"), meshed

    plain = report(cluster, "default")
    # The node's service proxy: round robin over the two pods, no VirtualService, no fault.
    assert set(plain["counts"]) == {"v1", "v2"}, plain
    assert abs(plain["counts"]["v1"] - plain["counts"]["v2"]) <= 2, plain
    assert plain["fault"] in ("v1", "v2"), plain

    # The sidecar's output is the pod's istio-proxy container's; it stopped after the client.
    envoy_log = cluster.cli("logs", "client", "-n", "meshed", "-c", "istio-proxy").stdout
    assert "envoy" in envoy_log.lower() and "starting" in envoy_log.lower(), envoy_log[-2000:]
    meshed_uid = pod(cluster, "meshed", "client")["metadata"]["uid"]
    wait_for(lambda: not envoys_of(meshed_uid), timeout=60)
    # Its namespace, and the capture table in it, went with the finished pod.
    wait_for(lambda: f"{cluster.pod_prefix}-{meshed_uid}" not in namespaces(), timeout=60)
    plain_uid = pod(cluster, "default", "client")["metadata"]["uid"]
    assert not (cluster.data_dir / "agent" / "mesh" / plain_uid).exists()


def ingress_manifests(port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "web-gateway", "namespace": "shop"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"},
                               "hosts": ["shop.example.com"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "web-ingress", "namespace": "shop"},
         "spec": {"hosts": ["shop.example.com"], "gateways": ["web-gateway"], "http": [
             {"route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 80},
                        {"destination": {"host": "web", "subset": "v2"}, "weight": 20}]},
         ]}},
    ]  # fmt: skip


def through_ingress(port: int) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Host": "shop.example.com"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as exc:
        return f"status {exc.code}"
    except OSError as exc:
        return f"error {exc}"


def ingress_envoys(data_dir: Path) -> list[int]:
    bootstrap = str(data_dir / "agent" / "mesh" / "ingress.json")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if bootstrap in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
    return found


def test_the_gateways_ingress_envoy_routes_the_nodes_port_by_its_virtual_service(
    cluster: Cluster,
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    port = free_port()
    manifests = mesh_manifests() + ingress_manifests(port)
    cluster.cli("apply", "-f", "-", stdin="\n---\n".join(json.dumps(m) for m in manifests))
    wait_for(lambda: web_ready(cluster), timeout=120)
    # Both subsets' endpoints reach the ingress' Envoy (EDS) a moment after the pods are ready.
    wait_for(lambda: all(through_ingress(port) in ("v1", "v2") for _ in range(20)), timeout=120)
    assert len(ingress_envoys(cluster.data_dir)) == 1
    counts = Counter(through_ingress(port) for _ in range(REQUESTS))
    assert counts["v1"] + counts["v2"] == REQUESTS, counts
    assert 0.70 <= counts["v1"] / REQUESTS <= 0.90, counts  # 80/20 (±10 points)
    # Another host is not the Gateway's.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "other"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 404

    # On demand: with no Gateway selecting it, the ingress Envoy stops and the port closes.
    cluster.cli("delete", "gateway", "web-gateway", "-n", "shop")
    wait_for(lambda: not ingress_envoys(cluster.data_dir), timeout=60)
    assert through_ingress(port).startswith("error")
    assert cluster.down() == 0


CALLS_WEB_SEEING_PEERS = (
    "import json, time, urllib.request\n"
    "def get():\n"
    "    try:\n"
    "        with urllib.request.urlopen('http://web.shop:80/', timeout=5) as answer:\n"
    "            return [answer.read().decode(), answer.headers['X-Peer']]\n"
    "    except OSError as exc:\n"
    "        return ['error', str(exc)]\n"
    "deadline = time.time() + 60\n"
    "while get()[0] == 'error' and time.time() < deadline:\n"
    "    time.sleep(0.5)\n"
    "print(json.dumps([get() for _ in range(50)]), flush=True)\n"
)


def test_passthrough_sends_a_meshed_clients_request_on_to_the_address_it_called(
    cluster: Cluster,
) -> None:
    """A PASSTHROUGH DestinationRule makes the service's cluster Envoy's ORIGINAL_DST: the
    sidecar does not pick an endpoint but connects to where the client connected, the
    ClusterIP — so the node's service proxy answers it, and the pod sees the node as its peer
    (through EDS, the sidecar would connect to the pod itself from the client's address)."""
    web_ip = serving_web_v1(
        cluster,
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"host": "web", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}},
    )  # fmt: skip
    node = peer_seen_by(web_ip)
    client = client_pod("meshed")
    client["spec"]["containers"][0]["command"][-1] = CALLS_WEB_SEEING_PEERS
    cluster.cli("apply", "-f", "-", stdin=json.dumps(client))
    wait_for(lambda: finished(cluster, "meshed"), timeout=180)

    out = cluster.cli("logs", "client", "-n", "meshed").stdout
    seen = json.loads(out.strip().splitlines()[-1])
    client_ip = pod(cluster, "meshed", "client")["status"]["podIP"]
    assert {answer for answer, _ in seen} == {"v1"}, seen
    assert {peer for _, peer in seen} == {node} and node != client_ip, (seen, client_ip)
    assert cluster.down() == 0


CALLS_AN_ADDRESS = (
    "import json, sys, time, urllib.request\n"
    "def get():\n"
    "    try:\n"
    "        with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:\n"
    "            return [answer.read().decode(), answer.headers.get('Server'),\n"
    "                    answer.headers.get('x-envoy-upstream-service-time') is not None]\n"
    "    except OSError as exc:\n"
    "        return ['error', str(exc), False]\n"
    "deadline = time.time() + 60\n"
    "while get()[0] == 'error' and time.time() < deadline:\n"
    "    time.sleep(0.5)\n"
    "print(json.dumps([get() for _ in range(20)]), flush=True)\n"
)


def test_a_meshed_client_reaches_an_address_no_service_names_through_its_sidecar(
    cluster: Cluster,
) -> None:
    """Istio's ALLOW_ANY: a meshed client calling a pod's own address on a port the sidecar
    routes by HTTP (a Service has that port) is passed on to where it connected. The
    sidecar holds no virtual host for the address: it asks the handler for it on demand
    (VHDS), which answers a pass-through host for exactly that name — the request is
    routed by Envoy (its ``Server`` and upstream-time headers) and answered by the pod."""
    web_ip = serving_web_v1(
        cluster,
        # Another service on the pod's port: the sidecar's port 8080 is HTTP-routed.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other", "namespace": "shop"},
         "spec": {"selector": {"app": "nothing"},
                  "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}},
    )  # fmt: skip
    client = client_pod("meshed")
    command = client["spec"]["containers"][0]["command"]
    command[-1] = CALLS_AN_ADDRESS
    command.append(f"http://{web_ip}:8080/")
    cluster.cli("apply", "-f", "-", stdin=json.dumps(client))
    wait_for(lambda: finished(cluster, "meshed"), timeout=180)

    out = cluster.cli("logs", "client", "-n", "meshed").stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == [["v1", "envoy", True]] * 20, seen
    assert cluster.down() == 0
