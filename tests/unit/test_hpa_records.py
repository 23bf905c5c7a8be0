"""The HPA's records in the log: a ``ScaledTo`` that carries the autoscaler's why, and the
HPA's own status recorded through the ``status`` verb (issue 19)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.api.commands import parse_command
from core.api.events import payload_problem
from core.api.evolve import EVOLVE
from core.autoscaling.aggregate import HorizontalPodAutoscaler
from core.errors import InvalidTransition
from core.workloads.aggregate import Deployment
from tests.unit.support import recorded

AT = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "maxReplicas": 5,
    },
}
WHY = {"currentReplicas": 1, "desiredReplicas": 3, "recommendation": 3, "metrics": []}


def test_a_scale_carries_the_why_record_into_scaled_to_and_rebuilds() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u", at=AT
    )
    deployment.scale(replicas=3, reason="cpu above target", at=AT, why=WHY)
    history = recorded(deployment)
    assert history[-1].type == "ScaledTo"
    assert history[-1].payload["why"] == WHY
    assert payload_problem("ScaledTo", history[-1].payload) is None
    rebuilt = Deployment.from_history("Deployment/default/web", history)
    assert rebuilt is not None and rebuilt.replicas == 3


def test_a_scaled_to_without_why_stays_valid() -> None:
    assert payload_problem("ScaledTo", {"replicas": 2, "previous": 1, "reason": ""}) is None
    rebuilt = Deployment.from_history(
        "Deployment/default/web",
        recorded(
            Deployment.create(
                None, agg_id="Deployment/default/web", manifest={"spec": {}}, uid="u", at=AT
            )
        ),
    )
    assert rebuilt is not None
    rebuilt.scale(replicas=2, reason="by hand", at=AT)
    assert recorded(rebuilt)[-1].payload.get("why") is None


def test_the_scale_command_takes_an_optional_why() -> None:
    command = parse_command(
        "Deployment",
        "scale",
        {"v": 1, "id": "hpa-0000001", "actor": "system:horizontal-pod-autoscaler",
         "body": {"name": "web", "replicas": 3, "why": WHY}},
    )  # fmt: skip
    assert command.body.why == WHY  # type: ignore[attr-defined]


def test_an_hpa_records_its_status_once_and_the_read_model_folds_it_the_same() -> None:
    hpa = HorizontalPodAutoscaler.create(
        None, agg_id="HorizontalPodAutoscaler/default/web", manifest=HPA, uid="u", at=AT
    )
    status = {"currentReplicas": 1, "desiredReplicas": 3}
    hpa.update_status(status=status, annotations={}, at=AT)
    hpa.update_status(status=status, annotations={}, at=AT)  # the same again: nothing
    history = recorded(hpa)
    assert [e.type for e in history] == [
        "HorizontalPodAutoscalerCreated",
        "HorizontalPodAutoscalerStatusUpdated",
    ]
    assert hpa.manifest["status"] == status and hpa.manifest["spec"] == HPA["spec"]
    folded = EVOLVE["HorizontalPodAutoscalerStatusUpdated"](hpa, history[-1].payload, "")
    assert folded == hpa.manifest
    with pytest.raises(InvalidTransition):
        hpa.update_status(status=status, annotations={"a": "b"}, at=AT)


def test_a_manual_scale_is_stored_exactly_as_before_the_why_existed() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u", at=AT
    )
    deployment.scale(replicas=2, reason="by hand", at=AT)
    assert recorded(deployment)[-1].payload == {"replicas": 2, "previous": 1, "reason": "by hand"}


def test_an_hpas_no_change_status_carries_its_why_and_other_statuses_are_stored_as_before() -> None:
    hpa = HorizontalPodAutoscaler.create(
        None, agg_id="HorizontalPodAutoscaler/default/web", manifest=HPA, uid="u", at=AT
    )
    held = {**WHY, "desiredReplicas": 1, "conditions": {"ScalingLimited": "True/TooManyReplicas"}}
    hpa.update_status(status={"currentReplicas": 1}, annotations={}, at=AT, why=held)
    hpa.update_status(status={"currentReplicas": 2}, annotations={}, at=AT)
    first, second = recorded(hpa)[1:]
    assert first.payload["why"] == held
    assert payload_problem("HorizontalPodAutoscalerStatusUpdated", first.payload) is None
    assert second.payload == {"status": {"currentReplicas": 2}, "annotations": {}}
    command = parse_command(
        "HorizontalPodAutoscaler",
        "status",
        {"v": 1, "id": "hpa-0000002", "actor": "system:horizontal-pod-autoscaler",
         "body": {"name": "web", "status": {"currentReplicas": 1}, "why": held}},
    )  # fmt: skip
    assert command.body.why == held  # type: ignore[attr-defined]


def test_a_workloads_status_takes_no_why() -> None:
    deployment = Deployment.create(
        None, agg_id="Deployment/default/web", manifest={"spec": {"replicas": 1}}, uid="u", at=AT
    )
    with pytest.raises(InvalidTransition, match="only a horizontal pod autoscaler"):
        deployment.update_status(status={"replicas": 1}, annotations={}, at=AT, why=WHY)
