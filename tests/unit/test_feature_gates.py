"""Alpha behaviours sit behind Kubernetes' feature gates, off by default: the Gt/Lt toleration
operators (TaintTolerationComparisonOperators) are refused by the API and honoured by no matcher
unless the gate is on."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import parse_manifest
from core.errors import ValidationFailed
from core.meta.features import (
    DEFAULT_FEATURES,
    KNOWN_FEATURES,
    TAINT_TOLERATION_COMPARISON_OPERATORS,
    FeatureGates,
)
from core.meta.taints import NodeTaint, pod_tolerations
from core.nodes.taint_eviction import decide
from core.scheduling import NodeInfo, PodInfo, run_filters

ON = FeatureGates.parse("TaintTolerationComparisonOperators=true")


def pod(*tolerations: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "a", "image": "b"}], "tolerations": list(tolerations)},
    }


GT = {"key": "example.com/sla", "operator": "Gt", "value": "950", "effect": "NoSchedule"}


# --- the gates --------------------------------------------------------------------------------


def test_gates_default_as_in_kubernetes() -> None:
    feature = KNOWN_FEATURES[TAINT_TOLERATION_COMPARISON_OPERATORS]
    assert (feature.stage, feature.default) == ("ALPHA", False)
    assert not DEFAULT_FEATURES.taint_toleration_comparison_operators
    assert FeatureGates.parse("") == DEFAULT_FEATURES == FeatureGates.parse(None)


def test_gates_parse_from_the_command_line_and_print_back() -> None:
    assert ON.taint_toleration_comparison_operators
    assert str(ON) == "TaintTolerationComparisonOperators=true"
    off = FeatureGates.parse([" TaintTolerationComparisonOperators = false ", ""])
    assert not off.taint_toleration_comparison_operators
    assert FeatureGates.parse("TaintTolerationComparisonOperators=1") == ON


def test_every_bad_gate_is_reported_in_kubernetes_words() -> None:
    with pytest.raises(ValidationFailed) as info:
        FeatureGates.parse("Bogus=true,TaintTolerationComparisonOperators=maybe,Lonely")
    messages = [e.message for e in info.value.errors]
    assert messages == [
        "unrecognized feature gate: Bogus (known gates: TaintTolerationComparisonOperators "
        "(ALPHA, default false))",
        "invalid value of TaintTolerationComparisonOperators=maybe, err: strconv.ParseBool: "
        'parsing "maybe": invalid syntax',
        "missing bool value for Lonely",
    ]
    assert {e.field for e in info.value.errors} == {"--feature-gates"}
    assert str(info.value).startswith("3 errors:\n  --feature-gates: unrecognized feature gate")


def test_a_gate_fleetlog_does_not_know_cannot_be_set_in_code_either() -> None:
    with pytest.raises(ValueError, match="unrecognized feature gate: Nope"):
        FeatureGates({"Nope": True})


# --- the API ----------------------------------------------------------------------------------


def test_gt_and_lt_tolerations_are_refused_with_the_gate_off() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(pod(GT))
    assert (info.value.field, info.value.message) == (
        "spec.tolerations[0].operator",
        'Unsupported value "Gt": supported values: "Equal", "Exists"',
    )


def test_gt_and_lt_tolerations_are_accepted_with_the_gate_on() -> None:
    resource = parse_manifest(pod(GT, {**GT, "operator": "Lt", "value": "-5"}), features=ON)
    assert [t.operator for t in resource.spec.tolerations or ()] == ["Gt", "Lt"]


@pytest.mark.parametrize("value", ["0950", "+5", "-0", "9.5", "high", ""])
def test_with_the_gate_on_the_value_must_be_a_canonical_integer(value: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(pod({**GT, "value": value}), features=ON)
    assert info.value.field == "spec.tolerations[0].value"
    message = "must be non-empty" if not value else "must be a valid decimal integer"
    assert message in info.value.message


def test_other_operators_stay_unsupported_with_the_gate_on() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(pod({**GT, "operator": "Ge"}), features=ON)
    assert info.value.message == (
        'Unsupported value "Ge": supported values: "Equal", "Exists", "Gt", "Lt"'
    )


# --- the matchers -----------------------------------------------------------------------------

SLA = NodeTaint("example.com/sla", "990", "NoSchedule")


def test_a_stored_gt_toleration_tolerates_only_with_the_gate_on() -> None:
    manifest = pod(GT)
    (off,) = pod_tolerations(manifest)
    (on,) = pod_tolerations(manifest, features=ON)
    assert not off.tolerates(SLA)
    assert on.tolerates(SLA)


def test_the_scheduler_honours_gt_only_with_the_gate_on() -> None:
    node = NodeInfo.from_manifest(
        {
            "metadata": {"name": "n1", "labels": {}},
            "spec": {"taints": [{"key": SLA.key, "value": SLA.value, "effect": SLA.effect}]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }
    )
    refused = run_filters(PodInfo.from_manifest(pod(GT)), node)
    assert refused is not None and refused.plugin == "TaintToleration"
    assert run_filters(PodInfo.from_manifest(pod(GT), features=ON), node) is None


def test_taint_eviction_honours_gt_only_with_the_gate_on() -> None:
    taint = NodeTaint("example.com/sla", "990", "NoExecute", added_ns=0)
    manifest = pod({**GT, "effect": "NoExecute", "tolerationSeconds": 30})
    assert decide([taint], pod_tolerations(manifest), now_ns=0).action == "now"
    later = decide([taint], pod_tolerations(manifest, features=ON), now_ns=0)
    assert (later.action, later.evict_at_ns) == ("at", 30 * 1_000_000_000)
