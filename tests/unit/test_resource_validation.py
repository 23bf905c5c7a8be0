"""Manifests Kubernetes would refuse are refused, naming the field with a Kubernetes-style path."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from core.api.manifests import parse_manifest
from core.errors import InvalidQuantity, UnknownKind, ValidationFailed


def pod(**spec_extra: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.25",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                }
            ],
            **spec_extra,
        },
    }


def deployment() -> dict:
    template = pod()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": template["metadata"] | {"name": None},
                "spec": template["spec"],
            },
        },
    }


def service() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }


def node() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi"}},
    }


def namespace() -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}


def rejected(doc: object, error: type[Exception] = ValidationFailed) -> ValidationFailed:
    with pytest.raises(error) as info:
        parse_manifest(doc)
    return info.value  # type: ignore[return-value]


def edited(make: Callable[[], dict], edit: Callable[[dict], object]) -> dict:
    doc = copy.deepcopy(make())
    edit(doc)
    return doc


def test_fixtures_themselves_are_valid():
    for make in (pod, deployment, service, node, namespace):
        parse_manifest(make())


# --- unknown fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "edit", "path"),
    [
        (pod, lambda d: d.__setitem__("specc", {}), "specc"),
        (pod, lambda d: d["metadata"].__setitem__("lables", {}), "metadata.lables"),
        (pod, lambda d: d["spec"].__setitem__("imagePullSecretz", []), "spec.imagePullSecretz"),
        (
            pod,
            lambda d: d["spec"]["containers"][0].__setitem__("imagePullSecretz", []),
            "spec.containers[0].imagePullSecretz",
        ),
        (
            pod,
            lambda d: d["spec"]["containers"][0]["resources"].__setitem__("limitz", {}),
            "spec.containers[0].resources.limitz",
        ),
        (
            pod,
            lambda d: d["spec"]["containers"][0]["readinessProbe"]["httpGet"].__setitem__(
                "paht", "/x"
            ),
            "spec.containers[0].readinessProbe.httpGet.paht",
        ),
        (
            deployment,
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].__setitem__(
                "contanerPort", 81
            ),
            "spec.template.spec.containers[0].ports[0].contanerPort",
        ),
        (deployment, lambda d: d["spec"].__setitem__("replica", 3), "spec.replica"),
        (
            service,
            lambda d: d["spec"]["ports"][0].__setitem__("target", 8080),
            "spec.ports[0].target",
        ),
        (node, lambda d: d["status"].__setitem__("capacityy", {}), "status.capacityy"),
        (namespace, lambda d: d.__setitem__("spec", {"finalizer": []}), "spec.finalizer"),
    ],
)
def test_unknown_fields_are_rejected_with_their_path(make, edit, path: str):
    error = rejected(edited(make, edit))
    assert error.field == path
    assert error.message == f'unknown field "{path.rsplit(".", 1)[-1]}"'


def test_snake_case_spelling_is_an_unknown_field_in_a_manifest():
    doc = pod()
    port = doc["spec"]["containers"][0]["ports"][0]
    port["container_port"] = port.pop("containerPort")
    error = rejected(doc)
    assert [(e.field, e.message) for e in error.errors] == [
        ("spec.containers[0].ports[0].container_port", 'unknown field "container_port"'),
        ("spec.containers[0].ports[0].containerPort", 'missing required field "containerPort"'),
    ]
    assert (error.field, error.message) == (
        "spec.containers[0].ports[0].container_port",
        'unknown field "container_port"',
    )


def test_every_problem_of_a_manifest_is_listed_unknown_fields_first():
    doc = pod()
    container = doc["spec"]["containers"][0]
    doc["spec"]["hostNetwork"] = "yes"
    container["ports"][0]["containerPort"] = 70000
    container["imagePullPolcy"] = "Always"
    error = rejected(doc)
    assert [(e.field, e.message) for e in error.errors] == [
        ("spec.containers[0].imagePullPolcy", 'unknown field "imagePullPolcy"'),
        (
            "spec.containers[0].ports[0].containerPort",
            "Invalid value 70000: must be between 1 and 65535, inclusive",
        ),
        ("spec.hostNetwork", 'Invalid value "yes": must be true or false'),
    ]
    assert (error.field, error.message) == (
        "spec.containers[0].imagePullPolcy",
        'unknown field "imagePullPolcy"',
    )
    reply = error.as_dict()
    assert reply["errors"] == [{"field": e.field, "message": e.message} for e in error.errors]


# --- names ------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "my pod",
    "web*",
    "a>b",
    "pöd",
    "名前",
    "Web",
    "-web",
    "web-",
    "web.",
    "web\n",
    "web/../x",
    "a" * 254,
]


@pytest.mark.parametrize("make", [pod, deployment, node], ids=["Pod", "Deployment", "Node"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_subdomain_names_are_rejected(make, name: str):
    error = rejected(edited(make, lambda d: d["metadata"].__setitem__("name", name)))
    assert error.field == "metadata.name"
    assert error.message.startswith("Invalid value ")
    assert "RFC 1123 subdomain" in error.message or "no more than 253" in error.message


@pytest.mark.parametrize("make", [namespace, service], ids=["Namespace", "Service"])
@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "a.b", "a" * 64])
def test_hostile_label_names_are_rejected(make, name: str):
    error = rejected(edited(make, lambda d: d["metadata"].__setitem__("name", name)))
    assert error.field == "metadata.name"
    assert error.message.startswith("Invalid value ")


def test_dotted_names_are_fine_for_pods_but_not_namespaces():
    parse_manifest(edited(pod, lambda d: d["metadata"].__setitem__("name", "web.v2")))
    rejected(edited(namespace, lambda d: d["metadata"].__setitem__("name", "team.a")))


def test_service_names_must_start_with_a_letter_like_kubernetes_dns1035():
    error = rejected(edited(service, lambda d: d["metadata"].__setitem__("name", "1web")))
    assert "DNS-1035" in error.message


@pytest.mark.parametrize("make", [pod, deployment, service, node, namespace])
def test_missing_or_empty_name_is_required(make):
    error = rejected(edited(make, lambda d: d["metadata"].__setitem__("name", "")))
    assert error.field == "metadata.name"
    assert "name or generateName is required" in error.message
    error = rejected(edited(make, lambda d: d.__setitem__("metadata", {})))
    assert error.field == "metadata.name"


def test_hostile_value_is_escaped_and_shortened_in_the_message():
    error = rejected(edited(pod, lambda d: d["metadata"].__setitem__("name", "x\x1b[31m" * 40)))
    assert "\x1b" not in error.message
    assert "..." in error.message


def test_non_string_name_is_rejected():
    error = rejected(edited(pod, lambda d: d["metadata"].__setitem__("name", 42)))
    assert (error.field, error.message) == ("metadata.name", "Invalid value 42: must be a string")


def test_invalid_generate_name_is_rejected():
    error = rejected(edited(pod, lambda d: d.__setitem__("metadata", {"generateName": "Web-"})))
    assert error.field == "metadata.generateName"


def test_container_names_are_dns_labels():
    error = rejected(
        edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("name", "app.v1"))
    )
    assert error.field == "spec.containers[0].name"
    assert error.message == 'Invalid value "app.v1": must not contain dots'
    error = rejected(edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("name", "App")))
    assert "RFC 1123 label" in error.message


@pytest.mark.parametrize("make", [node, namespace])
def test_cluster_scoped_kinds_refuse_a_namespace(make):
    error = rejected(edited(make, lambda d: d["metadata"].__setitem__("namespace", "default")))
    assert error.field == "metadata.namespace"
    assert "cluster-scoped" in error.message


def test_invalid_namespace_is_rejected():
    error = rejected(edited(pod, lambda d: d["metadata"].__setitem__("namespace", "Team A")))
    assert error.field == "metadata.namespace"


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"bad key": "x"}, 'metadata.labels["bad key"]'),
        ({"example.com/": "x"}, "metadata.labels[example.com/]"),
        ({"Example_.com/app": "x"}, "metadata.labels[Example_.com/app]"),
        ({"a/b/c": "x"}, "metadata.labels[a/b/c]"),
        ({"app": "has space"}, "metadata.labels.app"),
        ({"app": "v" * 64}, "metadata.labels.app"),
        ({"k" * 64: "x"}, f"metadata.labels.{'k' * 64}"),
        ({"app": "-x"}, "metadata.labels.app"),
    ],
)
def test_invalid_labels_are_rejected(labels: dict, field: str):
    error = rejected(edited(pod, lambda d: d["metadata"].__setitem__("labels", labels)))
    assert error.field == field


def test_label_values_may_be_empty():
    parse_manifest(edited(pod, lambda d: d["metadata"].__setitem__("labels", {"role": ""})))


def test_only_one_owner_reference_may_be_the_controller():
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "r",
        "uid": "u",
        "controller": True,
    }
    doc = edited(pod, lambda d: d["metadata"].__setitem__("ownerReferences", [ref, ref]))
    assert rejected(doc).field == "metadata.ownerReferences[1].controller"


# --- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", "80"),
            "spec.containers[0].ports[0].containerPort",
            'Invalid value "80": must be an integer',
        ),
        (
            lambda d: d["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", 70000),
            "spec.containers[0].ports[0].containerPort",
            "Invalid value 70000: must be between 1 and 65535, inclusive",
        ),
        (
            lambda d: d["spec"].__setitem__("hostNetwork", "yes"),
            "spec.hostNetwork",
            'Invalid value "yes": must be true or false',
        ),
        (
            lambda d: d["spec"].__setitem__("restartPolicy", "Sometimes"),
            "spec.restartPolicy",
            'Unsupported value "Sometimes": supported values: "Always", "OnFailure", "Never"',
        ),
        (
            lambda d: d["spec"].__setitem__("containers", {"name": "x"}),
            "spec.containers",
            "Invalid value a mapping: must be a list",
        ),
        (
            lambda d: d["spec"].__setitem__("terminationGracePeriodSeconds", -1),
            "spec.terminationGracePeriodSeconds",
            "Invalid value -1: must be greater than or equal to 0",
        ),
        (
            lambda d: d["spec"]["containers"][0].pop("image"),
            "spec.containers[0].image",
            'missing required field "image"',
        ),
        (
            lambda d: d["spec"]["containers"][0].__setitem__("image", ""),
            "spec.containers[0].image",
            "Required value: a container needs an image",
        ),
        (
            lambda d: d["spec"]["containers"][0]["readinessProbe"]["httpGet"].__setitem__(
                "port", "HTTP_PORT"
            ),
            "spec.containers[0].readinessProbe.httpGet.port",
            None,
        ),
    ],
)
def test_wrong_types_and_values_are_rejected(edit, field: str, message: str | None):
    error = rejected(edited(pod, edit))
    assert error.field == field
    if message is not None:
        assert error.message == message


# --- quantities and resources -----------------------------------------------------------------


def test_invalid_quantity_is_reported_as_invalid_quantity_with_its_path():
    doc = edited(
        pod, lambda d: d["spec"]["containers"][0]["resources"]["limits"].__setitem__("cpu", "abc")
    )
    error = rejected(doc, InvalidQuantity)
    assert error.field == "spec.containers[0].resources.limits.cpu"
    assert error.message.startswith('Invalid value "abc": must be a quantity like 100m, 0.5')
    assert error.code == "invalid_quantity"


def test_quantity_path_inside_a_deployment_template():
    doc = deployment()
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["requests"]["memory"] = "1 Mi"
    error = rejected(doc, InvalidQuantity)
    assert error.field == "spec.template.spec.containers[0].resources.requests.memory"


@pytest.mark.parametrize(
    ("resources", "field", "fragment"),
    [
        ({"requests": {"cpu": "-1"}}, "requests.cpu", "greater than or equal to 0"),
        ({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, "requests.cpu", "cpu limit of 1"),
        ({"limits": {"gpu": "1"}}, "limits.gpu", "standard resource"),
        ({"limits": {"example.com/gpu": "0.5"}}, "limits[example.com/gpu]", "integer"),
        ({"requests": {"example.com/gpu": "1"}}, "limits[example.com/gpu]", "limit must be set"),
        (
            {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "2"}},
            "requests[example.com/gpu]",
            "must be equal",
        ),
        ({"limits": {"cpu": True}}, "limits.cpu", "must be a quantity"),
    ],
)
def test_invalid_container_resources_are_rejected(resources: dict, field: str, fragment: str):
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("resources", resources))
    error = rejected(doc)
    assert error.field == f"spec.containers[0].resources.{field}".replace(".[", "[")
    assert fragment in error.message


def test_negative_node_capacity_is_rejected():
    doc = edited(node, lambda d: d["status"]["capacity"].__setitem__("cpu", "-4"))
    assert rejected(doc).field == "status.capacity.cpu"


# --- containers and ports ---------------------------------------------------------------------


def test_duplicate_container_names_are_rejected():
    doc = pod()
    doc["spec"]["initContainers"] = [{"name": "app", "image": "busybox"}]
    error = rejected(doc)
    assert error.field == "spec.containers[0].name"
    assert error.message == 'Duplicate value "app"'


def test_duplicate_container_ports_in_a_deployment_template_are_rejected():
    doc = deployment()
    containers = doc["spec"]["template"]["spec"]["containers"]
    containers.append({"name": "sidecar", "image": "envoy", "ports": [{"containerPort": 80}]})
    error = rejected(doc)
    assert error.field == "spec.template.spec.containers[1].ports[0].containerPort"
    assert error.message == 'Duplicate value "80/TCP"'


def test_same_port_number_on_another_protocol_is_fine():
    doc = pod()
    doc["spec"]["containers"][0]["ports"].append({"containerPort": 80, "protocol": "UDP"})
    parse_manifest(doc)


def test_duplicate_port_names_and_host_ports_are_rejected():
    doc = pod()
    doc["spec"]["containers"][0]["ports"].append({"name": "http", "containerPort": 81})
    assert rejected(doc).field == "spec.containers[0].ports[1].name"
    doc = pod()
    doc["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80, "hostPort": 8080},
        {"containerPort": 81, "hostPort": 8080},
    ]
    assert rejected(doc).field == "spec.containers[0].ports[1].hostPort"


def test_host_network_requires_host_port_to_equal_container_port():
    doc = pod(hostNetwork=True)
    doc["spec"]["containers"][0]["ports"][0]["hostPort"] = 8080
    assert rejected(doc).field == "spec.containers[0].ports[0].hostPort"


def test_invalid_port_name_is_rejected():
    doc = pod()
    doc["spec"]["containers"][0]["ports"][0]["name"] = "a-very-long-port-name"
    error = rejected(doc)
    assert error.field == "spec.containers[0].ports[0].name"
    assert "no more than 15 characters" in error.message


def test_pod_needs_a_container():
    error = rejected(pod() | {"spec": {"containers": []}})
    assert error.field == "spec.containers"


# --- probes and lifecycle ---------------------------------------------------------------------


def test_probe_without_a_handler_is_rejected():
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("livenessProbe", {}))
    error = rejected(doc)
    assert error.field == "spec.containers[0].livenessProbe"
    assert "must specify a handler type" in error.message


def test_probe_with_several_handlers_is_rejected_at_the_second():
    probe = {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("readinessProbe", probe))
    error = rejected(doc)
    assert error.field == "spec.containers[0].readinessProbe.tcpSocket"
    assert "more than 1 handler" in error.message


def test_lifecycle_handler_needs_exactly_one_action():
    doc = edited(
        pod, lambda d: d["spec"]["containers"][0].__setitem__("lifecycle", {"preStop": {}})
    )
    assert rejected(doc).field == "spec.containers[0].lifecycle.preStop"


def test_liveness_success_threshold_must_be_one():
    probe = {"exec": {"command": ["true"]}, "successThreshold": 2}
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("livenessProbe", probe))
    assert rejected(doc).field == "spec.containers[0].livenessProbe.successThreshold"


def test_plain_init_containers_may_not_have_probes():
    init = {"name": "init", "image": "busybox", "readinessProbe": {"exec": {"command": ["x"]}}}
    error = rejected(pod(initContainers=[init]))
    assert error.field == "spec.initContainers[0].readinessProbe"


def test_restart_policy_on_a_regular_container_is_rejected():
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("restartPolicy", "Always"))
    assert rejected(doc).field == "spec.containers[0].restartPolicy"


# --- env and volumes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"name": "A=B", "value": "x"}, "name"),
        ({"name": "", "value": "x"}, "name"),
        (
            {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            "valueFrom",
        ),
        ({"name": "A", "valueFrom": {}}, "valueFrom"),
        (
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.secret"}}},
            "valueFrom.fieldRef.fieldPath",
        ),
        (
            {
                "name": "A",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.name"},
                    "secretKeyRef": {"name": "s", "key": "k"},
                },
            },
            "valueFrom.secretKeyRef",
        ),
        (
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "a b"}}},
            "valueFrom.configMapKeyRef.key",
        ),
        (
            {"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}},
            "valueFrom.resourceFieldRef.resource",
        ),
    ],
)
def test_invalid_env_vars_are_rejected(env: dict, field: str):
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("env", [env]))
    assert rejected(doc).field == f"spec.containers[0].env[0].{field}"


def test_volume_mount_must_name_a_volume():
    mount = {"name": "data", "mountPath": "/data"}
    doc = edited(pod, lambda d: d["spec"]["containers"][0].__setitem__("volumeMounts", [mount]))
    assert rejected(doc).field == "spec.containers[0].volumeMounts[0].name"
    doc["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    parse_manifest(doc)


def test_volume_needs_exactly_one_source():
    assert rejected(pod(volumes=[{"name": "data"}])).field == "spec.volumes[0]"
    both = {"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}}
    assert rejected(pod(volumes=[both])).field == "spec.volumes[0].hostPath"


# --- scheduling constraints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toleration", "field", "fragment"),
    [
        # Kubernetes reports a toleration's bad value at "operator".
        ({"key": "a", "operator": "Exists", "value": "x"}, "operator", "must be empty"),
        ({"operator": "Equal", "value": "x"}, "operator", "must be Exists when `key` is empty"),
        ({"value": "x"}, "operator", "must be Exists"),
        ({"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}, "effect", "NoExecute"),
        ({"key": "a", "operator": "Gt", "value": "1"}, "operator", "Unsupported value"),
        ({"key": "a", "effect": "Sometimes"}, "effect", "Unsupported value"),
        ({"key": "bad key"}, "key", "name part"),
    ],
)
def test_invalid_tolerations_are_rejected(toleration: dict, field: str, fragment: str):
    error = rejected(pod(tolerations=[toleration]))
    assert error.field == f"spec.tolerations[0].{field}"
    assert fragment in error.message


NODE_TERMS = (
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
)


def node_affinity(term: dict) -> dict:
    required = {"nodeSelectorTerms": [term]}
    return pod(
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    )


@pytest.mark.parametrize(
    ("requirement", "field", "fragment"),
    [
        ({"key": "cpus", "operator": "Gt", "values": ["four"]}, "values[0]", "must be an integer"),
        ({"key": "cpus", "operator": "Lt", "values": ["1.5"]}, "values[0]", "must be an integer"),
        ({"key": "cpus", "operator": "Gt", "values": ["1", "2"]}, "values", "single value"),
        ({"key": "zone", "operator": "In", "values": []}, "values", "must be specified"),
        ({"key": "zone", "operator": "NotIn"}, "values", "must be specified"),
        ({"key": "zone", "operator": "Exists", "values": ["a"]}, "values", "may not be specified"),
        (
            {"key": "zone", "operator": "Near", "values": ["a"]},
            "operator",
            "not a valid selector operator",
        ),
    ],
)
def test_invalid_node_selector_requirements_are_rejected(
    requirement: dict, field: str, fragment: str
):
    error = rejected(node_affinity({"matchExpressions": [requirement]}))
    assert error.field == f"{NODE_TERMS}.matchExpressions[0].{field}"
    assert fragment in error.message


def test_gt_with_an_integer_value_is_accepted():
    parse_manifest(
        node_affinity({"matchExpressions": [{"key": "c", "operator": "Gt", "values": ["3"]}]})
    )
    # A required node affinity's values are label values: "-3" is not one (Kubernetes).
    error = rejected(
        node_affinity({"matchExpressions": [{"key": "c", "operator": "Gt", "values": ["-3"]}]})
    )
    assert error.field == f"{NODE_TERMS}.matchExpressions[0].values[0]"


def test_match_fields_only_allow_metadata_name_with_one_value():
    bad_key = {"key": "metadata.labels", "operator": "In", "values": ["a"]}
    assert (
        rejected(node_affinity({"matchFields": [bad_key]})).field
        == f"{NODE_TERMS}.matchFields[0].key"
    )
    two = {"key": "metadata.name", "operator": "In", "values": ["a", "b"]}
    assert (
        rejected(node_affinity({"matchFields": [two]})).field
        == f"{NODE_TERMS}.matchFields[0].values"
    )


def test_node_selector_needs_a_term():
    doc = pod(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
            }
        }
    )
    assert rejected(doc).field.endswith("nodeSelectorTerms")


def test_pod_affinity_term_needs_a_topology_key_and_a_valid_selector():
    term = {"labelSelector": {"matchLabels": {"app": "db"}}}
    doc = pod(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})
    assert (
        rejected(doc).field
        == "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"
    )
    term = {
        "topologyKey": "zone",
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
    }
    doc = pod(
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    )
    assert rejected(doc).field.endswith("labelSelector.matchExpressions[0].values")


def test_preferred_weight_must_be_between_1_and_100():
    preferred = [
        {"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}
    ]
    doc = pod(
        affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    )
    assert (
        rejected(doc).field
        == "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight"
    )


def test_topology_spread_constraints_are_checked():
    constraint = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
    error = rejected(pod(topologySpreadConstraints=[constraint, constraint]))
    assert error.field == "spec.topologySpreadConstraints[1].topologyKey"
    anyway = constraint | {"whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}
    assert (
        rejected(pod(topologySpreadConstraints=[anyway])).field
        == "spec.topologySpreadConstraints[0].minDomains"
    )
    zero = constraint | {"maxSkew": 0}
    assert (
        rejected(pod(topologySpreadConstraints=[zero])).field
        == "spec.topologySpreadConstraints[0].maxSkew"
    )


def test_node_selector_values_are_label_values():
    assert rejected(pod(nodeSelector={"disk": "fast ssd"})).field == "spec.nodeSelector.disk"


# --- deployments ------------------------------------------------------------------------------


def test_selector_that_does_not_match_template_labels_is_rejected():
    doc = deployment()
    doc["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    error = rejected(doc)
    assert error.field == "spec.template.metadata.labels"
    assert "selector does not match template labels" in error.message


def test_selector_expression_that_excludes_the_template_is_rejected():
    doc = deployment()
    doc["spec"]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]
    }
    assert "selector does not match template labels" in rejected(doc).message


def test_deployment_selector_is_required_and_not_empty():
    doc = deployment()
    del doc["spec"]["selector"]
    assert rejected(doc).field == "spec.selector"
    doc["spec"]["selector"] = {}
    error = rejected(doc)
    assert error.field == "spec.selector"
    assert "empty selector" in error.message


@pytest.mark.parametrize(
    ("strategy", "field", "fragment"),
    [
        ({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}, "rollingUpdate", "Recreate"),
        (
            {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
            "rollingUpdate.maxUnavailable",
            "may not be 0",
        ),
        (
            {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "0%"}},
            "rollingUpdate.maxUnavailable",
            "may not be 0",
        ),
        ({"rollingUpdate": {"maxUnavailable": "150%"}}, "rollingUpdate.maxUnavailable", "100%"),
        ({"rollingUpdate": {"maxSurge": "25"}}, "rollingUpdate.maxSurge", "percent"),
        (
            {"rollingUpdate": {"maxSurge": -1}},
            "rollingUpdate.maxSurge",
            "greater than or equal to 0",
        ),
        ({"type": "BlueGreen"}, "type", "Unsupported value"),
    ],
)
def test_invalid_strategies_are_rejected(strategy: dict, field: str, fragment: str):
    doc = deployment()
    doc["spec"]["strategy"] = strategy
    error = rejected(doc)
    assert error.field == f"spec.strategy.{field}"
    assert fragment in error.message


def test_deployment_template_must_restart_always():
    doc = deployment()
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert rejected(doc).field == "spec.template.spec.restartPolicy"


def test_progress_deadline_must_exceed_min_ready_seconds():
    doc = deployment()
    doc["spec"] |= {"minReadySeconds": 600, "progressDeadlineSeconds": 600}
    assert rejected(doc).field == "spec.progressDeadlineSeconds"


def test_negative_replicas_are_rejected():
    doc = deployment()
    doc["spec"]["replicas"] = -1
    assert rejected(doc).field == "spec.replicas"


# --- services and nodes -----------------------------------------------------------------------


def test_service_ports_are_checked():
    doc = service()
    doc["spec"]["ports"].append({"port": 443})
    assert rejected(doc).field == "spec.ports[1].name"
    doc = service()
    doc["spec"]["ports"].append({"name": "again", "port": 80})
    assert rejected(doc).field == "spec.ports[1]"
    doc = service()
    doc["spec"]["ports"][0]["nodePort"] = 30080
    assert "ClusterIP" in rejected(doc).message
    doc = service()
    doc["spec"]["ports"][0]["targetPort"] = "not a port"
    assert rejected(doc).field == "spec.ports[0].targetPort"


def test_cluster_ip_service_needs_ports_and_external_name_needs_a_name():
    doc = service()
    del doc["spec"]["ports"]
    assert rejected(doc).field == "spec.ports"
    doc = service()
    doc["spec"] = {"type": "ExternalName"}
    assert rejected(doc).field == "spec.externalName"


def test_duplicate_and_incomplete_taints_are_rejected():
    doc = node()
    doc["spec"]["taints"].append({"key": "dedicated", "value": "cpu", "effect": "NoSchedule"})
    assert rejected(doc).field == "spec.taints[1]"
    doc = node()
    del doc["spec"]["taints"][0]["effect"]
    assert rejected(doc).field == "spec.taints[0].effect"


# --- the manifest envelope --------------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], "kind: Pod", 42])
def test_a_manifest_must_be_a_mapping(doc: object):
    error = rejected(doc)
    assert "must be a mapping" in error.message


def test_unknown_kind_lists_the_known_kinds():
    error = rejected({"apiVersion": "v1", "kind": "PersistentVolumeClaim"}, UnknownKind)
    assert error.field == "kind"
    assert (
        "ClusterRole, ClusterRoleBinding, ConfigMap, Deployment, DestinationRule, "
        "EndpointSlice, FlowSchema, Gateway, HorizontalPodAutoscaler, IPAddress, LimitRange, "
        "Namespace, Node, NodePortAllocation, PeerAuthentication, Pod, PodCIDR, "
        "PodDisruptionBudget, PriorityClass, "
        "PriorityLevelConfiguration, ReplicaSet, ResourceQuota, Role, RoleBinding, Secret, "
        "Service, ServiceEntry, User, VerticalPodAutoscaler, VirtualService" in error.message
    )
    error = rejected({"apiVersion": "v1", "kind": "pod"}, UnknownKind)
    assert 'did you mean "Pod"' in error.message


def test_wrong_api_version_says_which_is_expected():
    doc = deployment()
    doc["apiVersion"] = "extensions/v1beta1"
    error = rejected(doc)
    assert error.field == "apiVersion"
    assert '"apps/v1"' in error.message
    del doc["apiVersion"]
    assert rejected(doc).field == "apiVersion"


def test_missing_or_non_string_kind_is_rejected():
    assert rejected({"apiVersion": "v1"}).field == "kind"
    assert rejected({"apiVersion": "v1", "kind": ["Pod"]}).field == "kind"


def test_several_errors_are_all_reported_with_the_unknown_field_first():
    doc = pod()
    doc["spec"]["containers"][0]["image"] = 5
    doc["spec"]["restartPolicy"] = "Sometimes"
    doc["spec"]["bogus"] = True
    error = rejected(doc)
    assert [e.field for e in error.errors] == [
        "spec.bogus",
        "spec.containers[0].image",
        "spec.restartPolicy",
    ]
    assert (error.field, error.message) == ("spec.bogus", 'unknown field "bogus"')
    assert str(error).splitlines() == [
        "3 errors:",
        '  spec.bogus: unknown field "bogus"',
        "  spec.containers[0].image: Invalid value 5: must be a string",
        '  spec.restartPolicy: Unsupported value "Sometimes": supported values: "Always", '
        '"OnFailure", "Never"',
    ]


def test_error_serialises_for_the_gateway():
    error = rejected(edited(pod, lambda d: d["metadata"].__setitem__("name", "Bad")))
    assert error.as_dict()["code"] == "invalid"
    assert error.as_dict()["field"] == "metadata.name"
    assert str(error).endswith("(at metadata.name)")


def test_a_bad_name_is_listed_with_the_other_problems():
    doc = pod()
    doc["metadata"]["name"] = "Bad_Name"
    doc["spec"]["bogus"] = True
    doc["spec"]["restartPolicy"] = "Sometimes"
    error = rejected(doc)
    assert [e.field for e in error.errors] == ["spec.bogus", "metadata.name", "spec.restartPolicy"]


def test_a_namespace_on_a_cluster_scoped_kind_is_listed_with_the_other_problems():
    doc = node()
    doc["metadata"]["namespace"] = "default"
    doc["spec"]["bogus"] = True
    error = rejected(doc)
    assert [(e.field, e.message) for e in error.errors] == [
        ("spec.bogus", 'unknown field "bogus"'),
        ("metadata.namespace", "Forbidden: not allowed on this type: Node is cluster-scoped"),
    ]
