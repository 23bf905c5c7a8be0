"""The Priority admission plugin: class name -> spec.priority and spec.preemptionPolicy."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import parse_manifest
from core.errors import ValidationFailed
from core.policy.admission import check_single_global_default, resolve_priority
from core.policy.priorityclass import PriorityClass

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {"containers": []},
}


def pod(**spec: Any) -> dict[str, Any]:
    return {**POD, "spec": {**POD["spec"], **spec}}


def pc(name: str, value: int, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
        **fields,
    }


CLASSES = {
    "high": pc("high", 1000),
    "polite": pc("polite", 500, preemptionPolicy="Never"),
}


def test_named_class_sets_priority_and_policy():
    out = resolve_priority(pod(priorityClassName="high"), CLASSES)
    assert out["spec"] == {
        "containers": [],
        "priorityClassName": "high",
        "priority": 1000,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    polite = resolve_priority(pod(priorityClassName="polite"), CLASSES)["spec"]
    assert (polite["priority"], polite["preemptionPolicy"]) == (500, "Never")


def test_classes_may_be_models_or_manifests():
    model = parse_manifest(pc("high", 1000))
    assert isinstance(model, PriorityClass)
    out = resolve_priority(pod(priorityClassName="high"), {"high": model})
    assert out["spec"]["priority"] == 1000


def test_unknown_class_is_refused_by_name():
    with pytest.raises(ValidationFailed) as info:
        resolve_priority(pod(priorityClassName="gold"), CLASSES)
    assert info.value.message == 'no PriorityClass with name "gold" was found'
    assert info.value.field == "spec.priorityClassName"


def test_built_in_system_classes_need_no_object():
    out = resolve_priority(pod(priorityClassName="system-node-critical"), {})
    assert out["spec"]["priority"] == 2_000_001_000
    out = resolve_priority(pod(priorityClassName="system-cluster-critical"), {})
    assert out["spec"]["priority"] == 2_000_000_000


def test_no_class_and_no_default_gives_zero():
    out = resolve_priority(pod(), CLASSES)
    assert out["spec"] == {
        "containers": [],
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }


def test_no_class_takes_the_global_default_with_its_name():
    classes = {**CLASSES, "normal": pc("normal", 10, globalDefault=True)}
    out = resolve_priority(pod(), classes)
    assert out["spec"]["priorityClassName"] == "normal"
    assert out["spec"]["priority"] == 10
    # two defaults (a race in Kubernetes): the lowest value wins
    classes["low"] = pc("low", 5, globalDefault=True, preemptionPolicy="Never")
    spec = resolve_priority(pod(), classes)["spec"]
    assert (spec["priorityClassName"], spec["priority"], spec["preemptionPolicy"]) == (
        "low",
        5,
        "Never",
    )


def test_stated_priority_must_agree_with_the_class():
    with pytest.raises(ValidationFailed) as info:
        resolve_priority(pod(priorityClassName="high", priority=7), CLASSES)
    assert info.value.field == "spec.priority"
    assert info.value.message == (
        "the integer value of priority (7) must not be provided in pod spec; priority admission "
        "controller computed 1000 from the given PriorityClass name"
    )
    with pytest.raises(ValidationFailed):
        resolve_priority(pod(priority=7), CLASSES)  # computed 0
    same = pod(priorityClassName="high", priority=1000)
    assert resolve_priority(same, CLASSES)["spec"]["priority"] == 1000


def test_stated_policy_must_agree_with_the_class():
    with pytest.raises(ValidationFailed) as info:
        resolve_priority(pod(priorityClassName="high", preemptionPolicy="Never"), CLASSES)
    assert info.value.field == "spec.preemptionPolicy"
    assert "computed PreemptLowerPriority" in info.value.message


def test_resolving_is_idempotent_pure_and_leaves_other_kinds_alone():
    original = pod(priorityClassName="high")
    snapshot = {**original, "spec": dict(original["spec"])}
    once = resolve_priority(original, CLASSES)
    assert original == snapshot  # not mutated
    assert resolve_priority(once, CLASSES) is once
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    assert resolve_priority(service, CLASSES) is service


def test_resolved_pod_is_still_a_valid_pod():
    manifest = pod(containers=[{"name": "c", "image": "nginx"}], priorityClassName="high")
    resolved = resolve_priority(manifest, CLASSES)
    parsed = parse_manifest(resolved)
    assert parsed.spec.priority == 1000  # type: ignore[union-attr]


def test_only_one_global_default_class():
    existing = {"normal": pc("normal", 10, globalDefault=True)}
    with pytest.raises(ValidationFailed) as info:
        check_single_global_default(pc("other", 20, globalDefault=True), existing)
    assert info.value.message == (
        "PriorityClass normal is marked as default. Only one default can exist"
    )
    # re-applying the default itself, or a non-default class, is fine
    again = pc("normal", 10, globalDefault=True)
    assert check_single_global_default(again, existing) is again
    plain = pc("other", 20)
    assert check_single_global_default(plain, existing) is plain
    assert check_single_global_default(pc("x", 1, globalDefault=True), {}) is not None
