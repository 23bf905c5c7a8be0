"""A container's environment, command and args as the kubelet makes them: literal values with
``$(VAR)`` expansion, the downward API, and references to ConfigMaps and Secrets that do not
exist."""

from __future__ import annotations

import pytest

from core.pods.downward import (
    ContainerConfigError,
    PodFacts,
    container_environment,
    expand,
    expanded_argv,
)

MANIFEST = {
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "uid": "u-1",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "n1", "serviceAccountName": "default"},
}
FACTS = PodFacts(
    manifest=MANIFEST,
    pod_ip="100.96.0.7",
    host_ip="192.0.2.10",
    node_name="n1",
    node_allocatable={"cpu": "2", "memory": "4Gi"},
)


def _field(path: str) -> dict:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def test_the_downward_api_tells_the_pod_about_itself() -> None:
    paths = {
        "NAME": "metadata.name", "NS": "metadata.namespace", "UID": "metadata.uid",
        "NODE": "spec.nodeName", "SA": "spec.serviceAccountName", "IP": "status.podIP",
        "IPS": "status.podIPs", "HOST": "status.hostIP", "APP": "metadata.labels['app']",
        "NOTE": "metadata.annotations['note']", "LABELS": "metadata.labels",
    }  # fmt: skip
    env = container_environment(
        {"env": [{"name": name, **_field(path)} for name, path in paths.items()]}, FACTS
    )
    assert env == {
        "NAME": "web-1", "NS": "shop", "UID": "u-1", "NODE": "n1", "SA": "default",
        "IP": "100.96.0.7", "IPS": "100.96.0.7", "HOST": "192.0.2.10", "APP": "web",
        "NOTE": "hi", "LABELS": 'app="web"\ntier="front"',
    }  # fmt: skip


def test_resources_are_divided_and_rounded_up_and_a_missing_limit_is_the_nodes() -> None:
    container = {
        "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"cpu": "1500m"}},
        "env": [
            {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu",
                                                                  "divisor": "1m"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory",
                                                                   "divisor": "1Mi"}}},
            {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        ],
    }  # fmt: skip
    assert container_environment(container, FACTS) == {
        "CPU_LIMIT": "2",  # 1.5 cores, rounded up
        "CPU_M": "250",
        "MEM_MI": "100",
        "MEM_LIMIT": str(4 * 2**30),  # no limit: the node's allocatable
    }


def test_values_expand_earlier_variables_only() -> None:
    container = {
        "env": [
            {"name": "HOST", **_field("status.podIP")},
            {"name": "URL", "value": "http://$(HOST):8080/$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "PRICE", "value": "$$(HOST) costs $$5"},
        ]
    }
    env = container_environment(container, FACTS)
    assert env["URL"] == "http://100.96.0.7:8080/$(LATER)"
    assert env["PRICE"] == "$(HOST) costs $5"


def test_command_and_args_expand_the_containers_variables() -> None:
    container = {"command": ["serve", "--bind=$(IP)"], "args": ["$(MISSING)", "$$(IP)"]}
    assert expanded_argv(container, {"IP": "100.96.0.7"}) == [
        "serve", "--bind=100.96.0.7", "$(MISSING)", "$(IP)",
    ]  # fmt: skip
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"


def test_a_missing_config_map_or_secret_is_a_config_error_unless_optional() -> None:
    ref = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    with pytest.raises(ContainerConfigError, match='secret "creds" not found'):
        container_environment({"env": [ref]}, FACTS)
    optional = {
        "name": "TOKEN",
        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}},
    }
    assert container_environment({"env": [optional]}, FACTS) == {}
    with pytest.raises(ContainerConfigError, match='configmap "settings" not found'):
        container_environment({"envFrom": [{"configMapRef": {"name": "settings"}}]}, FACTS)
    with pytest.raises(ContainerConfigError, match="unsupported fieldRef"):
        container_environment({"env": [{"name": "X", **_field("spec.bogus")}]}, FACTS)
