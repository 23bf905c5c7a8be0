"""The disruption controller: keeps each PodDisruptionBudget's status as kube's computes it.

Why this exists: an eviction reads ``status.disruptionsAllowed`` (and the other figures) from
the budget itself, so someone has to keep them true as pods come, go, become ready or not and
their controllers scale. As kube's ``disruption`` controller (leader-elected here as
``disruption-controller``, actor ``system:disruption-controller``), a budget is synced when it
is created or changed (an eviction's status write included), when a pod of its namespace that
it selects changes or goes, and when a ReplicaSet or Deployment of its namespace scales
(percentages and maxUnavailable are taken of the controllers' scale); and again when a
recorded eviction runs out (``disruptedPods`` entries last two minutes). The arithmetic is
``core.disruption.budget.compute_status``; here the pods are found (the budget's selector over
the namespace's pods in the cluster read model), each pod's controller's scale is found as
kube's finders find it (a ReplicaSet owned by a Deployment counts as the Deployment), and the
status is written through the gateway's ``status`` command **pinned to the version computed
from** (``expected_version``): an eviction that used a disruption meanwhile makes the write
fail, and the budget is synced again on the newer status, never overwriting the eviction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.disruption.budget import PodView, compute_status, pod_view
from core.errors import FleetError
from core.meta.labels import Selector
from handlers.controller import ControllerLoop, Leadership, LoopOptions
from projections.cluster import ClusterModel, ObjectRecord
from projections.ownership import Key
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "disruption-controller"
ACTOR = f"system:{ROLE}"
KIND = "PodDisruptionBudget"
_SCALE_KINDS = frozenset({"ReplicaSet", "Deployment"})


def _controller_of(manifest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (manifest.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


class DisruptionController:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        leader: Leadership,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._projection = projection
        self._commands = CommandClient(nc, actor=ACTOR)
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            all_keys=lambda: [(r.namespace, r.name) for r in projection.model.list(KIND)],
            kind=KIND,
            actor=ACTOR,
            **options,
        )
        self.synced = 0

    @classmethod
    async def create(
        cls, nc: Client, projection: Projection[ClusterModel], **options: Unpack[LoopOptions]
    ) -> DisruptionController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, projection, leader, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self.loop.run(ready)

    # -- what makes a budget due ---------------------------------------------------------------

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == KIND:
            # Its own status writes change nothing it computes from.
            return [] if e.actor == ACTOR else [(e.namespace, e.name)]
        if e.kind in _SCALE_KINDS:
            return self._budgets_in(e.namespace)
        if e.kind == "Pod":
            record = self._projection.model.get("Pod", e.namespace, e.name)
            if record is None:  # gone: any budget of the namespace may have selected it
                return self._budgets_in(e.namespace)
            labels = (record.manifest.get("metadata") or {}).get("labels") or {}
            return [
                (b.namespace, b.name)
                for b in self._projection.model.list(KIND, e.namespace)
                if self._selector(b).matches(labels)
            ]
        return []

    def _budgets_in(self, namespace: str) -> list[Key]:
        return [(b.namespace, b.name) for b in self._projection.model.list(KIND, namespace)]

    @staticmethod
    def _selector(budget: ObjectRecord) -> Selector:
        """``LabelSelectorAsSelector``: absent matches nothing, ``{}`` every pod."""
        return Selector.from_manifest((budget.manifest.get("spec") or {}).get("selector"))

    # -- a sync -------------------------------------------------------------------------------

    def _scale_of(self, pod: ObjectRecord) -> tuple[str, int] | None:
        """The (uid, replicas) of the pod's controller as kube's finders find it: a
        ReplicaSet's, or its Deployment's when one controls it; None when not found."""
        ref = _controller_of(pod.manifest)
        if ref is None:
            return None
        model = self._projection.model
        owner = model.get(str(ref.get("kind", "")), pod.namespace, str(ref.get("name", "")))
        if (
            owner is None
            or owner.kind not in _SCALE_KINDS
            or owner.uid != ref.get("uid", owner.uid)
        ):
            return None
        if owner.kind == "ReplicaSet":
            above = _controller_of(owner.manifest)
            if above is not None and above.get("kind") == "Deployment":
                deployment = model.get("Deployment", pod.namespace, str(above.get("name", "")))
                if deployment is None or deployment.uid != above.get("uid", deployment.uid):
                    return None
                owner = deployment
        return owner.uid, int((owner.manifest.get("spec") or {}).get("replicas", 1))

    def _pods_of(self, budget: ObjectRecord) -> list[PodView]:
        selector = self._selector(budget)
        views: list[PodView] = []
        for record in self._projection.model.list("Pod", budget.namespace):
            labels = (record.manifest.get("metadata") or {}).get("labels") or {}
            if selector.matches(labels):
                views.append(pod_view(record.manifest, scale=self._scale_of(record)))
        return views

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        budget = self._projection.model.get(KIND, namespace, name)
        if budget is None:
            self.loop.forget(key)
            return None
        now = time.time_ns()
        manifest = budget.manifest
        generation = int((manifest.get("metadata") or {}).get("generation") or 1)
        previous = manifest.get("status") or {}
        result = compute_status(
            manifest.get("spec") or {}, previous, self._pods_of(budget),
            generation=generation, now_ns=now,
        )  # fmt: skip
        self.synced += 1
        if result.unmanaged:
            log.info("disruption.unmanaged_pods", budget=f"{namespace}/{name}",
                     pods=result.unmanaged)  # fmt: skip
        if result.status != previous:
            cause = self.loop.cause(key, budget.last_seq)
            try:
                outcome = await self._commands.send(
                    KIND,
                    "status",
                    {"name": name, "namespace": namespace, "status": result.status},
                    idempotency_key=f"{ROLE}.status.{budget.uid}.{budget.version}",
                    expected_version=budget.version,
                    **cause.kwargs(),
                )
            except FleetError as exc:
                if exc.code != "conflict":
                    raise
                # An eviction (or a spec change) landed meanwhile: sync again on it.
                self.loop.mark(key)
                return None
            if outcome.seqs:
                await self._projection.wait_for(max(outcome.seqs))
        return result.recheck_ns
