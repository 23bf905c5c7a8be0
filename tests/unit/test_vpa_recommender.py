"""The VPA recommender's maths and the updater's choice, rule by rule. Expectations are written
from the Go rules (``pkg/recommender/util``, ``model``, ``logic``, ``pkg/utils/vpa/capping.go``,
``pkg/updater/priority``), each as the formula it comes from, not from this implementation."""

from __future__ import annotations

import math

import pytest

from core.autoscaling.vertical import (
    CPU_BUCKETS,
    MEMORY_BUCKETS,
    Aggregate,
    ContainerRecommendation,
    ContainerState,
    DecayingHistogram,
    Policy,
    RateLimit,
    Replicas,
    apply_to_container,
    boundary_request,
    cap,
    cap_to_limit_range,
    changed_meaningfully,
    confidence,
    estimate,
    may_evict,
    quick_oom,
    recommend,
    should_update,
    update_priority,
)

DAY = 86400.0
MI = 1024 * 1024
T0 = 1_800_000_000.0


def bucket_end(first: float, value: float) -> float:
    """The end of the bucket holding ``value`` in a 5 %-growth exponential histogram."""
    n = int(math.log(value * 0.05 / first + 1) / math.log(1.05))
    return first * (1.05 ** (n + 1) - 1) / 0.05


def test_the_bucket_scheme() -> None:
    # numBuckets = ceil(log_1.05(1000 * 0.05 / 0.01 + 1)) + 1
    assert CPU_BUCKETS.count == math.ceil(math.log(5001) / math.log(1.05)) + 1 == 176
    assert MEMORY_BUCKETS.count == 176
    assert CPU_BUCKETS.find(0.005) == 0  # below the first bucket's size
    assert CPU_BUCKETS.start(0) == 0.0
    assert CPU_BUCKETS.start(1) == pytest.approx(0.01)
    assert CPU_BUCKETS.start(2) == pytest.approx(0.01 + 0.0105)
    assert CPU_BUCKETS.find(2000.0) == 175  # beyond the max: the last bucket


def test_a_percentile_is_the_end_of_the_bucket_reaching_it() -> None:
    h = DecayingHistogram(CPU_BUCKETS)
    for _ in range(3):
        h.add(0.1, 0.1, T0)
    h.add(1.0, 0.1, T0)
    # total 0.4: P50 (0.2) is reached in 0.1's bucket, P90 (0.36) only in 1.0's
    assert h.percentile(0.5) == pytest.approx(bucket_end(0.01, 0.1))
    assert h.percentile(0.9) == pytest.approx(bucket_end(0.01, 1.0))
    assert DecayingHistogram(CPU_BUCKETS).percentile(0.9) == 0.0


def test_a_sample_a_half_life_newer_weighs_twice_as_much() -> None:
    h = DecayingHistogram(CPU_BUCKETS)
    h.add(1.0, 0.1, T0)
    h.add(0.1, 0.1, T0 + DAY)
    # weights w (1.0 core) and 2w (0.1 core): P60's threshold 1.8w is reached at 0.1 core;
    # without the decay it would be 1.2w, reached only at 1.0 core.
    assert h.percentile(0.6) == pytest.approx(bucket_end(0.01, 0.1))
    assert h.total == pytest.approx(3 * h.weights[CPU_BUCKETS.find(1.0)])


def test_memory_counts_one_peak_per_24h_interval() -> None:
    agg = Aggregate()
    c = ContainerState(agg)
    for used, dt in ((100 * MI, 0), (200 * MI, 60), (150 * MI, 120)):
        assert c.add_memory(used, T0 + dt)
    # one peak (200Mi) in the first interval; its weight is that of a single sample
    h = agg.memory_peaks
    assert h.min_bucket == h.max_bucket == MEMORY_BUCKETS.find(200 * MI)
    assert h.total == pytest.approx(h.weights[h.min_bucket])
    assert c.add_memory(50 * MI, T0 + DAY + 1)  # the next interval: a second peak
    assert h.min_bucket == MEMORY_BUCKETS.find(50 * MI)
    assert not c.add_memory(300 * MI, T0 + 30)  # older than the last sample: dropped


def test_a_zero_peak_is_not_replaced_within_its_interval() -> None:
    # container.go: a higher sample replaces the peak only when the old peak is not 0
    agg = Aggregate()
    c = ContainerState(agg)
    c.add_memory(0, T0)
    c.add_memory(500 * MI, T0 + 60)
    assert agg.memory_peaks.max_bucket == 0


def test_the_oom_bump_is_the_larger_of_100mi_and_20_percent() -> None:
    c = ContainerState(Aggregate())
    c.add_memory(50 * MI, T0)
    # used = max(request 100Mi, peak 50Mi) = 100Mi; max(100Mi + 100Mi, 120Mi) = 200Mi
    assert c.record_oom(T0 + 10, 100 * MI) == 200 * MI
    big = ContainerState(Aggregate())
    # used = 1Gi: max(1Gi + 100Mi, 1.2Gi), truncated to whole bytes
    assert big.record_oom(T0, 1024 * MI) == int(1024 * MI * 1.2)
    late = ContainerState(Aggregate())
    late.add_memory(10 * MI, T0 + 2 * DAY)
    assert late.record_oom(T0, 100 * MI) is None  # older than one interval before the last


def steady(cores: float, memory: int, *, days: float, samples: int) -> Aggregate:
    agg = Aggregate()
    c = ContainerState(agg)
    step = days * DAY / max(samples - 1, 1)
    for i in range(samples):
        c.add_cpu(int(cores * 1000), T0 + i * step)
        c.add_memory(memory, T0 + i * step)
    return agg


def test_target_is_p90_plus_15_percent() -> None:
    agg = steady(0.5, 250 * MI, days=0, samples=1)
    est = estimate(agg, containers=1)
    p90 = int(bucket_end(0.01, 0.5) * 1000)  # 511 millicores
    assert est.target["cpu"] == p90 + int(p90 * 0.15) == 587
    peak = int(bucket_end(1e7, 250 * MI))
    assert est.target["memory"] == peak + int(peak * 0.15)


def test_confidence_is_days_of_history_or_samples_per_1440() -> None:
    agg = steady(0.5, 250 * MI, days=2, samples=2881)
    # 2 days between the first and last sample; 2881 / 1440 samples
    assert confidence(agg) == pytest.approx(min(2.0, 2881 / 1440))
    est = estimate(agg, containers=1)
    conf = confidence(agg)
    base = int(bucket_end(0.01, 0.5) * 1000)
    upper_base = base + int(base * 0.15)  # one value: every percentile falls in its bucket
    assert est.upper["cpu"] == int(upper_base * (1 + 1 / conf))
    assert est.lower["cpu"] == int(upper_base * (1 + 0.001 / conf) ** -2)
    thin = steady(0.5, 250 * MI, days=2, samples=100)
    assert confidence(thin) == pytest.approx(100 / 1440)


def test_no_history_span_leaves_the_upper_bound_unbounded() -> None:
    est = estimate(steady(0.5, 250 * MI, days=0, samples=1), containers=1)
    assert est.upper["cpu"] == 10**14  # 1/0 confidence: +Inf, capped at MaxResourceAmount
    assert est.lower["cpu"] == 25  # (1 + inf)^-2 = 0, raised to the pod minimum


def test_pod_minimums_are_split_over_the_containers() -> None:
    tiny = steady(0.001, 1 * MI, days=1, samples=1441)
    one = estimate(tiny, containers=1)
    assert one.target == {"cpu": 25, "memory": 250 * MI}
    two = estimate(tiny, containers=2)
    # 25m * 1/2 truncated = 12m; the 10m first bucket + 15 % (11m) is below it
    assert two.target == {"cpu": 12, "memory": 250 * MI // 2}


def test_caps_apply_to_target_and_bounds_and_the_uncapped_target_is_kept() -> None:
    agg = steady(2.0, 1024 * MI, days=1, samples=1441)
    policy = Policy(max_allowed={"cpu": 1000}, min_allowed={"memory": 2048 * MI})
    (rec,) = recommend({"app": agg}, {"app": policy})
    raw = estimate(agg, containers=1)
    assert rec.target == {"cpu": 1000, "memory": 2048 * MI}
    assert rec.uncapped == raw.target
    assert rec.upper["cpu"] == 1000 and rec.lower["memory"] == 2048 * MI
    assert rec.caps == ("cpu capped to maxAllowed", "memory capped to minAllowed")
    assert cap({"cpu": 5}, Policy(min_allowed={"cpu": 0}))[0] == {"cpu": 5}  # zero: no bound


def test_off_containers_get_nothing_and_controlled_resources_filter() -> None:
    agg = steady(0.001, 1 * MI, days=1, samples=1441)
    recs = recommend(
        {"app": agg, "log": agg, "side": agg},
        {"log": Policy(mode="Off"), "side": Policy(controlled_resources=("memory",))},
    )
    assert [r.container for r in recs] == ["app", "side"]
    # the pod minimum is split over the two recommended containers
    assert recs[0].target == {"cpu": 12, "memory": 250 * MI // 2}
    assert recs[1].target == {"memory": 250 * MI // 2}
    assert recs[0].as_status()["target"] == {"cpu": "12m", "memory": "131072k"}


def test_requests_and_limits_keep_their_ratio() -> None:
    resources = {"requests": {"cpu": "100m", "memory": "100Mi"},
                 "limits": {"cpu": "200m", "memory": "150Mi"}}  # fmt: skip
    out, changes = apply_to_container(resources, {"cpu": 300, "memory": 200 * MI}, Policy())
    # memory as the VPA writes it: a plain count of bytes (200Mi and 300Mi)
    assert out == {"requests": {"cpu": "300m", "memory": str(200 * MI)},
                   "limits": {"cpu": "600m", "memory": str(300 * MI)}}  # fmt: skip
    assert changes == ["cpu request", "cpu limit", "memory request", "memory limit"]
    only, _ = apply_to_container(
        resources, {"cpu": 300, "memory": 120 * MI}, Policy(controlled_values="RequestsOnly")
    )
    # the request is capped at the limit, which is left alone
    assert only == {
        "requests": {"cpu": "200m", "memory": str(120 * MI)}, "limits": resources["limits"]
    }  # fmt: skip


def test_a_limit_range_max_caps_the_target_through_the_limit_ratio() -> None:
    # request 100m with limit 200m, max 1 core: the request whose limit is the max is 500m
    capped, caps = cap_to_limit_range(
        {"cpu": 800, "memory": 50 * MI}, requests={"cpu": 100}, limits={"cpu": 200},
        maximum={"cpu": 1000}, default={},
    )  # fmt: skip
    assert capped == {"cpu": 500, "memory": 50 * MI}
    assert caps == ["cpu capped to fit Max in container LimitRange"]
    # no limit of its own: the LimitRange default is the limit; no limit at all: no bound
    assert boundary_request(request=100, limit=None, boundary=1000, default=400) == 250
    assert boundary_request(request=100, limit=None, boundary=1000, default=None) == 0
    assert boundary_request(request=None, limit=200, boundary=1000, default=None) == 1000


def rec(target: dict[str, int], lower: dict[str, int], upper: dict[str, int]) -> ContainerRecommendation:  # fmt: skip
    return ContainerRecommendation(
        container="app",
        target=target,
        lower=lower,
        upper=upper,
        uncapped=target,
        caps=(),
        inputs={},
    )


def test_update_priority_outside_the_bounds_and_the_difference() -> None:
    r = rec({"cpu": 200}, {"cpu": 150}, {"cpu": 400})
    inside = update_priority({"app": {"cpu": 180}}, [r])
    assert not inside.outside_range and inside.scale_up
    assert inside.resource_diff == pytest.approx(abs(180 - 200) / 180)
    below = update_priority({"app": {"cpu": 100}}, [r])
    assert below.outside_range and below.resource_diff == pytest.approx(1.0)
    missing = update_priority({"app": {}}, [r])
    assert missing.outside_range and missing.scale_up
    # scale-ups first, then the larger difference
    down = update_priority({"app": {"cpu": 390}}, [r])
    order = sorted([down, inside, below], key=lambda p: p.sort_key(), reverse=True)
    assert order == [below, inside, down]


def test_a_pod_within_bounds_waits_12_hours_and_needs_10_percent() -> None:
    r = rec({"cpu": 200}, {"cpu": 150}, {"cpu": 400})
    small = update_priority({"app": {"cpu": 190}}, [r])  # 5 % off
    large = update_priority({"app": {"cpu": 300}}, [r])  # 33 % off, still inside
    outside = update_priority({"app": {"cpu": 100}}, [r])
    assert should_update(outside, started_at=T0, now=T0 + 1)
    assert not should_update(large, started_at=T0, now=T0 + 11 * 3600)
    assert should_update(large, started_at=T0, now=T0 + 12 * 3600)
    assert not should_update(small, started_at=T0, now=T0 + DAY)
    assert not should_update(large, started_at=None, now=T0 + DAY)
    assert should_update(small, started_at=T0, now=T0 + 1, quick_oom=True)
    assert quick_oom(reason="OOMKilled", started_at=T0, finished_at=T0 + 599)
    assert not quick_oom(reason="OOMKilled", started_at=T0, finished_at=T0 + 600)
    assert not quick_oom(reason="Error", started_at=T0, finished_at=T0 + 1)


def test_evictions_respect_min_replicas_and_the_tolerance() -> None:
    assert not may_evict(Replicas(configured=1, running=1), phase="Running")[0]
    assert may_evict(Replicas(configured=1, running=1), phase="Running", min_replicas=1)[0]
    # 4 replicas: int(4 * 0.5) = 2 may go, 2 must stay
    assert may_evict(Replicas(configured=4, running=4, evicted=1), phase="Running")[0]
    assert not may_evict(Replicas(configured=4, running=4, evicted=2), phase="Running")[0]
    assert may_evict(Replicas(configured=4, running=2, evicted=2), phase="Pending")[0]
    # 1 replica allowed by minReplicas 1: tolerance int(0.5) = 0, all running: one may go
    assert may_evict(Replicas(configured=1, running=1), phase="Running", min_replicas=1)[0]
    assert not may_evict(
        Replicas(configured=1, running=1, evicted=1), phase="Running", min_replicas=1
    )[0]


def test_the_eviction_rate_limit() -> None:
    assert all(RateLimit().take(T0) for _ in range(5))  # unlimited by default
    limit = RateLimit(per_second=0.5, burst=1)
    assert limit.take(T0)
    assert not limit.take(T0 + 1)
    assert limit.take(T0 + 2)


def test_a_recommendation_is_recorded_again_only_when_it_moves() -> None:
    old = {"app": {"cpu": 100, "memory": 1000}}
    assert not changed_meaningfully(old, {"app": {"cpu": 104, "memory": 1000}})
    assert changed_meaningfully(old, {"app": {"cpu": 110, "memory": 1000}})
    assert changed_meaningfully(old, {"app": {"cpu": 100}})
    assert changed_meaningfully(old, {})
