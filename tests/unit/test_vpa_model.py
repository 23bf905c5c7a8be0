"""The VerticalPodAutoscaler kind: accepted as the VPA's YAML, refused with the messages and
paths of the VPA admission controller's ``validation.go`` (issue 19)."""

from __future__ import annotations

from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.autoscaling.vertical_model import VerticalPodAutoscaler, effective_mode
from core.errors import ValidationFailed
from ops import render

NOW = 1_800_000_000 * 10**9


def vpa(**spec: Any) -> dict[str, Any]:
    body = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, **spec}
    return {"apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"}, "spec": body}  # fmt: skip


def refused(doc: dict[str, Any]) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_manifest(doc)
    return caught.value


def test_the_vpa_projects_yaml_is_stored_as_written() -> None:
    doc = vpa(
        updatePolicy={"updateMode": "Recreate", "minReplicas": 1},
        resourcePolicy={"containerPolicies": [{
            "containerName": "*", "mode": "Auto", "minAllowed": {"cpu": "50m"},
            "maxAllowed": {"cpu": "2", "memory": "1Gi"}, "controlledResources": ["cpu", "memory"],
            "controlledValues": "RequestsAndLimits"}]},
        recommenders=[{"name": "default"}],
    )  # fmt: skip
    parsed = parse_manifest(doc)
    assert isinstance(parsed, VerticalPodAutoscaler)
    stored = dump_manifest(parsed)
    assert stored["spec"]["resourcePolicy"]["containerPolicies"][0]["maxAllowed"] == {
        "cpu": "2", "memory": "1Gi"
    }  # fmt: skip
    assert parsed.spec.policy_for("app") is not None  # "*" applies to every container


def test_min_allowed_above_max_allowed_is_refused_with_its_path() -> None:
    error = refused(vpa(resourcePolicy={"containerPolicies": [
        {"containerName": "app", "minAllowed": {"cpu": "100"}, "maxAllowed": {"cpu": "10"}}]}))  # fmt: skip
    assert error.field == "spec.resourcePolicy.containerPolicies[0].maxAllowed.cpu"
    assert 'Invalid value "10": max resource for cpu is lower than min of "100"' in error.message


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"updatePolicy": {"updateMode": "Sometimes"}}, "spec.updatePolicy.updateMode",
         'Unsupported value "Sometimes"'),
        ({"updatePolicy": {}}, "spec.updatePolicy.updateMode",
         "updateMode is required if UpdatePolicy is used"),
        ({"updatePolicy": {"updateMode": "InPlace"}}, "spec.updatePolicy.updateMode",
         "you must enable feature gate InPlace"),
        ({"updatePolicy": {"updateMode": "Off", "minReplicas": 0}},
         "spec.updatePolicy.minReplicas", "minReplicas has to be positive"),
        ({"resourcePolicy": {"containerPolicies": [{"mode": "Auto"}]}},
         "spec.resourcePolicy.containerPolicies[0].containerName", "Required value"),
        ({"resourcePolicy": {"containerPolicies": [{"containerName": "a", "mode": "Sometimes"}]}},
         "spec.resourcePolicy.containerPolicies[0].mode", 'Unsupported value "Sometimes"'),
        ({"resourcePolicy": {"containerPolicies": [
            {"containerName": "a", "controlledResources": ["cpu", "gpu"]}]}},
         "spec.resourcePolicy.containerPolicies[0].controlledResources[1]",
         'Unsupported value "gpu"'),
        ({"resourcePolicy": {"containerPolicies": [
            {"containerName": "a", "mode": "Off", "controlledValues": "RequestsAndLimits"}]}},
         "spec.resourcePolicy.containerPolicies[0].controlledValues",
         "controlledValues shouldn't be specified if container scaling mode is off"),
        ({"resourcePolicy": {"containerPolicies": [
            {"containerName": "a", "controlledValues": "Limits"}]}},
         "spec.resourcePolicy.containerPolicies[0].controlledValues", 'Unsupported value "Limits"'),
        ({"recommenders": [{"name": "a"}, {"name": "b"}]}, "spec.recommenders",
         "must have at most 1 items"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused(spec: dict[str, Any], field: str, text: str) -> None:
    error = refused(vpa(**spec))
    assert error.field == field
    assert text in error.message


def test_a_vpa_needs_its_target() -> None:
    doc = vpa()
    del doc["spec"]["targetRef"]
    assert refused(doc).field == "spec.targetRef"


def test_auto_is_the_deprecated_name_of_recreate() -> None:
    assert effective_mode("Auto") == "Recreate"
    assert effective_mode(None) == "Recreate"
    assert effective_mode("Initial") == "Initial"
    parsed = parse_manifest(vpa(updatePolicy={"updateMode": "Auto"}))
    assert isinstance(parsed, VerticalPodAutoscaler)
    assert parsed.spec.mode() == "Recreate"


def test_a_named_container_policy_wins_over_the_default_one() -> None:
    parsed = parse_manifest(vpa(resourcePolicy={"containerPolicies": [
        {"containerName": "*", "mode": "Off"}, {"containerName": "app", "mode": "Auto"}]}))  # fmt: skip
    assert isinstance(parsed, VerticalPodAutoscaler)
    app, other = parsed.spec.policy_for("app"), parsed.spec.policy_for("sidecar")
    assert app is not None and app.mode == "Auto"
    assert other is not None and other.mode == "Off"


def test_get_vpa_prints_the_crds_columns() -> None:
    status = {
        "recommendation": {"containerRecommendations": [
            {"containerName": "app", "target": {"cpu": "587m", "memory": "262144k"}}]},
        "conditions": [{"type": "RecommendationProvided", "status": "True"}],
    }  # fmt: skip
    fresh = {"name": "new", "namespace": "default", "created_ns": NOW - 10 * 10**9,
             "manifest": vpa(updatePolicy={"updateMode": "Off"})}  # fmt: skip
    done = {"name": "web", "namespace": "default", "created_ns": NOW - 120 * 10**9,
            "manifest": {**vpa(updatePolicy={"updateMode": "Auto"}), "status": status}}  # fmt: skip
    text = render.object_table(
        "VerticalPodAutoscaler", [done, fresh], now_ns=NOW, wide=False, show_namespace=False
    )
    lines = [line.split() for line in text.splitlines()]
    assert lines[0] == ["NAME", "MODE", "CPU", "MEM", "PROVIDED", "AGE"]
    assert lines[1] == ["web", "Auto", "587m", "262144k", "True", "2m"]
    assert lines[2] == ["new", "Off", "10s"]
