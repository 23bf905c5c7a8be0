"""The shared rules of core.meta: one reader of durations and instants, one meaning of a
label selector, one toleration test."""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from core.meta.durations import format_duration, is_duration, parse_duration
from core.meta.labels import EVERYTHING, NOTHING, Selector, parse_int64, selector_matches
from core.meta.taints import NodeTaint, PodToleration, node_taints, pod_tolerations
from core.meta.timestamps import format_stamp, parse_stamp
from core.meta.types import LabelSelector

SECOND = 1_764_126_720 * 1_000_000_000  # 2025-11-26T03:12:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45", 45.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1d2h", 93600.0),
        (" 10m ", 600.0),
    ],
)
def test_durations_read_go_units_days_and_bare_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10", "1x", "-5s", "1h 30m", "ten minutes"])
def test_is_duration_needs_units(text: str) -> None:
    assert not is_duration(text)


@pytest.mark.parametrize("text", ["", "m", "1x", "-5s", "1h 30m", "ten minutes"])
def test_a_bad_duration_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValidationFailed, match=r"is not a duration: use e\.g\. 30s"):
        parse_duration(text)


def test_durations_print_as_go_does() -> None:
    assert [format_duration(s) for s in (0, 0.05, 10, 80, 300, 3725.5)] == [
        "0s",
        "50ms",
        "10s",
        "1m20s",
        "5m0s",
        "1h2m5.5s",
    ]


def test_instants_are_read_exactly_and_naive_ones_as_utc() -> None:
    assert parse_stamp("2025-11-26T03:12:00Z") == SECOND
    assert parse_stamp("2025-11-26T03:12:00") == SECOND
    assert parse_stamp("2025-11-26T04:12:00.000000001+01:00") == SECOND + 1
    assert parse_stamp("2025-11-26T03:12:00.5Z") == SECOND + 500_000_000
    assert parse_stamp(format_stamp(SECOND + 700_000_000)) == SECOND
    for unreadable in (None, "", "garbage", 42, "2025-11-26T03:12:00.1234567891Z"):
        assert parse_stamp(unreadable) is None


def test_selectors_mean_one_thing_whichever_form_asks() -> None:
    raw = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    cases = [
        ({"app": "web", "tier": "front"}, True),
        ({"app": "web", "tier": "back"}, False),
        ({"app": "web", "tier": "edge", "canary": "yes"}, False),
        ({"tier": "front"}, False),
    ]
    schema = LabelSelector.model_validate(raw)
    for labels, expected in cases:
        assert Selector.from_manifest(raw).matches(labels) is expected
        assert selector_matches(raw, labels) is expected
        assert schema.matches(labels) is expected


def test_empty_and_missing_selectors() -> None:
    assert Selector.from_manifest({}).empty and Selector.from_manifest({}).matches({"a": "b"})
    assert Selector.from_manifest(None) is NOTHING and not NOTHING.matches({})
    assert EVERYTHING.matches({})
    # An owner's empty selector selects nothing (Kubernetes refuses one where it is required).
    assert not selector_matches({}, {"app": "web"})


def test_int64_as_go_reads_it() -> None:
    assert parse_int64("42") == 42 and parse_int64("-7") == -7 and parse_int64("+3") == 3
    assert (
        parse_int64(str(2**63)) is None and parse_int64("4.2") is None and parse_int64("") is None
    )


def test_tolerations_and_taints_from_manifests() -> None:
    node = {
        "spec": {
            "taints": [
                {"key": "gpu", "value": "a100", "effect": "NoSchedule"},
                {"key": "maint", "effect": "NoExecute", "timeAdded": "2025-11-26T03:12:00Z"},
            ]
        }
    }
    pod = {
        "spec": {
            "tolerations": [
                {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
                {"key": "maint", "operator": "Exists", "tolerationSeconds": 60},
            ]
        }
    }
    gpu, maint = node_taints(node)
    assert (gpu.describe(), gpu.added_ns) == ("gpu=a100:NoSchedule", None)
    assert (maint.describe(), maint.added_ns) == ("maint:NoExecute", SECOND)
    equal, exists = pod_tolerations(pod)
    assert equal.tolerates(gpu) and not equal.tolerates(maint)
    assert exists.tolerates(maint) and exists.seconds == 60
    assert not PodToleration("gpu", "Equal", "h100").tolerates(gpu)
    assert PodToleration().operator == "Equal" and NodeTaint("k", "", "NoExecute") == NodeTaint(
        "k", "", "NoExecute"
    )
