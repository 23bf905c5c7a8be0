"""End to end: ``fleetlog drain`` against ``fleetlog up`` and ``fleetlog sim`` as real processes:
kubectl's refusal of unmanaged pods changes nothing; with --force the node is cordoned and
emptied. The simulator also shows bound pods Running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

# The owner is a kind fleetlog does not run (the garbage collector leaves such references
# alone), so the pod counts as managed for drain without a controller replacing it.
PODS = """\
apiVersion: v1
kind: Pod
metadata:
  name: owned
  ownerReferences:
    - {apiVersion: apps/v1, kind: StatefulSet, name: web, uid: 6b1c7c1e-0000-4000-8000-000000000001, controller: true}
spec:
  containers: [{name: main, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: bare}
spec:
  containers: [{name: main, image: busybox}]
"""


def test_drain_refuses_pods_without_a_controller_unless_forced_then_empties_the_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.up()
    env = cluster.env
    sim_log = (tmp_path / "sim.log").open("ab")
    sim = subprocess.Popen(
        [sys.executable, "-m", "ops", "sim", "--nodes", "1", "--prefix", "dn",
         "--heartbeat", "1", "--start-delay", "0.2"],
        env=env, stdout=sim_log, stderr=sim_log,
    )  # fmt: skip
    try:
        wait_for(lambda: "dn-0" in cluster.cli("get", "nodes", check=False).stdout)
        manifests = tmp_path / "pods.yaml"
        manifests.write_text(PODS)
        cluster.cli("apply", "-f", str(manifests))

        def both_running() -> bool:
            rows = cluster.cli("get", "pods", "-o", "wide").stdout.splitlines()[1:]
            return len(rows) == 2 and all("Running" in r and "dn-0" in r for r in rows)

        wait_for(both_running)

        refused = cluster.cli("drain", "dn-0", check=False)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
        assert refused.stderr.strip() == (
            'error: cannot drain node "dn-0": cannot delete Pods that declare no controller '
            "(use --force to override): default/bare"
        )
        assert "SchedulingDisabled" not in cluster.cli("get", "nodes").stdout  # not even cordoned
        assert len(cluster.cli("get", "pods").stdout.splitlines()) == 3

        drained = cluster.cli("drain", "dn-0", "--force", "--grace-period", "5", "--timeout", "20s")
        out = drained.stdout.splitlines()
        assert out[0] == "node/dn-0 cordoned" and out[-1] == "node/dn-0 drained"
        assert {"evicting pod default/bare", "evicting pod default/owned"} <= set(out)
        assert {"pod/bare evicted", "pod/owned evicted"} <= set(out)
        assert "Warning: deleting Pods that declare no controller: default/bare" in drained.stderr
        assert "SchedulingDisabled" in cluster.cli("get", "nodes").stdout
        assert cluster.cli("get", "pods").stderr.startswith("No resources found")
        history = cluster.cli("history", "pod/owned").stdout
        assert "drained from node dn-0 by user:e2e (grace period 5s)" in history
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    assert cluster.down() == 0
