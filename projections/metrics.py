"""The metrics read model: the latest usage sample of every pod, as metrics-server keeps it.

Why this exists: the autoscalers decide from usage, and usage never enters ``FLEET`` (see
``streams/telemetry.py``: ``FLEET_METRICS``, memory storage, the same samples ``fleetlog top``
reads). This model follows that stream with one ordered consumer (the last sample of each pod
first, then every new one) and keeps, per pod, per container, the CPU rate in millicores and
the memory working set in bytes, with the sample's timestamp and window (metrics-server's
``PodMetrics`` shape: ``timestamp`` is the end of the window the CPU rate was averaged over).
An older sample arriving after a newer one (an agent restarted with a lagging clock, a replay)
never replaces it.

Listeners are called with each sample kept, on the event loop: the HPA controller marks the
HPAs whose target owns the pod, so an evaluation follows a sample within the loop's turn
instead of a poll period. With ``replay`` the model follows pod samples only, starting from
every sample the stream still holds (an hour, see ``streams.definitions``), oldest first, so
that a listener that keeps history (the VPA recommender's histograms) rebuilds it after a
restart.

**Workload-published metrics** (what custom.metrics.k8s.io and external.metrics.k8s.io serve
Kubernetes' HPA; subjects and body in ``streams.telemetry``): the model follows
``fleet.metrics.custom.>`` and ``fleet.metrics.external.>`` too, from ``STALE_AFTER_S`` ago
(so every label set's latest value comes back after a restart, not only each subject's last),
and keeps the latest sample of every series: (Pods | Object | External, namespace, the pod or
object described, metric name, labels). A series whose last sample is older than
``STALE_AFTER_S`` is not reported (Prometheus' adapters forget a series after five minutes of
silence too). A sample the model cannot read (its subject, size, body, value, labels or time)
is refused: counted in ``refused`` and logged on one line, never raised; at most
``MAX_SERIES`` series are kept (stale ones make room first, then a new series is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from core.meta.labels import Selector
from streams import jsapi
from streams.definitions import METRICS_STREAM
from streams.telemetry import (
    CUSTOM_METRIC_FILTERS,
    BadMetricSample,
    MetricSample,
    MetricSource,
    PodUsage,
    decode_metric_sample,
    decode_pod_usage,
    pod_metrics_filter,
)

log = structlog.get_logger(__name__)

Listener = Callable[[PodUsage], None]
MetricListener = Callable[[MetricSample], None]
STALE_AFTER_S = 300.0
MAX_SERIES = 100_000
Described = tuple[MetricSource, str, str, str, str]
"""(source, namespace, kind, name, metric): what a series describes, whatever its labels."""


class PodMetrics:
    """The latest sample of each pod, followed live."""

    def __init__(self, nc: Client, *, replay: bool = False) -> None:
        self._nc = nc
        self._replay = replay
        self._samples: dict[tuple[str, str], PodUsage] = {}
        self.listeners: list[Listener] = []
        self.received = 0
        self._series: dict[Described, dict[tuple[tuple[str, str], ...], MetricSample]] = {}
        self._series_count = 0
        self._swept_ns = 0
        self.metric_listeners: list[MetricListener] = []
        self.metrics_received = 0
        self.refused = 0

    def of(self, namespace: str, name: str) -> PodUsage | None:
        return self._samples.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """The pod is gone: its last samples must not count for a pod of the same name."""
        self._samples.pop((namespace, name), None)
        for described in [d for d in self._series if d[:4] == ("pods", namespace, "Pod", name)]:
            self._series_count -= len(self._series.pop(described))

    def __len__(self) -> int:
        return len(self._samples)

    def take(self, usage: PodUsage) -> bool:
        """Keep ``usage`` unless a newer sample of the pod is kept already; listeners hear of
        each one kept."""
        key = (usage.namespace, usage.name)
        held = self._samples.get(key)
        if held is not None and held.at_ns >= usage.at_ns:
            return False
        self._samples[key] = usage
        self.received += 1
        for listener in list(self.listeners):
            listener(usage)
        return True

    # -- workload-published metrics -------------------------------------------------------------

    def series(
        self,
        described: Described,
        *,
        selector: Selector,
        now_ns: int,
    ) -> list[MetricSample]:
        """The latest sample of each fresh series of ``described`` whose labels ``selector``
        matches (the metric ``selector`` of an HPA's metric, as the metrics APIs apply it)."""
        fresh_after = now_ns - int(STALE_AFTER_S * 1e9)
        return [
            sample
            for labels, sample in (self._series.get(described) or {}).items()
            if sample.at_ns >= fresh_after and selector.matches(dict(labels))
        ]

    def take_metric(self, sample: MetricSample, *, now_ns: int | None = None) -> bool:
        """Keep ``sample`` unless its series holds a newer one; listeners hear of each kept."""
        described: Described = (
            sample.source, sample.namespace, sample.kind, sample.name, sample.metric,
        )  # fmt: skip
        held = self._series.get(described, {}).get(sample.labels)
        if held is not None and held.at_ns >= sample.at_ns:
            return False
        if held is None and self._series_count >= MAX_SERIES:
            self._drop_stale(time.time_ns() if now_ns is None else now_ns)
            if self._series_count >= MAX_SERIES:
                self.refuse(f"{described}", f"more than {MAX_SERIES} series kept")
                return False
        if held is None:
            self._series_count += 1
        self._series.setdefault(described, {})[sample.labels] = sample
        self.metrics_received += 1
        for listener in list(self.metric_listeners):
            listener(sample)
        return True

    def refuse(self, subject: str, reason: str) -> None:
        """A sample not kept: counted, and one line in the log."""
        self.refused += 1
        log.warning("metrics.sample_refused", subject=subject, reason=reason)

    def _drop_stale(self, now_ns: int) -> None:
        """Forget stale series, at most once a second (a flood of new series at the cap must
        not scan every series for each sample)."""
        if now_ns - self._swept_ns < 1_000_000_000:
            return
        self._swept_ns = now_ns
        fresh_after = now_ns - int(STALE_AFTER_S * 1e9)
        for described in list(self._series):
            held = self._series[described]
            for labels in [k for k, v in held.items() if v.at_ns < fresh_after]:
                del held[labels]
                self._series_count -= 1
            if not held:
                del self._series[described]

    def on_metric_message(self, msg: Msg) -> None:
        """A message of a custom or external metric subject: kept, or refused (never raised)."""
        try:
            received = msg.metadata.timestamp
            received_ns = (
                int(received.timestamp() * 1e9)
                if isinstance(received, datetime)
                else time.time_ns()
            )
        except Exception:  # a plain (non-JetStream) message in a test: its arrival
            received_ns = time.time_ns()
        try:
            sample = decode_metric_sample(msg.subject, msg.data, received_ns=received_ns)
        except BadMetricSample as exc:
            self.refuse(msg.subject, str(exc))
            return
        except Exception as exc:  # whatever a hostile body finds: refused, never a crash
            self.refuse(msg.subject, f"unreadable: {exc!r}")
            return
        self.take_metric(sample, now_ns=received_ns)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow every pod's samples (the last of each first) and the workload-published
        metrics (from ``STALE_AFTER_S`` ago) until cancelled."""

        async def on_message(msg: Msg) -> None:
            usage = decode_pod_usage(msg)
            if usage is not None:
                self.take(usage)

        async def on_metric(msg: Msg) -> None:
            self.on_metric_message(msg)

        js = jsapi.jetstream(self._nc)
        subs = [
            await js.subscribe(
                pod_metrics_filter(),
                stream=METRICS_STREAM,
                cb=on_message,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.ALL
                    if self._replay
                    else DeliverPolicy.LAST_PER_SUBJECT
                ),
            )
        ]
        since = datetime.fromtimestamp(time.time() - STALE_AFTER_S, tz=UTC)
        try:
            for subject in () if self._replay else CUSTOM_METRIC_FILTERS:
                subs.append(
                    await js.subscribe(
                        subject,
                        stream=METRICS_STREAM,
                        cb=on_metric,
                        ordered_consumer=True,
                        config=ConsumerConfig(
                            deliver_policy=DeliverPolicy.BY_START_TIME,
                            opt_start_time=since,
                        ),
                    )
                )
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
