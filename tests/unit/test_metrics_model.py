"""The metrics read model's workload-published series (``projections.metrics``), fed by hand:
the latest per series, selectors over labels, staleness, the series cap, a deleted pod's series
forgotten, listeners. No server: the model's folding is plain Python."""

from __future__ import annotations

from typing import Any

import pytest

from core.meta.labels import Selector
from projections import metrics as model
from projections.metrics import STALE_AFTER_S, PodMetrics
from streams.telemetry import MetricSample

NOW = 1_800_000_000 * 10**9
S = 10**9


def sample(value: int, *, at: int = NOW, labels: dict[str, str] | None = None,
           source: Any = "external", name: str = "", kind: str = "") -> MetricSample:  # fmt: skip
    return MetricSample(
        source=source, namespace="ns", kind=kind, name=name, metric="q", milli_value=value,
        labels=tuple(sorted((labels or {}).items())), at_ns=at,
    )  # fmt: skip


EXTERNAL = ("external", "ns", "", "", "q")


def test_the_latest_sample_of_each_series_is_kept_and_an_older_one_ignored() -> None:
    metrics = PodMetrics(None)  # type: ignore[arg-type]
    heard: list[int] = []
    metrics.metric_listeners.append(lambda s: heard.append(s.milli_value))
    assert metrics.take_metric(sample(1, at=NOW, labels={"queue": "a"}))
    assert metrics.take_metric(sample(2, at=NOW, labels={"queue": "b"}))
    assert metrics.take_metric(sample(3, at=NOW + S, labels={"queue": "a"}))
    assert not metrics.take_metric(sample(9, at=NOW - S, labels={"queue": "a"}))
    got = metrics.series(EXTERNAL, selector=Selector(), now_ns=NOW + S)
    assert sorted(s.milli_value for s in got) == [2, 3]
    assert heard == [1, 2, 3]


def test_a_metric_selector_picks_series_by_labels_and_stale_series_do_not_count() -> None:
    metrics = PodMetrics(None)  # type: ignore[arg-type]
    metrics.take_metric(sample(1, labels={"queue": "jobs"}))
    metrics.take_metric(sample(2, labels={"queue": "mail"}))
    metrics.take_metric(sample(4, labels={"queue": "jobs", "shard": "2"}, at=NOW - 400 * S))
    jobs = Selector.from_manifest({"matchLabels": {"queue": "jobs"}})
    assert [s.milli_value for s in metrics.series(EXTERNAL, selector=jobs, now_ns=NOW)] == [1]
    later = NOW + int(STALE_AFTER_S * S) + S
    assert metrics.series(EXTERNAL, selector=Selector(), now_ns=later) == []


def test_a_deleted_pods_series_are_forgotten() -> None:
    metrics = PodMetrics(None)  # type: ignore[arg-type]
    metrics.take_metric(sample(5, source="pods", kind="Pod", name="web-1"))
    described = ("pods", "ns", "Pod", "web-1", "q")
    assert metrics.series(described, selector=Selector(), now_ns=NOW)
    metrics.forget("ns", "web-1")
    assert metrics.series(described, selector=Selector(), now_ns=NOW) == []


def test_beyond_the_series_cap_stale_series_make_room_then_new_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model, "MAX_SERIES", 2)
    metrics = PodMetrics(None)  # type: ignore[arg-type]
    assert metrics.take_metric(sample(1, labels={"k": "old"}, at=NOW - 600 * S), now_ns=NOW)
    assert metrics.take_metric(sample(2, labels={"k": "b"}), now_ns=NOW)
    assert metrics.take_metric(sample(3, labels={"k": "c"}), now_ns=NOW)  # the stale one went
    assert not metrics.take_metric(sample(4, labels={"k": "d"}), now_ns=NOW + 2 * S)
    assert metrics.refused == 1
    assert metrics.take_metric(sample(5, labels={"k": "b"}, at=NOW + S), now_ns=NOW + 3 * S)
