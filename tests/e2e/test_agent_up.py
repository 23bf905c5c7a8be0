"""End to end: ``fleetlog up`` runs a local node agent, so a pod with a command really runs on
this machine; its output is read back with ``fleetlog logs`` and deleting it stops it."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: hello}}
spec:
  containers:
    - name: main
      image: process
      command: ["{sys.executable}", "-c", "print('hello from fleetlog', flush=True); import time; time.sleep(600)"]
"""


def test_up_runs_a_pod_as_a_process_with_its_logs_and_stops_it_on_delete(
    cluster: Cluster,
) -> None:
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin=POD)

    def running() -> bool:
        return "Running" in cluster.cli("get", "pods").stdout

    wait_for(running)
    wait_for(lambda: "hello from fleetlog" in cluster.cli("logs", "hello", check=False).stdout)
    # The pod has an address of its own, from this node's range of the cluster CIDR (or the
    # node's, where namespaces cannot be made).
    wide = cluster.cli("get", "pods", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]
    address = IPv4Address(wide[1].split()[5])
    if pod_network_unavailable():
        assert str(address) == "127.0.0.1"
    else:
        assert address in IPv4Network(cluster.cluster_cidr)
    described = cluster.cli("describe", "pod", "hello").stdout
    assert "Started container main" in described and "kubelet" in described
    (state,) = cluster.data_dir.glob("agent/pods/*/main/0/container.json")
    pid = json.loads(state.read_text())["pid"]
    os.kill(pid, 0)  # the container is a live process of this machine
    cluster.cli("delete", "pod", "hello")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    wait_for(gone)


README_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: main
          image: python:3.11
          command: ["python", "-m", "http.server", "8080"]
          resources: {requests: {cpu: 100m, memory: 128Mi}}
"""


def test_the_readmes_deployment_runs_three_servers_on_one_port_each_at_its_own_address(
    cluster: Cluster,
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin=README_DEPLOYMENT)
    status = cluster.cli("rollout", "status", "deployment/web", "--timeout", "60")
    assert 'deployment "web" successfully rolled out' in status.stdout
    table = cluster.cli("get", "deployments").stdout.splitlines()
    assert table[1].split()[:2] == ["web", "3/3"]
    listed = json.loads(cluster.cli("get", "pods", "-o", "json").stdout)["items"]
    addresses = [pod["status"]["podIP"] for pod in listed]
    assert len(set(addresses)) == 3
    for pod in listed:  # no "Address already in use" crash loop
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    def answers(address: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/", timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    for address in addresses:
        wait_for(lambda address=address: answers(address))
