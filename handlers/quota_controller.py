"""The resource-quota controller: a quota's ledger counts exactly the namespace's live pods.

Why this exists: admission (the gateway) charges a pod as it is created and releases it as it
is deleted, atomically with those events. Two things happen outside a command, and Kubernetes'
quota controller corrects them by recalculating usage: a pod that finishes (Succeeded or
Failed) no longer counts — otherwise a replica set could never replace a failed pod under a
tight quota — and pods that existed before the quota was created must count. This controller
(leader-elected as ``resourcequota-controller``) does the same, with
``core.policy.quota.reconcile_usage`` deciding, and records ``QuotaReleased`` (reason ``pod Failed``
…) and ``QuotaCharged`` (reason ``counted: existed before the quota``) on the quota aggregate
directly, with an expectation on its last event: a gateway charging the same quota meanwhile
makes one of the two decide again on the newer ledger.

Before deciding it waits until the cluster projection has caught up with the quota's last
event, so a pod whose creation charged the quota is always among the pods it compares with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from nats.aio.client import Client

from core.meta.aggregate import timestamp_from_ns
from core.policy.aggregates import ResourceQuota
from core.policy.quota import reconcile_usage
from handlers.controller import ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.decide import Append, Attempt, decide_and_append
from streams.envelope import StoredEvent
from streams.eventstore import ConcurrencyConflict
from streams.leases import LeaderLease
from streams.repository import AggregateRepository
from streams.subjects import AggregateRef

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "resourcequota-controller"
ACTOR = f"system:{ROLE}"
ATTEMPTS = 5
_POD_EVENTS = frozenset({"PodCreated", "PodDeleted", "PodSucceeded", "PodFailed"})


class QuotaController:
    def __init__(
        self,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        leader: Leadership,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._repository = repository
        self._projection = projection
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            kind="ResourceQuota",
            actor=ACTOR,
            all_keys=lambda: [
                (r.namespace, r.name) for r in projection.model.list("ResourceQuota")
            ],
            **options,
        )
        self.released = 0
        self.counted = 0

    @classmethod
    async def create(
        cls,
        nc: Client,
        repository: AggregateRepository,
        projection: Projection[ClusterModel],
        **options: Unpack[LoopOptions],
    ) -> QuotaController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(repository, projection, leader, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self.loop.run(ready)

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == "ResourceQuota" and e.type in ("ResourceQuotaCreated", "ResourceQuotaUpdated"):
            return [(e.namespace, e.name)]
        if e.type in _POD_EVENTS:
            return [
                (r.namespace, r.name)
                for r in self._projection.model.list("ResourceQuota", e.namespace)
            ]
        return []

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        ref = AggregateRef("ResourceQuota", namespace, name)
        corrected: list[tuple[dict[str, str], dict[str, dict[str, int]]]] = []

        async def decide(attempt: Attempt) -> Append | None:
            corrected.clear()
            loaded = attempt[ref]
            quota = loaded.aggregate
            if not isinstance(quota, ResourceQuota) or not quota.exists:
                return None
            await self._projection.wait_for(loaded.last_seq)
            pods = {
                f"{namespace}/{record.name}": record.manifest
                for record in self._projection.model.list("Pod", namespace)
            }
            release, count = reconcile_usage(quota.charges, pods)
            if not release and not count:
                return None
            seen = quota.version
            now = time.time_ns()
            at = timestamp_from_ns(now)
            for pod, why in sorted(release.items()):
                quota.release(pod=pod, reason=why, at=at)
            for pod, usage in sorted(count.items()):
                quota.count(pod=pod, usage=usage, reason="counted: existed before the quota", at=at)
            token = f"{ROLE}.{quota.uid}.{seen}"
            cause = self.loop.cause(key, loaded.last_seq)
            corrected.append((release, count))
            return Append(
                changes=[loaded],
                provenance=cause.provenance(actor=ACTOR, token=token, now_ns=now),
            )

        try:
            # Read fresh every time: a gateway charged or released meanwhile, decide again.
            decided = await decide_and_append(
                self._repository, [ref], decide, attempts=ATTEMPTS, start_fresh=True
            )
        except ConcurrencyConflict as exc:
            raise RuntimeError(f"{ref} kept changing while its usage was reconciled") from exc
        if decided.written is None:
            return None
        [(release, count)] = corrected
        self.released += len(release)
        self.counted += len(count)
        log.info(
            "quota.reconciled",
            quota=f"{namespace}/{name}",
            released=sorted(release),
            counted=sorted(count),
        )
        return None
