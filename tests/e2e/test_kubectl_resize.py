"""The real ``kubectl patch pod … --subresource resize`` against a real ``fleetlog up`` with its
local node agent: the running process's memory limit changes in its cgroup (read from the
kernel's file) while it keeps its PID, the pod's status shows the new resources, and a resize
that would change the QoS class is refused in Kubernetes' words.

Why this exists: the VPA's in-place updates and operators' manual resizes both go through
kubectl's (client-go's) patch on the subresource; this is the whole path, door to cgroup, with
``up``'s NATS permissions and pod network in place.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl

pytestmark = pytest.mark.e2e

POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: grow}}
spec:
  containers:
  - name: main
    image: process
    command: ["{sys.executable}", "-c", "import time; time.sleep(600)"]
    resources:
      requests: {{cpu: 100m, memory: 64Mi}}
      limits: {{cpu: 200m, memory: 128Mi}}
"""


def memory_limit(state: Path) -> int | None:
    """The container's memory limit as its cgroup holds it (None: no cgroup driver here)."""
    cgroup = json.loads(state.read_text())["cgroup"]
    for path in cgroup["paths"]:
        for name in ("memory.limit_in_bytes", "memory.max"):
            file = Path(path) / name
            if file.exists():
                return int(file.read_text().split()[0])
    return None


def test_kubectl_resizes_a_running_process_in_place(cluster: Cluster) -> None:
    cluster.up(agent=True)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    kubectl = Kubectl(kubeconfig)
    wait_for(lambda: kubectl("get", "namespaces", check=False).returncode == 0)
    kubectl("apply", "-f", "-", stdin=POD)
    wait_for(lambda: "Running" in kubectl("get", "pod", "grow", check=False).stdout, 60)
    (state,) = cluster.data_dir.glob("agent/pods/*/main/0/container.json")
    pid = json.loads(state.read_text())["pid"]
    before = memory_limit(state)
    assert before in (128 * 2**20, None)

    patch = {"spec": {"containers": [{"name": "main", "resources": {
        "limits": {"memory": "256Mi"}}}]}}  # fmt: skip
    done = kubectl("patch", "pod", "grow", "--subresource", "resize", "-p", json.dumps(patch))
    assert "pod/grow patched" in done.stdout

    def resized() -> bool:
        shown = kubectl(
            "get", "pod", "grow", "-o",
            "jsonpath={.status.containerStatuses[0].resources.limits.memory}",
        ).stdout  # fmt: skip
        return shown == "256Mi"

    wait_for(resized, 60)
    if before is not None:
        assert memory_limit(state) == 256 * 2**20
    os.kill(pid, 0)  # the same process, still running
    assert (
        kubectl(
            "get", "pod", "grow", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"
        ).stdout
        == "0"
    )
    conditions = kubectl(
        "get", "pod", "grow", "-o", "jsonpath={.status.conditions[*].type}"
    ).stdout.split()
    assert "PodResizeInProgress" not in conditions and "PodResizePending" not in conditions

    guaranteed = {"spec": {"containers": [{"name": "main", "resources": {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"}}}]}}  # fmt: skip
    refused = kubectl(
        "patch", "pod", "grow", "--subresource", "resize", "-p", json.dumps(guaranteed),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "Pod QOS Class may not change as a result of resizing" in refused.stderr
