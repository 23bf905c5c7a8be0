"""The VerticalPodAutoscaler recommender's maths: decaying histograms, peaks, percentiles,
margin, confidence, minimums, the OOM bump and the resource policy's caps.

Why this exists: users bring VPA YAML and expect the VPA's numbers for the same usage. The
rules are those of ``vertical-pod-autoscaler/pkg/recommender`` (``util/histogram*.go``,
``model/aggregate_container_state.go`` and ``container.go``, ``logic/estimator.go`` and
``recommender.go``) and ``pkg/utils/vpa/capping.go``:

* **CPU**: every usage sample (cores) goes, with the fixed weight 0.1, into an exponential
  histogram (first bucket 0.01 cores, each bucket 5 % wider, up to 1000 cores) whose weights
  decay with a half-life of 24 h (a sample's weight is ``2^((t - ref) / halfLife)``).
* **Memory**: per container, only the *peak* of each 24 h aggregation interval counts; a
  higher sample in the same interval replaces the interval's peak (the old one is
  subtracted). Peaks go into the same kind of histogram (first bucket 1e7 bytes, up to 1e12),
  timed at the interval's end.
* **Estimates**: target P90, lower bound P50, upper bound P95 (a percentile is the *end* of
  the bucket where the cumulative weight reaches it), each plus a 15 % safety margin; the
  upper bound times ``(1 + 1/confidence)``, the lower times ``(1 + 0.001/confidence)^-2``,
  where confidence is ``min(days between first and last CPU sample, CPU samples / 1440)``;
  then at least 25 millicores and 250 MiB per pod, split evenly over the containers.
* **OOM**: a container killed for memory adds a memory sample of
  ``max(used + 100 MiB, used * 1.2)`` where used is ``max(request, the interval's peak)``.
* **Caps**: ``resourcePolicy`` (the container's own policy, else ``*``): ``minAllowed`` /
  ``maxAllowed`` on target and both bounds (the uncapped target kept), only the
  ``controlledResources``; applying a recommendation to a pod keeps its limit:request ratio
  with ``RequestsAndLimits`` and caps the request at the limit with ``RequestsOnly``.

The updater's choice of pods (``pkg/updater/priority``), its eviction limits and its in-place
rules (``pkg/updater/restriction``: resize, wait for a resize under way, or fall back to
eviction) are here too. Pure: time is passed in (seconds), nothing is read.
There are no checkpoints: the recommender rebuilds this state from the metrics stream's
retained samples (see ``handlers.autoscaler.vertical``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from core.autoscaling.vertical_model import VerticalPodAutoscalerSpec
from core.meta.quantity import canonical_quantity, cpu_millis, memory_bytes

HALF_LIFE_S: Final = 24 * 3600.0
"""``DefaultCPUHistogramDecayHalfLife`` and ``DefaultMemoryHistogramDecayHalfLife``."""
MEMORY_INTERVAL_S: Final = 24 * 3600.0
"""``DefaultMemoryAggregationInterval``: one memory peak per interval."""
MIN_SAMPLE_WEIGHT: Final = 0.1
EPSILON: Final = 0.001 * MIN_SAMPLE_WEIGHT
BUCKET_GROWTH: Final = 0.05
MAX_DECAY_EXPONENT: Final = 100
SAFETY_MARGIN: Final = 0.15
TARGET_PERCENTILE: Final = 0.9
LOWER_PERCENTILE: Final = 0.5
UPPER_PERCENTILE: Final = 0.95
CONFIDENCE_INTERVAL_S: Final = 24 * 3600.0
"""Confidence counts days of history, and samples per this interval's minutes (1440)."""
POD_MIN_CPU_MILLICORES: Final = 25.0
POD_MIN_MEMORY_MB: Final = 250.0
"""``--pod-recommendation-min-memory-mb`` (times 1024 * 1024: MiB)."""
OOM_BUMP_RATIO: Final = 1.2
OOM_MIN_BUMP_BYTES: Final = 100 * 1024 * 1024
MAX_RESOURCE_AMOUNT: Final = 10**14
"""``model.MaxResourceAmount``: what an infinite estimate (no confidence yet) becomes."""

MIN_CHANGE_PRIORITY: Final = 0.1
"""``--min-change-priority``: a pod within its bounds is updated only if this far off."""
POD_LIFETIME_UPDATE_THRESHOLD_S: Final = 12 * 3600.0
EVICT_AFTER_OOM_THRESHOLD_S: Final = 600.0
DEFAULT_MIN_REPLICAS: Final = 2
"""The updater's ``--min-replicas``; a VPA's ``updatePolicy.minReplicas`` overrides it."""
EVICTION_TOLERANCE: Final = 0.5
"""``--eviction-tolerance``: the fraction of a workload's replicas evicted at once."""
DEFERRED_RESIZE_TIMEOUT_S: Final = 5 * 60.0
"""``DeferredResizeUpdateTimeout``: a resize the node defers longer than this is given up for
an eviction (``InPlaceOrRecreate``)."""
IN_PROGRESS_RESIZE_TIMEOUT_S: Final = 3600.0
"""``InProgressResizeUpdateTimeout``: a resize still in progress after this is given up."""
RESIZE_PENDING: Final = "PodResizePending"
RESIZE_IN_PROGRESS: Final = "PodResizeInProgress"


# --------------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Buckets:
    """An exponential bucketing: bucket ``n`` starts at ``first * (ratio^n - 1) / (ratio - 1)``."""

    max_value: float
    first: float
    ratio: float = 1.0 + BUCKET_GROWTH
    count: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        span = math.log(self.max_value * (self.ratio - 1) / self.first + 1, self.ratio)
        object.__setattr__(self, "count", math.ceil(span) + 1)

    def find(self, value: float) -> int:
        if value < self.first:
            return 0
        bucket = int(math.log(value * (self.ratio - 1) / self.first + 1, self.ratio))
        return min(bucket, self.count - 1)

    def start(self, bucket: int) -> float:
        if bucket == 0:
            return 0.0
        return self.first * (self.ratio**bucket - 1) / (self.ratio - 1)


CPU_BUCKETS: Final = Buckets(max_value=1000.0, first=0.01)
"""Cores: 0.01 first bucket, 5 % growth, up to 1000 cores."""
MEMORY_BUCKETS: Final = Buckets(max_value=1e12, first=1e7)
"""Bytes: 1e7 first bucket, 5 % growth, up to 1e12 bytes."""


class DecayingHistogram:
    """A histogram whose samples weigh ``2^((t - reference) / halfLife)``: a sample one
    half-life older counts half as much. The reference moves forward (all weights scaled
    down by a power of two) when a sample would need a factor beyond ``2^100``."""

    def __init__(self, buckets: Buckets, half_life: float = HALF_LIFE_S) -> None:
        self.buckets = buckets
        self.half_life = half_life
        self.weights = [0.0] * buckets.count
        self.total = 0.0
        self.min_bucket = buckets.count - 1
        self.max_bucket = 0
        self.reference: float | None = None

    def is_empty(self) -> bool:
        return self.weights[self.min_bucket] < EPSILON

    def _decay(self, at: float) -> float:
        if self.reference is None or at > self.reference + self.half_life * MAX_DECAY_EXPONENT:
            self._shift(at)
        assert self.reference is not None
        return 2.0 ** ((at - self.reference) / self.half_life)

    def _shift(self, at: float) -> None:
        # Go rounds the new reference to a whole number of half-lives since its zero time,
        # which (for whole days) is the same instant as rounding since the Unix epoch.
        new = math.floor(at / self.half_life + 0.5) * self.half_life
        if self.reference is not None:
            exponent = math.floor((self.reference - new) / self.half_life + 0.5)
            self._scale(2.0**exponent)
        self.reference = new

    def _scale(self, factor: float) -> None:
        for b in range(self.min_bucket, self.max_bucket + 1):
            self.weights[b] *= factor
        self.total *= factor
        self._trim()

    def _trim(self) -> None:
        last = self.buckets.count - 1
        while self.weights[self.min_bucket] < EPSILON and self.min_bucket < last:
            self.min_bucket += 1
        while self.weights[self.max_bucket] < EPSILON and self.max_bucket > 0:
            self.max_bucket -= 1

    def add(self, value: float, weight: float, at: float) -> None:
        weight *= self._decay(at)
        bucket = self.buckets.find(value)
        self.weights[bucket] += weight
        self.total += weight
        if bucket < self.min_bucket and self.weights[bucket] >= EPSILON:
            self.min_bucket = bucket
        if bucket > self.max_bucket and self.weights[bucket] >= EPSILON:
            self.max_bucket = bucket

    def subtract(self, value: float, weight: float, at: float) -> None:
        weight *= self._decay(at)
        bucket = self.buckets.find(value)
        self.total = _safe_subtract(self.total, weight)
        self.weights[bucket] = _safe_subtract(self.weights[bucket], weight)
        self._trim()

    def percentile(self, p: float) -> float:
        """The end of the first bucket where the cumulative weight reaches ``p`` of the total
        (0 when empty); the last bucket's start if that is the last bucket."""
        if self.is_empty():
            return 0.0
        threshold = p * self.total
        partial = 0.0
        bucket = self.min_bucket
        while bucket < self.max_bucket:
            partial += self.weights[bucket]
            if partial >= threshold:
                break
            bucket += 1
        if bucket < self.buckets.count - 1:
            return self.buckets.start(bucket + 1)
        return self.buckets.start(bucket)


def _safe_subtract(value: float, sub: float) -> float:
    value -= sub
    return 0.0 if value < EPSILON else value


# --------------------------------------------------------------------------------------------
# per-container state
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Aggregate:
    """One VPA's history of one container name, over all its pods
    (``AggregateContainerState``)."""

    cpu: DecayingHistogram = field(default_factory=lambda: DecayingHistogram(CPU_BUCKETS))
    memory_peaks: DecayingHistogram = field(
        default_factory=lambda: DecayingHistogram(MEMORY_BUCKETS)
    )
    first_sample: float | None = None
    last_sample: float | None = None
    samples: int = 0
    memory_samples: int = 0
    ooms: int = 0

    def add_cpu(self, cores: float, at: float) -> None:
        self.cpu.add(cores, MIN_SAMPLE_WEIGHT, at)
        if self.last_sample is None or at > self.last_sample:
            self.last_sample = at
        if self.first_sample is None or at < self.first_sample:
            self.first_sample = at
        self.samples += 1


@dataclass(slots=True)
class ContainerState:
    """One pod's container (``model.ContainerState``): its last CPU sample, and its memory
    peak (and OOM peak) in the current aggregation interval."""

    aggregate: Aggregate
    last_cpu: float | None = None
    last_memory: float | None = None
    window_end: float | None = None
    memory_peak: int = 0
    oom_peak: int = 0

    def add_cpu(self, millicores: int, at: float) -> bool:
        """A CPU sample; a duplicate or out-of-order one is dropped."""
        if millicores < 0 or (self.last_cpu is not None and at <= self.last_cpu):
            return False
        self.aggregate.add_cpu(millicores / 1000.0, at)
        self.last_cpu = at
        return True

    def add_memory(self, used: int, at: float, *, oom: bool = False) -> bool:
        """A memory sample: the interval's peak if it is the highest so far in it, else
        nothing (an older sample is dropped, unless it records an OOM)."""
        if used < 0 or (not oom and self.last_memory is not None and at < self.last_memory):
            return False
        self.last_memory = at
        if self.window_end is None:
            self.window_end = at
        add_peak = False
        if at < self.window_end:
            old = max(self.memory_peak, self.oom_peak)
            if old != 0 and used > old:
                self.aggregate.memory_peaks.subtract(float(old), 1.0, self.window_end)
                add_peak = True
        else:
            passed = at - self.window_end
            self.window_end += passed - passed % MEMORY_INTERVAL_S + MEMORY_INTERVAL_S
            self.memory_peak = self.oom_peak = 0
            add_peak = True
        if add_peak:
            self.aggregate.memory_peaks.add(float(used), 1.0, self.window_end)
            if oom:
                self.oom_peak = used
            else:
                self.memory_peak = used
        self.aggregate.memory_samples += 1
        return True

    def record_oom(self, at: float, requested: int) -> int | None:
        """An OOM kill at ``at`` of a container requesting ``requested`` bytes: the memory it
        needed is recorded as a sample; returns it (None: too old, dropped)."""
        if self.last_memory is not None and at < self.last_memory - MEMORY_INTERVAL_S:
            return None
        used = max(requested, self.memory_peak)
        needed = max(used + OOM_MIN_BUMP_BYTES, _amount(used * OOM_BUMP_RATIO))
        if not self.add_memory(needed, at, oom=True):
            return None
        self.aggregate.ooms += 1
        return needed


def _amount(value: float) -> int:
    """``resourceAmountFromFloat``: truncated, never negative, at most MaxResourceAmount."""
    if value > MAX_RESOURCE_AMOUNT:
        return MAX_RESOURCE_AMOUNT
    return int(max(value, 0.0))


# --------------------------------------------------------------------------------------------
# estimates
# --------------------------------------------------------------------------------------------


def confidence(aggregate: Aggregate) -> float:
    """``getConfidence``: min(days between the first and last CPU sample, samples / 1440)."""
    if aggregate.first_sample is None or aggregate.last_sample is None:
        return 0.0
    days = (aggregate.last_sample - aggregate.first_sample) / CONFIDENCE_INTERVAL_S
    return min(days, aggregate.samples / (CONFIDENCE_INTERVAL_S / 60.0))


def _with_confidence(amount: int, *, multiplier: float, exponent: float, conf: float) -> int:
    if conf <= 0.0:  # Go divides by zero: +Inf, so the upper bound is unbounded, the lower 0
        factor = math.inf if exponent > 0 else 0.0
    else:
        factor = (1.0 + multiplier / conf) ** exponent
    return _amount(amount * factor) if math.isfinite(factor) else MAX_RESOURCE_AMOUNT


def _margin(amount: int) -> int:
    return amount + _amount(amount * SAFETY_MARGIN)


@dataclass(frozen=True, slots=True)
class Estimate:
    """One container's raw recommendation: millicores and bytes, and what it came from."""

    target: dict[str, int]
    lower: dict[str, int]
    upper: dict[str, int]
    inputs: dict[str, object]


def estimate(aggregate: Aggregate, *, containers: int,
             resources: Sequence[str] = ("cpu", "memory")) -> Estimate:  # fmt: skip
    """``estimateContainerResources`` for one of ``containers`` recommended containers."""
    fraction = 1.0 / max(containers, 1)
    min_cpu = _amount(_amount(POD_MIN_CPU_MILLICORES * 0.001 * 1000.0) * fraction)
    min_memory = _amount(_amount(POD_MIN_MEMORY_MB * 1024 * 1024) * fraction)
    conf = confidence(aggregate)

    def cpu_at(p: float) -> int:
        return _margin(_amount(aggregate.cpu.percentile(p) * 1000.0))

    def memory_at(p: float) -> int:
        return _margin(_amount(aggregate.memory_peaks.percentile(p)))

    target = {"cpu": max(cpu_at(TARGET_PERCENTILE), min_cpu),
              "memory": max(memory_at(TARGET_PERCENTILE), min_memory)}  # fmt: skip
    lower = {
        "cpu": max(
            _with_confidence(cpu_at(LOWER_PERCENTILE), multiplier=0.001, exponent=-2.0, conf=conf),
            min_cpu,
        ),
        "memory": max(
            _with_confidence(
                memory_at(LOWER_PERCENTILE), multiplier=0.001, exponent=-2.0, conf=conf
            ),
            min_memory,
        ),
    }
    upper = {
        "cpu": max(
            _with_confidence(cpu_at(UPPER_PERCENTILE), multiplier=1.0, exponent=1.0, conf=conf),
            min_cpu,
        ),
        "memory": max(
            _with_confidence(memory_at(UPPER_PERCENTILE), multiplier=1.0, exponent=1.0, conf=conf),
            min_memory,
        ),
    }
    keep = [r for r in resources if r in ("cpu", "memory")]
    inputs: dict[str, object] = {
        "cpuSamples": aggregate.samples,
        "memorySamples": aggregate.memory_samples,
        "ooms": aggregate.ooms,
        "confidence": round(conf, 6),
        "historySeconds": (
            0.0 if aggregate.first_sample is None or aggregate.last_sample is None
            else aggregate.last_sample - aggregate.first_sample
        ),
        "cpuCores": {"p50": aggregate.cpu.percentile(LOWER_PERCENTILE),
                     "p90": aggregate.cpu.percentile(TARGET_PERCENTILE),
                     "p95": aggregate.cpu.percentile(UPPER_PERCENTILE)},
        "memoryPeakBytes": {"p50": aggregate.memory_peaks.percentile(LOWER_PERCENTILE),
                            "p90": aggregate.memory_peaks.percentile(TARGET_PERCENTILE),
                            "p95": aggregate.memory_peaks.percentile(UPPER_PERCENTILE)},
        "safetyMargin": SAFETY_MARGIN,
        "podMinimum": {"cpuMillicores": min_cpu, "memoryBytes": min_memory},
    }  # fmt: skip
    return Estimate(
        target={r: target[r] for r in keep},
        lower={r: lower[r] for r in keep},
        upper={r: upper[r] for r in keep},
        inputs=inputs,
    )


# --------------------------------------------------------------------------------------------
# quantities and caps
# --------------------------------------------------------------------------------------------


def quantity(resource: str, amount: int) -> str:
    """A recommended amount as Kubernetes prints it: CPU in millicores, memory in bytes."""
    return canonical_quantity(f"{amount}m" if resource == "cpu" else str(amount))


def amount_of(resource: str, text: str) -> int:
    """A quantity as a recommendation amount (millicores for CPU, bytes for memory)."""
    return cpu_millis(text) if resource == "cpu" else memory_bytes(text)


@dataclass(frozen=True, slots=True)
class Policy:
    """One container's resource policy, as the recommender reads it (amounts as above)."""

    mode: str = "Auto"
    min_allowed: Mapping[str, int] = field(default_factory=dict)
    max_allowed: Mapping[str, int] = field(default_factory=dict)
    controlled_resources: tuple[str, ...] = ("cpu", "memory")
    controlled_values: str = "RequestsAndLimits"


def policy_of(spec: VerticalPodAutoscalerSpec, container: str) -> Policy:
    """A container's resource policy as the recommender reads it (defaults when none)."""
    given = spec.policy_for(container)
    if given is None:
        return Policy()
    return Policy(
        mode=given.mode or "Auto",
        min_allowed={r: amount_of(r, q) for r, q in (given.min_allowed or {}).items()},
        max_allowed={r: amount_of(r, q) for r, q in (given.max_allowed or {}).items()},
        controlled_resources=tuple(given.controlled_resources or ("cpu", "memory")),
        controlled_values=given.controlled_values or "RequestsAndLimits",
    )


def cap(amounts: Mapping[str, int], policy: Policy) -> tuple[dict[str, int], list[str]]:
    """``applyVPAPolicy``: each amount raised to ``minAllowed`` and lowered to ``maxAllowed``
    (a zero bound means none); also the caps that applied, as the VPA annotates them."""
    out: dict[str, int] = {}
    caps: list[str] = []
    for resource, value in amounts.items():
        low = policy.min_allowed.get(resource, 0)
        high = policy.max_allowed.get(resource, 0)
        if low and value < low:
            value = low
            caps.append(f"{resource} capped to minAllowed")
        if high and value > high:
            value = high
            caps.append(f"{resource} capped to maxAllowed")
        out[resource] = value
    return out, caps


@dataclass(frozen=True, slots=True)
class ContainerRecommendation:
    container: str
    target: dict[str, int]
    lower: dict[str, int]
    upper: dict[str, int]
    uncapped: dict[str, int]
    caps: tuple[str, ...]
    inputs: dict[str, object]

    def as_status(self) -> dict[str, object]:
        """The ``containerRecommendations[]`` item."""

        def show(amounts: Mapping[str, int]) -> dict[str, str]:
            return {r: quantity(r, v) for r, v in sorted(amounts.items())}

        return {
            "containerName": self.container,
            "target": show(self.target),
            "lowerBound": show(self.lower),
            "upperBound": show(self.upper),
            "uncappedTarget": show(self.uncapped),
        }


def recommend(aggregates: Mapping[str, Aggregate],
              policy_of: Mapping[str, Policy]) -> list[ContainerRecommendation]:  # fmt: skip
    """The pod's recommendation: every container whose scaling is not Off, sorted by name,
    estimated (the pod minimum split over them) then capped by its policy."""
    wanted = {
        name: agg
        for name, agg in aggregates.items()
        if policy_of.get(name, Policy()).mode != "Off" and agg.samples + agg.memory_samples
    }
    out = []
    for name in sorted(wanted):
        policy = policy_of.get(name, Policy())
        raw = estimate(wanted[name], containers=len(wanted), resources=policy.controlled_resources)
        target, caps = cap(raw.target, policy)
        lower, _ = cap(raw.lower, policy)
        upper, _ = cap(raw.upper, policy)
        out.append(
            ContainerRecommendation(
                container=name, target=target, lower=lower, upper=upper,
                uncapped=dict(raw.target), caps=tuple(caps), inputs=raw.inputs,
            )
        )  # fmt: skip
    return out


def changed_meaningfully(old: Mapping[str, Mapping[str, int]],
                         new: Mapping[str, Mapping[str, int]], *,
                         tolerance: float = 0.05) -> bool:  # fmt: skip
    """Whether a recommendation is worth recording again: a container or resource appeared or
    went, or a target or bound moved by more than ``tolerance`` of its old value."""
    if set(old) != set(new):
        return True
    for name, amounts in new.items():
        before = old[name]
        if set(before) != set(amounts):
            return True
        for key, value in amounts.items():
            prior = before[key]
            if abs(value - prior) > tolerance * max(prior, 1):
                return True
    return False


# --------------------------------------------------------------------------------------------
# applying a recommendation to a pod
# --------------------------------------------------------------------------------------------


def proportional_limit(*, request: int | None, limit: int | None, new_request: int) -> int | None:
    """``getProportionalResourceLimit``: the limit keeping the original limit:request ratio
    (no limit stays no limit; a limit without a request is kept as it is)."""
    if limit is None:
        return None
    if not request:
        return limit
    return new_request * limit // request


def boundary_request(*, request: int | None, limit: int | None, boundary: int | None,
                     default: int | None) -> int:  # fmt: skip
    """``GetBoundaryRequest``: the request whose proportional limit is ``boundary`` (a
    LimitRange's max or min), the limit being the container's or else the LimitRange default;
    0 (no bound) without a limit, ``boundary`` itself without a request."""
    if not limit:
        limit = default
    if not limit or boundary is None:
        return 0
    if not request:
        return boundary
    return request * boundary // limit


def cap_to_limit_range(
    target: Mapping[str, int],
    *,
    requests: Mapping[str, int],
    limits: Mapping[str, int],
    maximum: Mapping[str, int],
    default: Mapping[str, int],
) -> tuple[dict[str, int], list[str]]:
    """``applyContainerLimitRange``'s max: each target lowered so that the limit kept in
    proportion stays within the LimitRange's ``max`` (the VPA names it ``capped to fit Max in
    container LimitRange``)."""
    out = dict(target)
    caps = []
    for resource, value in target.items():
        bound = boundary_request(
            request=requests.get(resource), limit=limits.get(resource),
            boundary=maximum.get(resource), default=default.get(resource),
        )  # fmt: skip
        if bound and value > bound:
            out[resource] = bound
            caps.append(f"{resource} capped to fit Max in container LimitRange")
    return out, caps


def apply_to_container(
    resources: Mapping[str, Mapping[str, str]],
    target: Mapping[str, int],
    policy: Policy,
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """A container's new ``resources`` for ``target``: the requests set (capped at the limit
    with ``RequestsOnly``), limits scaled to keep their ratio with ``RequestsAndLimits``;
    also what changed, as the ``vpaUpdates`` annotation lists it."""
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    changes: list[str] = []
    for resource, amount in sorted(target.items()):
        if resource not in policy.controlled_resources:
            continue
        old_request = amount_of(resource, requests[resource]) if resource in requests else None
        old_limit = amount_of(resource, limits[resource]) if resource in limits else None
        if policy.controlled_values == "RequestsOnly" and old_limit is not None:
            amount = min(amount, old_limit)
        requests[resource] = quantity(resource, amount)
        changes.append(f"{resource} request")
        if policy.controlled_values == "RequestsAndLimits":
            new_limit = proportional_limit(request=old_request, limit=old_limit,
                                           new_request=amount)  # fmt: skip
            if new_limit is not None and new_limit != old_limit:
                limits[resource] = quantity(resource, new_limit)
                changes.append(f"{resource} limit")
    out: dict[str, dict[str, str]] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out, changes


# --------------------------------------------------------------------------------------------
# the updater
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodPriority:
    """``PodPriority``: whether a request is outside [lowerBound, upperBound], whether any
    resource would grow, and the summed relative difference between requests and targets."""

    outside_range: bool
    scale_up: bool
    resource_diff: float

    def sort_key(self) -> tuple[bool, float]:
        """Higher first: scale-ups before anything else, then the larger difference."""
        return (self.scale_up, self.resource_diff)


def update_priority(requests: Mapping[str, Mapping[str, int]],
                    recommendation: Iterable[ContainerRecommendation]) -> PodPriority:  # fmt: skip
    """``GetUpdatePriority``: ``requests`` per container (amounts as above)."""
    outside = scale_up = False
    total_request: dict[str, int] = {}
    total_target: dict[str, int] = {}
    for rec in recommendation:
        if rec.container not in requests:
            continue
        has = requests[rec.container]
        for resource, target in rec.target.items():
            total_target[resource] = total_target.get(resource, 0) + target
            if resource in has:
                request = has[resource]
                total_request[resource] = total_request.get(resource, 0) + request
                if target > request:
                    scale_up = True
                low, high = rec.lower.get(resource), rec.upper.get(resource)
                if (low is not None and request < low) or (high is not None and request > high):
                    outside = True
            else:
                scale_up = outside = True
    diff = 0.0
    for resource, target in total_target.items():
        request = max(float(total_request.get(resource, 0)), 1.0)
        diff += abs(request - target) / request
    return PodPriority(outside_range=outside, scale_up=scale_up, resource_diff=diff)


def should_update(priority: PodPriority, *, started_at: float | None, now: float,
                  quick_oom: bool = False) -> bool:  # fmt: skip
    """``AddPod``'s rule: a pod outside its bounds (or OOM-killed soon after it started) is
    updated; one within them only after 12 h of life and when more than 10 % off."""
    if not priority.outside_range and not quick_oom:
        if started_at is None or now < started_at + POD_LIFETIME_UPDATE_THRESHOLD_S:
            return False
        if priority.resource_diff < MIN_CHANGE_PRIORITY:
            return False
    return not (quick_oom and priority.resource_diff == 0)


def quick_oom(*, reason: str | None, started_at: float | None, finished_at: float | None) -> bool:
    """A container's last termination was an OOM kill within 10 minutes of its start."""
    if reason != "OOMKilled" or started_at is None or finished_at is None:
        return False
    return finished_at - started_at < EVICT_AFTER_OOM_THRESHOLD_S


@dataclass(frozen=True, slots=True)
class Replicas:
    """One workload's pods, as the eviction restriction counts them."""

    configured: int
    running: int
    evicted: int = 0


def may_evict(group: Replicas, *, phase: str, min_replicas: int = DEFAULT_MIN_REPLICAS,
              tolerance: float = EVICTION_TOLERANCE) -> tuple[bool, str]:  # fmt: skip
    """``PodsEvictionRestriction.CanEvict``: never for a workload with fewer than
    ``minReplicas`` replicas; a Pending pod always; else while more than
    ``configured - int(configured * tolerance)`` pods would stay running (or one pod when all
    run and the tolerance rounds to none). Returns the verdict and why."""
    if group.configured < min_replicas:
        return False, f"too few replicas: {group.configured} < minReplicas {min_replicas}"
    if phase == "Pending":
        return True, "pending"
    allowed = int(group.configured * tolerance)
    alive = group.configured - allowed
    if group.running - group.evicted > alive:
        return True, f"{group.running - group.evicted} running > {alive} that must stay"
    if group.running == group.configured and allowed == 0 and group.evicted == 0:
        return True, "all running, one may go"
    return False, f"eviction tolerance: {group.running - group.evicted} running, {alive} must stay"


@dataclass(slots=True)
class RateLimit:
    """``--eviction-rate-limit`` / ``--eviction-rate-burst`` as a token bucket (a rate of 0
    or less: unlimited, the updater's default)."""

    per_second: float = -1.0
    burst: int = 1
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.per_second <= 0:
            return True
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------------------------
# in place (``InPlaceOrRecreate``)
# --------------------------------------------------------------------------------------------


def resize_entries(
    containers: Sequence[Mapping[str, object]],
    recommendation: Iterable[ContainerRecommendation],
    spec: VerticalPodAutoscalerSpec,
) -> list[dict[str, object]]:
    """The pod ``resize`` command's ``containers``: each container with a recommendation (and
    scaling not Off) whose resources the target changes, with its whole new ``resources`` —
    the same :func:`apply_to_container` the admission of a new pod uses, so a resized pod gets
    what a recreated one would (limits scaled to keep their ratio with ``RequestsAndLimits``,
    requests capped at the limit with ``RequestsOnly``)."""
    recs = {rec.container: rec for rec in recommendation}
    entries: list[dict[str, object]] = []
    for container in containers:
        name = str(container.get("name"))
        rec = recs.get(name)
        policy = policy_of(spec, name)
        if rec is None or policy.mode == "Off":
            continue
        given = container.get("resources")
        current = dict(given) if isinstance(given, Mapping) else {}
        resources, _ = apply_to_container(current, rec.target, policy)
        if _amounts_of(resources) != _amounts_of(current):
            entries.append({"name": name, "resources": {**current, **resources}})
    return entries


def _amounts_of(resources: Mapping[str, object]) -> dict[str, dict[str, int]]:
    """cpu and memory as amounts per section: ``500m`` and ``0.5`` are the same request."""
    out: dict[str, dict[str, int]] = {}
    for section in ("requests", "limits"):
        given = resources.get(section)
        if isinstance(given, Mapping):
            out[section] = {
                r: amount_of(r, str(v)) for r, v in given.items() if r in ("cpu", "memory")
            }
    return out


@dataclass(frozen=True, slots=True)
class InPlaceDecision:
    """What ``InPlaceOrRecreate`` does with a pod the updater chose: ``resize`` it (send the
    resize command), ``wait`` (a resize is under way or the node deferred it; look again later)
    or ``evict`` it (the node cannot take the resize); and why, in words."""

    action: str
    why: str


def in_place_decision(
    conditions: Sequence[Mapping[str, object]],
    *,
    phase: str,
    resizing_since: float | None,
    now: float,
    deferred_timeout: float = DEFERRED_RESIZE_TIMEOUT_S,
    in_progress_timeout: float = IN_PROGRESS_RESIZE_TIMEOUT_S,
) -> InPlaceDecision:
    """``CanInPlaceUpdate`` and ``CanEvictInPlacingPod`` for ``InPlaceOrRecreate``, from the
    pod's ``phase`` and resize ``conditions``: a Pending pod waits; an ``Infeasible`` pending
    resize (or a pending one for an unknown reason) and a resize in progress with reason
    ``Error`` fall back to eviction; a ``Deferred`` one waits up to ``deferred_timeout`` and a
    resize in progress up to ``in_progress_timeout`` since ``resizing_since`` (when the updater
    first saw the pod resizing), then is evicted; a pod with no resize under way is resized.
    Whether the workload can spare the pod at all is ``may_evict``'s, asked by the caller."""
    if phase == "Pending":
        return InPlaceDecision("wait", "pod is Pending")
    found = {
        str(c.get("type")): c
        for c in conditions
        if c.get("type") in (RESIZE_PENDING, RESIZE_IN_PROGRESS) and c.get("status") == "True"
    }
    since = now if resizing_since is None else resizing_since
    pending = found.get(RESIZE_PENDING)
    if pending is not None:
        reason, message = str(pending.get("reason") or ""), str(pending.get("message") or "")
        if reason == "Deferred":
            if now - since > deferred_timeout:
                return InPlaceDecision(
                    "evict", f"resize deferred for more than {deferred_timeout:g}s: {message}"
                )
            return InPlaceDecision("wait", f"resize deferred by the node: {message}")
        if reason == "Infeasible":
            return InPlaceDecision("evict", f"resize infeasible: {message}")
        return InPlaceDecision("evict", f"resize pending ({reason or 'no reason'}): {message}")
    progress = found.get(RESIZE_IN_PROGRESS)
    if progress is not None:
        reason, message = str(progress.get("reason") or ""), str(progress.get("message") or "")
        if not reason and not message:
            if now - since > in_progress_timeout:
                return InPlaceDecision(
                    "evict", f"resize in progress for more than {in_progress_timeout:g}s"
                )
            return InPlaceDecision("wait", "resize in progress")
        if reason == "Error":
            return InPlaceDecision("evict", f"resize failed: {message}")
        return InPlaceDecision("evict", f"resize in progress ({reason}): {message}")
    return InPlaceDecision("resize", "no resize under way")
