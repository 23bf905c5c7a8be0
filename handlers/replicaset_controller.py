"""The replica-set controller: each replica set keeps exactly ``spec.replicas`` live pods.

Why this exists: it is what turns a count into pods and keeps it true — a pod that fails, is
deleted, or disappears with its node is replaced; surplus pods go in Kubernetes' order
(``core.workloads.replicaset``). It is a log-following handler, leader-elected (role
``replicaset-controller``), acting only through the command gateway (actor
``system:replicaset-controller``), so every pod it creates or deletes is an ordinary,
attributed event whose causation names the replica set and the version it acted on.

How a reconcile goes (``core.workloads.replicaset.plan_replica_set`` decides):

* the replica set and its pods come from the shared cluster projection (pods whose owner
  reference with ``controller: true`` names the replica set's uid);
* missing pods are created in slow-start batches (1, 2, 4 … as Kubernetes' ``slowStartBatch``),
  at most ``burstReplicas`` (500) per reconcile and no faster than the namespace's pod creation
  rate (``core.workloads.creation_rate``; ``fleetlog up --pod-creation-rate``), the rest at
  the next reconcile, when the namespace has tokens again; stopping at the first refusal (a
  quota, say): the refusal becomes the ``ReplicaFailure`` condition of the status, so it is
  reported, not hidden;
* surplus pods are deleted with ``expected_version`` (a pod changed since the decision is
  decided again, not hit blindly);
* the controller then waits for its own writes to reach the projection (and the loop counts
  the set again only once they have: ``ControllerLoop.settle``) and, when nothing was
  left to do, records ``status`` (replicas, fully labeled, ready, available, observed
  generation, conditions) if it changed. A ready pod that becomes available only after
  ``minReadySeconds`` is looked at again at that moment.

Pods no controller owns whose labels the selector matches are adopted first (an apply adding
the controller reference, as Kubernetes' ``ClaimPods``): a replica set orphaned from its
deployment and a deployment re-created later find each other again. Not done (Kubernetes
does): releasing pods whose labels stop matching the selector.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.errors import FleetError
from core.meta.timestamps import format_stamp
from core.policy.quota import is_terminal
from core.workloads.creation_rate import BURST_REPLICAS, PodCreationRate
from core.workloads.replicaset import PodCounts, RankedPod, plan_replica_set
from handlers.controller import Cause, ControllerLoop, Leadership, LoopOptions, adopt_orphans
from projections.cluster import ClusterModel, ObjectRecord
from projections.ownership import ControllerIndex, Key, controlled_pods
from projections.runtime import Projection, digest_of
from streams.commandbus import CommandClient, Outcome
from streams.envelope import StoredEvent
from streams.leases import LeaderLease

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "replicaset-controller"
ACTOR = f"system:{ROLE}"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
FAILED_CREATE_RETRY_SECONDS = 5.0


def generated_name(base: str) -> str:
    """``generateName``: the base, a dash and five random characters (names stay ≤ 63)."""
    suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
    return f"{base[:57]}-{suffix}"


def controller_reference(rs: ObjectRecord) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs.name,
        "uid": rs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_from_template(rs: ObjectRecord, name: str) -> dict[str, Any]:
    """A pod of the replica set: its template, its namespace, and a controller reference."""
    template = rs.manifest["spec"]["template"]
    metadata: dict[str, Any] = {
        **(template.get("metadata") or {}),
        "name": name,
        "namespace": rs.namespace,
        "ownerReferences": [controller_reference(rs)],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


class ReplicaSetController:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        leader: Leadership,
        *,
        creation_rate: PodCreationRate | None = None,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._projection = projection
        self._creation_rate = creation_rate or PodCreationRate()
        self._commands = CommandClient(nc, actor=ACTOR)
        self._pods = ControllerIndex(projection, "Pod", "ReplicaSet")
        self._failures: dict[Key, str] = {}
        self._unconfirmed: dict[Key, list[str]] = {}
        """Replica set -> names of pods whose create got no answer (a timeout during a NATS
        outage): the gateway may have applied it. They are sent again, under the same name and
        idempotency key, before the set is counted again, so the answer (created, or "already
        done") is learnt instead of a second pod being made for the same slot."""
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            kind="ReplicaSet",
            actor=ACTOR,
            all_keys=lambda: [(r.namespace, r.name) for r in projection.model.list("ReplicaSet")],
            **options,
        )
        self.created = 0
        self.deleted = 0

    @classmethod
    async def create(
        cls,
        nc: Client,
        projection: Projection[ClusterModel],
        *,
        creation_rate: PodCreationRate | None = None,
        **options: Unpack[LoopOptions],
    ) -> ReplicaSetController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, projection, leader, creation_rate=creation_rate, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self.loop.run(ready)

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        e = event.envelope
        if e.kind == "ReplicaSet":
            return [(e.namespace, e.name)]
        owner = self._pods.observe(event)
        if owner is not None:
            return [owner]
        if e.type in ("PodCreated", "PodUpdated") and self._pods.is_orphan((e.namespace, e.name)):
            return [
                (r.namespace, r.name)
                for r in self._projection.model.list("ReplicaSet", e.namespace)
            ]
        return []

    # -- one reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        rs = self._projection.model.get("ReplicaSet", namespace, name)
        if rs is None:
            self._failures.pop(key, None)
            self._unconfirmed.pop(key, None)
            self.loop.forget(key)
            return None
        if self._unconfirmed.get(key):
            await self._confirm_creates(key, rs, self.loop.cause(key, rs.last_seq))
        now_ns = time.time_ns()
        spec = rs.manifest.get("spec") or {}
        cause = self.loop.cause(key, rs.last_seq)
        adopted = await adopt_orphans(
            self._commands,
            projection=self._projection,
            index=self._pods,
            namespace=namespace,
            selector=spec.get("selector") or {},
            owner=controller_reference(rs),
            role=ROLE,
            cause=cause,
            adoptable=lambda pod: not is_terminal(pod.manifest),
        )
        if adopted:
            await self.loop.settle(key, max(adopted))
            self.loop.mark(key)  # decide on the count that includes them
            return None
        pods = controlled_pods(
            self._projection.model, self._pods, namespace=rs.namespace, owner_uid=rs.uid
        )
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        plan = plan_replica_set(
            desired=int(spec.get("replicas", 1)),
            pods=pods,
            template_labels=template_labels,
            min_ready_seconds=int(spec.get("minReadySeconds") or 0),
            now_ns=now_ns,
        )
        seqs: list[int] = []
        throttled_until: int | None = None
        try:
            if plan.create:
                wanted = min(plan.create, BURST_REPLICAS)
                allowed = self._creation_rate.take(namespace, wanted, now_ns)
                if allowed < plan.create:
                    throttled_until = self._creation_rate.next_at_ns(namespace, now_ns)
                    log.debug("replicaset.throttled", replicaset=f"{namespace}/{name}",
                              missing=plan.create, creating=allowed)  # fmt: skip
                failure = None
                if allowed:
                    failure = await self._create_pods(rs, count=allowed, cause=cause, seqs=seqs)
                if failure is None:
                    self._failures.pop(key, None)
                else:
                    self._failures[key] = failure
            if plan.delete:
                await self._delete_pods(
                    rs, victims=plan.delete, active=len(pods), cause=cause, seqs=seqs
                )
        finally:
            # Expectations: whatever was written is in the view before the next decision
            # (the loop holds the next reconcile of this set back until it is).
            if seqs:
                await self.loop.settle(key, max(seqs))
        if throttled_until is not None and key not in self._failures:
            return throttled_until  # the rest when the namespace has tokens again
        if (plan.create or plan.delete) and key not in self._failures:
            self.loop.mark(key)  # the status is recorded once the counts have settled
            return None
        failure = self._failures.get(key)
        await self._record_status(
            rs, counts=plan.counts, failure=failure, now_ns=now_ns, cause=cause
        )
        if failure is not None:
            return now_ns + int(FAILED_CREATE_RETRY_SECONDS * 1e9)
        return plan.recheck_at_ns

    async def _create_pods(
        self, rs: ObjectRecord, *, count: int, cause: Cause, seqs: list[int]
    ) -> str | None:
        """Create ``count`` pods in slow-start batches; the first refusal ends it (returned),
        and the rate's tokens for the pods not created go back."""
        before = self.created
        try:
            return await self._create_batches(rs, remaining=count, cause=cause, seqs=seqs)
        finally:
            unused = count - (self.created - before)
            if unused:
                self._creation_rate.give_back(rs.namespace, unused, time.time_ns())

    async def _confirm_creates(self, key: Key, rs: ObjectRecord, cause: Cause) -> None:
        """Send the unanswered creates again (same names, same keys) and wait until what they
        wrote is in the view; raises while the gateway still does not answer."""
        names = self._unconfirmed[key]
        outcomes = await asyncio.gather(
            *(self._create_pod(rs, cause, name) for name in names), return_exceptions=True
        )
        seqs: list[int] = []
        still: list[str] = []
        refused = False
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, FleetError):
                # Refused now: already there (its key forgotten), or the set changed. Either
                # way the view must have caught up before the set is counted.
                refused = True
                continue
            if isinstance(outcome, BaseException):
                still.append(name)
            else:
                seqs.extend(outcome.seqs)
        self._unconfirmed[key] = still
        if seqs and not await self.loop.settle(key, max(seqs)):
            raise TimeoutError(f"the view does not hold the pods of {rs.name} created yet")
        if refused and not await self.loop.settle(key, await self._projection.log_end()):
            raise TimeoutError(f"the view is behind the log; {rs.name} is counted later")
        if still:
            raise TimeoutError(f"{len(still)} pod creates of {rs.name} still unanswered")
        del self._unconfirmed[key]

    async def _create_batches(
        self, rs: ObjectRecord, *, remaining: int, cause: Cause, seqs: list[int]
    ) -> str | None:
        batch = 1
        while remaining > 0:
            size = min(batch, remaining)
            names = [generated_name(rs.name) for _ in range(size)]
            outcomes = await asyncio.gather(
                *(self._create_pod(rs, cause, name) for name in names), return_exceptions=True
            )
            unanswered = [
                name
                for name, outcome in zip(names, outcomes, strict=True)
                if isinstance(outcome, BaseException) and not isinstance(outcome, FleetError)
            ]
            if unanswered:
                self._unconfirmed.setdefault((rs.namespace, rs.name), []).extend(unanswered)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            for outcome in outcomes:
                if not isinstance(outcome, BaseException):
                    seqs.extend(outcome.seqs)
                    self.created += 1
            unexpected = [f for f in failures if not isinstance(f, FleetError)]
            if unexpected:
                raise unexpected[0]
            if failures:
                refused = failures[0]
                assert isinstance(refused, FleetError)
                log.info(
                    "replicaset.create_refused",
                    replicaset=f"{rs.namespace}/{rs.name}",
                    error=refused.message,
                )
                return refused.message
            remaining -= size
            batch *= 2
        return None

    async def _create_pod(self, rs: ObjectRecord, cause: Cause, name: str) -> Outcome:
        return await self._commands.send(
            "Pod",
            "create",
            {"manifest": pod_from_template(rs, name)},
            idempotency_key=f"{ROLE}.create.{rs.uid}.{name}",
            **cause.kwargs(),
        )

    async def _delete_pods(
        self,
        rs: ObjectRecord,
        *,
        victims: list[RankedPod],
        active: int,
        cause: Cause,
        seqs: list[int],
    ) -> None:
        desired = int((rs.manifest.get("spec") or {}).get("replicas", 1))
        reason = f"replica set {rs.name} has {active} pods and wants {desired}"

        async def delete(pod: RankedPod) -> None:
            pod_namespace, pod_name = pod.key.split("/", 1)
            record = self._projection.model.get("Pod", pod_namespace, pod_name)
            if record is None:
                return
            try:
                outcome = await self._commands.send(
                    "Pod",
                    "delete",
                    {"name": pod_name, "namespace": pod_namespace, "reason": reason},
                    idempotency_key=f"{ROLE}.delete.{record.uid}",
                    expected_version=record.version,
                    **cause.kwargs(),
                )
            except FleetError as exc:
                if exc.code != "not_found":
                    raise
                return
            seqs.extend(outcome.seqs)
            self.deleted += 1

        # Every delete is seen through (none left running after this reconcile ends, or the
        # next one would decide while they land); then the first failure is raised.
        outcomes = await asyncio.gather(*(delete(pod) for pod in victims), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]

    async def _record_status(
        self,
        rs: ObjectRecord,
        *,
        counts: PodCounts,
        failure: str | None,
        now_ns: int,
        cause: Cause,
    ) -> None:
        previous = rs.manifest.get("status") or {}
        status: dict[str, Any] = {
            "replicas": counts.replicas,
            "fullyLabeledReplicas": counts.fully_labeled,
            "readyReplicas": counts.ready,
            "availableReplicas": counts.available,
            "observedGeneration": int((rs.manifest.get("metadata") or {}).get("generation") or 1),
        }
        if failure is not None:
            before = next(
                (c for c in previous.get("conditions") or [] if c.get("type") == "ReplicaFailure"),
                None,
            )
            if before is not None and before.get("message") == failure:
                condition = before
            else:
                condition = {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": failure,
                    "lastTransitionTime": format_stamp(now_ns),
                }
            status["conditions"] = [condition]
        if status == previous:
            return
        outcome = await self._commands.send(
            "ReplicaSet",
            "status",
            {"name": rs.name, "namespace": rs.namespace, "status": status},
            idempotency_key=f"{ROLE}.status.{rs.uid}.{rs.version}.{digest_of(status)[:16]}",
            **cause.kwargs(),
        )
        if outcome.seqs:
            await self.loop.settle((rs.namespace, rs.name), max(outcome.seqs))
