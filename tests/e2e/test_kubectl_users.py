"""End to end: a person created with ``fleetlog user create`` uses kubectl through ``fleetlog
up``'s Kubernetes API with the kubeconfig ``fleetlog user kubeconfig`` writes, under the RBAC
the admin grants with kubectl (``up``'s admin kubeconfig, ``system:masters``), and loses it
when revoked: the door behind the NATS wall authenticates its own callers (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl

pytestmark = pytest.mark.e2e

SETUP = """\
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-view, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a}
spec:
  containers: [{name: c, image: busybox, command: ["sleep", "1000"]}]
"""


def test_a_user_kubeconfig_reads_what_rbac_grants_until_revoked(cluster: Cluster) -> None:
    cluster.up()
    admin = Kubectl(cluster.data_dir / "kubeconfig")
    wait_for(lambda: admin("get", "namespaces", check=False).returncode == 0)
    admin("apply", "-f", "-", stdin=SETUP)

    created = cluster.cli("user", "create", "alice", "--group", "dev")
    assert "kubernetes token:" in created.stdout
    written = cluster.cli("user", "kubeconfig", "alice", "--data-dir", str(cluster.data_dir))
    path = written.stdout.split()[1]
    alice = Kubectl(Path(path))
    assert oct(alice.kubeconfig.stat().st_mode & 0o777) == "0o600"

    whoami = alice("auth", "whoami")
    assert "alice" in whoami.stdout and "[dev system:authenticated]" in whoami.stdout
    assert alice("get", "pods", "-n", "a", "-o", "name").stdout.split() == ["pod/web"]
    denied = alice("get", "pods", "-n", "b", check=False)
    assert 'User "alice" cannot list resource "pods" in API group "" in the namespace "b"' in (
        denied.stderr
    )
    write = alice("delete", "pod", "web", "-n", "a", check=False)
    assert write.returncode == 1 and "(Forbidden)" in write.stderr
    assert admin("get", "pod", "web", "-n", "a", "-o", "name").stdout.strip() == "pod/web"

    cluster.cli("user", "revoke", "alice")
    wait_for(lambda: alice("get", "pods", "-n", "a", check=False).returncode == 1, 30)
    assert (
        "You must be logged in to the server" in alice("get", "pods", "-n", "a", check=False).stderr
    )
    assert admin("get", "pods", "-n", "a", "-o", "name").returncode == 0
