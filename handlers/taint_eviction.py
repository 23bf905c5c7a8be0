"""The taint-eviction controller: pods leave nodes whose NoExecute taints they do not tolerate.

Kubernetes' ``taint-eviction-controller`` as a fleetlog handler. It runs beside the node
lifecycle controller, under the same leader lease (``handlers.node_lifecycle``): every replica
follows the nodes' taints, only the leader keeps the schedule and acts.

How data flows:

* It listens to the shared cluster projection (``Projection.listeners``) and keeps two small
  indexes: the NoExecute taints of every tainted node, and which pods are bound to which node.
  A node or pod event marks what it touched as dirty and wakes the loop.
* It runs on the shared controller loop (``handlers.controller``), keyed by pod, under the
  node lifecycle controller's lease, which it follows without renewing (``FollowedLease``).
  The leader re-decides each dirty pod with ``core.nodes.taint_eviction.decide`` (the
  taint's ``timeAdded`` + the pod's ``tolerationSeconds``); a pod not due yet asks the loop
  to look again at its deadline, so the loop sleeps until the earliest deadline or the next
  change; there is no polling (it also wakes once per monitor period to notice a change of
  leadership).
* A taint removed before the deadline (the node came back) re-decides the pods as "never" and
  their entries are dropped: the eviction is cancelled.
* A due pod is deleted through the command gateway (actor ``system:taint-eviction-controller``)
  with a reason naming the taint, and an idempotency key derived from the pod's uid, so a new
  leader re-sending the same eviction is answered with the first outcome and a deleted pod is
  never deleted twice. The gateway releases the pod's reservation on its node atomically with
  the ``PodDeleted``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from nats.aio.client import Client

from core.api.causation import caused_by_event
from core.errors import FleetError
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.taints import NO_EXECUTE, NodeTaint, pod_tolerations
from core.nodes.lifecycle import DEFAULT_MONITOR_PERIOD_SECONDS
from core.nodes.taint_eviction import (
    NEVER,
    Verdict,
    decide,
    noexecute_taints,
)
from handlers.controller import CauseFields, ControllerLoop, FollowedLease, Leadership
from projections.cluster import ClusterModel
from projections.ownership import Key
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent

log = structlog.get_logger(__name__)

ROLE = "taint-eviction-controller"
ACTOR = f"system:{ROLE}"
RETRY_SECONDS = 1.0
MAX_IN_FLIGHT = 64
# noexecute_taints() fills in this add time for taints without ``timeAdded``; the controller
# replaces it with the time of the event that first showed the taint.
_UNSTAMPED = -1


def eviction_key(pod_uid: str) -> str:
    """The idempotency key of a pod's eviction: one per pod uid, whoever leads."""
    return f"taint-eviction.{pod_uid}"


class TaintEvictionController:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        leader: Leadership,
        *,
        recheck_seconds: float = DEFAULT_MONITOR_PERIOD_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        max_in_flight: int = MAX_IN_FLIGHT,
        features: FeatureGates = DEFAULT_FEATURES,
    ) -> None:
        """``leader`` is the node lifecycle controller's lease: this controller acts while it
        is held, and leaves renewing it to its holder."""
        self._projection = projection
        self._features = features
        self._commands = CommandClient(nc, actor=ACTOR)
        self._taints: dict[str, tuple[NodeTaint, ...]] = {}
        self._taint_cause: dict[str, tuple[int, str | None]] = {}
        self._first_seen: dict[tuple[str, str, str], int] = {}
        self._pods_on: dict[str, set[Key]] = {}
        self._node_of: dict[Key, str] = {}
        self.scheduled: dict[Key, Verdict] = {}
        """The pods (namespace, name) the leader will evict, and when."""
        self.evicted = 0
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=FollowedLease(leader),
            reconcile=self.reconcile,
            keys_of=self._follow,
            all_keys=self._all_keys,
            actor=ACTOR,
            max_in_flight=max_in_flight,
            period_seconds=recheck_seconds,
            retry_seconds=retry_seconds,
        )

    @property
    def recheck_seconds(self) -> float:
        return self.loop.period_seconds

    @property
    def retry_seconds(self) -> float:
        return self.loop.retry_seconds

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow the taints and (while the lease is held) evict, until cancelled."""
        self._seed()
        await self.loop.run(ready)

    # -- following the cluster ------------------------------------------------------------------

    def _seed(self) -> None:
        model = self._projection.model
        for node in model.list("Node"):
            if self._node_changed(node.name, node.updated_ns):
                self._taint_cause[node.name] = (node.last_seq, None)
        for pod in model.list("Pod"):
            self._pod_changed((pod.namespace, pod.name))

    def _follow(self, event: StoredEvent) -> Iterable[Key]:
        """Index the event; the pods it makes due for a decision: every pod of a node whose
        NoExecute taints changed, a pod on a tainted node, a pod with an eviction scheduled."""
        e = event.envelope
        if e.kind == "Node":
            if not self._node_changed(e.name, e.timestamp_ns):
                return ()
            # The event that tainted the node is what its evictions are caused by.
            if e.name in self._taints:
                self._taint_cause[e.name] = (event.seq, e.correlation_id or None)
            return set(self._pods_on.get(e.name, ()))
        if e.kind == "Pod":
            key = (e.namespace, e.name)
            node = self._pod_changed(key)
            if (node is not None and node in self._taints) or key in self.scheduled:
                return (key,)
        return ()

    def _all_keys(self) -> Iterable[Key]:
        """What a new leader decides: every pod on a tainted node, and any still scheduled."""
        keys = set(self.scheduled)
        for node in self._taints:
            keys.update(self._pods_on.get(node, ()))
        return keys

    def _node_changed(self, name: str, at_ns: int) -> bool:
        """Follow a node's NoExecute taints; True if they changed."""
        record = self._projection.model.get("Node", "", name)
        found = (
            noexecute_taints(record.manifest, fallback_added_ns=_UNSTAMPED)
            if record is not None
            else ()
        )
        taints = tuple(self._stamped(name, taint, at_ns) for taint in found)
        if taints == self._taints.get(name, ()):
            return False
        if taints:
            self._taints[name] = taints
        else:
            self._taints.pop(name, None)
            self._taint_cause.pop(name, None)
        live = {(name, t.key, t.value) for t in taints}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k[0] != name or k in live}
        return True

    def _stamped(self, node: str, taint: NodeTaint, at_ns: int) -> NodeTaint:
        if taint.added_ns != _UNSTAMPED:
            return taint
        first = self._first_seen.setdefault((node, taint.key, taint.value), at_ns)
        return NodeTaint(taint.key, taint.value, NO_EXECUTE, first)

    def _pod_changed(self, key: Key) -> str | None:
        """Follow which node a pod is bound to; that node (None: unbound or gone)."""
        record = self._projection.model.get("Pod", *key)
        node = (record.manifest.get("spec") or {}).get("nodeName") if record else None
        previous = self._node_of.get(key)
        if previous != node:
            if previous is not None:
                self._pods_on.get(previous, set()).discard(key)
                self._node_of.pop(key, None)
            if node:
                self._pods_on.setdefault(node, set()).add(key)
                self._node_of[key] = node
        return node or None

    # -- deciding ---------------------------------------------------------------------------------

    def _verdict(self, key: Key, now_ns: int) -> Verdict:
        node = self._node_of.get(key)
        taints = self._taints.get(node, ()) if node else ()
        if not taints:
            return NEVER
        record = self._projection.model.get("Pod", *key)
        if record is None:
            return NEVER
        return decide(
            taints, pod_tolerations(record.manifest, features=self._features), now_ns=now_ns
        )

    async def reconcile(self, key: Key) -> int | None:
        """Decide one pod: cancel its eviction, schedule it (the loop looks again at the
        deadline), or evict it now."""
        now = time.time_ns()
        verdict = self._verdict(key, now)
        pod = "/".join(key)
        if verdict.action == "never":
            if self.scheduled.pop(key, None) is not None:
                log.info("taint_eviction.cancelled", pod=pod)
            self.loop.forget(key)
            return None
        previous = self.scheduled.get(key)
        self.scheduled[key] = verdict
        assert verdict.evict_at_ns is not None
        if verdict.action == "at" and (
            previous is None or previous.evict_at_ns != verdict.evict_at_ns
        ):
            log.info(
                "taint_eviction.scheduled",
                pod=pod, at_ns=verdict.evict_at_ns, taint=verdict.taint,
            )  # fmt: skip
        if not verdict.due(now):
            return verdict.evict_at_ns
        return await self._evict(key, verdict)

    # -- acting -----------------------------------------------------------------------------------

    def _cause_of(self, node: str, verdict: Verdict) -> CauseFields:
        """The event that put the taint on the node (``seq:<n>``), with its correlation."""
        seen = self._taint_cause.get(node)
        if seen is None:
            return {
                "causation_id": f"node {node} tainted {verdict.taint}"[:128],
                "correlation_id": None,
            }
        return {"causation_id": caused_by_event(seen[0]), "correlation_id": seen[1]}

    async def _evict(self, key: Key, verdict: Verdict) -> int | None:
        """Delete the pod; after a refusal, the time to try again."""
        namespace, name = key
        pod = f"{namespace}/{name}"
        record = self._projection.model.get("Pod", namespace, name)
        node = self._node_of.get(key, "")
        if record is None:
            return None
        try:
            await self._commands.send(
                "Pod",
                "delete",
                {"name": name, "namespace": namespace, "reason": verdict.reason},
                idempotency_key=eviction_key(record.uid),
                **self._cause_of(node, verdict),
            )
        except FleetError as exc:
            if exc.code == "not_found":
                return None  # already gone (deleted by someone else, or by a previous leader)
            log.warning("taint_eviction.failed", pod=pod, error=str(exc), code=exc.code)
            return time.time_ns() + int(self.retry_seconds * 1e9)
        self.evicted += 1
        log.info("taint_eviction.evicted", pod=pod, node=node, reason=verdict.reason)
        return None
