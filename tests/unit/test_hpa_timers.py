"""When the HPA controller looks again by itself: only when a window or a policy held the
decision back, at the instant the oldest thing that held it ages out (no fixed poll)."""

from __future__ import annotations

from core.autoscaling.behavior import History, Recommendation
from core.autoscaling.horizontal import ControllerOptions, Readings, ScaleView, evaluate
from core.autoscaling.replicas import ContainerRequests, PodInfo, Sample
from handlers.autoscaler.horizontal import recheck_at
from tests.unit.test_hpa_evaluate import make_hpa

NOW = 1_800_000_000.0


def readings(levels: list[int]) -> Readings:
    pods = tuple(
        PodInfo(f"web-{i}", ready="True", ready_since=NOW - 900, start_time=NOW - 1000,
                containers=(ContainerRequests("app", {"cpu": 1000}),))
        for i in range(len(levels))
    )  # fmt: skip
    samples = {f"web-{i}": Sample(v, NOW, 30) for i, v in enumerate(levels)}
    return Readings(pods=pods, resources={("cpu", ""): samples})


HPA = make_hpa({
    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                 "target": {"type": "Utilization", "averageUtilization": 50}}}],
    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
})  # fmt: skip


def test_a_scale_down_held_by_the_window_is_looked_at_when_the_high_recommendation_ages_out() -> (
    None
):
    history = History(recommendations=(Recommendation(4, NOW - 20),))
    decision = evaluate(
        HPA, scale=ScaleView(4, 4, "app=web"), readings=readings([100, 100, 100, 100]),
        history=history, now=NOW,
    )  # fmt: skip
    assert decision.desired_replicas == 4 and decision.why["recommendation"] == 1
    assert recheck_at(decision, HPA, ControllerOptions(), NOW) == NOW - 20 + 60


def test_a_decision_nothing_held_asks_for_no_timer() -> None:
    decision = evaluate(
        HPA, scale=ScaleView(2, 2, "app=web"), readings=readings([1000, 1000]),
        history=History(), now=NOW,
    )  # fmt: skip
    assert decision.rescale and decision.why["recommendation"] == decision.desired_replicas
    assert recheck_at(decision, HPA, ControllerOptions(), NOW) is None
