"""PriorityClass (scheduling.k8s.io/v1): Kubernetes' manifests load, its rules reject the rest."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from core.api.catalog import KINDS
from core.api.manifests import dump_manifest, parse_manifest, resource_key
from core.errors import InvalidTransition, ValidationFailed
from core.policy.priorityclass import (
    SYSTEM_PRIORITY_CLASSES,
    PriorityClass,
    check_priority_class_update,
)

# From the Kubernetes documentation (Pod Priority and Preemption).
HIGH_PRIORITY = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high-priority
value: 1000000
globalDefault: false
description: "This priority class should be used for XYZ service pods only."
"""

NON_PREEMPTING = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high-priority-nonpreempting
value: 1000000
preemptionPolicy: Never
globalDefault: false
description: "This priority class will not cause other pods to be preempted."
"""


def doc(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "batch"},
        "value": 100,
    }
    out.update(fields)
    return out


def rejection(manifest: dict[str, Any]) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_manifest(manifest)
    return info.value


def test_documented_manifests_load_with_defaults():
    high = parse_manifest(yaml.safe_load(HIGH_PRIORITY))
    assert isinstance(high, PriorityClass)
    assert (high.value, high.global_default, high.preemption_policy) == (
        1_000_000,
        False,
        "PreemptLowerPriority",
    )
    never = parse_manifest(yaml.safe_load(NON_PREEMPTING))
    assert isinstance(never, PriorityClass)
    assert never.preemption_policy == "Never"


def test_defaults_and_round_trip():
    pc = parse_manifest(doc())
    dumped = dump_manifest(pc)
    assert dumped == {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "batch"},
        "value": 100,
        "globalDefault": False,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    assert parse_manifest(dumped) == pc


def test_kind_is_registered_cluster_scoped():
    assert KINDS["PriorityClass"] == ("scheduling.k8s.io/v1", PriorityClass, False)
    assert resource_key(parse_manifest(doc())) == ("PriorityClass", "", "batch")
    err = rejection(doc(metadata={"name": "batch", "namespace": "default"}))
    assert err.field == "metadata.namespace"


def test_value_is_required_and_an_int32():
    manifest = doc()
    del manifest["value"]
    assert rejection(manifest).field == "value"
    assert rejection(doc(value="100")).field == "value"  # no coercion
    assert rejection(doc(value=True)).field == "value"
    assert rejection(doc(value=2**31)).field == "value"
    assert parse_manifest(doc(value=-(2**31))).value == -(2**31)  # type: ignore[union-attr]


def test_user_values_stop_at_one_billion():
    assert parse_manifest(doc(value=1_000_000_000)).value == 1_000_000_000  # type: ignore[union-attr]
    err = rejection(doc(value=1_000_000_001))
    assert err.field == "value"
    assert err.message == (
        "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    )


def test_unknown_fields_and_policies_are_rejected():
    err = rejection(doc(spec={"value": 1}))
    assert (err.field, err.message) == ("spec", 'unknown field "spec"')
    err = rejection(doc(preemptionPolicy="Sometimes"))
    assert err.field == "preemptionPolicy"
    assert rejection(doc(globalDefault="yes")).field == "globalDefault"


def test_system_prefix_is_reserved_for_the_built_in_classes():
    err = rejection(doc(metadata={"name": "system-mine"}))
    assert err.field == "metadata.name"
    assert err.message == (
        "Forbidden: priority class names with 'system-' prefix are reserved for system use "
        "only. error: system-mine is not a known system priority class"
    )
    err = rejection(doc(metadata={"name": "system-node-critical"}, value=5))
    assert err.message.endswith("value of system-node-critical PriorityClass must be 2000001000")
    err = rejection(
        doc(metadata={"name": "system-cluster-critical"}, value=2_000_000_000, globalDefault=True)
    )
    assert err.message.endswith(
        "globalDefault of system-cluster-critical PriorityClass must be false"
    )
    # stating a built-in class exactly is allowed (the API server creates them that way)
    exact = parse_manifest(doc(metadata={"name": "system-cluster-critical"}, value=2_000_000_000))
    assert exact.value == 2_000_000_000  # type: ignore[union-attr]


def test_built_in_classes():
    assert {name: pc.value for name, pc in SYSTEM_PRIORITY_CLASSES.items()} == {
        "system-cluster-critical": 2_000_000_000,
        "system-node-critical": 2_000_001_000,
    }
    for pc in SYSTEM_PRIORITY_CLASSES.values():
        assert not pc.global_default and pc.preemption_policy == "PreemptLowerPriority"
        assert parse_manifest(dump_manifest(pc)) == pc


def test_value_and_preemption_policy_are_immutable():
    check_priority_class_update(["description", "globalDefault", "metadata.labels.team"])
    with pytest.raises(InvalidTransition) as info:
        check_priority_class_update(["description", "value"])
    assert info.value.field == "value"
    with pytest.raises(InvalidTransition) as info:
        check_priority_class_update(["preemptionPolicy"])
    assert (info.value.field, info.value.message) == ("preemptionPolicy", "field is immutable")
