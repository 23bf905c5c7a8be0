"""The last stage: decide the command on the aggregate's state and append what it decided.

Why this exists: this is where a command becomes events. It loads the aggregate (and, for a
pod, the node and quotas the same append must change), lets ``core`` decide, and appends with
the aggregate's last sequence as the expectation, deciding again on fresh state when the append
finds the cache was stale. The events are named by the command's write token (its idempotency
key plus the request's fingerprint), so a retry whose original landed finds them on the
aggregate and is answered with them, at no extra round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid

import structlog

from core.api.catalog import AGGREGATES
from core.api.causation import caused_by_command
from core.api.commands import DeleteBody, NodeBody, ScaleBody, StatusBody
from core.errors import Conflict, FleetError, NotFound
from core.meta.aggregate import timestamp_from_ns
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.policy.aggregates import ResourceQuota
from core.policy.quota import pod_usage
from core.workloads.aggregate import Workload
from handlers.gateway.context import CommandContext, policies_of
from projections.policies import NamespacePolicies
from streams.eventstore import ConcurrencyConflict
from streams.repository import AggregateRepository, Loaded, Provenance, uuid5_text
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

MAX_DECISION_ATTEMPTS = 12
UID_NAMESPACE = uuid.UUID("0b8f4f53-0c55-4f0e-a3c4-4a7c1b3d5e20")


class Execute:
    """Load the aggregate, let core decide, append with the aggregate's last sequence.

    A pod's create is appended with its charge to each ResourceQuota of its namespace, and a
    pod's delete with the release of its node reservation and of its quota charges: one atomic
    append with an expectation on every subject, so racing gateways cannot exceed a quota."""

    def __init__(
        self, repository: AggregateRepository, policies: NamespacePolicies | None = None
    ) -> None:
        self._repository = repository
        self._policies = policies

    async def __call__(self, ctx: CommandContext) -> None:
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        # The write token names this exact request: a retry reuses it, a reused key does not.
        token = f"{command.idempotency_key}.{ctx.request_hash[:16]}"
        provenance = Provenance(
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            causation_id=command.causation_id or caused_by_command(command.idempotency_key),
            token=token,
            now_ns=ctx.received_ns,
        )
        quota_refs = await self._quota_refs(ctx)
        async with self._repository.lock(ref):
            fresh = False
            for attempt in range(1, MAX_DECISION_ATTEMPTS + 1):
                loaded = await self._repository.load(
                    ref,
                    fresh=fresh,
                    assume_new=command.verb in ("create", "apply")
                    and command.expected_version is None,
                )
                already = loaded.written_by(token)
                if already:
                    # A duplicate of this command (a client retry racing the original, here or
                    # on another gateway) already landed: answer with its events.
                    self._accepted(ctx, loaded, already)
                    ctx.reply["replayed"] = True
                    return
                node = self._node_of_deleted_pod(ctx, loaded)
                live = loaded.aggregate is not None and loaded.aggregate.exists
                # The node and quota aggregates are shared by every command releasing (or
                # charging) a pod on them: one decision at a time, or two would stack events on
                # the same cached object. Always pod, then node, then quotas by name.
                async with contextlib.AsyncExitStack() as locks:
                    if node is not None:
                        node_ref = AggregateRef("Node", "", node)
                        await locks.enter_async_context(self._repository.lock(node_ref))
                    for quota_ref in quota_refs:
                        await locks.enter_async_context(self._repository.lock(quota_ref))
                    host = await self._host(node, fresh)
                    quotas = [await self._repository.load(q, fresh=fresh) for q in quota_refs]
                    try:
                        self._decide(ctx, loaded)
                        if host is not None:
                            assert isinstance(host.aggregate, Node)
                            host.aggregate.release(
                                pod=f"{ref.namespace}/{ref.name}",
                                reason=f"pod deleted by {ctx.actor}",
                                at=timestamp_from_ns(ctx.received_ns),
                            )
                        self._account(ctx, loaded, live, quotas)
                    except FleetError as refused:
                        self._repository.forget(ref)
                        if host is not None:
                            self._repository.forget(host.ref)
                        for quota in quotas:
                            self._repository.forget(quota.ref)
                        if isinstance(refused, Conflict) and not fresh:
                            # The cached aggregate may trail the log (another handler wrote
                            # since): a version precondition is judged on the log, not the cache.
                            fresh = True
                            continue
                        raise
                    try:
                        written = await self._repository.save(
                            [loaded, *([host] if host is not None else []), *quotas], provenance
                        )
                    except ConcurrencyConflict:
                        # Decide again on the log: a version precondition is then checked
                        # against the object as it is now (the race may have been on its node
                        # or a quota, not on the object).
                        log.info("command.retry_on_conflict", ref=str(ref), attempt=attempt)
                        fresh = True
                        # Another gateway is writing the same object: step aside for a random
                        # moment so the two do not keep colliding in lock-step.
                        await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))
                        continue
                    self._accepted(ctx, loaded, written)
                    if written.replayed:
                        # Decided again here (this gateway did not hold the object), but an
                        # earlier attempt of the same command had already stored its events.
                        ctx.reply["replayed"] = True
                return
        raise FleetError(f"{ref} kept changing under this command; try again", code="conflict")

    async def _quota_refs(self, ctx: CommandContext) -> list[AggregateRef]:
        """The ResourceQuotas a pod command may charge or release: those of its namespace."""
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        if self._policies is None or ref.kind != "Pod":
            return []
        if command.verb not in ("create", "apply", "delete"):
            return []
        quotas = (await policies_of(ctx, self._policies)).quotas
        names = sorted(m["metadata"]["name"] for m in quotas)
        return [AggregateRef("ResourceQuota", ref.namespace, name) for name in names]

    @staticmethod
    def _account(ctx: CommandContext, loaded: Loaded, was_live: bool, quotas: list[Loaded]) -> None:
        """Charge a pod this command brought to life to each quota; release a deleted one."""
        pod, ref, command = loaded.aggregate, ctx.ref, ctx.command
        assert ref is not None and command is not None
        if not quotas or not isinstance(pod, Pod):
            return
        key = f"{ref.namespace}/{ref.name}"
        at = timestamp_from_ns(ctx.received_ns)
        created = not was_live and pod.exists
        for loaded_quota in quotas:
            quota = loaded_quota.aggregate
            if not isinstance(quota, ResourceQuota) or not quota.exists:
                continue
            if created:
                usage = pod_usage(pod.manifest)
                quota.charge(pod=key, usage=usage, pod_manifest=pod.manifest, at=at)
            elif command.verb == "delete" and not pod.exists:
                quota.release(pod=key, reason=f"pod deleted by {ctx.actor}", at=at)

    @staticmethod
    def _node_of_deleted_pod(ctx: CommandContext, loaded: Loaded) -> str | None:
        """The node of a bound pod this command deletes: its reservation is released in the
        same atomic append, so the node's ledger never keeps resources of a pod that is gone
        (and a racing scheduler sees the capacity free only once the pod really is)."""
        pod = loaded.aggregate
        if ctx.command is None or ctx.command.verb != "delete" or not isinstance(pod, Pod):
            return None
        return pod.node_name if pod.exists else None

    async def _host(self, node: str | None, fresh: bool) -> Loaded | None:
        if node is None:
            return None
        host = await self._repository.load(AggregateRef("Node", "", node), fresh=fresh)
        return host if isinstance(host.aggregate, Node) and host.aggregate.exists else None

    @staticmethod
    def _accepted(ctx: CommandContext, loaded: Loaded, written: list[tuple[str, int]]) -> None:
        aggregate = loaded.aggregate
        assert aggregate is not None
        ctx.reply = {
            "ok": True,
            "seqs": [seq for _, seq in written],
            "events": [event_type for event_type, _ in written],
            "version": aggregate.version,
            "uid": aggregate.uid,
            "unchanged": not written,
        }

    def _decide(self, ctx: CommandContext, loaded: Loaded) -> None:
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        current = loaded.aggregate
        if command.expected_version is not None:
            if current is not None and current.exists:
                current.require_version(command.expected_version)
            elif command.verb not in ("create", "apply"):
                raise NotFound(f"{ref} not found (it was deleted)")
        at = timestamp_from_ns(ctx.received_ns)
        aggregate_class = AGGREGATES[ref.kind]
        uid = uuid5_text(UID_NAMESPACE, f"{command.idempotency_key}/{ref.id}")
        body = command.body
        if command.verb in ("create", "apply"):
            assert ctx.manifest is not None
            decide = (
                aggregate_class.create
                if command.verb == "create"
                else aggregate_class.apply_manifest
            )
            loaded.aggregate = decide(current, agg_id=ref.id, manifest=ctx.manifest, uid=uid, at=at)
            return
        if current is None:
            raise NotFound(f"{ref} not found")
        if isinstance(body, DeleteBody):
            current.delete(reason=body.reason, at=at, propagation_policy=body.propagationPolicy)
        elif isinstance(body, ScaleBody):
            assert isinstance(current, Workload)
            current.scale(replicas=body.replicas, reason=body.reason, at=at)
        elif isinstance(body, StatusBody):
            assert isinstance(current, Workload)
            current.update_status(status=ctx.status, annotations=body.annotations, at=at)
        elif isinstance(body, NodeBody):
            assert isinstance(current, Node)
            if command.verb == "cordon":
                current.cordon(reason=body.reason, at=at)
            else:
                current.uncordon(reason=body.reason, at=at)
