"""The real ``kubectl`` meeting Pod Security Admission through ``fleetlog up``: labels set with
``kubectl label``, a privileged pod refused with kube's error, and a warning printed as kubectl
prints the API server's ``Warning`` headers."""

from __future__ import annotations

import pytest

from tests.e2e.test_kubectl import Kubectl, kubectl  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

PRIVILEGED = """\
apiVersion: v1
kind: Pod
metadata: {name: root, namespace: secure}
spec:
  containers: [{name: app, image: nginx, securityContext: {privileged: true}}]
"""
PLAIN = """\
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: secure}
spec:
  containers: [{name: app, image: nginx, command: ["sleep", "1000"]}]
"""


def test_kubectl_apply_of_a_privileged_pod_prints_kubes_error_and_a_warning(
    kubectl: Kubectl,  # noqa: F811
) -> None:
    # (``kubectl create namespace`` sends protobuf, which the door refuses.)
    kubectl("apply", "-f", "-", stdin="{apiVersion: v1, kind: Namespace, metadata: {name: secure}}")
    kubectl(
        "label", "namespace", "secure",
        "pod-security.kubernetes.io/enforce=baseline", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    refused = kubectl("apply", "-f", "-", stdin=PRIVILEGED, check=False)
    assert refused.returncode == 1
    assert (
        'Error from server (Forbidden): error when creating "STDIN": pods "root" is forbidden: '
        'violates PodSecurity "baseline:latest": privileged (container "app" must not set '
        "securityContext.privileged=true)"
    ) in refused.stderr
    created = kubectl("apply", "-f", "-", stdin=PLAIN)
    assert created.stdout.strip() == "pod/plain created"
    assert 'Warning: would violate PodSecurity "restricted:latest": ' in created.stderr
    assert kubectl("get", "pod", "root", "-n", "secure", check=False).returncode == 1
