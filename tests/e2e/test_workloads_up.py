"""End to end on ``fleetlog up`` with process pods: a deployment comes up, a changed template
rolls out (the log's event order proves the surge and unavailability bounds held at every
step), ``rollout undo`` returns to the first template, a killed process is restarted, a
deleted pod is replaced, a quota refuses what exceeds it, and deleting the namespace takes
everything in it along (the processes stop)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

SLEEPER = "import sys, time; print(sys.argv[1], flush=True); time.sleep(600)"


def manifests(version: str) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {{name: compute, namespace: shop}}
spec:
  hard: {{pods: "4"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: process
          command: ["{sys.executable}", "-c", "{SLEEPER}", "{version}"]
"""


def pods(cluster: Cluster) -> list[dict[str, Any]]:
    listed = json.loads(cluster.cli("get", "pods", "-n", "shop", "-o", "json").stdout)
    return listed["items"]


def version_of(pod: dict[str, Any]) -> str:
    return pod["spec"]["containers"][0]["command"][-1]


def rolled_out(cluster: Cluster, version: str) -> bool:
    current = pods(cluster)
    ready = [
        p
        for p in current
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]
    return len(current) == 3 and len(ready) == 3 and all(version_of(p) == version for p in current)


def pod_events(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.cli("events", "--kind", "pod", "-n", "shop", "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_bounds(events: list[dict[str, Any]], *, after: int) -> tuple[int, int]:
    """Replay pod existence and readiness; the most pods and fewest ready seen after ``after``."""
    live: dict[str, bool] = {}
    most, fewest = 0, 3
    for event in events:
        kind = event["type"]
        if kind == "PodCreated":
            live[event["name"]] = False
        elif kind == "PodDeleted":
            live.pop(event["name"], None)
        elif kind in ("PodReady", "PodNotReady"):
            live[event["name"]] = kind == "PodReady"
        else:
            continue
        if event["seq"] > after:
            most = max(most, len(live))
            fewest = min(fewest, sum(live.values()))
    return most, fewest


def container_pid(cluster: Cluster, uid: str) -> int:
    states = sorted(cluster.data_dir.glob(f"agent/pods/{uid}/main/*/container.json"))
    return int(json.loads(states[-1].read_text())["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


def test_deployment_rollout_undo_self_healing_quota_and_namespace_cascade(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.up(agent=True)
    cluster.cli("apply", "-f", "-", stdin=manifests("v1"))
    wait_for(lambda: rolled_out(cluster, "v1"), timeout=60)
    status = cluster.cli("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "60")
    assert 'deployment "web" successfully rolled out' in status.stdout
    table = cluster.cli("get", "deployments", "-n", "shop").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"]
    assert table[1].split()[:4] == ["web", "3/3", "3", "3"]

    # A changed template rolls out: never more than 3 + 1 pods, never fewer than 3 ready.
    before = max(e["seq"] for e in pod_events(cluster))
    cluster.cli("apply", "-f", "-", stdin=manifests("v2"))
    cluster.cli("rollout", "status", "deployment/web", "-n", "shop", "--timeout", "90")
    wait_for(lambda: rolled_out(cluster, "v2"), timeout=60)
    most, fewest = check_bounds(pod_events(cluster), after=before)
    assert most == 4 and fewest == 3
    history = cluster.cli("rollout", "history", "deployment/web", "-n", "shop").stdout
    assert [line.split()[0] for line in history.splitlines()[2:]] == ["1", "2"]
    described = cluster.cli("describe", "deployment", "web", "-n", "shop").stdout
    assert (
        "Replicas:     3 desired | 3 updated | 3 total | 3 available | 0 unavailable" in described
    )
    assert "NewReplicaSet:  web-" in described and "(3/3 replicas created)" in described
    # Kubernetes-style events: the controller's scaling, not its every status update.
    assert "ScalingReplicaSet" in described and "deployment-controller" in described
    assert "DeploymentStatusUpdated" not in described

    # Undo returns to the first template (its replica set, as revision 3).
    before = max(e["seq"] for e in pod_events(cluster))
    undo = cluster.cli("rollout", "undo", "deployment/web", "-n", "shop").stdout
    assert "deployment.apps/web rolled back" in undo
    wait_for(lambda: rolled_out(cluster, "v1"), timeout=90)
    most, fewest = check_bounds(pod_events(cluster), after=before)
    assert most <= 4 and fewest == 3
    replica_sets = json.loads(cluster.cli("get", "rs", "-n", "shop", "-o", "json").stdout)["items"]
    assert len(replica_sets) == 2

    # Killing a pod's process: the agent restarts the container in the same pod.
    victim = pods(cluster)[0]
    uid, name = victim["metadata"]["uid"], victim["metadata"]["name"]
    first_pid = container_pid(cluster, uid)
    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> bool:
        pod = next((p for p in pods(cluster) if p["metadata"]["name"] == name), None)
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0].get("restartCount", 0) >= 1

    wait_for(restarted, timeout=60)
    wait_for(
        lambda: alive(container_pid(cluster, uid)) and container_pid(cluster, uid) != first_pid
    )

    # Deleting a pod: the replica set makes a new one.
    names_before = {p["metadata"]["name"] for p in pods(cluster)}
    cluster.cli("delete", "pod", name, "-n", "shop")
    wait_for(
        lambda: (
            rolled_out(cluster, "v1") and name not in {p["metadata"]["name"] for p in pods(cluster)}
        )
    )
    assert len({p["metadata"]["name"] for p in pods(cluster)} - names_before) == 1

    # The quota (4 pods: 3 and a surge) refuses a pod beyond it, naming the quota; nothing is appended.
    for index in range(2):
        extra = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"extra-{index}", "namespace": "shop"},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "process",
                        "command": [sys.executable, "-c", SLEEPER, "x"],
                    }
                ]
            },
        }
        result = cluster.cli("apply", "-f", "-", stdin=json.dumps(extra), check=index == 0)
    assert result.returncode != 0
    assert "exceeded quota: compute" in result.stderr and "pods=1" in result.stderr
    assert cluster.cli("history", "pod/extra-1", "-n", "shop", check=False).returncode != 0

    # Deleting the namespace takes the deployment, its replica sets and pods along.
    pids = [container_pid(cluster, p["metadata"]["uid"]) for p in pods(cluster)]
    cluster.cli("delete", "namespace", "shop")

    def emptied() -> bool:
        for kind in ("deployments", "rs", "pods"):
            listed = cluster.cli("get", kind, "-n", "shop", "-o", "json").stdout
            if json.loads(listed)["items"]:
                return False
        return True

    wait_for(emptied, timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=60)
