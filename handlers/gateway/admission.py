"""What the command targets, and whether the cluster admits it: the resolve-target and
admission stages.

Why this exists: before anything is decided, the command's target must be valid on its own
(the manifest against its schema with Kubernetes' defaults, or the name and namespace of a
delete, scale, cordon, bind or status update), and admission adds what Kubernetes adds on admission
(default tolerations, the pod's priority, the namespace's LimitRange defaults and bounds) and
checks what must hold in the cluster (the namespace exists; one global default PriorityClass).
Quotas are not charged here but in ``execute``, atomically with the pod's creation.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.api.catalog import KINDS, SCALABLE_KINDS
from core.api.commands import (
    BindBody,
    DeleteBody,
    ManifestBody,
    NodeBody,
    ScaleBody,
    StatusBody,
)
from core.api.manifests import dump_manifest, parse_manifest
from core.errors import FleetError, NotFound, ValidationFailed
from core.meta.aggregate import Resource
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.model import K8sModel, to_validation_failed
from core.meta.names import dns1123_label_errors
from core.policy.admission import (
    LIMIT_RANGER_ANNOTATION,
    apply_limit_ranges,
    check_single_global_default,
    default_toleration_seconds,
    resolve_priority,
    validate_limited,
)
from core.workloads.models import DeploymentStatus, ReplicaSetStatus
from handlers.gateway.context import CommandContext, policies_of
from handlers.gateway.services import refuse_record_writes
from projections.cluster import ClusterModel
from projections.policies import NamespacePolicies
from projections.runtime import Projection
from streams.repository import AggregateRepository, Loaded
from streams.subjects import AggregateRef

STATUS_MODELS: dict[str, type[K8sModel]] = {
    "Deployment": DeploymentStatus,
    "ReplicaSet": ReplicaSetStatus,
}


async def resolve_target(ctx: CommandContext, *, features: FeatureGates = DEFAULT_FEATURES) -> None:
    """Validate what the command targets: the manifest against its schema (with Kubernetes
    defaults applied, and the alpha fields ``features`` turns on), or the name and namespace of
    a delete or scale."""
    assert ctx.command is not None
    body = ctx.command.body
    info = KINDS[ctx.kind]
    if isinstance(body, ManifestBody):
        resource = parse_manifest(body.manifest, features=features)
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
    assert isinstance(body, DeleteBody | ScaleBody | NodeBody | StatusBody | BindBody)
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
    if isinstance(body, BindBody) and ctx.kind != "Pod":
        raise ValidationFailed(
            f"only pods can be bound, not a {ctx.kind.lower()}", code="unsupported"
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
        *,
        features: FeatureGates = DEFAULT_FEATURES,
    ) -> None:
        self._repository = repository
        self._priority_classes = priority_classes
        self._policies = policies
        self._features = features

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        await refuse_record_writes(ctx)
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
            ref = AggregateRef("PriorityClass", "", wanted)
            loaded = await self._repository.load(ref)
            if loaded.aggregate is None and await self._repository.behind_leader([loaded]):
                loaded = await self._repository.load(ref)  # cached absent, created since
            found = loaded.aggregate
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
        return validate_limited(limited, manifest, features=self._features)

    async def _require_namespace(self, namespace: str) -> None:
        ref = AggregateRef("Namespace", "", namespace)
        loaded = await self._repository.load(ref)
        if (loaded.aggregate is None or not loaded.aggregate.exists) and (
            await self._repository.behind_leader([loaded])
        ):
            # Created since this gateway cached it, or the replica that answered lags: a
            # refusal is only said on the leader's word.
            loaded = await self._repository.load(ref)
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
