"""How fast controllers may create pods: a token bucket per namespace, and Kubernetes' burst.

Why this exists: a replica count is only bounded by int32, so ``replicas: 1000000000`` is a
valid request, and the replica-set controller used to answer it with pods as fast as the log
took them (~500 a second) until ``fleetlog up`` had grown by hundreds of MB. Kubernetes'
ReplicaSet controller creates at most ``burstReplicas`` (500) pods per sync, in slow-start
batches, and its client's QPS limit spaces the syncs; fleetlog keeps the burst and states the
ceiling outright: each namespace may have at most ``per_second`` pods created by controllers a
second (``fleetlog up --pod-creation-rate``), with up to ``burst`` at once, so one namespace's
runaway workload neither floods the log nor starves the others.

Pure: time is passed in (nanoseconds), nothing is read or slept here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

__all__ = ["BURST_REPLICAS", "DEFAULT_POD_CREATION_RATE", "PodCreationRate"]

BURST_REPLICAS: Final = 500
"""Kubernetes' ``burstReplicas``: most pods one sync of a replica set creates (or deletes)."""

DEFAULT_POD_CREATION_RATE: Final = 100.0
"""Pods a second controllers may create in one namespace, by default."""


@dataclass
class PodCreationRate:
    """A token bucket per namespace: ``burst`` tokens, refilled at ``per_second``."""

    per_second: float = DEFAULT_POD_CREATION_RATE
    burst: int = BURST_REPLICAS
    _buckets: dict[str, tuple[float, int]] = field(default_factory=dict)
    """namespace -> (tokens, as of this instant in ns)."""

    def __post_init__(self) -> None:
        if not self.per_second > 0 or self.burst < 1:
            raise ValueError("a pod creation rate needs per_second > 0 and burst >= 1")

    def _tokens(self, namespace: str, now_ns: int) -> float:
        tokens, at_ns = self._buckets.get(namespace, (float(self.burst), now_ns))
        elapsed = max(0, now_ns - at_ns) / 1e9
        return min(float(self.burst), tokens + elapsed * self.per_second)

    def take(self, namespace: str, wanted: int, now_ns: int) -> int:
        """How many of ``wanted`` pods may be created in ``namespace`` now (they are taken)."""
        tokens = self._tokens(namespace, now_ns)
        granted = max(0, min(wanted, math.floor(tokens)))
        self._buckets[namespace] = (tokens - granted, now_ns)
        return granted

    def give_back(self, namespace: str, count: int, now_ns: int) -> None:
        """Return tokens for pods that were not created after all (a refusal)."""
        tokens = self._tokens(namespace, now_ns)
        self._buckets[namespace] = (min(float(self.burst), tokens + count), now_ns)

    def next_at_ns(self, namespace: str, now_ns: int) -> int:
        """When the next pod may be created in ``namespace``."""
        missing = 1.0 - self._tokens(namespace, now_ns)
        if missing <= 0:
            return now_ns
        return now_ns + math.ceil(missing / self.per_second * 1e9)
