"""The last stage: decide the command on the aggregate's state and append what it decided.

Why this exists: this is where a command becomes events. Through ``streams.decide`` (lock, load,
decide, append, decide again on conflict) it loads the aggregate (and, for a pod, the node and
quotas the same append must change; for a service, its address and node-port records:
``handlers.gateway.services``), lets ``core`` decide (``core.pods.decisions`` for what a pod's
create or delete does to its quotas and node, ``core.services.allocation`` for a service's
addresses and ports), and appends with the aggregate's last
sequence as the expectation, deciding again on fresh state when the append finds the cache was
stale. The events are named by the command's write token (its idempotency key plus the
request's fingerprint), so a retry whose original landed finds them on the aggregate and is
answered with them, at no extra round trip.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import structlog

from core.access.secretdata import NONCE_BYTES, open_manifest, seal_manifest
from core.api.catalog import AGGREGATES
from core.api.causation import caused_by_command
from core.api.commands import (
    BindBody,
    DeleteBody,
    EvictBody,
    NodeBody,
    ResizeBody,
    ScaleBody,
    StatusBody,
)
from core.autoscaling.aggregate import HorizontalPodAutoscaler
from core.disruption.aggregate import PodDisruptionBudget
from core.disruption.eviction import evict_pod
from core.errors import FleetError, NotFound
from core.kubeapi import fieldsets
from core.kubeapi.fieldsets import NATS_DOOR_MANAGER, from_kubernetes_door
from core.kubeapi.status import Target
from core.meta.aggregate import Resource, timestamp_from_ns
from core.meta.timestamps import format_stamp
from core.nodes.aggregate import Node
from core.pods.aggregate import Pod
from core.pods.decisions import bind_pod, create_pod, delete_pod, resize_pod
from core.pods.resize import resized_spec, validate_resize
from core.policy.admissionchain import StageNote
from core.scheduling.model import PodInfo
from core.workloads.aggregate import Workload
from handlers.gateway.context import AppendLatency, CommandContext, check_deadline, policies_of
from handlers.gateway.nonces import NonceMemory, nonce_header, stored_nonce
from handlers.gateway.services import ServicePath
from projections.policies import NamespacePolicies
from streams.decide import Append, Attempt, OnConflict, decide_and_append
from streams.eventstore import ConcurrencyConflict, EventStore
from streams.repository import AggregateRepository, Loaded, Provenance, uuid5_text
from streams.secretkeys import SecretKeys
from streams.subjects import AggregateRef

log = structlog.get_logger(__name__)

MAX_DECISION_ATTEMPTS = 12
STEP_ASIDE_S = 0.05
QUOTA_REFUSALS = ("exceeded quota:", "failed quota:")
"""How a ResourceQuota's refusal begins (Kubernetes' words, ``core.policy.aggregates``)."""
UID_NAMESPACE = uuid.UUID("0b8f4f53-0c55-4f0e-a3c4-4a7c1b3d5e20")


class _DryRunDecided(Exception):
    """A dry run's decision, raised out of the decide step so nothing is appended (and the
    aggregates it changed in memory are dropped from the cache, as after any refusal)."""

    def __init__(self, loaded: Loaded, data_key: bytes | None) -> None:
        super().__init__("dry run")
        self.loaded = loaded
        self.data_key = data_key


class Execute:
    """Load the aggregate, let core decide, append with the aggregate's last sequence.

    A pod's create is appended with its charge to each ResourceQuota of its namespace, and a
    pod's delete with the release of its node reservation and of its quota charges: one atomic
    append with an expectation on every subject, so racing gateways cannot exceed a quota."""

    def __init__(
        self,
        repository: AggregateRepository,
        policies: NamespacePolicies | None = None,
        *,
        services: ServicePath | None = None,
        secret_keys: SecretKeys | None = None,
        nonces: NonceMemory | None = None,
        store: EventStore | None = None,
    ) -> None:
        """``services``: how a command on a service allocates (without it, a service is
        stored as sent, with no address or node ports); ``secret_keys``: where Secrets' data
        keys are kept (without them, Secrets are refused: they are never stored in clear);
        ``nonces`` and ``store``: where a signed command whose write is already in the log is
        told apart as a replay or a retry (``handlers.gateway.nonces``; without them, every
        such command is answered "already done")."""
        self._repository = repository
        self._nonces = nonces
        self._store = store
        self._policies = policies
        self._services = services
        self._secret_keys = secret_keys
        self.append_latency = AppendLatency()
        """How long appends take lately: a command whose client will have given up by then is
        refused rather than appended."""

    async def __call__(self, ctx: CommandContext) -> None:
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        # The write token names this exact request: a retry reuses it, a reused key does not.
        # It is stored with the events: a Secret's is keyed, as its request holds values.
        fingerprint = (
            self._keys().fingerprint(ctx.request_hash) if ref.kind == "Secret" else ctx.request_hash
        )
        token = f"{command.idempotency_key}.{fingerprint[:16]}"
        provenance = Provenance(
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            causation_id=command.causation_id or caused_by_command(command.idempotency_key),
            token=token,
            now_ns=ctx.received_ns,
            headers=nonce_header(ctx.nonce_key, ctx.delivery) if ctx.nonce_key else {},
        )
        quota_refs = await self._quota_refs(ctx)
        budget_refs = await self._budget_refs(ctx)
        duplicate: list[tuple[str, int]] = []
        # A Secret's values are sealed on every attempt against the secret as it is then
        # (its uid, and the sealed text of values it keeps), from the manifest as sent.
        sealing = ref.kind == "Secret" and command.verb in ("create", "apply")
        plain = ctx.manifest if sealing else None
        service = (
            self._services.command(ctx, uid=self._uid(ctx))
            if self._services is not None and ref.kind == "Service"
            else None
        )

        def shared(attempt: Attempt) -> list[AggregateRef]:
            """The aggregates the same append may change beside the object: a deleted pod's
            node (its reservation is released) and the namespace's quotas (charged or
            released), a service's address and node-port records. Shared by every command on
            them, so locked: pod, node, quotas; service, addresses, node ports."""
            if service is not None:
                return service.dependents(attempt)
            node = self._node_of(ctx, attempt[ref])
            return [*budget_refs, *([AggregateRef("Node", "", node)] if node else []), *quota_refs]

        async def decide(attempt: Attempt) -> Append | None:
            loaded = attempt[ref]
            already = loaded.written_by(token)
            if already:
                # A duplicate of this command (a client retry racing the original, here or on
                # another gateway) already landed: answer with its events.
                duplicate.extend(already)
                return None
            # The last moment to give up unapplied: the client may have stopped waiting while
            # this command queued for its locks or decided again after a conflict, or may stop
            # before the append is acknowledged.
            checked = time.monotonic_ns()
            check_deadline(ctx, margin_ns=self.append_latency.margin_ns(checked))
            checked_ns.append(checked)
            if service is not None:
                self._check_expected_version(ctx, loaded)
                records = service.decide(attempt, loaded)
                if dry_run:
                    raise _DryRunDecided(loaded, None)
                return Append(changes=[loaded, *records], provenance=provenance)
            if plain is not None:
                ctx.manifest = await self._sealed(ctx, plain, loaded, sealed_with)
            node = self._node_of(ctx, loaded)
            host = attempt[AggregateRef("Node", "", node)] if node else None
            quotas = [attempt[q] for q in quota_refs]
            budgets = [attempt[b] for b in budget_refs]
            self._decide(
                ctx,
                loaded,
                node=host.aggregate if host is not None else None,
                quotas=[q.aggregate for q in quotas],
                budgets=[b.aggregate for b in budgets],
            )
            if dry_run:
                raise _DryRunDecided(loaded, sealed_with[-1] if sealed_with else None)
            return Append(
                changes=[loaded, *budgets, *([host] if host is not None else []), *quotas],
                provenance=provenance,
            )

        async def noticed(attempt: int, conflict: ConcurrencyConflict) -> None:
            # Decided again on the log: a version precondition is then checked against the
            # object as it is now (the race may have been on its node or a quota, not on it).
            log.info("command.retry_on_conflict", ref=str(ref), attempt=attempt)

        creating = command.verb in ("create", "apply") and command.expected_version is None
        checked_ns: list[int] = []
        sealed_with: list[bytes] = []
        dry_run = command.dry_run
        try:
            decided = await decide_and_append(
                self._repository,
                [ref],
                decide,
                attempts=MAX_DECISION_ATTEMPTS,
                dependents=shared,
                # A dry run never meets the append that catches a stale cache or a wrong
                # guess that the object is new: it decides on the log as it is.
                assume_new=(ref,) if creating and not dry_run else (),
                start_fresh=dry_run,
                # Another gateway is writing the same object: step aside for a random moment
                # so the two do not keep colliding in lock-step.
                on_conflict=OnConflict(step_aside_s=STEP_ASIDE_S, noticed=noticed),
            )
        except ConcurrencyConflict as exc:
            raise FleetError(
                f"{ref} kept changing under this command; try again", code="conflict"
            ) from exc
        except _DryRunDecided as decision:
            self._answer_dry_run(ctx, decision)
            return
        if decided.written is not None and checked_ns:
            now = time.monotonic_ns()
            self.append_latency.observe(now - checked_ns[-1], now_ns=now)
        loaded = decided.attempt[ref]
        if decided.written is None:
            await self._replay_or_retry(ctx, duplicate)
            self._accepted(ctx, loaded, duplicate)
            ctx.reply["replayed"] = True
            return
        if decided.written.replayed:
            await self._replay_or_retry(ctx, decided.written)
        else:
            ctx.appended = bool(decided.written)
        self._accepted(ctx, loaded, decided.written)
        if ref.kind == "Secret" and command.verb == "delete" and loaded.aggregate is not None:
            await self._shred(loaded.aggregate.uid)
        if decided.written.replayed:
            # Decided again here (this gateway did not hold the object), but an earlier
            # attempt of the same command had already stored its events.
            ctx.reply["replayed"] = True

    async def _replay_or_retry(self, ctx: CommandContext, written: list[tuple[str, int]]) -> None:
        """The command's write was already in the log: from another delivery of the same
        signed nonce it is a replay (refused, ``nonces.Replayed``); otherwise a retry."""
        if not ctx.nonce_key or not written or self._nonces is None or self._store is None:
            return
        self._nonces.landed(ctx, await stored_nonce(self._store, written[0][1]))

    @staticmethod
    def _answer_dry_run(ctx: CommandContext, decision: _DryRunDecided) -> None:
        """The object as the command would leave it (a Secret's values open, as its reader
        sees them), and the events it would have appended; nothing was."""
        assert ctx.ref is not None
        aggregate = decision.loaded.aggregate
        assert aggregate is not None
        pending = [type(aggregate).event_type(e) for e in aggregate.pending_events]
        manifest = aggregate.manifest
        if ctx.ref.kind == "Secret" and decision.data_key is not None:
            manifest = open_manifest(
                manifest, data_key=decision.data_key, namespace=ctx.ref.namespace,
                name=ctx.ref.name, uid=aggregate.uid,
            )  # fmt: skip
        ctx.reply = {
            "ok": True,
            "seqs": [],
            "events": [],  # the audit record's: none was appended
            "would_append": pending,
            "version": aggregate.version,
            "uid": aggregate.uid,
            "unchanged": not pending,
            "dry_run": True,
            "object": {"manifest": manifest, "uid": aggregate.uid, "deleted": aggregate.deleted},
        }
        ctx.audit_annotations["fleetlog.dev/dry-run"] = "true"

    def _keys(self) -> SecretKeys:
        if self._secret_keys is None:
            raise FleetError(
                "this gateway holds no cluster key, so it cannot store secrets (their values "
                "never enter the log in clear); fleetlog up gives its gateways one",
                code="unavailable",
            )
        return self._secret_keys

    async def _sealed(
        self, ctx: CommandContext, plain: dict[str, Any], loaded: Loaded, sealed_with: list[bytes]
    ) -> dict[str, Any]:
        """The Secret ``plain`` as the log keeps it: its values sealed under its data key
        (made now for a new secret; a re-created one is a new uid, so a new key)."""
        assert ctx.command is not None and ctx.ref is not None
        current = loaded.aggregate
        live = current if current is not None and current.exists else None
        if live is not None and ctx.command.verb == "create":
            return plain  # refused as AlreadyExists: no key is made for it
        uid = live.uid if live is not None else self._uid(ctx)
        if ctx.command.dry_run and live is None:
            # A dry run stores nothing, so no data key is made for it: a key of its own
            # seals (and then opens) the answer.
            data_key = os.urandom(32)
        else:
            data_key = await self._keys().data_key(uid)
        sealed_with.append(data_key)
        return seal_manifest(
            plain, stored=live.manifest if live is not None else None, data_key=data_key,
            namespace=ctx.ref.namespace, name=ctx.ref.name, uid=uid,
            nonce=lambda: os.urandom(NONCE_BYTES),
        )  # fmt: skip

    async def _shred(self, uid: str) -> None:
        """A deleted Secret's data key is destroyed: its values in the log open no more."""
        try:
            await self._keys().destroy(uid)
        except Exception:
            # The delete stands (it is in the log) and cannot be sent again, so the key
            # outlives its secret: said loudly (docs/architecture.md, its limits).
            log.exception("secret.key_not_destroyed", uid=uid)

    async def _quota_refs(self, ctx: CommandContext) -> list[AggregateRef]:
        """The ResourceQuotas a pod command may charge or release: those of its namespace."""
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        if self._policies is None or ref.kind != "Pod":
            return []
        if command.verb not in ("create", "apply", "delete", "evict", "resize"):
            return []
        quotas = (await policies_of(ctx, self._policies)).quotas
        names = sorted(m["metadata"]["name"] for m in quotas)
        return [AggregateRef("ResourceQuota", ref.namespace, name) for name in names]

    async def _budget_refs(self, ctx: CommandContext) -> list[AggregateRef]:
        """The PodDisruptionBudgets an eviction reads and may change: those of its namespace
        (which of them match the pod is decided on them as loaded, in the same append)."""
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        if self._policies is None or command.verb != "evict":
            return []
        budgets = (await policies_of(ctx, self._policies)).disruption_budgets
        names = sorted(m["metadata"]["name"] for m in budgets)
        return [AggregateRef("PodDisruptionBudget", ref.namespace, name) for name in names]

    @staticmethod
    def _node_of(ctx: CommandContext, loaded: Loaded) -> str | None:
        """The node the same append changes beside the pod: the node of a bound pod this
        command deletes (its reservation is released at once, so the node's ledger never keeps
        resources of a pod that is gone, and a racing scheduler sees the capacity free only
        once the pod really is), or the node a ``bind`` puts the pod on (its requests are
        reserved there, as the scheduler's binding reserves them)."""
        if ctx.command is not None and isinstance(ctx.command.body, BindBody):
            return ctx.command.body.node
        pod = loaded.aggregate
        evicting = ctx.command is not None and ctx.command.verb in ("delete", "evict")
        if not evicting or not isinstance(pod, Pod):
            return None
        return pod.node_name if pod.exists else None

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

    @staticmethod
    def _uid(ctx: CommandContext) -> str:
        """The uid an object this command creates gets (the same on every attempt)."""
        assert ctx.command is not None and ctx.ref is not None
        return uuid5_text(UID_NAMESPACE, f"{ctx.command.idempotency_key}/{ctx.ref.id}")

    @staticmethod
    def _check_expected_version(ctx: CommandContext, loaded: Loaded) -> None:
        """A command pinned to a version is refused unless the object is at that version."""
        command, current = ctx.command, loaded.aggregate
        assert command is not None
        if command.expected_version is None:
            return
        if current is not None and current.exists:
            current.require_version(command.expected_version)
        elif command.verb not in ("create", "apply"):
            raise NotFound(f"{ctx.ref} not found (it was deleted)")

    @staticmethod
    def _managed(ctx: CommandContext, current: Resource | None) -> dict[str, Any]:
        """The manifest a create or apply stores, with its field managers.

        The Kubernetes door states them itself (``handlers.apiserver.resources``, every write
        is a manager's). A person's write through the NATS door (``fleetlog apply``) is the
        ``fleetlog`` manager's ordinary update: it keeps the managers the object has (so a
        later ``kubectl apply --server-side`` sees who set what, not ``before-first-apply``)
        and owns what it added or changed. fleetlog's own components (``system:`` actors) do
        not record themselves yet: every object they write would carry a managers tree."""
        command, manifest = ctx.command, ctx.manifest
        assert command is not None and ctx.ref is not None and manifest is not None
        if from_kubernetes_door(command.source) or ctx.actor.startswith("system:"):
            return manifest
        live = current.manifest if current is not None and current.exists else None
        if current is not None and live is not None:
            # What the aggregate keeps of the live object anyway (status, the controllers'
            # annotations) is no change of this manager's: compared without it, a re-apply
            # of the same manifest would own "removing" them and restamp its time.
            manifest = current.carry_server_fields(manifest)
        return fieldsets.update(
            live,
            manifest,
            manager=NATS_DOOR_MANAGER,
            api_version=str(manifest.get("apiVersion", "")),
            now=format_stamp(ctx.received_ns),
            target=Target(kind=ctx.ref.kind, name=ctx.ref.name),
        ).object

    def _decide(
        self,
        ctx: CommandContext,
        loaded: Loaded,
        *,
        node: Resource | None,
        quotas: list[Resource | None],
        budgets: list[Resource | None],
    ) -> None:
        """Decide the command on ``loaded``; a pod's create also charges its ``quotas``, its
        delete releases them and its reservation on ``node``, its eviction does too and uses
        one disruption of its budget (of ``budgets``, the namespace's)."""
        command, ref = ctx.command, ctx.ref
        assert command is not None and ref is not None
        current = loaded.aggregate
        self._check_expected_version(ctx, loaded)
        at = timestamp_from_ns(ctx.received_ns)
        aggregate_class = AGGREGATES[ref.kind]
        uid = self._uid(ctx)
        body = command.body
        if command.verb in ("create", "apply") and ref.kind == "Pod":
            try:
                loaded.aggregate = create_pod(
                    current, agg_id=ref.id, manifest=self._managed(ctx, current), uid=uid,
                    quotas=quotas, at=at, replace=command.verb == "apply",
                )  # fmt: skip
            except FleetError as exc:
                # The last stage of admission (kube's ResourceQuota) runs here, in the append
                # that charges the quota: its refusal is named in the audit record too.
                if exc.message.startswith(QUOTA_REFUSALS):
                    ctx.admission.append(str(StageNote("ResourceQuota", "denied", exc.message)))
                raise
            return
        if command.verb in ("create", "apply"):
            decide = (
                aggregate_class.create
                if command.verb == "create"
                else aggregate_class.apply_manifest
            )
            manifest = self._managed(ctx, current)
            loaded.aggregate = decide(current, agg_id=ref.id, manifest=manifest, uid=uid, at=at)
            return
        if current is None:
            raise NotFound(f"{ref} not found")
        if isinstance(body, EvictBody):
            if not isinstance(current, Pod):
                raise NotFound(f"{ref} not found")
            evict_pod(
                current, budgets=budgets, node=node, quotas=quotas, reason=body.reason,
                propagation_policy=body.propagationPolicy, evicted_by=ctx.actor, at=at,
                now_ns=ctx.received_ns,
            )  # fmt: skip
        elif isinstance(body, DeleteBody) and isinstance(current, Pod):
            delete_pod(
                current, node=node, quotas=quotas, reason=body.reason,
                propagation_policy=body.propagationPolicy, deleted_by=ctx.actor, at=at,
            )  # fmt: skip
        elif isinstance(body, DeleteBody):
            current.delete(reason=body.reason, at=at, propagation_policy=body.propagationPolicy)
        elif isinstance(body, BindBody):
            bind_pod(
                current, node, requests=PodInfo.from_manifest(current.manifest).requests,
                score=None, feasible_nodes=None, evaluated_nodes=None, plugin_scores={},
                weights={}, at=at,
            )  # fmt: skip
        elif isinstance(body, ResizeBody):
            assert isinstance(current, Pod)
            current.require_exists()
            spec = current.manifest.get("spec") or {}
            wanted = [entry.model_dump() for entry in body.containers]
            change = validate_resize(
                spec, resized_spec(spec, wanted),
                qos_class=(current.manifest.get("status") or {}).get("qosClass"),
            )  # fmt: skip
            try:
                resize_pod(current, change=change, quotas=quotas, at=at)
            except FleetError as exc:
                if exc.message.startswith(QUOTA_REFUSALS):
                    ctx.admission.append(str(StageNote("ResourceQuota", "denied", exc.message)))
                raise
        elif isinstance(body, ScaleBody):
            assert isinstance(current, Workload)
            current.scale(replicas=body.replicas, reason=body.reason, at=at, why=body.why)
        elif isinstance(body, StatusBody):
            assert isinstance(current, Workload | HorizontalPodAutoscaler | PodDisruptionBudget)
            current.update_status(
                status=ctx.status, annotations=body.annotations, at=at, why=body.why
            )
        elif isinstance(body, NodeBody):
            assert isinstance(current, Node)
            if command.verb == "cordon":
                current.cordon(reason=body.reason, at=at)
            else:
                current.uncordon(reason=body.reason, at=at)
