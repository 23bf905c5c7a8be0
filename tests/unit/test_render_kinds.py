"""Every kind ``fleetlog get`` accepts renders in every output (table, wide, yaml, json), from a
bare stored manifest as well as from one with Kubernetes' defaults filled in: ``get
priorityclass`` once ended in a ``KeyError`` because the kind had no columns. PriorityClasses
show kubectl's columns, the two built-in system classes included."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from core.api.kinds import NAMESPACED
from core.api.manifests import dump_manifest, parse_manifest
from ops import render
from ops.cli.objects import with_builtin

NOW = 1_800_000_000 * 10**9
CREATED = NOW - 90 * 10**9

MINIMAL: dict[str, dict[str, Any]] = {
    "Pod": {
        "apiVersion": "v1",
        "kind": "Pod",
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep"]}]},
    },
    "Node": {"apiVersion": "v1", "kind": "Node"},
    "Deployment": {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    },
    "ReplicaSet": {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    },
    "Service": {
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
    },
    "Namespace": {"apiVersion": "v1", "kind": "Namespace"},
    "PriorityClass": {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 10},
    "LimitRange": {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]},
    },
    "ResourceQuota": {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "spec": {"hard": {"pods": "4", "limits.cpu": "2"}},
    },
    "EndpointSlice": {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["100.96.0.5"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    },
    "IPAddress": {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "web"}},
    },
    "NodePortAllocation": {
        "apiVersion": "networking.fleetlog.dev/v1alpha1",
        "kind": "NodePortAllocation",
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "web"}},
    },
    "PodCIDR": {
        "apiVersion": "networking.fleetlog.dev/v1alpha1",
        "kind": "PodCIDR",
        "spec": {"cidr": "100.96.3.0/24", "nodeName": "n1", "nodeUID": "uid-n1"},
    },
    "Role": {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    },
    "ClusterRole": {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
    },
    "RoleBinding": {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}],
    },
    "ClusterRoleBinding": {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}],
    },
    "ConfigMap": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"mode": "fast"}},
    "Secret": {"apiVersion": "v1", "kind": "Secret", "stringData": {"password": "s3cret"}},
    "User": {
        "apiVersion": "auth.fleetlog.dev/v1",
        "kind": "User",
        "spec": {
            "publicKey": "UCNAOJBG3CUGQZ33BBZ5IKMFFQ3SCXEGCHT43RLTLVYZF3S62MVQKPC2",
            "groups": ["dev"],
        },
    },
    "FlowSchema": {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "spec": {
            "priorityLevelConfiguration": {"name": "global-default"},
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [{"kind": "Group", "group": {"name": "ops"}}],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
                }
            ],
        },
    },
    "PriorityLevelConfiguration": {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 10,
                "limitResponse": {
                    "type": "Queue",
                    "queuing": {"queues": 16, "handSize": 4, "queueLengthLimit": 20},
                },
            },
        },
    },
    "VirtualService": {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    },
    "DestinationRule": {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    },
    "Gateway": {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "spec": {
            "servers": [
                {"hosts": ["*"], "port": {"number": 80, "name": "http", "protocol": "HTTP"}}
            ]
        },
    },
    "ServiceEntry": {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "spec": {
            "hosts": ["api.example.com"],
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
        },
    },
    "PeerAuthentication": {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "spec": {"mtls": {"mode": "STRICT"}},
    },
    "PodDisruptionBudget": {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
    },
    "HorizontalPodAutoscaler": {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "maxReplicas": 3,
        },
    },
    "VerticalPodAutoscaler": {
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}},
    },
}

NAMES = {"IPAddress": "100.64.0.20", "NodePortAllocation": "30080", "PodCIDR": "100.96.3.0-24"}
"""Kinds whose names are values (an address, a port); every other kind's object is "x"."""


def item(kind: str, manifest: dict[str, Any]) -> dict[str, Any]:
    namespace = "default" if NAMESPACED[kind] else ""
    name = NAMES.get(kind, "x")
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": "uid-1",
        "version": 1,
        "last_seq": 7,
        "created_ns": CREATED,
        "manifest": {**manifest, "metadata": metadata},
    }


def defaulted(kind: str) -> dict[str, Any]:
    """The manifest as the gateway stores it: validated, with Kubernetes' defaults."""
    doc = {**MINIMAL[kind], "metadata": {"name": NAMES.get(kind, "x")}}
    return dump_manifest(parse_manifest(doc))


def test_every_kind_is_covered() -> None:
    assert set(MINIMAL) == set(NAMESPACED)


@pytest.mark.parametrize("kind", sorted(NAMESPACED))
@pytest.mark.parametrize("stored", ["bare", "defaulted"])
@pytest.mark.parametrize("wide", [False, True])
def test_every_kind_renders_as_a_table(kind: str, stored: str, wide: bool) -> None:
    manifest = defaulted(kind) if stored == "defaulted" else {"apiVersion": "v1", "kind": kind}
    for show_namespace in (False, NAMESPACED[kind]):
        text = render.object_table(
            kind, [item(kind, manifest)], now_ns=NOW, wide=wide, show_namespace=show_namespace
        )
        header, row = text.splitlines()
        assert header.startswith("NAMESPACE" if show_namespace else "NAME")
        assert NAMES.get(kind, "x") in row.split()


@pytest.mark.parametrize("kind", sorted(NAMESPACED))
def test_every_kind_renders_as_yaml_and_json(kind: str) -> None:
    full = render.full_manifest(item(kind, defaulted(kind)))
    assert full["metadata"]["uid"] == "uid-1" and full["metadata"]["resourceVersion"] == "7"
    assert yaml.safe_load(render.to_yaml([full])) == full
    assert json.loads(render.to_json(full)) == full


def test_config_maps_and_secrets_show_kubectls_columns() -> None:
    config = render.object_table(
        "ConfigMap", [item("ConfigMap", defaulted("ConfigMap"))], now_ns=NOW, wide=False,
        show_namespace=False,
    )  # fmt: skip
    assert config.splitlines() == ["NAME    DATA    AGE", "x       1       90s"]
    secret = render.object_table(
        "Secret", [item("Secret", defaulted("Secret"))], now_ns=NOW, wide=False,
        show_namespace=False,
    )  # fmt: skip
    assert secret.splitlines() == ["NAME    TYPE    DATA    AGE", "x       Opaque  1       90s"]


def test_a_kind_without_columns_gets_kubectls_default_ones() -> None:
    text = render.object_table(
        "Gizmo", [item("Pod", {})], now_ns=NOW, wide=False, show_namespace=False
    )
    assert text.splitlines() == ["NAME    AGE", "x       90s"]


def test_priority_classes_show_kubectls_columns_with_the_built_in_classes() -> None:
    stored = item(
        "PriorityClass",
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "value": 1000,
            "globalDefault": True,
            "preemptionPolicy": "Never",
        },
    )
    stored["name"] = "batch"
    listed = with_builtin("PriorityClass", [stored], None)
    assert [i["name"] for i in listed] == [
        "batch",
        "system-cluster-critical",
        "system-node-critical",
    ]
    text = render.object_table(
        "PriorityClass", listed, now_ns=NOW, wide=False, show_namespace=False
    )
    assert [line.split() for line in text.splitlines()] == [
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        ["batch", "1000", "true", "90s", "Never"],
        ["system-cluster-critical", "2000000000", "false", "<unknown>", "PreemptLowerPriority"],
        ["system-node-critical", "2000001000", "false", "<unknown>", "PreemptLowerPriority"],
    ]
    # A built-in class is shown by name; one stored under its name is shown as stored.
    (one,) = with_builtin("PriorityClass", [], "system-node-critical")
    assert render.full_manifest(one) == {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-node-critical"},
        "value": 2000001000,
        "globalDefault": False,
        "description": "Used for system critical pods that must not be moved from their current "
        "node.",
        "preemptionPolicy": "PreemptLowerPriority",
    }
    assert with_builtin("PriorityClass", [], "batch") == []
    restated = {**stored, "name": "system-node-critical"}
    assert with_builtin("PriorityClass", [restated], "system-node-critical") == [restated]
    assert with_builtin("Pod", [], None) == []
    page = render.describe(one, [], NOW)
    assert "Value:             2000001000" in page and "built in" in page


def node(ready: str | None, *, cordoned: bool = False, **labels: str) -> dict[str, Any]:
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": "NodeStatusUnknown"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n", "labels": labels},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"conditions": conditions},
    }


@pytest.mark.parametrize(
    ("ready", "cordoned", "shown"),
    [
        ("True", False, "Ready"),
        ("False", False, "NotReady"),
        # Heartbeats stopped: the lifecycle controller sets Ready=Unknown; kubectl says NotReady.
        ("Unknown", False, "NotReady"),
        ("Unknown", True, "NotReady,SchedulingDisabled"),
        (None, False, "Unknown"),
        (None, True, "Unknown,SchedulingDisabled"),
        ("True", True, "Ready,SchedulingDisabled"),
    ],
)
def test_node_status_is_kubectls(ready: str | None, cordoned: bool, shown: str) -> None:
    assert render.node_status(node(ready, cordoned=cordoned)) == shown
    row = render.object_table(
        "Node",
        [item("Node", node(ready, cordoned=cordoned))],
        now_ns=NOW,
        wide=False,
        show_namespace=False,
    ).splitlines()[1]
    assert row.split()[1] == shown


def test_node_roles_come_from_both_role_labels() -> None:
    labels = {
        "node-role.kubernetes.io/control-plane": "",
        "node-role.kubernetes.io/worker": "",
        "kubernetes.io/role": "edge",
        "type": "simulated",
    }
    assert render.node_roles(labels) == "control-plane,edge,worker"
    assert render.node_roles({"type": "simulated"}) == "<none>"


@pytest.mark.parametrize("kind", sorted(NAMESPACED))
def test_o_name_prints_what_the_other_commands_take(kind: str) -> None:
    from ops.cliargs import split_ref

    shown = render.resource_name(kind, "x")
    assert split_ref(shown) == (kind, "x")
    assert shown == {
        "Deployment": "deployment.apps/x",
        "ReplicaSet": "replicaset.apps/x",
        "PriorityClass": "priorityclass.scheduling.k8s.io/x",
        "EndpointSlice": "endpointslice.discovery.k8s.io/x",
        "IPAddress": "ipaddress.networking.k8s.io/x",
        "NodePortAllocation": "nodeportallocation.networking.fleetlog.dev/x",
        "PodCIDR": "podcidr.networking.fleetlog.dev/x",
        "Role": "role.rbac.authorization.k8s.io/x",
        "ClusterRole": "clusterrole.rbac.authorization.k8s.io/x",
        "RoleBinding": "rolebinding.rbac.authorization.k8s.io/x",
        "ClusterRoleBinding": "clusterrolebinding.rbac.authorization.k8s.io/x",
        "User": "user.auth.fleetlog.dev/x",
        "FlowSchema": "flowschema.flowcontrol.apiserver.k8s.io/x",
        "PriorityLevelConfiguration": "prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/x",
        "VirtualService": "virtualservice.networking.istio.io/x",
        "DestinationRule": "destinationrule.networking.istio.io/x",
        "Gateway": "gateway.networking.istio.io/x",
        "ServiceEntry": "serviceentry.networking.istio.io/x",
        "PeerAuthentication": "peerauthentication.security.istio.io/x",
        "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling/x",
        "PodDisruptionBudget": "poddisruptionbudget.policy/x",
        "VerticalPodAutoscaler": "verticalpodautoscaler.autoscaling.k8s.io/x",
    }.get(kind, f"{kind.lower()}/x")


def test_bindings_show_their_role_and_wide_their_subjects() -> None:
    binding = item("RoleBinding", defaulted("RoleBinding"))
    text = render.object_table("RoleBinding", [binding], now_ns=NOW, wide=True,
                               show_namespace=False)  # fmt: skip
    assert [line.split() for line in text.splitlines()] == [
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
        ["x", "ClusterRole/edit", "90s", "default/robot"],
    ]
