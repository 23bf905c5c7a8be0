"""Per-namespace policy objects (LimitRanges, ResourceQuotas) as admission needs them.

Why this exists: admission must see a policy created a moment before the pod it applies to, yet
reading the log for every pod would cost a full read per command. This read model follows one
kind's events and, before answering about a namespace, waits until it has applied that
namespace's latest event of the kind (one direct-get round trip): read-your-writes without
reading the objects themselves.
"""

from __future__ import annotations

from typing import Any

from core.errors import FleetError
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.subjects import event_filter


class NamespacePolicies:
    """The LimitRanges or ResourceQuotas of a namespace, from a projection this gateway follows
    (filtered to the one kind), read-your-writes: before answering it waits until the
    projection has applied the namespace's latest event of that kind, so an object created (or
    a quota charged) just before is seen. One direct-get round trip per question."""

    def __init__(self, kind: str, store: EventStore) -> None:
        self.kind = kind
        self._store = store
        self.projection = Projection(ClusterModel(), store, filter_subject=event_filter(kind))

    async def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        latest = await self._store.last_seq(event_filter(self.kind, namespace))
        if not await self.projection.wait_for(latest):
            raise FleetError(
                f"the gateway's view of {self.kind}s lags the log; try again", code="unavailable"
            )
        return [r.manifest for r in self.projection.model.list(self.kind, namespace)]
