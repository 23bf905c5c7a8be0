"""The deployment controller: rolls each deployment out through its replica sets.

Why this exists: a deployment says "this template, this many, changed this way"; the
controller turns that into replica sets and their sizes, step by step, as pods become
available — and says how the rollout is going (``status``, with the Progressing condition
turning False/ProgressDeadlineExceeded when it stalls). What to do is decided purely by
``core.workloads.deployment.plan_deployment``; this handler reads the cluster projection, carries
the plan out through the command gateway (actor ``system:deployment-controller``) and records
the status. It is leader-elected (role ``deployment-controller``).

What the log shows of a rollout: ``ReplicaSetCreated`` (revision, owner reference),
``ScaledTo`` on the new and old replica sets with the reason (surge, availability), the
pods the replica-set controller creates and deletes in response, and ``DeploymentStatusUpdated``
with the counts and conditions — so the order of events proves the surge and unavailability
bounds were kept (the end-to-end test checks exactly that).

Replica sets no controller owns whose labels the deployment's selector matches are adopted
(Kubernetes' ``ClaimReplicaSets``): after ``delete --cascade=orphan`` and a re-create, the
deployment takes its replica sets (and so its pods) back instead of starting over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.errors import FleetError
from core.workloads.deployment import (
    AnnotateReplicaSet,
    CopyAnnotations,
    CreateReplicaSet,
    DeleteReplicaSet,
    OwnedReplicaSet,
    ScaleReplicaSet,
    plan_deployment,
)
from core.workloads.replicaset import count_pods
from handlers.controller import Cause, ControllerLoop, Leadership, LoopOptions, adopt_orphans
from projections.cluster import ClusterModel, ObjectRecord
from projections.ownership import ControllerIndex, Key, controlled_pods
from projections.runtime import Projection, digest_of
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "deployment-controller"
ACTOR = f"system:{ROLE}"


class DeploymentController:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        leader: Leadership,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._projection = projection
        self._commands = CommandClient(nc, actor=ACTOR)
        self._sets = ControllerIndex(projection, "ReplicaSet", "Deployment")
        self._pods = ControllerIndex(projection, "Pod", "ReplicaSet")
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            kind="Deployment",
            actor=ACTOR,
            all_keys=lambda: [(r.namespace, r.name) for r in projection.model.list("Deployment")],
            **options,
        )

    @classmethod
    async def create(
        cls, nc: Client, projection: Projection[ClusterModel], **options: Unpack[LoopOptions]
    ) -> DeploymentController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, projection, leader, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self.loop.run(ready)

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == "Deployment":
            return [(e.namespace, e.name)]
        if e.kind == "ReplicaSet":
            owner = self._sets.observe(event)
            if owner is not None:
                return [owner]
            if e.type in ("ReplicaSetCreated", "ReplicaSetUpdated") and self._sets.is_orphan(
                (e.namespace, e.name)
            ):
                return [
                    (r.namespace, r.name)
                    for r in self._projection.model.list("Deployment", e.namespace)
                ]
            return []
        if e.kind == "Pod":
            rs_key = self._pods.observe(event)
            if rs_key is None:
                return []
            rs = self._projection.model.get("ReplicaSet", *rs_key)
            owner = self._sets.controller_of(rs.manifest) if rs is not None else None
            return [(e.namespace, owner[0])] if owner is not None else []
        return []

    # -- one reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        deployment = self._projection.model.get("Deployment", namespace, name)
        if deployment is None:
            self.loop.forget(key)
            return None
        now_ns = time.time_ns()
        adopted = await adopt_orphans(
            self._commands,
            projection=self._projection,
            index=self._sets,
            namespace=namespace,
            selector=(deployment.manifest.get("spec") or {}).get("selector") or {},
            owner={
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "uid": deployment.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            },
            role=ROLE,
            cause=self.loop.cause(key, deployment.last_seq),
        )
        if adopted:
            await self.loop.settle(key, max(adopted))
            self.loop.mark(key)  # plan with the adopted replica sets
            return None
        owned, next_available = self._owned_sets(deployment, now_ns)
        mine = {rs.name for rs in owned}
        taken = frozenset(
            r.name
            for r in self._projection.model.list("ReplicaSet", namespace)
            if r.name not in mine
        )
        plan = plan_deployment(
            name=name,
            namespace=namespace,
            uid=deployment.uid,
            manifest=deployment.manifest,
            replica_sets=owned,
            now_ns=now_ns,
            names_taken=taken,
        )

        cause = self.loop.cause(key, deployment.last_seq)
        seqs: list[int] = []
        for action in plan.actions:
            # Copied onto the replica set as it is after this sync's scaling: the update is
            # pinned to that version (the view must have it first).
            copying = isinstance(action, CopyAnnotations) and bool(seqs)
            if copying and not await self.loop.settle(key, max(seqs)):
                self.loop.mark(key)  # once the view has this sync's writes (the loop waits)
                return None
            seqs.extend(await self._carry_out(deployment, action, cause))
        if seqs and not await self.loop.settle(key, max(seqs)):
            # Expectations: the next sync (held back by the loop until the view has these
            # writes) decides, and records the status, on a view that includes them.
            self.loop.mark(key)
            return None
        await self._record_status(
            deployment, status=plan.status, annotations=plan.annotations, cause=cause
        )
        if plan.actions:
            self.loop.mark(key)  # look again on the view that includes these writes
        rechecks = [t for t in (plan.recheck_at_ns, next_available) if t is not None]
        return min(rechecks) if rechecks else None

    def _owned_sets(
        self, deployment: ObjectRecord, now_ns: int
    ) -> tuple[list[OwnedReplicaSet], int | None]:
        model = self._projection.model
        min_ready = int((deployment.manifest.get("spec") or {}).get("minReadySeconds") or 0)
        owned: list[OwnedReplicaSet] = []
        next_available: int | None = None
        for rs_key in self._sets.dependents(deployment.namespace, deployment.uid):
            rs = model.get("ReplicaSet", *rs_key)
            if rs is None:
                continue
            pods = controlled_pods(model, self._pods, namespace=rs.namespace, owner_uid=rs.uid)
            template = (rs.manifest.get("spec") or {}).get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            counts, available_at = count_pods(
                pods, template_labels=labels, min_ready_seconds=min_ready, now_ns=now_ns
            )
            if available_at is not None:
                next_available = min(next_available or available_at, available_at)
            owned.append(
                OwnedReplicaSet(
                    name=rs.name,
                    uid=rs.uid,
                    manifest=rs.manifest,
                    created_ns=rs.created_ns,
                    pods=counts,
                )
            )
        return owned, next_available

    async def _carry_out(
        self,
        deployment: ObjectRecord,
        action: CreateReplicaSet
        | ScaleReplicaSet
        | AnnotateReplicaSet
        | CopyAnnotations
        | DeleteReplicaSet,
        cause: Cause,
    ) -> list[int]:
        """Carry out one action; the sequences of the events it wrote."""
        namespace = deployment.namespace
        uid = deployment.uid
        if isinstance(action, CreateReplicaSet):
            rs_name = action.manifest["metadata"]["name"]
            log.info("deployment.create_replica_set", replicaset=rs_name, reason=action.reason)
            created = await self._commands.send(
                "ReplicaSet",
                "create",
                {"manifest": action.manifest},
                idempotency_key=f"{ROLE}.create.{uid}.{rs_name}",
                **cause.kwargs(),
            )
            return created.seqs
        if isinstance(action, DeleteReplicaSet):
            record = self._projection.model.get("ReplicaSet", namespace, action.name)
            if record is None or record.uid != action.uid:
                return []
            try:
                deleted = await self._commands.send(
                    "ReplicaSet",
                    "delete",
                    {"name": action.name, "namespace": namespace, "reason": action.reason},
                    idempotency_key=f"{ROLE}.delete.{action.uid}",
                    expected_version=record.version,
                    **cause.kwargs(),
                )
            except FleetError as exc:
                if exc.code == "not_found":
                    return []
                raise
            return deleted.seqs
        record = self._projection.model.get("ReplicaSet", namespace, action.name)
        if record is None:
            return []
        if isinstance(action, CopyAnnotations):
            # The replica set's own metadata, so an update of it (as kube's controller
            # updates it), pinned to the version it was planned on.
            metadata = dict(record.manifest.get("metadata") or {})
            current = metadata.get("annotations") or {}
            if all(current.get(k) == v for k, v in action.annotations.items()):
                return []
            metadata["annotations"] = {**current, **action.annotations}
            copied = await self._commands.send(
                "ReplicaSet",
                "apply",
                {"manifest": {**record.manifest, "metadata": metadata}},
                idempotency_key=f"{ROLE}.copy.{record.uid}.{record.version}",
                expected_version=record.version,
                **cause.kwargs(),
            )
            return copied.seqs
        seqs: list[int] = []
        replicas = int((record.manifest.get("spec") or {}).get("replicas", 1))
        if isinstance(action, ScaleReplicaSet) and replicas != action.replicas:
            log.info(
                "deployment.scale_replica_set",
                replicaset=action.name,
                replicas=action.replicas,
                reason=action.reason,
            )
            outcome = await self._commands.send(
                "ReplicaSet",
                "scale",
                {
                    "name": action.name,
                    "namespace": namespace,
                    "replicas": action.replicas,
                    "reason": action.reason,
                },
                idempotency_key=f"{ROLE}.scale.{record.uid}.{record.version}.{action.replicas}",
                **cause.kwargs(),
            )
            seqs.extend(outcome.seqs)
        annotations = action.annotations
        current = (record.manifest.get("metadata") or {}).get("annotations") or {}
        if any(current.get(k) != v for k, v in annotations.items()):
            outcome = await self._commands.send(
                "ReplicaSet",
                "status",
                {"name": action.name, "namespace": namespace, "annotations": annotations},
                idempotency_key=f"{ROLE}.annotate.{record.uid}.{digest_of(annotations)[:16]}"
                f".{record.version}",
                **cause.kwargs(),
            )
            seqs.extend(outcome.seqs)
        return seqs

    async def _record_status(
        self,
        deployment: ObjectRecord,
        *,
        status: dict[str, Any],
        annotations: dict[str, str],
        cause: Cause,
    ) -> None:
        current = (deployment.manifest.get("metadata") or {}).get("annotations") or {}
        unchanged = deployment.manifest.get("status") == status and all(
            current.get(k) == v for k, v in annotations.items()
        )
        if unchanged:
            return
        outcome = await self._commands.send(
            "Deployment",
            "status",
            {
                "name": deployment.name,
                "namespace": deployment.namespace,
                "status": status,
                "annotations": annotations,
            },
            idempotency_key=f"{ROLE}.status.{deployment.uid}.{deployment.version}"
            f".{digest_of([status, annotations])[:16]}",
            **cause.kwargs(),
        )
        if outcome.seqs:
            await self.loop.settle((deployment.namespace, deployment.name), max(outcome.seqs))
