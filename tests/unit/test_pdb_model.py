"""PodDisruptionBudget validation: ``ValidatePodDisruptionBudgetSpec``'s refusals at kube's
paths, every problem at once, and a budget naming neither bound refused (as kubectl does)."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import parse_manifest
from core.errors import ValidationFailed


def pdb(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"}, "spec": spec}  # fmt: skip


def problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as refused:
        parse_manifest(pdb(spec))
    return [str(e) for e in refused.value.errors]


def test_a_budget_is_stored_with_its_bounds_and_selector() -> None:
    parsed = parse_manifest(pdb({"minAvailable": "50%", "selector": {"matchLabels": {"a": "b"}}}))
    assert parsed.kind == "PodDisruptionBudget"
    assert parsed.spec.min_available == "50%"


def test_both_bounds_are_refused() -> None:
    assert problems({"minAvailable": 1, "maxUnavailable": 1}) == [
        'spec: Invalid value: {"minAvailable": 1, "maxUnavailable": 1}: minAvailable and '
        "maxUnavailable cannot be both set"
    ]


def test_neither_bound_is_refused() -> None:
    assert problems({"selector": {"matchLabels": {"a": "b"}}}) == [
        "spec: Required value: one of minAvailable or maxUnavailable must be set"
    ]


def test_bounds_must_be_non_negative_and_at_most_100_percent() -> None:
    assert problems({"maxUnavailable": -1}) == [
        "spec.maxUnavailable: Invalid value -1: must be greater than or equal to 0"
    ]
    assert problems({"minAvailable": "101%"}) == [
        'spec.minAvailable: Invalid value "101%": must not be greater than 100%'
    ]
    assert problems({"minAvailable": "half"})[0].startswith(
        'spec.minAvailable: Invalid value "half": a valid percent string'
    )


def test_unknown_unhealthy_pod_eviction_policy_is_refused() -> None:
    assert problems({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"}) == [
        'spec.unhealthyPodEvictionPolicy: Unsupported value "Never": supported values: '
        '"AlwaysAllow", "IfHealthyBudget"'
    ]


def test_a_bad_selector_is_refused_at_its_path() -> None:
    [problem] = problems({"minAvailable": 1, "selector": {"matchExpressions": [
        {"key": "a", "operator": "In"}]}})  # fmt: skip
    assert problem.startswith("spec.selector.matchExpressions[0]")
