"""End to end: a Deployment's replicas behind a Service, reached through the ClusterIP and the
node port of a real ``fleetlog agent`` process, each replica in turn; the agent killed
(SIGKILL, no chance to clean up) and started again puts the service's address back and removes
the one a service deleted meanwhile left, its pods running on; a stopped agent leaves no
address behind. ``fleetlog up --no-agent`` and the agent are real processes; the pod network
and service range are the test's own."""

from __future__ import annotations

import ipaddress
import json
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

SAYS_ITS_ADDRESS = (
    "import socket\n"
    "server = socket.socket()\n"
    "server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "server.bind(('0.0.0.0', 8080))\n"
    "server.listen(16)\n"
    "while True:\n"
    "    conn, _ = server.accept()\n"
    "    conn.sendall(conn.getsockname()[0].encode() + b'\\n')\n"
    "    conn.close()\n"
)


def manifests(python: str) -> str:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "process",
                            "command": [python, "-c", SAYS_ITS_ADDRESS],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return "\n---\n".join(json.dumps(m) for m in (deployment, service))


def ask(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            return conn.makefile().readline().strip()
    except OSError as exc:
        return f"error: {exc}"


def addresses_on(bridge: str) -> set[str]:
    listed = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True
    )
    return {
        info["local"]
        for link in json.loads(listed.stdout or "[]")
        for info in link.get("addr_info") or []
        if info.get("prefixlen") == 32
    }


def test_service_traffic_through_a_killed_and_restarted_agent(
    cluster: Cluster, tmp_path: Path
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    block = random.randrange(4096)
    service_cidr = f"100.{80 + block // 256}.{block % 256}.0/24"
    low = 30000 + random.randrange(27) * 100
    cluster.up(
        options=["--service-cluster-ip-range", service_cidr,
                 "--service-node-port-range", f"{low}-{low + 99}"]
    )  # fmt: skip
    env = cluster.env
    # The node's own DNS server holds kube-dns' address (the range's tenth) on the bridge too;
    # the proxy leaves that service to it. The agent finds that address itself (--cluster-dns
    # auto): the kube-dns service `up` made in this range.
    cluster_dns = str(ipaddress.ip_network(service_cidr)[10])
    log_path = tmp_path / "agent.log"
    log = log_path.open("ab")

    def start_agent() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ops", "agent", "--name", "e2e-node",
             "--root", str(cluster.data_dir / "agent"), "--heartbeat", "1",
             "--pod-bridge", cluster.pod_bridge, "--pod-network-prefix", cluster.pod_prefix],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip

    agent = start_agent()
    try:
        cluster.cli("apply", "-f", "-", stdin=manifests(sys.executable))
        shown = json.loads(cluster.cli("get", "svc", "web", "-o", "json").stdout)
        cluster_ip = shown["spec"]["clusterIP"]
        node_port = shown["spec"]["ports"][0]["nodePort"]
        replicas: set[str] = set()

        def both_replicas_answer() -> bool:
            replicas.update(ask(cluster_ip, 80) for _ in range(4))
            return len({r for r in replicas if not r.startswith("error")}) == 2

        wait_for(both_replicas_answer, timeout=90)
        addresses = {r for r in replicas if not r.startswith("error")}
        answers = [ask(cluster_ip, 80) for _ in range(4)]
        assert set(answers) == addresses and answers[0] != answers[1]  # each in turn
        assert {ask("127.0.0.1", node_port) for _ in range(4)} == addresses
        kubernetes = json.loads(cluster.cli("get", "svc", "kubernetes", "-o", "json").stdout)
        ours = {cluster_ip, kubernetes["spec"]["clusterIP"], cluster_dns}
        assert addresses_on(cluster.pod_bridge) == ours

        # Killed: nothing is cleaned up. A service deleted meanwhile leaves its address.
        cluster.cli("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone"},
             "spec": {"selector": {"app": "web"}, "ports": [{"port": 81, "targetPort": 8080}]}}
        ))  # fmt: skip
        gone_ip = json.loads(cluster.cli("get", "svc", "gone", "-o", "json").stdout)["spec"][
            "clusterIP"
        ]
        wait_for(lambda: addresses_on(cluster.pod_bridge) == ours | {gone_ip})
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        cluster.cli("delete", "svc", "gone")
        assert addresses_on(cluster.pod_bridge) == ours | {gone_ip}
        agent = start_agent()
        wait_for(lambda: addresses_on(cluster.pod_bridge) == ours, timeout=60)
        wait_for(lambda: {ask(cluster_ip, 80) for _ in range(4)} == addresses, timeout=60)
        pods: list[dict[str, Any]] = json.loads(cluster.cli("get", "pods", "-o", "json").stdout)[
            "items"
        ]
        assert {p["status"]["podIP"] for p in pods} == addresses  # the same pods, not new ones
        assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods)

        # Stopped: everything the proxy made goes (the DNS address stays by design, so pods'
        # queries fail at once rather than leave the machine: see handlers/agent/dns.py).
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        assert addresses_on(cluster.pod_bridge) == {cluster_dns}
        ledger = json.loads((cluster.data_dir / "agent" / "network" / "services.json").read_text())
        assert ledger["addresses"] == []
        assert ask(cluster_ip, 80).startswith("error")
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
        cluster.cli("delete", "deployment", "web", check=False)
        # The pods outlive the agent: the cluster's teardown stops them by PID.
