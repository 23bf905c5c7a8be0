"""Pod Security Admission's levels decide and word as Kubernetes' plugin does
(``core.access.podsecurity``): the message users search for is the one they get."""

from __future__ import annotations

from typing import Any

import pytest

from core.access.podsecurity import (
    NamespacePolicy,
    label_problems,
    violation_message,
    violations,
)


def pod(**spec: Any) -> dict[str, Any]:
    return {"containers": [{"name": "nginx", "image": "nginx"}], **spec}


RESTRICTED_CONTAINER = {
    "name": "ok",
    "image": "nginx",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def test_a_plain_pod_breaks_restricted_with_kubernetes_message() -> None:
    found = violations("restricted", pod())
    assert violation_message("restricted", found) == (
        'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "nginx" must set securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "nginx" must set '
        'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container '
        '"nginx" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container '
        '"nginx" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
    )
    assert violations("baseline", pod()) == []
    assert violations("privileged", pod(hostNetwork=True)) == []


def test_a_restricted_pod_passes_every_level() -> None:
    spec = {"containers": [RESTRICTED_CONTAINER], "volumes": [{"name": "d", "emptyDir": {}}]}
    for level in ("privileged", "baseline", "restricted"):
        assert violations(level, spec) == []  # type: ignore[arg-type]


def test_pod_level_settings_cover_containers_that_say_nothing() -> None:
    spec = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}},
        "containers": [{**RESTRICTED_CONTAINER, "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }  # fmt: skip
    assert violations("restricted", spec) == []
    # a container saying false overrides the pod's true
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = False
    [found] = violations("restricted", spec)
    assert str(found) == (
        'runAsNonRoot != true (container "ok" must not set securityContext.runAsNonRoot=false)'
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (pod(hostNetwork=True, hostPID=True),
         "host namespaces (hostNetwork, hostPID)"),
        ({"containers": [{"name": "a", "securityContext": {"privileged": True}},
                         {"name": "b", "securityContext": {"privileged": True}}]},
         'privileged (containers "a", "b" must not set securityContext.privileged=true)'),
        ({"initContainers": [{"name": "i", "securityContext": {
            "capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_RAW"]}}}],
          "containers": [{"name": "c"}]},
         'non-default capabilities (container "i" must not include "NET_RAW", "SYS_ADMIN" '
         "in securityContext.capabilities.add)"),
        (pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
         'hostPath volumes (volume "root")'),
        ({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80},
                                                 {"containerPort": 443, "hostPort": 443}]}]},
         'hostPort (container "a" uses hostPorts 443, 80)'),
        ({"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]},
         'procMount (container "a" must not set securityContext.procMount to "Unmasked")'),
        ({"securityContext": {"seccompProfile": {"type": "Unconfined"}},
          "containers": [{"name": "a"}]},
         'seccompProfile (pod must not set securityContext.seccompProfile.type to '
         '"Unconfined")'),
        ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                          {"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
          "containers": [{"name": "a"}]},
         "forbidden sysctls (kernel.msgmax)"),
        ({"securityContext": {"seLinuxOptions": {"type": "spc_t", "user": "root"}},
          "containers": [{"name": "a"}]},
         'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; '
         "user may not be set)"),
    ],
)  # fmt: skip
def test_baseline_checks(spec: dict[str, Any], message: str) -> None:
    assert [str(v) for v in violations("baseline", spec)] == [message]


def test_apparmor_annotations_other_than_default_or_localhost_break_baseline() -> None:
    meta = {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/a": "unconfined",
        "container.apparmor.security.beta.kubernetes.io/b": "localhost/mine",
        "container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}}  # fmt: skip
    [found] = violations("baseline", pod(), meta)
    assert str(found) == (
        'forbidden AppArmor profile (container.apparmor.security.beta.kubernetes.io/a="unconfined")'
    )


def test_restricted_adds_its_own_checks_and_replaces_baselines_seccomp() -> None:
    spec = {
        "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}},
        "containers": [{**RESTRICTED_CONTAINER, "securityContext": {
            **RESTRICTED_CONTAINER["securityContext"], "seccompProfile": None,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_TIME"]}}}],
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}, {"name": "cm", "configMap": {}}],
    }  # fmt: skip
    reasons = [str(v) for v in violations("restricted", spec)]
    assert reasons == [
        'non-default capabilities (container "ok" must not include "SYS_TIME" in '
        "securityContext.capabilities.add)",
        'unrestricted capabilities (container "ok" must not include "SYS_TIME" in '
        "securityContext.capabilities.add)",
        'hostPath volumes (volume "host")',
        'restricted volume types (volumes ["host"] have restricted types)',
        "runAsUser=0 (pod must not set runAsUser=0)",
        'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
    ]


def test_namespace_labels_choose_the_level_per_mode() -> None:
    labels = {"pod-security.kubernetes.io/enforce": "baseline",
              "pod-security.kubernetes.io/warn": "restricted"}  # fmt: skip
    assert NamespacePolicy.from_labels(labels) == NamespacePolicy(
        enforce="baseline", audit="privileged", warn="restricted"
    )
    assert NamespacePolicy.from_labels({}) == NamespacePolicy()
    assert label_problems(labels) == []
    assert label_problems({"pod-security.kubernetes.io/enforce": "strict"}) == [
        'pod-security.kubernetes.io/enforce: Unsupported value: "strict": supported values: '
        '"privileged", "baseline", "restricted"'
    ]
    assert label_problems({"pod-security.kubernetes.io/enforce-version": "v1.30"}) == []
    assert label_problems({"pod-security.kubernetes.io/enforce-version": "1.30"})
