"""Label keys and values are held to Kubernetes' rules wherever the API server holds them, with
its messages and (where it names one) its field paths: metadata, node selectors and node
affinity, taints and tolerations, topology keys, matchLabelKeys, label selectors, service
selectors, readiness and scheduling gates."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.api.manifests import parse_manifest
from core.errors import ValidationFailed
from core.meta.names import (
    dns1123_label_errors,
    label_value_errors,
    qualified_name_errors,
    regex_error,
)

KEY_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}], **spec},
    }


def problems(doc: dict[str, Any]) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(doc)
    return [(error.field, error.message) for error in info.value.errors]


# --- the rules themselves ---------------------------------------------------------------------


def test_messages_are_kubernetes_own_including_the_double_space_between_examples() -> None:
    assert (
        regex_error("x", "r", "a", "b") == "x (e.g. 'a',  or 'b', regex used for validation is 'r')"
    )
    assert qualified_name_errors("bad key") == [KEY_RULE]
    assert label_value_errors("has space") == [VALUE_RULE]
    assert label_value_errors("v" * 64) == ["must be no more than 63 bytes"]
    assert qualified_name_errors("example.com/" + "k" * 64) == [
        "name part must be no more than 63 bytes"
    ]
    assert qualified_name_errors("/app") == ["prefix part must be non-empty"]
    assert qualified_name_errors("") == ["name part must be non-empty", KEY_RULE]
    assert qualified_name_errors("a/b/c")[0].startswith("a valid label key must consist of")
    assert qualified_name_errors("Example.com/app")[0].startswith(
        "prefix part a lowercase RFC 1123 subdomain"
    )
    assert dns1123_label_errors("a.b") == ["must not contain dots"]
    assert label_value_errors("") == []
    assert qualified_name_errors("app.kubernetes.io/name") == []


# --- metadata ---------------------------------------------------------------------------------


def test_every_bad_label_of_an_object_is_reported_key_and_value() -> None:
    doc = pod()
    doc["metadata"]["labels"] = {"bad key": "ok", "tier": "has space", "fine": "yes"}
    assert problems(doc) == [
        ('metadata.labels["bad key"]', f'Invalid value "bad key": {KEY_RULE}'),
        ("metadata.labels.tier", f'Invalid value "has space": {VALUE_RULE}'),
    ]


@pytest.mark.parametrize(
    "doc",
    [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]},
        },
    ],
    ids=["Node", "Namespace", "Service"],
)
def test_labels_of_every_kind_are_label_keys_and_values(doc: dict[str, Any]) -> None:
    good = copy.deepcopy(doc)
    good["metadata"]["labels"] = {"topology.kubernetes.io/zone": "eu-1a", "empty": ""}
    parse_manifest(good)
    bad = copy.deepcopy(doc)
    bad["metadata"]["labels"] = {"zone": "-eu"}
    assert problems(bad) == [("metadata.labels.zone", f'Invalid value "-eu": {VALUE_RULE}')]


# --- nodeSelector and node affinity -----------------------------------------------------------


def test_node_selector_keys_and_values_are_labels() -> None:
    parse_manifest(pod(nodeSelector={"disktype": "ssd", "kubernetes.io/hostname": "n-1"}))
    assert problems(pod(nodeSelector={"disk type": "fast ssd"})) == [
        ('spec.nodeSelector["disk type"]', f'Invalid value "disk type": {KEY_RULE}'),
        ('spec.nodeSelector["disk type"]', f'Invalid value "fast ssd": {VALUE_RULE}'),
    ]


REQUIRED = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"


def node_affinity(*, required: list[dict] | None = None, preferred: list[dict] | None = None):
    affinity: dict[str, Any] = {}
    if required is not None:
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": required}]
        }
    if preferred is not None:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": 10, "preference": {"matchExpressions": preferred}}
        ]
    return pod(affinity={"nodeAffinity": affinity})


@pytest.mark.parametrize("operator", ["In", "NotIn"])
def test_required_node_affinity_values_are_label_values(operator: str) -> None:
    parse_manifest(node_affinity(required=[{"key": "zone", "operator": operator, "values": ["a"]}]))
    bad = [{"key": "zone", "operator": operator, "values": ["ok", "not ok"]}]
    assert problems(node_affinity(required=bad)) == [
        (
            f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].values[1]",
            f'Invalid value "not ok": {VALUE_RULE}',
        )
    ]


def test_preferred_node_affinity_values_may_be_anything_as_in_kubernetes() -> None:
    parse_manifest(node_affinity(preferred=[{"key": "zone", "operator": "In", "values": ["x y"]}]))


def test_node_affinity_keys_are_label_keys_required_or_preferred() -> None:
    bad = [{"key": "bad key", "operator": "Exists"}]
    assert problems(node_affinity(required=bad)) == [
        (
            f"{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].key",
            f'Invalid value "bad key": {KEY_RULE}',
        )
    ]
    assert problems(node_affinity(preferred=bad)) == [
        (
            f"{PREFERRED}[0].preference.matchExpressions[0].key",
            f'Invalid value "bad key": {KEY_RULE}',
        )
    ]


def test_match_fields_name_metadata_name_and_node_names() -> None:
    def term(req: dict) -> dict:
        return pod(
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchFields": [req]}]
                    }
                }
            }
        )

    parse_manifest(term({"key": "metadata.name", "operator": "In", "values": ["node-1"]}))
    path = f"{REQUIRED}.nodeSelectorTerms[0].matchFields[0]"
    assert problems(term({"key": "metadata.labels", "operator": "In", "values": ["a"]})) == [
        (f"{path}.key", 'Invalid value "metadata.labels": not a valid field selector key')
    ]
    assert problems(term({"key": "metadata.name", "operator": "In", "values": ["Node_1"]}))[0][
        0
    ] == (f"{path}.values[0]")


def test_preferred_weight_is_one_to_a_hundred_in_kubernetes_words() -> None:
    doc = node_affinity(preferred=[{"key": "zone", "operator": "Exists"}])
    doc["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
        "weight"
    ] = 101
    assert problems(doc) == [
        (f"{PREFERRED}[0].weight", "Invalid value 101: must be in the range 1-100")
    ]


# --- taints and tolerations -------------------------------------------------------------------


def node(taints: list[dict]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": taints},
    }


def test_taint_keys_and_values_are_labels_the_value_problems_joined_by_semicolons() -> None:
    parse_manifest(node([{"key": "example.com/gpu", "value": "a100", "effect": "NoSchedule"}]))
    bad = node([{"key": "bad key", "value": "-" + "v" * 63, "effect": "NoSchedule"}])
    assert problems(bad) == [
        ("spec.taints[0].key", f'Invalid value "bad key": {KEY_RULE}'),
        (
            "spec.taints[0].value",
            'Invalid value "-' + "v" * 63 + '": must be no more than 63 bytes;' + VALUE_RULE,
        ),
    ]


def test_duplicate_taints_are_refused_with_kubernetes_detail() -> None:
    taint = {"key": "k", "effect": "NoSchedule"}
    assert problems(node([taint, taint])) == [
        (
            "spec.taints[1]",
            'Duplicate value "k:NoSchedule": taints must be unique by key and effect pair',
        )
    ]


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        (
            {"key": "bad key", "operator": "Exists"},
            [("spec.tolerations[0].key", f'Invalid value "bad key": {KEY_RULE}')],
        ),
        (
            {"key": "dedicated", "value": "not ok"},
            [("spec.tolerations[0].operator", f'Invalid value "not ok": {VALUE_RULE}')],
        ),
        (
            {"key": "dedicated", "operator": "Exists", "value": "x"},
            [
                (
                    "spec.tolerations[0].operator",
                    "Invalid value \"x\": value must be empty when `operator` is 'Exists'",
                )
            ],
        ),
        (
            {"key": "a", "effect": "Sometimes"},
            [
                (
                    "spec.tolerations[0].effect",
                    'Unsupported value "Sometimes": supported values: "NoSchedule", '
                    '"PreferNoSchedule", "NoExecute"',
                )
            ],
        ),
    ],
)
def test_tolerations_are_checked_as_kubernetes_checks_them(
    toleration: dict, expected: list
) -> None:
    assert problems(pod(tolerations=[toleration])) == expected


def test_valid_tolerations_are_accepted() -> None:
    parse_manifest(
        pod(
            tolerations=[
                {"key": "example.com/gpu", "operator": "Equal", "value": "a100"},
                {"key": "dedicated", "operator": "", "value": "db"},
                {"operator": "Exists"},
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ]
        )
    )


# --- topology spread --------------------------------------------------------------------------

SPREAD = "spec.topologySpreadConstraints[0]"


def spread(**extra: Any) -> dict[str, Any]:
    constraint = {
        "maxSkew": 1,
        "topologyKey": "zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}},
        **extra,
    }
    return pod(topologySpreadConstraints=[constraint])


def test_spread_match_label_keys_are_label_keys_not_in_the_selector() -> None:
    parse_manifest(spread(matchLabelKeys=["pod-template-hash"]))
    assert problems(spread(matchLabelKeys=["bad key", "app"])) == [
        (f"{SPREAD}.matchLabelKeys[0]", f'Invalid value "bad key": {KEY_RULE}'),
        (
            f"{SPREAD}.matchLabelKeys[1]",
            'Invalid value "app": exists in both matchLabelKeys and labelSelector',
        ),
    ]
    assert problems(spread(labelSelector=None, matchLabelKeys=["a"])) == [
        (
            f"{SPREAD}.matchLabelKeys",
            "Forbidden: must not be specified when labelSelector is not set",
        )
    ]


def test_spread_topology_key_must_be_given_and_is_otherwise_free_as_in_kubernetes() -> None:
    assert problems(spread(topologyKey="")) == [
        (f"{SPREAD}.topologyKey", "Required value: can not be empty")
    ]
    parse_manifest(spread(topologyKey="not a label key"))


def test_spread_selector_values_are_label_values() -> None:
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}
    assert problems(spread(labelSelector=selector)) == [
        (
            f"{SPREAD}.labelSelector.matchExpressions[0].values[0]",
            f'Invalid value "a b": {VALUE_RULE}',
        )
    ]


# --- pod (anti-)affinity ----------------------------------------------------------------------

TERM = "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"


def anti_affinity(**term: Any) -> dict[str, Any]:
    full = {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"app": "web"}},
    }
    full.update(term)
    full = {k: v for k, v in full.items() if v is not None}
    return pod(
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [full]}}
    )


def test_affinity_topology_key_is_a_label_key() -> None:
    assert problems(anti_affinity(topologyKey="bad key")) == [
        (f"{TERM}.topologyKey", f'Invalid value "bad key": {KEY_RULE}')
    ]
    assert problems(anti_affinity(topologyKey=None)) == [
        (f"{TERM}.topologyKey", "Required value: can not be empty"),
        (f"{TERM}.topologyKey", 'Invalid value "": name part must be non-empty'),
        (f"{TERM}.topologyKey", f'Invalid value "": {KEY_RULE}'),
    ]


def test_affinity_match_and_mismatch_label_keys() -> None:
    parse_manifest(
        anti_affinity(matchLabelKeys=["pod-template-hash"], mismatchLabelKeys=["tenant"])
    )
    assert problems(anti_affinity(matchLabelKeys=["bad key"], mismatchLabelKeys=["-x"])) == [
        (f"{TERM}.matchLabelKeys[0]", f'Invalid value "bad key": {KEY_RULE}'),
        (f"{TERM}.mismatchLabelKeys[0]", f'Invalid value "-x": {KEY_RULE}'),
    ]
    assert problems(
        anti_affinity(matchLabelKeys=["app", "tenant"], mismatchLabelKeys=["tenant"])
    ) == [
        (
            f"{TERM}.matchLabelKeys[0]",
            'Invalid value "app": exists in both matchLabelKeys and labelSelector',
        ),
        (
            f"{TERM}.matchLabelKeys[1]",
            'Invalid value "tenant": exists in both matchLabelKeys and mismatchLabelKeys',
        ),
    ]
    assert problems(anti_affinity(labelSelector=None, mismatchLabelKeys=["tenant"])) == [
        (
            f"{TERM}.mismatchLabelKeys",
            "Forbidden: must not be specified when labelSelector is not set",
        )
    ]


def test_affinity_selectors_and_namespaces() -> None:
    namespace_selector = {"matchLabels": {"team": "a b"}}
    assert problems(anti_affinity(namespaceSelector=namespace_selector)) == [
        (f"{TERM}.namespaceSelector.matchLabels.team", f'Invalid value "a b": {VALUE_RULE}')
    ]
    assert problems(anti_affinity(namespaces=["team.a"])) == [
        (f"{TERM}.namespaces[0]", 'Invalid value "team.a": must not contain dots')
    ]
    parse_manifest(anti_affinity(namespaces=["team-a"], namespaceSelector={"matchLabels": {}}))


# --- selectors of other kinds -----------------------------------------------------------------


def test_deployment_selector_keys_and_values() -> None:
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "bad key", "operator": "In", "values": ["x y"]}],
            },
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"]},
        },
    }
    assert problems(doc) == [
        ("spec.selector.matchExpressions[0].key", f'Invalid value "bad key": {KEY_RULE}'),
        ("spec.selector.matchExpressions[0].values[0]", f'Invalid value "x y": {VALUE_RULE}'),
    ]


def test_service_selector_keys_and_values() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "has space"}, "ports": [{"port": 80}]},
    }
    assert problems(doc) == [("spec.selector.app", f'Invalid value "has space": {VALUE_RULE}')]


def test_readiness_and_scheduling_gates_are_qualified_names() -> None:
    parse_manifest(
        pod(
            readinessGates=[{"conditionType": "example.com/ready"}],
            schedulingGates=[{"name": "example.com/quota"}],
        )
    )
    assert problems(pod(readinessGates=[{"conditionType": "not ready"}])) == [
        ("spec.readinessGates[0].conditionType", 'Invalid value "not ready": ' + KEY_RULE)
    ]
    assert problems(pod(schedulingGates=[{"name": "a"}, {"name": "a"}])) == [
        ("spec.schedulingGates[1]", 'Duplicate value "a"')
    ]
