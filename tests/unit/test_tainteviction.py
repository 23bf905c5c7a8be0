"""NoExecute taint eviction decisions, with hand-computed deadlines."""

from __future__ import annotations

from datetime import UTC, datetime

from core.meta.taints import NO_EXECUTE, NodeTaint, PodToleration
from core.meta.timestamps import parse_stamp, stamp_of
from core.nodes.status import with_ready_condition
from core.nodes.taint_eviction import decide, noexecute_taints

S = 1_000_000_000
T0 = 1_700_000_000 * S  # when the taint was added
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


def taint(key: str = UNREACHABLE, value: str = "", added: int = T0) -> NodeTaint:
    return NodeTaint(key, value, NO_EXECUTE, added)


def toleration(**raw: object) -> PodToleration:
    return PodToleration.from_manifest(raw)


def test_no_noexecute_taints_never_evict() -> None:
    assert decide([], [], now_ns=T0).action == "never"


def test_an_untolerated_noexecute_taint_evicts_now_naming_the_taint() -> None:
    verdict = decide([taint()], [toleration(key=NOT_READY, operator="Exists")], now_ns=T0 + S)
    assert verdict.action == "now" and verdict.evict_at_ns == T0 + S
    assert verdict.reason == "evicted: node.kubernetes.io/unreachable:NoExecute not tolerated"


def test_a_taint_with_a_value_is_described_as_key_equals_value() -> None:
    verdict = decide([taint("dedicated", "gpu")], [], now_ns=T0)
    assert verdict.reason == "evicted: dedicated=gpu:NoExecute not tolerated"


def test_tolerated_for_300s_evicts_at_time_added_plus_300s() -> None:
    tol = toleration(key=UNREACHABLE, operator="Exists", effect="NoExecute", tolerationSeconds=300)
    verdict = decide([taint()], [tol], now_ns=T0 + 10 * S)
    assert verdict.action == "at" and verdict.evict_at_ns == T0 + 300 * S
    assert not verdict.due(T0 + 299 * S) and verdict.due(T0 + 300 * S)
    assert verdict.reason == (
        "evicted: node.kubernetes.io/unreachable:NoExecute tolerated for 300s, elapsed"
    )


def test_a_deadline_already_past_evicts_now_with_the_elapsed_reason() -> None:
    tol = toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=5)
    verdict = decide([taint()], [tol], now_ns=T0 + 6 * S)
    assert verdict.action == "now" and "tolerated for 5s, elapsed" in verdict.reason


def test_exists_without_seconds_tolerates_forever() -> None:
    assert decide(
        [taint(), taint(NOT_READY)], [toleration(operator="Exists")], now_ns=T0
    ).action == ("never")


def test_zero_or_negative_seconds_evict_now() -> None:
    for seconds in (0, -5):
        tol = toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=seconds)
        assert decide([taint()], [tol], now_ns=T0 - S).action == "now"


def test_the_minimum_over_the_taints_deadlines_wins() -> None:
    # not-ready added at T0 and tolerated 100 s -> T0+100; unreachable added at T0+50 and
    # tolerated 60 s -> T0+110: the pod goes at T0+100.
    tolerations = [
        toleration(key=NOT_READY, operator="Exists", tolerationSeconds=100),
        toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=60),
    ]
    taints = [taint(NOT_READY, added=T0), taint(UNREACHABLE, added=T0 + 50 * S)]
    verdict = decide(taints, tolerations, now_ns=T0)
    assert verdict.evict_at_ns == T0 + 100 * S and verdict.taint == f"{NOT_READY}:NoExecute"


def test_an_unbounded_toleration_on_one_taint_does_not_lift_the_bound_on_another() -> None:
    tolerations = [
        toleration(key=NOT_READY, operator="Exists"),
        toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=30),
    ]
    verdict = decide([taint(NOT_READY), taint(UNREACHABLE)], tolerations, now_ns=T0)
    assert verdict.evict_at_ns == T0 + 30 * S


def test_the_first_matching_toleration_counts_as_in_kubernetes() -> None:
    bounded = toleration(key=UNREACHABLE, operator="Exists", tolerationSeconds=60)
    forever = toleration(operator="Exists")
    assert decide([taint()], [bounded, forever], now_ns=T0).evict_at_ns == T0 + 60 * S
    assert decide([taint()], [forever, bounded], now_ns=T0).action == "never"


def test_a_noschedule_only_toleration_does_not_tolerate_noexecute() -> None:
    tol = toleration(key=UNREACHABLE, operator="Exists", effect="NoSchedule")
    assert decide([taint()], [tol], now_ns=T0).action == "now"


def test_equal_operator_compares_the_value() -> None:
    tol = toleration(key="dedicated", value="gpu", effect="NoExecute", tolerationSeconds=10)
    assert decide([taint("dedicated", "gpu")], [tol], now_ns=T0).evict_at_ns == T0 + 10 * S
    assert decide([taint("dedicated", "cpu")], [tol], now_ns=T0).action == "now"


def test_lifecycle_taints_carry_time_added_from_the_event_and_are_read_back() -> None:
    at = datetime(2026, 1, 31, 3, 12, 7, tzinfo=UTC)
    manifest = with_ready_condition(
        {"kind": "Node", "metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "custom", "effect": "NoExecute"},
            {"key": "soft", "effect": "NoSchedule"},
        ]}},
        status="Unknown", reason="NodeStatusUnknown", message="", stamp=stamp_of(at),
    )  # fmt: skip
    found = noexecute_taints(manifest, fallback_added_ns=42)
    added = int(at.timestamp()) * S
    assert found == (taint("custom", "", 42), taint(UNREACHABLE, "", added))
    assert parse_stamp("2026-01-31T03:12:07Z") == added
    assert parse_stamp("garbage") is None and parse_stamp(None) is None
