"""The real ``kubectl top pods`` and ``kubectl top nodes`` against a real ``fleetlog up`` with a
local node agent.

Why this exists: ``kubectl top`` finds the metrics API through discovery and reads
``metrics.k8s.io/v1beta1`` PodMetrics and NodeMetrics, then the nodes' allocatable for the
percentages; fleetlog serves them from the usage samples its node agent publishes. kubectl is
the client that decides whether the group, the objects and the refusals look like
metrics-server's.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl, lines

pytestmark = pytest.mark.e2e

# A little cpu: busy for 20 ms of every 100 ms (about 200m), without taking a shared core.
BURN = (
    "import time\n"
    "while True:\n"
    "    t = time.time()\n"
    "    while time.time() - t < 0.02:\n"
    "        pass\n"
    "    time.sleep(0.08)\n"
)
PODS = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: quiet}}
---
apiVersion: v1
kind: Pod
metadata: {{name: burner, labels: {{app: burn}}}}
spec:
  containers:
  - name: main
    image: python
    command: ["python3", "-c", {json.dumps(BURN)}]
---
apiVersion: v1
kind: Pod
metadata: {{name: idle, namespace: quiet}}
spec:
  nodeSelector: {{fleetlog.dev/nowhere: "true"}}
  containers:
  - {{name: main, image: busybox, command: ["sleep", "1000"]}}
"""
POD_ROW = re.compile(r"^burner (\d+)m (\d+)Mi$")
NODE_ROW = re.compile(r"^\S+ (\d+)m (\d+)% (\d+)Mi (\d+)%$")


@pytest.fixture
def top(cluster: Cluster) -> Kubectl:
    cluster.up(agent=True)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    run("apply", "-f", "-", stdin=PODS)
    return run


def test_kubectl_top_pods_and_nodes_show_the_agent_s_samples(top: Kubectl) -> None:
    def burning() -> bool:
        # The first sample of a container has no cpu yet (no earlier reading to difference).
        time.sleep(1)  # a sample comes every ten seconds: no need to ask more often
        shown = top("top", "pods", check=False)
        rows = [POD_ROW.match(line) for line in lines(shown)[1:]]
        return any(m is not None and int(m[1]) > 0 and int(m[2]) > 0 for m in rows)

    wait_for(burning, timeout=120)
    pods = lines(top("top", "pods"))
    assert pods[0] == "NAME CPU(cores) MEMORY(bytes)"
    assert [row.split()[0] for row in pods[1:]] == ["burner"]
    selected = lines(top("top", "pods", "-l", "app=burn", "--containers"))
    assert selected[0] == "POD NAME CPU(cores) MEMORY(bytes)"
    assert selected[1].startswith("burner main ")
    assert top("top", "pods", "-l", "app=other", check=False).stderr.strip() == (
        "No resources found in default namespace."
    )

    nodes = lines(top("top", "nodes"))
    assert nodes[0] == "NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)"
    row = NODE_ROW.match(nodes[1])
    assert row is not None, nodes
    assert int(row[1]) > 0 and int(row[3]) > 0

    metrics = top("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner")
    assert '"window":"10s"' in metrics.stdout.replace(" ", "")
    watched = top("get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods?watch=true", check=False)
    assert watched.returncode != 0
    assert "(MethodNotAllowed)" in watched.stderr


def test_kubectl_top_of_a_pod_without_samples_says_metrics_are_not_available(
    top: Kubectl,
) -> None:
    wait_for(lambda: "metrics.k8s.io" in top("api-versions").stdout)
    listed = top("top", "pods", "-n", "quiet", check=False)
    assert listed.returncode != 0
    assert listed.stderr.strip() == "error: metrics not available yet"
    named = top("top", "pod", "idle", "-n", "quiet", check=False)
    assert named.stderr.strip() == (
        'Error from server (NotFound): podmetrics.metrics.k8s.io "quiet/idle" not found'
    )
