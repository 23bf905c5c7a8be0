"""kubectl's workload verbs against a real ``fleetlog up`` with simulated nodes: ``scale`` (and its
``--current-replicas`` precondition), ``rollout status|history|undo|restart``, ``set image``,
``edit``, ``label``/``annotate`` (overwrite and removal), ``patch`` of all three types, ``wait``
for a condition and for a delete, ``delete`` with each cascade, the ``status`` subresource, and
pods' ``binding`` and ``eviction`` (``kubectl drain``).

Why this exists: these verbs read and write what fleetlog's controllers record (a deployment's
status and conditions, its replica sets' revision annotations, the Scale of a workload), so
they pin that kubectl, unchanged, sees what it expects of a Kubernetes cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl, lines

pytestmark = pytest.mark.e2e

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
  annotations: {kubernetes.io/change-cause: first}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1, command: ["sleep", "1000"]}]
"""
SOLO = """\
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: c, image: busybox, command: ["sleep", "1000"]}]
"""


def connect(cluster: Cluster, options: tuple[str, ...] = ()) -> Kubectl:
    cluster.up(options=options)
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    return run


def start_nodes(cluster: Cluster, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = cluster.env
    log = (tmp_path / "sim.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ops", "sim", "--nodes", "2", "--prefix", "kw",
         "--heartbeat", "1", "--start-delay", "0.2"],
        env=env, stdout=log, stderr=log,
    )  # fmt: skip


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path) -> Iterator[Kubectl]:
    """kubectl against ``fleetlog up`` with two simulated nodes (stopped by PID afterwards)."""
    run = connect(cluster)
    sim = start_nodes(cluster, tmp_path)
    try:
        wait_for(lambda: len(run("get", "nodes", "-o", "name").stdout.split()) == 2)
        yield run
    finally:
        sim.terminate()
        sim.wait(timeout=30)


def rolled_out(kubectl: Kubectl) -> list[str]:
    """What ``rollout status`` printed once the rollout was done: asked again while it waits
    in vain (a loaded host may take longer than one kubectl call's minute)."""
    printed: list[list[str]] = []

    def done() -> bool:
        status = kubectl("rollout", "status", "deployment/web", "--timeout=20s", check=False)
        printed.append(lines(status))
        return status.returncode == 0

    wait_for(done, timeout=180)
    return printed[-1]


def replica_sets(kubectl: Kubectl) -> dict[str, dict[str, str]]:
    """Each replica set of web: its annotations."""
    listed = json.loads(kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout)
    return {rs["metadata"]["name"]: rs["metadata"].get("annotations") or {}
            for rs in listed["items"]}  # fmt: skip


def test_scale_and_the_rollout_verbs(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=WEB)
    assert rolled_out(kubectl)[-1] == 'deployment "web" successfully rolled out'
    status = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["status"]
    assert status["observedGeneration"] == 1
    assert (status["updatedReplicas"], status["availableReplicas"]) == (2, 2)
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }

    assert lines(kubectl("scale", "deployment/web", "--replicas=3")) == [
        "deployment.apps/web scaled"
    ]
    stale = kubectl("scale", "deployment/web", "--replicas=4", "--current-replicas=2",
                    check=False)  # fmt: skip
    assert stale.returncode == 1
    assert stale.stderr.strip() == "error: Expected replicas to be 2, was 3"
    kubectl("scale", "deployment/web", "--replicas=4", "--current-replicas=3")
    scale = json.loads(
        kubectl("get", "deployment", "web", "--subresource=scale", "-o", "json").stdout
    )
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 4)
    assert scale["status"]["selector"] == "app=web"
    available = ("get", "deployment", "web", "-o", "jsonpath={.status.availableReplicas}")
    wait_for(lambda: kubectl(*available).stdout == "4", timeout=120)

    # Annotated after the new replica set was made: the controller copies it there.
    kubectl("set", "image", "deployment/web", "web=nginx:2")
    kubectl("annotate", "deployment", "web", "kubernetes.io/change-cause=image 2", "--overwrite")
    assert rolled_out(kubectl)[-1] == 'deployment "web" successfully rolled out'

    def history() -> list[str]:
        return lines(kubectl("rollout", "history", "deployment/web"))[1:4]

    wait_for(lambda: history() == ["REVISION CHANGE-CAUSE", "1 first", "2 image 2"], timeout=120)
    assert "Image: nginx:1" in " ".join(
        kubectl("rollout", "history", "deployment/web", "--revision=1").stdout.split()
    )

    kubectl("rollout", "undo", "deployment/web", "--to-revision=1")
    assert rolled_out(kubectl)[-1] == 'deployment "web" successfully rolled out'
    image = kubectl("get", "deployment", "web", "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}").stdout  # fmt: skip
    assert image == "nginx:1"
    # The undo took the first replica set back (as revision 3) rather than making a new one.
    revisions = {name: a["deployment.kubernetes.io/revision"]
                 for name, a in replica_sets(kubectl).items()}  # fmt: skip
    assert sorted(revisions.values()) == ["2", "3"], revisions

    kubectl("rollout", "restart", "deployment/web")
    assert rolled_out(kubectl)[-1] == 'deployment "web" successfully rolled out'
    restarted = kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.template.metadata"
                        ".annotations.kubectl\\.kubernetes\\.io/restartedAt}").stdout  # fmt: skip
    assert restarted
    assert sorted(a["deployment.kubernetes.io/revision"]
                  for a in replica_sets(kubectl).values()) == ["2", "3", "4"]  # fmt: skip


def test_edit_label_annotate_patch_status_wait_and_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", "-", stdin=WEB)
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 2/replicas: 1/' \"$1\"\n")
    editor.chmod(0o755)
    edited = subprocess.run(
        [kubectl.binary, "edit", "deployment/web"], capture_output=True, text=True, timeout=60,
        env={**kubectl.env, "EDITOR": str(editor)},
    )  # fmt: skip
    assert edited.stdout.strip() == "deployment.apps/web edited", edited.stderr
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "1"

    kubectl("label", "deployment", "web", "team=a")
    refused = kubectl("label", "deployment", "web", "team=b", check=False)
    assert refused.returncode == 1 and "'team' already has a value (a)" in refused.stderr
    kubectl("label", "deployment", "web", "team=b", "--overwrite")
    kubectl("annotate", "deployment", "web", "note=x")
    kubectl("annotate", "deployment", "web", "note=y", "--overwrite")
    kubectl("annotate", "deployment", "web", "other=z")
    kubectl("annotate", "deployment", "web", "other-")
    meta = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["metadata"]
    assert meta["labels"]["team"] == "b" and meta["annotations"]["note"] == "y"
    assert "other" not in meta["annotations"]
    kubectl("label", "deployment", "web", "team-")
    assert "team" not in json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)[
        "metadata"]["labels"]  # fmt: skip

    kubectl(
        "patch",
        "deployment",
        "web",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:3"}]}}}}',
    )
    kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    kubectl("patch", "deployment", "web", "--type=json", "-p",
            '[{"op":"add","path":"/metadata/labels/tier","value":"front"}]')  # fmt: skip
    shown = kubectl("get", "deployment", "web", "-o", "jsonpath={.spec.replicas} "
                    "{.metadata.labels.tier} {.spec.template.spec.containers[0].image} "
                    "{.spec.template.spec.containers[0].command[0]}").stdout  # fmt: skip
    assert shown == "2 front nginx:3 sleep"

    # The status subresource: the deployment's is written (its controller records it again),
    # a pod's is recorded by fleetlog alone.
    kubectl("patch", "deployment", "web", "--subresource=status", "--type=merge",
            "-p", '{"status":{"observedGeneration":1}}')  # fmt: skip
    kubectl("apply", "-f", "-", stdin=SOLO)
    kubectl("wait", "--for=condition=Ready", "pod/solo", "--timeout=60s")
    phase = kubectl("get", "pod", "solo", "--subresource=status", "-o",
                    "jsonpath={.status.phase}").stdout  # fmt: skip
    assert phase == "Running"
    refused = kubectl("patch", "pod", "solo", "--subresource=status", "--type=merge",
                      "-p", '{"status":{"phase":"Failed"}}', check=False)  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error from server (MethodNotAllowed): pods \"solo\": the "
                                     "status of a Pod is recorded by")  # fmt: skip

    # kubectl wait lists the pod, then watches it: the delete comes once its watch is open
    # (its -v=6 log names the watch request), so the wait sees the pod go.
    trace = tmp_path / "wait.log"
    with trace.open("w") as log:
        waiting = subprocess.Popen(
            [kubectl.binary, "wait", "--for=delete", "pod/solo", "--timeout=60s", "-v=6"],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env={**kubectl.env},
        )  # fmt: skip
        wait_for(lambda: "watch=true" in trace.read_text())
        kubectl("delete", "pod", "solo", "--wait=false")
        out, _ = waiting.communicate(timeout=90)
    assert waiting.returncode == 0 and out.strip() == "pod/solo condition met", trace.read_text()

    wait_for(lambda: len(kubectl("get", "pods", "-l", "app=web", "-o", "name").stdout.split())
             >= 2, timeout=60)  # fmt: skip
    kubectl("delete", "deployment", "web", "--cascade=orphan")
    assert kubectl("get", "rs", "-l", "app=web", "-o", "name").stdout.strip()
    kubectl("apply", "-f", "-", stdin=WEB)  # adopts the orphans again
    kubectl("delete", "deployment", "web", "--cascade=foreground")
    wait_for(lambda: kubectl("get", "rs,pods", "-l", "app=web", "-o", "name").stdout == "",
             timeout=60)  # fmt: skip
    kubectl("apply", "-f", "-", stdin=WEB)
    wait_for(lambda: kubectl("get", "pods", "-l", "app=web", "-o", "name").stdout != "", timeout=60)
    kubectl("delete", "deployment", "web", "--cascade=background")
    wait_for(lambda: kubectl("get", "rs,pods", "-l", "app=web", "-o", "name").stdout == "",
             timeout=60)  # fmt: skip


def test_binding_and_eviction(cluster: Cluster, tmp_path: Path) -> None:
    # No scheduler: the pod waits for the binding this test POSTs, as for a scheduler of one's own.
    kubectl = connect(cluster, ("--no-scheduler",))
    sim = start_nodes(cluster, tmp_path)
    try:
        wait_for(lambda: len(kubectl("get", "nodes", "-o", "name").stdout.split()) == 2)
        kubectl("apply", "-f", "-", stdin=SOLO)
        binding = tmp_path / "binding.json"
        binding.write_text(json.dumps({"apiVersion": "v1", "kind": "Binding",
                                       "metadata": {"name": "solo"},
                                       "target": {"kind": "Node", "name": "kw-1"}}))  # fmt: skip
        raw = "/api/v1/namespaces/default/pods/solo/binding"
        bound = kubectl("create", "--raw", raw, "-f", str(binding))
        assert json.loads(bound.stdout)["status"] == "Success"
        assert kubectl("get", "pod", "solo", "-o", "jsonpath={.spec.nodeName}").stdout == "kw-1"
        kubectl("wait", "--for=condition=Ready", "pod/solo", "--timeout=60s")
        again = kubectl("create", "--raw", raw, "-f", str(binding), check=False)
        assert again.returncode == 1
        assert again.stderr.strip() == (
            'Error from server (Conflict): Operation cannot be fulfilled on pods/binding "solo": '
            'pod solo is already assigned to node "kw-1"'
        )

        # kubectl drain cordons the node and evicts its pods through pods/eviction.
        drained = kubectl("drain", "kw-1", "--force", "--timeout=60s")
        assert "evicting pod default/solo" in drained.stdout
        assert lines(drained)[-1] == "node/kw-1 drained"
        assert kubectl("get", "pods", "-o", "name").stdout == ""
        eviction = tmp_path / "eviction.json"
        eviction.write_text(json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                                        "metadata": {"name": "solo"}}))  # fmt: skip
        gone = kubectl("create", "--raw", "/api/v1/namespaces/default/pods/solo/eviction",
                       "-f", str(eviction), check=False)  # fmt: skip
        assert gone.stderr.strip() == 'Error from server (NotFound): pods "solo" not found'
    finally:
        sim.terminate()
        sim.wait(timeout=30)
