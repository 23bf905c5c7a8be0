"""The gateway as a service: it serves ``fleet.cmd.>`` in the ``fleet-gateway`` queue group,
runs each command through the stages in order, answers, and audits the answer.

Why this exists: the stages only know the command in hand; this module owns what outlives a
command: the connection, the aggregate cache the stages decide on, the read models admission
asks (PriorityClasses, each namespace's LimitRanges and ResourceQuotas) and the service path
picks free addresses and node ports from, the bound on commands
in flight, and the audit writer. It also turns a stage's ``FleetError`` into the structured
reply ``{"ok": false, "error": {code, message, field, errors}}`` (``errors``: every field error
``{field, message}`` of an invalid manifest, unknown fields first).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.access.commandauth import Identity
from core.errors import FleetError
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.services.ranges import DEFAULT_RANGES, ServiceRanges
from handlers.fairgate import FairGate, StoredFlowControl
from handlers.gateway.admission import Admit, resolve_target
from handlers.gateway.audit import audit_record
from handlers.gateway.context import CommandContext, deadline_of
from handlers.gateway.execute import Execute
from handlers.gateway.fairness import Fairness
from handlers.gateway.identity import (
    AllowAll,
    Authenticate,
    Authorize,
    IdentityProvider,
    Policy,
    stated_identity,
)
from handlers.gateway.intake import decode, fingerprint, in_time, limit_size, route
from handlers.gateway.nonces import REPLAYED, NonceMemory, NonceUnavailable, Replayed
from handlers.gateway.reviews import REVIEW_SUBJECTS, review
from handlers.gateway.services import ServicePath
from projections.access import AccessModel
from projections.cluster import ClusterModel
from projections.policies import NamespacePolicies
from projections.runtime import Projection
from streams.audit import AuditWriter
from streams.connection import OUTAGE_ERRORS, in_outage
from streams.eventstore import AppendTimeout, EventStore
from streams.repository import AggregateRepository
from streams.secretkeys import SecretKeys
from streams.serving import serve
from streams.subjects import ALL_COMMANDS, event_filter

log = structlog.get_logger(__name__)

QUEUE_GROUP = "fleet-gateway"

Handler = Callable[[CommandContext], Awaitable[None]]


class Gateway:
    """Serves ``fleet.cmd.>`` in the ``fleet-gateway`` queue group."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        *,
        policy: Policy | None = None,
        identify: IdentityProvider = stated_identity,
        max_in_flight: int = 256,
        features: FeatureGates = DEFAULT_FEATURES,
        service_ranges: ServiceRanges = DEFAULT_RANGES,
        cluster_key: bytes | None = None,
        identities: Mapping[str, Identity] | None = None,
        require_signatures: bool = False,
    ) -> None:
        """``features``: the feature gates manifests are validated with (Kubernetes'
        defaults unless ``--feature-gates`` said otherwise); ``service_ranges``: where
        services' ClusterIPs and node ports come from; ``cluster_key``: the key Secrets' data
        keys are wrapped with (without it, Secrets are refused); ``identities``: public key ->
        identity of the keys the cluster admits besides its User objects (the control
        plane's, the bootstrap admin's); ``require_signatures``: refuse unsigned commands
        (behind the NATS wall; otherwise they act as their stated identity, unauthorized)."""
        self._nc = nc
        self._store = store
        self.features = features
        self.repository = AggregateRepository(store)
        # The cluster's PriorityClasses, for admission (as Kubernetes' informer cache: a pod
        # naming no class gets the global default this gateway has seen).
        self.priority_classes = Projection(
            ClusterModel(), store, filter_subject=event_filter("PriorityClass")
        )
        # The cluster's VerticalPodAutoscalers, for the VPA's admission stage (its
        # recommended requests in new pods).
        self.vpas = Projection(
            ClusterModel(), store, filter_subject=event_filter("VerticalPodAutoscaler")
        )
        # Each namespace's LimitRanges (admission defaults) and ResourceQuotas (charged on a
        # pod's create), read-your-writes.
        self.policies = NamespacePolicies(nc, store)
        # Which addresses and node ports services hold, to pick free ones from.
        self.services = ServicePath(store, service_ranges)
        self.secret_keys = SecretKeys(nc, cluster_key) if cluster_key is not None else None
        # The cluster's FlowSchemas and priority levels (API Priority and Fairness), beneath
        # which kube's defaults stand; ``max_in_flight`` is the seats the levels share.
        self.flow_control = StoredFlowControl(store)
        self.flow_schemas = self.flow_control.schemas
        self.priority_levels = self.flow_control.levels
        self.fairness = Fairness(
            FairGate(
                total_seats=max_in_flight,
                read=self.flow_control.read,
                version=self.flow_control.version,
            )
        )
        # Who signs commands, and what RBAC lets them do.
        self.access = AccessModel(store, builtin=identities or {})
        # A signed command is accepted once by the whole queue group (replays refused):
        # through the log when it appends, a shared claim when it does not.
        self.nonces = NonceMemory(nc)
        self._authenticate = Authenticate(
            identify, access=self.access, require_signatures=require_signatures,
            nonces=self.nonces,
        )  # fmt: skip
        self.stages: Sequence[Handler] = (
            limit_size,
            decode,
            in_time,
            self._authenticate,
            route,
            # Priority and fairness before the manifest's parse (kube's order): a refused
            # command of a flood costs no parse.
            self.fairness,
            functools.partial(resolve_target, features=features),
            Authorize(policy or AllowAll(), access=self.access, repository=self.repository),
            fingerprint,
            Admit(
                self.repository,
                self.priority_classes,
                self.policies,
                features=features,
                pods_of=self._pods_of,
                vpas=self.vpas,
            ),
            self.nonces.check,
            Execute(
                self.repository,
                self.policies,
                services=self.services,
                secret_keys=self.secret_keys,
                nonces=self.nonces,
                store=store,
            ),
        )
        # Commands held at once, running or queued for a seat: the seats bound the running
        # ones; this bounds what a flood can pile up before its queues refuse it.
        self._slots = asyncio.Semaphore(max_in_flight * 16)
        self.handled = 0
        self.audit = AuditWriter(nc)

    @classmethod
    async def create(cls, nc: Client, store: EventStore, **options: Any) -> Gateway:
        return cls(nc, store, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; in-flight commands finish (and their audit records are
        written) before this returns."""
        await self.priority_classes.catch_up()
        await self.priority_classes.follow()
        await self.vpas.catch_up()
        await self.vpas.follow()
        await self.flow_control.start()
        try:
            await self.services.start()
            await self.policies.start()
            await self.access.start()
            await self.nonces.start()
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self.audit.run())
                try:
                    await self._serve_commands(ready)
                finally:
                    writer.cancel()
        finally:
            await self.priority_classes.stop()
            await self.vpas.stop()
            await self.flow_control.stop()
            await self.services.stop()
            await self.policies.stop()
            await self.access.stop()
            await self.nonces.stop()

    async def _pods_of(
        self, namespace: str
    ) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
        """The live pods of ``namespace``, folded from their events (only when a namespace's
        Pod Security enforce level is raised: rare, and worth a read of the namespace's pods)."""
        only_pods = event_filter("Pod", namespace)
        pods = Projection(ClusterModel(), self._store, filter_subject=only_pods)
        await pods.catch_up()
        return [
            (r.name, r.manifest.get("spec") or {}, r.manifest.get("metadata") or {})
            for r in pods.model.list("Pod", namespace)
        ]

    async def _serve_commands(self, ready: asyncio.Event | None) -> None:
        async with asyncio.TaskGroup() as tasks:

            async def on_request(msg: Msg) -> None:
                await self._slots.acquire()
                tasks.create_task(self._serve(msg))

            await serve(self._nc, ALL_COMMANDS, queue=QUEUE_GROUP, handler=on_request, ready=ready)

    async def _serve(self, msg: Msg) -> None:
        if msg.subject in REVIEW_SUBJECTS:
            try:
                answer = await review(
                    subject=msg.subject, data=msg.data, headers=msg.headers,
                    authenticate=self._authenticate, access=self.access,
                )  # fmt: skip
                if msg.reply:
                    await self._nc.publish(msg.reply, msgpack.packb(answer, use_bin_type=True))
            finally:
                self._slots.release()
            return
        try:
            ctx = CommandContext(
                subject=msg.subject,
                data=msg.data,
                received_ns=time.time_ns(),
                deadline_ns=deadline_of(msg.headers),
                headers=msg.headers,
            )
            reply = await self.handle_context(ctx)
            record = audit_record(ctx, reply)
            # Queued before the answer is published: the audit writer publishes it before the
            # connection next flushes, so answer and record leave in one socket write (a write
            # is one of the larger costs of a command). The answer never waits for the record.
            queued = self.audit.offer(record)
            if msg.reply:
                await self._nc.publish(msg.reply, msgpack.packb(reply, use_bin_type=True))
            if not queued:
                await self.audit.record(record)
        finally:
            self._slots.release()

    async def handle(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Run one command through the pipeline and return the answer (not audited)."""
        ctx = CommandContext(
            subject=subject, data=data, received_ns=time.time_ns(), headers=headers
        )
        return await self.handle_context(ctx)

    async def handle_context(self, ctx: CommandContext) -> dict[str, Any]:
        subject = ctx.subject
        self.handled += 1
        with structlog.contextvars.bound_contextvars(subject=subject):
            try:
                reply = await self._run_stages(ctx)
                if ctx.nonce_key and not ctx.appended:
                    reply = await self._claim_unappended(ctx, reply)
                return reply
            finally:
                self.fairness.release(ctx)

    async def _claim_unappended(self, ctx: CommandContext, reply: dict[str, Any]) -> dict[str, Any]:
        """A signed command answered without an append leaves no trace in the log: its nonce
        is claimed for every gateway before it is answered (``handlers.gateway.nonces``), and
        another delivery that claimed it first makes this one a refused replay."""
        error = reply.get("error") or {}
        if error.get("message") == REPLAYED or ctx.signature is None:
            return reply  # refused as a replay already: the nonce was used
        try:
            await self.nonces.claim(ctx.signature)
        except (Replayed, NonceUnavailable) as exc:
            log.info("command.rejected", code=exc.code, error=exc.message)
            ctx.denied = False
            return {"ok": False, "error": exc.as_dict()}
        return reply

    async def _run_stages(self, ctx: CommandContext) -> dict[str, Any]:
        try:
            bound = False
            for stage in self.stages:
                await stage(ctx)
                if not bound and ctx.command is not None:
                    # Once, as soon as the command is read (binding costs a copy of the
                    # context each time; the values never change after).
                    structlog.contextvars.bind_contextvars(
                        correlation_id=ctx.correlation_id, actor=ctx.command.actor
                    )
                    bound = True
                if ctx.reply is not None:
                    break
        except FleetError as exc:
            log.info(
                "command.rejected",
                code=exc.code,
                error=exc.message,
                field=exc.field,
                problems=len(exc.errors),
            )
            refused: dict[str, Any] = {"ok": False, "error": exc.as_dict()}
            if ctx.warnings:
                refused["warnings"] = ctx.warnings
            return refused
        except (AppendTimeout, *OUTAGE_ERRORS) as exc:
            # The log is away (an outage, a cluster electing a leader): one line, no
            # traceback; the client sees that the outcome is unknown and may retry.
            (log.info if in_outage(self._nc) else log.warning)(
                "command.unavailable", error=repr(exc)
            )
            return {
                "ok": False,
                "error": {
                    "code": "unavailable",
                    "message": "the event log did not acknowledge the write in time; "
                    "retry with the same idempotency key to learn its outcome",
                },
            }
        except Exception:
            log.exception("command.failed")
            return {
                "ok": False,
                "error": {
                    "code": "internal",
                    "message": "the gateway failed on this command; see its log "
                    f"(correlation id {ctx.correlation_id or 'unknown'})",
                },
            }
        assert ctx.reply is not None
        if ctx.warnings:
            ctx.reply["warnings"] = ctx.warnings
        log.debug("command.accepted", ref=str(ctx.ref), events=ctx.reply.get("events"))
        return ctx.reply
