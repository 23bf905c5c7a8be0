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
instead of a poll period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from streams import jsapi
from streams.definitions import METRICS_STREAM
from streams.telemetry import PodUsage, decode_pod_usage, pod_metrics_filter

Listener = Callable[[PodUsage], None]


class PodMetrics:
    """The latest sample of each pod, followed live."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._samples: dict[tuple[str, str], PodUsage] = {}
        self.listeners: list[Listener] = []
        self.received = 0

    def of(self, namespace: str, name: str) -> PodUsage | None:
        return self._samples.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """The pod is gone: its last sample must not count for a pod of the same name."""
        self._samples.pop((namespace, name), None)

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

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow every pod's samples until cancelled (the last of each first)."""

        async def on_message(msg: Msg) -> None:
            usage = decode_pod_usage(msg)
            if usage is not None:
                self.take(usage)

        sub = await jsapi.jetstream(self._nc).subscribe(
            pod_metrics_filter(),
            stream=METRICS_STREAM,
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )
        if ready is not None:
            ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
