"""End to end: a ``fleetlog agent`` process killed (SIGKILL) and started again keeps its running
pods' namespaces and addresses, and deleting the pods leaves no namespace, veth or ledger entry
behind. ``fleetlog up --no-agent`` and the agent are real processes; the pod network is named
after the test and removed afterwards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import pod_network_unavailable, wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

PODS = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
    - name: web
      image: process
      command: ["{python}", "-m", "http.server", "8080"]
      readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
"""


def names(kind: str, prefix: str) -> set[str]:
    """The network namespaces (``netns``) or links (``link``) named with ``prefix``."""
    if kind == "netns":
        listed = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
        found = [n["name"] for n in json.loads(listed.stdout or "[]")]
        return {name for name in found if name.startswith(f"{prefix}-")}
    listed = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    found = [link["ifname"] for link in json.loads(listed.stdout or "[]")]
    return {name for name in found if name.startswith(prefix)}


def pooled(root: Path) -> set[str]:
    """The namespaces and veths of the agent's pool (sandboxes made ahead for pods to come),
    as its ledger names them."""
    try:
        ledger = json.loads((root / "network" / "ledger.json").read_text())
    except (OSError, ValueError):
        return set()
    return {e[key] for e in (ledger.get("pool") or {}).values() for key in ("netns", "veth")}


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def pods(cluster: Cluster) -> dict[str, dict[str, Any]]:
    listed = json.loads(cluster.cli("get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in listed}


def test_a_killed_agent_comes_back_to_its_pods_addresses_and_leaves_nothing_behind(
    cluster: Cluster, tmp_path: Path
) -> None:
    why = pod_network_unavailable()
    if why:
        pytest.skip(f"pods cannot have network namespaces here: {why}")
    cluster.up()
    env = cluster.env
    log_path = tmp_path / "agent.log"
    log = log_path.open("ab")

    def agents_ready() -> int:
        return log_path.read_text().count("ready (Ctrl-C stops the agent")

    def start_agent() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ops", "agent", "--name", "e2e-node",
             "--root", str(cluster.data_dir / "agent"), "--heartbeat", "1",
             "--pod-bridge", cluster.pod_bridge, "--pod-network-prefix", cluster.pod_prefix],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip

    agent = start_agent()
    try:
        for name in ("one", "two"):
            cluster.cli("apply", "-f", "-", stdin=PODS.format(name=name, python=sys.executable))

        def both_ready() -> bool:
            found = pods(cluster)
            return len(found) == 2 and all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (p.get("status") or {}).get("conditions") or []
                )
                for p in found.values()
            )

        wait_for(both_ready, timeout=60)
        before = {name: p["status"]["podIP"] for name, p in pods(cluster).items()}
        assert len(set(before.values())) == 2
        assert all(answers(address) for address in before.values())
        root = cluster.data_dir / "agent"
        namespaces = names("netns", cluster.pod_prefix) - pooled(root)
        assert len(namespaces) == 2
        killed_pool = pooled(root)

        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        assert all(answers(address) for address in before.values())  # pods outlive it
        agent = start_agent()
        wait_for(lambda: agents_ready() == 2)
        time.sleep(2)  # its pod workers adopt their pods and look at their networks
        # Its pods keep their namespaces and addresses, and answer there; the killed agent's
        # pool is gone (the new one made its own).
        assert names("netns", cluster.pod_prefix) - pooled(root) == namespaces
        left = names("netns", cluster.pod_prefix) | names("link", cluster.pod_prefix)
        assert not killed_pool & left
        after = {name: p["status"]["podIP"] for name, p in pods(cluster).items()}
        assert after == before
        assert all(answers(address) for address in after.values())
        for pod in pods(cluster).values():
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

        for name in ("one", "two"):
            cluster.cli("delete", "pod", name)

        def nothing_left(*, but: set[str]) -> bool:
            links = names("link", cluster.pod_prefix) - {cluster.pod_bridge} - but
            return not names("netns", cluster.pod_prefix) - but and not links

        wait_for(lambda: nothing_left(but=pooled(root)), timeout=60)
        ledger = json.loads((root / "network" / "ledger.json").read_text())
        assert ledger["pods"] == {}
        # Stopped, the agent leaves nothing at all: its pool goes with it.
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        wait_for(lambda: nothing_left(but=set()), timeout=30)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
