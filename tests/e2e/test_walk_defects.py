"""End to end: what a newcomer saw go wrong walking through the README, against ``fleetlog up``
(with its node agent) and ``fleetlog sim`` as real processes: ``get priorityclass`` lists
kubectl's columns, a crash-looping container reads ``CrashLoopBackOff`` with its back-off in
``describe``, ``logs`` of a pod on a simulated node says why there are none, a node whose
heartbeats stopped reads ``NotReady``, and an unknown kind is refused by the gateway, audited."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

CRASHING = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
    - name: main
      image: process
      command: ["{sys.executable}", "-c", "raise SystemExit(3)"]
"""
ON_SIMULATED = """\
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  nodeSelector: {kubernetes.io/hostname: walk-0}
  containers: [{name: main, image: process, command: [sleep, "600"]}]
---
apiVersion: example.com/v1
kind: Gizmo
metadata: {name: g}
"""


def row_of(cluster: Cluster, kind: str, name: str) -> list[str]:
    table = cluster.cli("get", kind, check=False).stdout.splitlines()
    return next((line.split() for line in table if line.split()[:1] == [name]), [])


def test_the_walk_through_defects_are_gone(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up(agent=True, options=["--node-grace", "3"])

    classes = cluster.cli("get", "priorityclass")
    assert [line.split() for line in classes.stdout.splitlines()][:2] == [
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        ["system-cluster-critical", "2000000000", "false", "<unknown>", "PreemptLowerPriority"],
    ]

    # A container that keeps failing: kubectl's STATUS and RESTARTS, and the kubelet's BackOff.
    cluster.cli("apply", "-f", "-", stdin=CRASHING)
    wait_for(lambda: row_of(cluster, "pods", "crash")[2:3] == ["CrashLoopBackOff"], timeout=60)
    restarts = " ".join(row_of(cluster, "pods", "crash")[3:7])
    assert re.fullmatch(r"\d+ \(\d+s ago\) \d+s", restarts), restarts
    described = cluster.cli("describe", "pod", "crash").stdout
    events = described.split("Events:\n")[1].splitlines()
    assert events[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    reasons = [line.split()[:2] for line in events[2:]]
    assert reasons[:3] == [["Normal", "Scheduled"], ["Normal", "Created"], ["Normal", "Started"]]
    assert ["Warning", "BackOff"] in reasons
    assert "Back-off restarting failed container main in pod crash_default(" in described

    # A simulated node runs no containers: logs say so. Its heartbeats stop: NotReady.
    env = cluster.env
    sim_log = (tmp_path / "sim.log").open("ab")
    sim = subprocess.Popen(
        [sys.executable, "-m", "ops", "sim", "--nodes", "1", "--prefix", "walk",
         "--heartbeat", "1", "--start-delay", "0.2"],
        env=env, stdout=sim_log, stderr=sim_log,
    )  # fmt: skip
    try:
        wait_for(lambda: row_of(cluster, "nodes", "walk-0")[1:2] == ["Ready"])
        manifest = tmp_path / "walk.yaml"
        manifest.write_text(ON_SIMULATED)
        applied = cluster.cli("apply", "-f", str(manifest), check=False)
        assert applied.returncode == 1 and applied.stdout == "pod/hello created\n"
        assert applied.stderr.splitlines()[-1] == "error: 1 of 2 objects were not applied"
        wait_for(lambda: row_of(cluster, "pods", "hello")[2:3] == ["Running"])
        logs = cluster.cli("logs", "hello", check=False)
        assert (logs.returncode, logs.stdout) == (1, "")
        assert "a simulated node (fleetlog sim): it runs no containers" in logs.stderr
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    wait_for(lambda: row_of(cluster, "nodes", "walk-0")[1:2] == ["NotReady"], timeout=60)
    node_events = cluster.cli("describe", "node", "walk-0").stdout.split("Events:\n")[1]
    assert "Node walk-0 status is now: NodeNotReady" in node_events

    refused = [
        json.loads(line)
        for line in cluster.cli("audit", "--outcome", "rejected", "-o", "json").stdout.splitlines()
    ]
    # The actor is the verified signer (the context's admin), not a stated name.
    assert [(r["actor"], r["verb"], r["kind"], r["code"]) for r in refused] == [
        ("fleetlog-admin", "apply", "gizmo", "unknown_kind")
    ]
    cluster.cli("delete", "pod", "crash")
    assert cluster.down() == 0
