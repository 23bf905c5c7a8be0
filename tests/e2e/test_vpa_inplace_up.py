"""End to end: a VerticalPodAutoscaler in ``InPlaceOrRecreate`` mode on ``fleetlog up`` with its
local node agent raises a memory-hungry process's recommendation and resizes the running
container in place: its cgroup memory limit (read from the kernel's file) changes while the
process keeps its PID, the pod keeps its uid and its restart count stays 0 (issue 19).

Why this exists: the integration tests drive simulated pods whose memory a test sets; here the
memory is a real process's, measured by the agent from its cgroup, so the whole path runs:
process → agent sample → the recommender's histograms → ``status.recommendation`` → the
updater's ``resize`` command → the agent's admission → the cgroup rewritten in place.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from core.meta.quantity import memory_bytes
from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl_resize import memory_limit

pytestmark = pytest.mark.e2e

MI = 1024 * 1024

# 150 MiB allocated and every page touched (resident), then idle.
HOG = (
    "import time\n"
    "data = bytearray(150 * 1024 * 1024)\n"
    "for i in range(0, len(data), 4096):\n"
    "    data[i] = 1\n"
    "time.sleep(3600)\n"
)
MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hog}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: hog}}}}
  template:
    metadata: {{labels: {{app: hog}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: process
          command: {command}
          resources:
            requests: {{cpu: 100m, memory: 64Mi}}
            limits: {{cpu: 200m, memory: 256Mi}}
---
apiVersion: autoscaling.k8s.io/v1
kind: VerticalPodAutoscaler
metadata: {{name: hog}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: hog}}
  updatePolicy: {{updateMode: InPlaceOrRecreate, minReplicas: 1}}
"""


def get(cluster: Cluster, what: str) -> dict[str, Any]:
    return json.loads(cluster.cli("get", what, "-o", "json").stdout)


def the_pods(cluster: Cluster) -> list[dict[str, Any]]:
    listed = json.loads(cluster.cli("get", "pods", "-o", "json").stdout)
    items = listed.get("items", listed) if isinstance(listed, dict) else listed
    return [p for p in items if p["metadata"]["name"].startswith("hog-")]


def test_a_memory_hungry_process_is_resized_in_place_by_its_vpa(cluster: Cluster) -> None:
    cluster.up(agent=True)
    command = json.dumps([sys.executable, "-c", HOG])
    cluster.cli("apply", "-f", "-", stdin=MANIFESTS.format(command=command))

    def running() -> bool:
        pods = the_pods(cluster)
        return len(pods) == 1 and (pods[0].get("status") or {}).get("phase") == "Running"

    wait_for(running, timeout=120)
    [pod] = the_pods(cluster)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    wait_for(lambda: any(cluster.data_dir.glob("agent/pods/*/main/0/container.json")), 60)
    (state,) = cluster.data_dir.glob("agent/pods/*/main/0/container.json")
    pid = json.loads(state.read_text())["pid"]
    before = memory_limit(state)
    assert before in (256 * MI, None)

    # The agent's samples (every 10 s) show ~150 MiB: the recommendation rises above the
    # 64Mi request (at least the VPA's 250 MiB pod minimum), outside the recommended range.
    def recommended() -> int:
        status = get(cluster, "vpa/hog").get("status") or {}
        recs = (status.get("recommendation") or {}).get("containerRecommendations") or []
        return memory_bytes(recs[0]["target"]["memory"]) if recs else 0

    wait_for(lambda: recommended() >= 150 * MI, timeout=120)

    def resized() -> dict[str, Any] | None:
        [now] = the_pods(cluster)
        statuses = (now.get("status") or {}).get("containerStatuses") or [{}]
        actual = statuses[0].get("resources") or {}
        memory = (actual.get("requests") or {}).get("memory")
        return now if memory and memory_bytes(memory) >= 150 * MI else None

    wait_for(lambda: resized() is not None, timeout=120)
    after = resized()
    assert after is not None
    assert after["metadata"]["name"] == name and after["metadata"]["uid"] == uid  # not evicted
    [status] = after["status"]["containerStatuses"]
    assert status["restartCount"] == 0
    os.kill(pid, 0)  # the same process, still running
    assert json.loads(state.read_text())["pid"] == pid
    # the limit kept in its 4:1 ratio to the request, in the kernel's file
    spec = after["spec"]["containers"][0]["resources"]
    limit = memory_bytes(spec["limits"]["memory"])
    assert limit == 4 * memory_bytes(spec["requests"]["memory"])
    if before is not None:
        wait_for(lambda: memory_limit(state) != before, timeout=30)
        held = memory_limit(state)
        assert held is not None and abs(held - limit) < 4096 * 2  # the kernel rounds to pages
    conditions = [c["type"] for c in after["status"].get("conditions") or ()]
    assert "PodResizeInProgress" not in conditions and "PodResizePending" not in conditions

    # The VPA's log says which path the updater took, for which pod, and why.
    history = cluster.cli("history", "vpa/hog", "-o", "json").stdout
    events = [json.loads(line) for line in history.splitlines() if line.strip()]
    passes = [
        action
        for e in events
        for action in ((e.get("payload") or {}).get("why") or {}).get("updater") or ()
    ]
    assert passes and passes[0]["pod"] == name and passes[0]["path"] == "resized in place"
    assert all(a["path"] == "resized in place" for a in passes)
    assert Path(state).exists()
