"""End to end: an HPA scales a Deployment of real process pods on ``fleetlog up`` with a node
agent, from the CPU the agent measures, and every ``ScaledTo`` explains itself (issue 19).

Why this exists: the controller's integration test drives simulated pods whose load it sets
on a subject; here the load is a real process burning CPU while a flag file exists, measured
from the container's cgroup (or its process group) by an agent sampling every second
(``agent --usage-period 1``), so the whole path runs: process → agent sample → metrics read
model → evaluation → ``scale`` → ``ScaledTo`` → replica set → new pods, and back down only
once the configured scale-down window has passed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

WINDOW_S = 8
"""The HPA's scale-down stabilisation window (Kubernetes' default is 300 s)."""

# While the flag file exists, busy for 25 ms of every 100 ms (about 250m): ten times the 20m
# request even when the shared host gives it a fraction of that, and no more than a quarter
# of a core per pod on a 2-core machine.
BURN = (
    "import os, time\n"
    "while True:\n"
    "    if os.path.exists({flag!r}):\n"
    "        t = time.monotonic()\n"
    "        while time.monotonic() - t < 0.025:\n"
    "            pass\n"
    "        time.sleep(0.075)\n"
    "    else:\n"
    "        time.sleep(0.1)\n"
)
MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: process
          command: {command}
          resources: {{requests: {{cpu: 20m, memory: 32Mi}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: {window}}}
"""


def scaled(cluster: Cluster) -> list[dict[str, Any]]:
    """The Deployment's ``ScaledTo`` events, oldest first."""
    out = cluster.cli("history", "deployment/web", "-o", "json").stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in events if e["type"] == "ScaledTo"]


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def test_a_burning_process_pod_scales_up_within_seconds_and_down_only_after_the_window(
    cluster: Cluster, tmp_path: Path
) -> None:
    flag = tmp_path / "burn"
    cluster.up()
    log = (tmp_path / "agent.log").open("ab")
    agent = subprocess.Popen(
        [sys.executable, "-m", "ops", "agent", "--name", "hpa-node",
         "--root", str(cluster.data_dir / "agent"), "--heartbeat", "1", "--usage-period", "1",
         "--pod-bridge", cluster.pod_bridge, "--pod-network-prefix", cluster.pod_prefix],
        env=cluster.env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        command = json.dumps([sys.executable, "-c", BURN.format(flag=str(flag))])
        cluster.cli("apply", "-f", "-", stdin=MANIFESTS.format(command=command, window=WINDOW_S))

        def one_ready() -> bool:
            table = cluster.cli("get", "deployments").stdout.splitlines()
            return len(table) > 1 and table[1].split()[1] == "1/1"

        wait_for(one_ready, timeout=120)

        # Idle: the HPA reads the samples (a few % of the request) and keeps one replica.
        def reading() -> bool:
            rows = cluster.cli("get", "hpa").stdout.splitlines()
            return len(rows) > 1 and re.search(r"cpu: \d+%/50%", rows[1]) is not None

        wait_for(reading, timeout=60)
        assert scaled(cluster) == []

        flag.touch()
        wait_for(lambda: any(e["payload"]["replicas"] > 1 for e in scaled(cluster)), 60)
        flag.unlink()
        up = scaled(cluster)[0]
        why = up["payload"]["why"]
        assert up["actor"] == "system:horizontal-pod-autoscaler"
        assert up["payload"]["previous"] == 1 and why["currentReplicas"] == 1
        assert why["hpa"] == "web" and why["desiredReplicas"] == up["payload"]["replicas"]
        [metric] = why["metrics"]
        # A rise the agent measured: above the 50 % target, one ready pod, its own figure (in
        # millicores: more than half of the 20m request).
        assert metric["utilization"] > 50 and metric["readyPods"] == 1
        [(pod, figure)] = metric["perPod"].items()
        assert pod.startswith("web-") and figure > 10
        explained = cluster.cli("why", "deployment/web").stdout
        assert f"horizontal pod autoscaler web: 1 -> {why['desiredReplicas']} replicas" in explained
        assert f"utilization {metric['utilization']}% of requests" in explained
        assert f"{pod}={figure}" in explained

        # Load off: the recommendation made with the scale-up holds for the window, then the
        # samples at 0 % bring it back to minReplicas.
        wait_for(lambda: scaled(cluster)[-1]["payload"]["replicas"] == 1, WINDOW_S + 90)
        events = scaled(cluster)
        ups = [e for e in events if e["payload"]["replicas"] > e["payload"]["previous"]]
        downs = [e for e in events if e["payload"]["replicas"] < e["payload"]["previous"]]
        assert downs and downs[0]["time"] > ups[-1]["time"]
        # The log's times here are whole seconds: allow one.
        assert at(downs[0]) - at(ups[-1]) >= WINDOW_S - 1
        last = downs[-1]["payload"]
        assert last["why"]["desiredReplicas"] == 1 and last["why"]["minReplicas"] == 1
        assert last["why"]["recommendation"] <= 1
        explained = cluster.cli("why", "deployment/web").stdout
        assert f"horizontal pod autoscaler web: {last['previous']} -> 1 replicas" in explained
        [quiet] = last["why"]["metrics"]
        assert f"utilization {quiet['utilization']}% of requests" in explained
        assert quiet["utilization"] < 50
    finally:
        flag.unlink(missing_ok=True)
        agent.terminate()
        agent.wait(timeout=30)
