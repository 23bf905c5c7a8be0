"""The command gateway: the one door through which every change enters the log.

Commands arrive as NATS requests on ``fleet.cmd.<kind>.<verb>`` (queue group ``fleet-gateway``,
so any number of gateways share the load). Each request runs through a pipeline of stages, in
the order a reader meets them below:

  size limit → decode → route & schema → target (manifest or name) → authenticate
  → authorize → fingerprint → admission → decide & append → reply

A stage either lets the command through, answers early (an idempotent replay), or raises a
``FleetError`` that becomes a structured reply ``{"ok": false, "error": {code, message,
field}}``; a rejected command appends nothing. Authentication and authorization are stages with
a pluggable policy: until fleetlog has credentials (a later issue) the caller's *stated* identity
is recorded as the actor and every caller is allowed.

Decisions are taken on cached aggregates (``streams.repository``); the append's expectation
catches a stale cache, and the command is then decided again on fresh state (up to a few times),
unless the caller pinned an ``expected_version``, in which case it gets a conflict.

Idempotency costs no extra round trip. A command's write token is its idempotency key plus a
hash of the request, and its events get ids derived from that token. A retry whose original
landed finds those events on the aggregate (the repository keeps the ids of the latest events of
each one) and is answered with them; a resend that races the original is recognised by the event
store (its own write right after the expectation) or de-duplicated by JetStream's Msg-Id window.
A key reused for a *different* request is a different command: it is never mistaken for the
earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from core.admission import (
    LIMIT_RANGER_ANNOTATION,
    apply_limit_ranges,
    check_single_global_default,
    default_toleration_seconds,
    resolve_priority,
    validate_limited,
)
from core.aggregates import (
    AGGREGATES,
    SCALABLE_KINDS,
    Node,
    Pod,
    Resource,
    ResourceQuota,
    Workload,
    timestamp_from_ns,
)
from core.causation import caused_by_command
from core.commands import (
    Command,
    DeleteBody,
    ManifestBody,
    NodeBody,
    ScaleBody,
    StatusBody,
    parse_command,
)
from core.errors import Conflict, FleetError, NotFound, UnknownKind, ValidationFailed
from core.quota import pod_usage
from core.resources import (
    KINDS,
    DeploymentStatus,
    K8sModel,
    ReplicaSetStatus,
    dns1123_label_errors,
    dump_manifest,
    parse_manifest,
    to_validation_failed,
)
from projections.cluster import ClusterModel
from projections.policies import NamespacePolicies, Policies
from projections.runtime import Projection
from streams.audit import AuditRecord, AuditWriter
from streams.eventstore import ConcurrencyConflict, EventStore
from streams.repository import AggregateRepository, Loaded, Provenance, uuid5_text
from streams.serving import serve
from streams.subjects import ALL_COMMANDS, AggregateRef, event_filter, parse_command_subject

log = structlog.get_logger(__name__)

QUEUE_GROUP = "fleet-gateway"
MAX_COMMAND_BYTES = 256 * 1024
MAX_DECISION_ATTEMPTS = 12
UID_NAMESPACE = uuid.UUID("0b8f4f53-0c55-4f0e-a3c4-4a7c1b3d5e20")
KIND_BY_TOKEN = {kind.lower(): kind for kind in KINDS}
STATUS_MODELS: dict[str, type[K8sModel]] = {
    "Deployment": DeploymentStatus,
    "ReplicaSet": ReplicaSetStatus,
}


@dataclass
class CommandContext:
    """Everything known about one command as it moves through the pipeline."""

    subject: str
    data: bytes
    received_ns: int
    kind: str = ""
    verb: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    command: Command | None = None
    status: dict[str, Any] | None = None
    actor: str = ""
    ref: AggregateRef | None = None
    manifest: dict[str, Any] | None = None
    request_hash: str = ""
    reply: dict[str, Any] | None = None
    denied: bool = False
    """Refused by authorization (audited as ``denied``, not ``rejected``)."""
    policies: Policies | None = None
    """The namespace's LimitRanges and ResourceQuotas, asked once per command (admission and
    execution both need them; each question costs a round trip to the server)."""

    @property
    def correlation_id(self) -> str:
        if self.command is None:
            return ""
        return self.command.correlation_id or self.command.idempotency_key


class Stage(Protocol):
    """One step of the pipeline; raises FleetError to reject, sets ``ctx.reply`` to answer."""

    async def __call__(self, ctx: CommandContext) -> None: ...


# -- stages ------------------------------------------------------------------------------------


async def limit_size(ctx: CommandContext) -> None:
    if len(ctx.data) > MAX_COMMAND_BYTES:
        raise ValidationFailed(
            f"command is {len(ctx.data)} bytes; the limit is {MAX_COMMAND_BYTES} bytes",
            code="payload_too_large",
        )


async def decode(ctx: CommandContext) -> None:
    try:
        raw = msgpack.unpackb(ctx.data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ValidationFailed(
            f"command is not valid msgpack ({type(exc).__name__})", code="malformed"
        ) from exc
    if not isinstance(raw, dict):
        raise ValidationFailed("command must be a msgpack map", code="malformed")
    ctx.raw = raw


async def route(ctx: CommandContext) -> None:
    kind_token, verb = parse_command_subject(ctx.subject)
    kind = KIND_BY_TOKEN.get(kind_token)
    if kind is None:
        raise UnknownKind(
            f"unknown kind {kind_token!r}: use one of {', '.join(sorted(KIND_BY_TOKEN))}"
        )
    ctx.kind = kind
    ctx.command = parse_command(kind, verb, ctx.raw)
    ctx.verb = ctx.command.verb


class IdentityProvider(Protocol):
    def __call__(self, ctx: CommandContext) -> str: ...


def stated_identity(ctx: CommandContext) -> str:
    """Until fleetlog has credentials, the caller is who the command says it is."""
    assert ctx.command is not None
    return ctx.command.actor


class Authenticate:
    def __init__(self, identify: IdentityProvider = stated_identity) -> None:
        self._identify = identify

    async def __call__(self, ctx: CommandContext) -> None:
        ctx.actor = self._identify(ctx)


class Policy(Protocol):
    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool: ...


class AllowAll:
    """The policy until authorization arrives: every caller may do everything."""

    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool:
        return True


class Authorize:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        namespace = ctx.ref.namespace
        if not self._policy.allows(ctx.actor, ctx.verb, ctx.kind, namespace):
            where = namespace or "the cluster"
            ctx.denied = True
            raise FleetError(
                f"{ctx.actor} may not {ctx.verb} {ctx.kind.lower()}s in {where}",
                code="forbidden",
            )


async def resolve_target(ctx: CommandContext) -> None:
    """Validate what the command targets: the manifest against its schema (with Kubernetes
    defaults applied), or the name and namespace of a delete or scale."""
    assert ctx.command is not None
    body = ctx.command.body
    info = KINDS[ctx.kind]
    if isinstance(body, ManifestBody):
        resource = parse_manifest(body.manifest)
        if resource.kind != ctx.kind:
            raise ValidationFailed(
                f"manifest is a {resource.kind} but was sent as a {ctx.kind.lower()} command",
                field="kind",
            )
        ctx.manifest = dump_manifest(resource)
        meta = ctx.manifest["metadata"]
        namespace = meta.get("namespace", "") if info.namespaced else ""
        ctx.ref = AggregateRef(ctx.kind, namespace, meta["name"])
        return
    assert isinstance(body, DeleteBody | ScaleBody | NodeBody | StatusBody)
    if isinstance(body, StatusBody):
        model = STATUS_MODELS.get(ctx.kind)
        if model is None:
            raise ValidationFailed(
                f"a {ctx.kind.lower()} has no status a controller records; kinds with one: "
                f"{', '.join(sorted(STATUS_MODELS))}",
                code="unsupported",
            )
        if body.status is not None:
            try:
                status = model.model_validate(
                    body.status, strict=True, by_alias=True, by_name=False
                )
            except ValidationError as err:
                raise to_validation_failed(err, prefix=("body", "status")) from None
            ctx.status = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(body, NodeBody) and ctx.kind != "Node":
        raise ValidationFailed(
            f"only nodes can be {ctx.verb}ed, not a {ctx.kind.lower()}", code="unsupported"
        )
    if isinstance(body, ScaleBody) and ctx.kind not in SCALABLE_KINDS:
        raise ValidationFailed(
            f"a {ctx.kind.lower()} cannot be scaled; scalable kinds: "
            f"{', '.join(sorted(SCALABLE_KINDS))}",
            code="unsupported",
        )
    name_problems = info.model.NAME_RULE(body.name)
    if name_problems:
        raise ValidationFailed(f"invalid name {body.name!r}: {name_problems[0]}", field="body.name")
    namespace = getattr(body, "namespace", "")
    namespace_problems = dns1123_label_errors(namespace) if info.namespaced else []
    if namespace_problems:
        raise ValidationFailed(
            f"invalid namespace {namespace!r}: {namespace_problems[0]}",
            field="body.namespace",
        )
    ctx.ref = AggregateRef(ctx.kind, namespace if info.namespaced else "", body.name)


async def policies_of(ctx: CommandContext, policies: NamespacePolicies) -> Policies:
    """The LimitRanges and ResourceQuotas of the command's namespace, asked of ``policies``
    once per command (after it arrived, so a policy written before it was sent is seen)."""
    if ctx.policies is None:
        assert ctx.ref is not None
        ctx.policies = await policies.in_namespace(ctx.ref.namespace)
    return ctx.policies


class Admit:
    """Admission: the defaults Kubernetes adds on admission (DefaultTolerationSeconds, the
    priority of the pod's PriorityClass, the resource defaults and bounds of the namespace's
    LimitRanges or the cluster default), and what must hold in the cluster for the command to
    be allowed (the namespace exists; one global default PriorityClass). Quotas are charged in
    the Execute stage, atomically with the pod's creation."""

    def __init__(
        self,
        repository: AggregateRepository,
        priority_classes: Projection[ClusterModel],
        policies: NamespacePolicies | None = None,
    ) -> None:
        self._repository = repository
        self._priority_classes = priority_classes
        self._policies = policies

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        if ctx.manifest is not None:
            ctx.manifest = default_toleration_seconds(ctx.manifest)
            if ctx.ref.kind == "Pod":
                ctx.manifest = await self._admitted_pod(ctx, ctx.manifest)
            elif ctx.ref.kind == "PriorityClass":
                check_single_global_default(ctx.manifest, self._known_classes())
        if ctx.ref.namespace and ctx.verb in ("create", "apply"):
            await self._require_namespace(ctx.ref.namespace)

    async def _admitted_pod(self, ctx: CommandContext, manifest: dict[str, Any]) -> dict[str, Any]:
        """The pod's manifest with its priority and resource defaults.

        Whether the pod exists decides both (an existing pod keeps what it was admitted with).
        A ``create`` is admitted as a new pod without reading the log on a cache miss, as
        Kubernetes admits a create (Execute's optimistic append then finds an existing pod:
        ``AlreadyExists``, or the original's answer for a retry, neither of which depends on
        the manifest). Only if that admission refuses the pod is the log read: a retry of a
        create that landed before a policy changed is answered with its first outcome, never
        refused by the new policy."""
        assert ctx.ref is not None
        if ctx.verb != "create":
            return await self._admit_pod(ctx, manifest, await self._repository.load(ctx.ref))
        cached = await self._repository.load(ctx.ref, assume_new=True)
        try:
            return await self._admit_pod(ctx, manifest, cached)
        except FleetError:
            if cached.last_seq:  # the cache knew the pod: that was the answer
                raise
            loaded = await self._repository.load(ctx.ref, fresh=True)
            if loaded.aggregate is None or not loaded.aggregate.exists:
                raise
            return await self._admit_pod(ctx, manifest, loaded)

    async def _admit_pod(
        self, ctx: CommandContext, manifest: dict[str, Any], loaded: Loaded
    ) -> dict[str, Any]:
        existing = loaded.aggregate if loaded.aggregate and loaded.aggregate.exists else None
        manifest = await self._prioritised(manifest, existing)
        return await self._limited(ctx, manifest, existing)

    def _known_classes(self) -> dict[str, dict[str, Any]]:
        return {r.name: r.manifest for r in self._priority_classes.model.list("PriorityClass")}

    async def _prioritised(
        self, manifest: dict[str, Any], existing: Resource | None
    ) -> dict[str, Any]:
        """Kubernetes resolves a pod's priority when it is created; an existing pod keeps the
        priority it was given (its class may have changed or gone since)."""
        if existing is not None:
            stored = existing.manifest.get("spec", {})
            spec = dict(manifest.get("spec", {}))
            for field_name in ("priority", "preemptionPolicy", "priorityClassName"):
                if field_name in stored and field_name not in spec:
                    spec[field_name] = stored[field_name]
            return {**manifest, "spec": spec}
        classes = self._known_classes()
        wanted = manifest.get("spec", {}).get("priorityClassName")
        if wanted and wanted not in classes:
            # Just created, perhaps, and not in the read model yet: ask the log.
            found = (
                await self._repository.load(AggregateRef("PriorityClass", "", wanted))
            ).aggregate
            if found is not None and found.exists:
                classes[wanted] = found.manifest
        return resolve_priority(manifest, classes)

    async def _limited(
        self, ctx: CommandContext, manifest: dict[str, Any], existing: Resource | None
    ) -> dict[str, Any]:
        """LimitRanger on create: the namespace's defaults (or the cluster default) are stored
        in the pod, and its bounds are enforced. An existing pod keeps the resources and the
        annotation it was admitted with (a re-apply of its original manifest changes
        nothing; a real change of resources is refused by the pod's immutability rule)."""
        if existing is not None:
            return _with_admitted_resources(manifest, existing.manifest)
        if self._policies is None:
            return manifest
        policies = await policies_of(ctx, self._policies)
        limited = apply_limit_ranges(manifest, policies.limit_ranges)
        # A default limit below a stated request makes the pod invalid, as in Kubernetes:
        # what the defaults changed is validated again (not the whole pod).
        return validate_limited(limited, manifest)

    async def _require_namespace(self, namespace: str) -> None:
        loaded = await self._repository.load(AggregateRef("Namespace", "", namespace))
        if loaded.aggregate is None or not loaded.aggregate.exists:
            raise NotFound(
                f'namespace "{namespace}" not found: create it first', field="metadata.namespace"
            )


def _with_admitted_resources(manifest: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with what admission added to the stored pod carried over: the requests and
    limits a container does not state, and the limit-ranger annotation."""
    old_spec = stored.get("spec") or {}
    spec = dict(manifest.get("spec") or {})
    for field_name in ("containers", "initContainers"):
        old = {c.get("name"): c.get("resources") or {} for c in old_spec.get(field_name) or []}
        merged = []
        for container in spec.get(field_name) or []:
            before = old.get(container.get("name"))
            if before:
                resources = dict(container.get("resources") or {})
                for section in ("requests", "limits"):
                    if before.get(section):
                        resources[section] = {**before[section], **(resources.get(section) or {})}
                container = {**container, "resources": resources}
            merged.append(container)
        if field_name in spec:
            spec[field_name] = merged
    metadata = dict(manifest.get("metadata") or {})
    note = ((stored.get("metadata") or {}).get("annotations") or {}).get(LIMIT_RANGER_ANNOTATION)
    if note is not None:
        stated = metadata.get("annotations") or {}
        metadata["annotations"] = {LIMIT_RANGER_ANNOTATION: note, **stated}
    return {**manifest, "metadata": metadata, "spec": spec}


async def fingerprint(ctx: CommandContext) -> None:
    """A hash of what was asked, so a retry can be told apart from a reused idempotency key."""
    ctx.request_hash = hashlib.sha256(
        msgpack.packb(
            [ctx.subject, ctx.actor, ctx.raw.get("body"), ctx.raw.get("expected_version")],
            use_bin_type=True,
        )
    ).hexdigest()


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


# -- the service ---------------------------------------------------------------------------


def audit_record(ctx: CommandContext, reply: dict[str, Any]) -> AuditRecord:
    """What the audit trail keeps of one answered command (whatever stage it reached)."""
    command, ref = ctx.command, ctx.ref
    error = reply.get("error") or {}
    outcome = "accepted" if reply.get("ok") else "denied" if ctx.denied else "rejected"
    kind, verb = ctx.kind, ctx.verb
    if not kind:
        with contextlib.suppress(Exception):
            kind, verb = parse_command_subject(ctx.subject)
    raw = ctx.raw if isinstance(ctx.raw, dict) else {}
    body = raw.get("body") if isinstance(raw.get("body"), dict) else {}
    manifest_meta = ((body or {}).get("manifest") or {}).get("metadata") or {}
    if not isinstance(manifest_meta, dict):
        manifest_meta = {}
    name = ref.name if ref else str((body or {}).get("name") or manifest_meta.get("name") or "")
    namespace = (
        ref.namespace
        if ref
        else str((body or {}).get("namespace") or manifest_meta.get("namespace") or "")
    )
    return AuditRecord(
        time_ns=ctx.received_ns,
        outcome=outcome,
        actor=ctx.actor or (command.actor if command else str(raw.get("actor") or ""))[:256],
        verb=verb or "",
        kind=kind or "",
        namespace=namespace[:253],
        name=name[:253],
        command_id=command.idempotency_key if command else str(raw.get("id") or "")[:128],
        correlation_id=ctx.correlation_id,
        causation_id=(command.causation_id or "") if command else "",
        source=(command.source or "") if command else str(raw.get("source") or "")[:256],
        code=str(error.get("code") or ""),
        message=str(error.get("message") or "")[:1000],
        error_field=str(error.get("field") or ""),
        events=list(reply.get("events") or []),
        seqs=list(reply.get("seqs") or []),
    )


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
    ) -> None:
        self._nc = nc
        self.repository = AggregateRepository(store)
        # The cluster's PriorityClasses, for admission (as Kubernetes' informer cache: a pod
        # naming no class gets the global default this gateway has seen).
        self.priority_classes = Projection(
            ClusterModel(), store, filter_subject=event_filter("PriorityClass")
        )
        # Each namespace's LimitRanges (admission defaults) and ResourceQuotas (charged on a
        # pod's create), read-your-writes.
        self.policies = NamespacePolicies(nc, store)
        self.stages: Sequence[Handler] = (
            limit_size,
            decode,
            route,
            resolve_target,
            Authenticate(identify),
            Authorize(policy or AllowAll()),
            fingerprint,
            Admit(self.repository, self.priority_classes, self.policies),
            Execute(self.repository, self.policies),
        )
        self._slots = asyncio.Semaphore(max_in_flight)
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
        try:
            await self.policies.start()
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self.audit.run())
                try:
                    await self._serve_commands(ready)
                finally:
                    writer.cancel()
        finally:
            await self.priority_classes.stop()
            await self.policies.stop()

    async def _serve_commands(self, ready: asyncio.Event | None) -> None:
        async with asyncio.TaskGroup() as tasks:

            async def on_request(msg: Msg) -> None:
                await self._slots.acquire()
                tasks.create_task(self._serve(msg))

            await serve(self._nc, ALL_COMMANDS, queue=QUEUE_GROUP, handler=on_request, ready=ready)

    async def _serve(self, msg: Msg) -> None:
        try:
            ctx = CommandContext(subject=msg.subject, data=msg.data, received_ns=time.time_ns())
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

    async def handle(self, subject: str, data: bytes) -> dict[str, Any]:
        """Run one command through the pipeline and return the answer (not audited)."""
        ctx = CommandContext(subject=subject, data=data, received_ns=time.time_ns())
        return await self.handle_context(ctx)

    async def handle_context(self, ctx: CommandContext) -> dict[str, Any]:
        subject = ctx.subject
        self.handled += 1
        with structlog.contextvars.bound_contextvars(subject=subject):
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
                log.info("command.rejected", code=exc.code, error=exc.message, field=exc.field)
                return {"ok": False, "error": exc.as_dict()}
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
            log.debug("command.accepted", ref=str(ctx.ref), events=ctx.reply.get("events"))
            return ctx.reply
