"""Synthetic usage for simulated pods: the samples a node agent would publish, from a load
that a test or a benchmark sets.

Why this exists: autoscaling has to be exercised at scale on one machine, where pods run on
simulated nodes (``handlers/simnodes.py``) and burn nothing. :class:`SimulatedUsage` publishes,
for every Running pod bound to one of its nodes, a usage sample on the same subject and in the
same shape as the agent's (``fleet.metrics.pod.<ns>.<pod>``, ``streams.telemetry``) every
``period`` seconds, and at once when a pod's load changes, so an autoscaler reacts within a
sample.

A pod's load, per pod (split evenly over its containers), is, first match wins:

* what was last set on the subject :data:`LOAD_SUBJECT` (``fleet.sim.load``): a JSON request
  ``{"namespace": "default", "selector": {"app": "web"}, "cpu": "300m", "memory": "64Mi"}``
  (or ``"pod": NAME`` instead of a selector; ``"cpu": null`` clears the setting), answered
  with ``{"pods": N}``, the number of pods it now applies to (pods created later that match
  take it too);
* the pod's annotations ``sim.fleetlog.dev/cpu`` and ``sim.fleetlog.dev/memory`` (quantities;
  set them in a Deployment's template);
* nothing: 0 CPU and 0 memory.

The window of each sample is the period (the CPU figure is a rate over it), as the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.meta.quantity import parse_quantity
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.connection import OUTAGE_ERRORS
from streams.envelope import StoredEvent
from streams.telemetry import ContainerUsage, publish_pod_usage

log = structlog.get_logger(__name__)

LOAD_SUBJECT = "fleet.sim.load"
CPU_ANNOTATION = "sim.fleetlog.dev/cpu"
MEMORY_ANNOTATION = "sim.fleetlog.dev/memory"
DEFAULT_PERIOD_S = 10.0
IN_FLIGHT = 256
"""Samples of one round awaiting their acks at once."""


@dataclass(frozen=True, slots=True)
class Load:
    """A load set through :data:`LOAD_SUBJECT`: pods of ``namespace`` matching ``labels`` (or
    the one named ``pod``) use ``cpu`` millicores and ``memory`` bytes."""

    namespace: str
    labels: Mapping[str, str] | None
    pod: str | None
    cpu_millicores: int | None
    memory_bytes: int | None

    def applies_to(self, record: ObjectRecord) -> bool:
        if record.namespace != self.namespace:
            return False
        if self.pod is not None:
            return record.name == self.pod
        # ``selector_matches`` of ``{"matchLabels": labels}``, without compiling a selector for
        # every pod of every round: an empty one matches nothing, as there.
        if not self.labels:
            return False
        labels = (record.manifest.get("metadata") or {}).get("labels") or {}
        return all(labels.get(key) == str(value) for key, value in self.labels.items())


def _milli(text: object) -> int | None:
    return None if text is None else parse_quantity(str(text)).milli_value()


def _amount(text: object) -> int | None:
    return None if text is None else parse_quantity(str(text)).value()


class SimulatedUsage:
    """Publishes usage for the Running pods of the nodes ``owns`` says are simulated."""

    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        owns: Callable[[str], bool],
        *,
        period: float = DEFAULT_PERIOD_S,
    ) -> None:
        self._nc = nc
        self._projection = projection
        self._owns = owns
        self.period = period
        self._loads: list[Load] = []
        self._urgent: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self.published = 0

    def _on_event(self, event: StoredEvent) -> None:
        # A pod that just became Ready gets its first sample now, not a period later.
        e = event.envelope
        if e.type == "PodReady":
            self._urgent.add((e.namespace, e.name))
            self._wake.set()

    def _runs_here(self, record: ObjectRecord) -> bool:
        node = (record.manifest.get("spec") or {}).get("nodeName")
        status = record.manifest.get("status") or {}
        return bool(node) and self._owns(node) and status.get("phase") == "Running"

    def _running(self) -> list[ObjectRecord]:
        return [r for r in self._projection.model.list("Pod") if self._runs_here(r)]

    def _running_of(self, keys: set[tuple[str, str]]) -> list[ObjectRecord]:
        """The Running pods among ``keys``, looked up one by one: a pod that just became
        Ready must not cost a walk over every pod of the simulation."""
        model = self._projection.model
        found = (model.get("Pod", namespace, name) for namespace, name in sorted(keys))
        return [r for r in found if r is not None and self._runs_here(r)]

    def load_of(self, record: ObjectRecord) -> tuple[int, int]:
        """(cpu millicores, memory bytes) the pod uses now."""
        cpu: int | None = None
        memory: int | None = None
        for load in reversed(self._loads):
            if load.applies_to(record):
                if cpu is None:
                    cpu = load.cpu_millicores
                if memory is None:
                    memory = load.memory_bytes
        annotations = (record.manifest.get("metadata") or {}).get("annotations") or {}
        with contextlib.suppress(ValueError, Exception):
            if cpu is None:
                cpu = _milli(annotations.get(CPU_ANNOTATION))
            if memory is None:
                memory = _amount(annotations.get(MEMORY_ANNOTATION))
        return cpu or 0, memory or 0

    async def _publish(self, record: ObjectRecord) -> None:
        cpu, memory = self.load_of(record)
        names = [c["name"] for c in (record.manifest.get("spec") or {}).get("containers") or []]
        if not names:
            return
        share = len(names)
        containers = {
            name: ContainerUsage(cpu // share + (1 if i < cpu % share else 0), memory // share)
            for i, name in enumerate(names)
        }
        await publish_pod_usage(
            self._nc, record.namespace, record.name, containers, window_s=self.period
        )
        self.published += 1

    async def _publish_all(self, records: list[ObjectRecord]) -> None:
        # A bounded number awaiting their acks: a round of 10,000 published at once left most
        # acks unread within the publish timeout on a busy host, and starved the process's
        # other work while they were (ops/bench_hpa.py).
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(record: ObjectRecord) -> None:
            async with gate:
                await self._publish(record)

        results = await asyncio.gather(*(one(r) for r in records), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("sim.usage_failed", failed=len(failed), error=repr(failed[0]))

    async def _on_load(self, msg: Msg) -> None:
        try:
            body: dict[str, Any] = json.loads(msg.data or b"{}")
            load = Load(
                namespace=str(body.get("namespace") or "default"),
                labels=body.get("selector"),
                pod=body.get("pod"),
                cpu_millicores=_milli(body.get("cpu")),
                memory_bytes=_amount(body.get("memory")),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            await msg.respond(json.dumps({"error": str(exc)}).encode())
            return
        # A newer setting for the same pods replaces the older one.
        self._loads = [
            old
            for old in self._loads
            if (old.namespace, old.labels, old.pod) != (load.namespace, load.labels, load.pod)
        ]
        self._loads.append(load)
        matched = [r for r in self._running() if load.applies_to(r)]
        self._urgent.update((r.namespace, r.name) for r in matched)
        self._wake.set()
        await msg.respond(json.dumps({"pods": len(matched)}).encode())

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Publish every period (and at once for pods whose load changed) until cancelled."""
        sub = await self._nc.subscribe(LOAD_SUBJECT, cb=self._on_load)
        self._projection.listeners.append(self._on_event)
        if ready is not None:
            ready.set()
        next_round = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                try:
                    if now >= next_round:
                        next_round = now + self.period
                        self._urgent.clear()
                        await self._publish_all(self._running())
                    elif self._urgent:
                        urgent, self._urgent = self._urgent, set()
                        await self._publish_all(self._running_of(urgent))
                except OUTAGE_ERRORS as exc:
                    log.debug("sim.usage_outage", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(0.0, next_round - time.monotonic())
                    )
                self._wake.clear()
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._on_event)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
