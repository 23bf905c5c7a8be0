"""What the command targets, and whether the cluster admits it: the resolve-target and
admission stages.

Why this exists: before anything is decided, the command's target must be valid on its own
(the manifest against its schema with Kubernetes' defaults, or the name and namespace of a
delete, scale, cordon, bind or status update), and admission must do what kube-apiserver's
admission plugins do, in their order (``core.policy.admissionchain``): mutating stages first
(LimitRanger's resource defaults, the Priority of the pod's PriorityClass,
DefaultTolerationSeconds, a VerticalPodAutoscaler's recommended requests), then validating
ones (NamespaceLifecycle: the namespace exists; LimitRanger's bounds; PodSecurity: the
namespace's ``pod-security.kubernetes.io/*`` labels; Priority: one global default
PriorityClass). Each stage is a named object with a phase, as a kube-scheduler plugin is; what
each one changed, refused, warned about or recorded is kept on the context for the command's
audit record, and warnings go back to the client. Quotas (kube's last plugin, ResourceQuota)
are charged in ``execute``, atomically with the pod's creation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from core.access import noderestriction, podsecurity
from core.api.catalog import KINDS, SCALABLE_KINDS
from core.api.commands import (
    BindBody,
    DeleteBody,
    EvictBody,
    ManifestBody,
    NodeBody,
    ResizeBody,
    ScaleBody,
    StatusBody,
)
from core.api.manifests import dump_manifest, parse_manifest
from core.autoscaling.model import HorizontalPodAutoscalerStatus
from core.autoscaling.vertical import (
    amount_of,
    apply_to_container,
    cap_to_limit_range,
    policy_of,
)
from core.autoscaling.vertical_model import (
    DEPRECATED_AUTO,
    UPDATE_MODES,
    VerticalPodAutoscalerStatus,
)
from core.autoscaling.vertical_model import VerticalPodAutoscaler as VerticalPodAutoscalerModel
from core.disruption.model import PodDisruptionBudgetStatus
from core.errors import FleetError, NotFound, ValidationFailed
from core.meta.aggregate import Resource
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.model import K8sModel, to_validation_failed
from core.meta.names import dns1123_label_errors, generated_name
from core.policy.admission import (
    LIMIT_RANGER_ANNOTATION,
    check_limit_ranges,
    check_single_global_default,
    default_limit_ranges,
    default_toleration_seconds,
    resolve_priority,
    validate_limited,
)
from core.policy.admissionchain import Action, Phase, StageNote, chain_order
from core.workloads.models import DeploymentStatus, ReplicaSetStatus
from handlers.gateway.context import CommandContext, policies_of
from handlers.gateway.services import refuse_record_writes
from projections.cluster import ClusterModel
from projections.policies import NamespacePolicies
from projections.runtime import Projection
from streams.repository import AggregateRepository, Loaded
from streams.subjects import AggregateRef

VPA_UPDATES_ANNOTATION = "vpaUpdates"
"""What the VPA's admission changed in a pod (the VPA writes the same annotation)."""
VPA_OBSERVED_ANNOTATION = "vpaObservedContainers"
AUTO_DEPRECATION = (
    f'spec.updatePolicy: "{DEPRECATED_AUTO}" mode is deprecated and will be removed in a future '
    "API version. Use explicit update modes like: "
    f"[{' '.join(m for m in UPDATE_MODES if m != DEPRECATED_AUTO)}]. See "
    "https://github.com/kubernetes/autoscaler/issues/8424 for more details."
)
"""The VPA admission controller's warning for the deprecated ``Auto`` (read as Recreate)."""

TEMPLATE_KINDS = frozenset({"Deployment", "ReplicaSet"})
"""The kinds with a pod template, which Pod Security checks at ``warn`` and ``audit``."""
AUDIT_VIOLATIONS = podsecurity.AUDIT_VIOLATIONS_ANNOTATION

PodsOf = Callable[[str], Awaitable[Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]]]]
"""The pods of a namespace: (name, spec, metadata) of each."""

STATUS_MODELS: dict[str, type[K8sModel]] = {
    "Deployment": DeploymentStatus,
    "ReplicaSet": ReplicaSetStatus,
    "HorizontalPodAutoscaler": HorizontalPodAutoscalerStatus,
    "PodDisruptionBudget": PodDisruptionBudgetStatus,
    "VerticalPodAutoscaler": VerticalPodAutoscalerStatus,
}


def _generated_name(ctx: CommandContext, prefix: str) -> str:
    """The name a create of a manifest with only ``generateName`` gets, as kube-apiserver
    makes it; the suffix is drawn from the command's idempotency key, so a retry (on any
    gateway) names the same object and the first outcome is answered. An apply cannot use
    it (it would make a new object each time: kubectl refuses it too)."""
    assert ctx.command is not None
    if ctx.verb != "create":
        raise ValidationFailed(
            f"cannot use generateName with {ctx.verb}: a name is generated on create only "
            "(`kubectl create -f`, or a `create` command); give metadata.name to apply",
            field="metadata.generateName",
        )
    seed = f"{ctx.kind}\0{prefix}\0{ctx.command.idempotency_key}".encode()
    name = generated_name(prefix, hashlib.sha256(seed).digest())
    problems = KINDS[ctx.kind].model.NAME_RULE(name)
    if problems:
        raise ValidationFailed(
            f"invalid generated name {name!r}: {problems[0]}", field="metadata.generateName"
        )
    return name


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
        if not meta.get("name"):
            meta["name"] = _generated_name(ctx, meta.get("generateName", ""))
        namespace = meta.get("namespace", "") if info.namespaced else ""
        ctx.ref = AggregateRef(ctx.kind, namespace, meta["name"])
        return
    assert isinstance(
        body, DeleteBody | ScaleBody | NodeBody | StatusBody | BindBody | EvictBody | ResizeBody
    )
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
    if isinstance(body, EvictBody) and ctx.kind != "Pod":
        raise ValidationFailed(
            f"only pods can be evicted, not a {ctx.kind.lower()}", code="unsupported"
        )
    if isinstance(body, BindBody) and ctx.kind != "Pod":
        raise ValidationFailed(
            f"only pods can be bound, not a {ctx.kind.lower()}", code="unsupported"
        )
    if isinstance(body, ResizeBody) and ctx.kind != "Pod":
        raise ValidationFailed(
            f"only pods can be resized in place, not a {ctx.kind.lower()}", code="unsupported"
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


@dataclass
class Review:
    """One command under admission: the manifest the stages mutate, the stored object it
    changes (a pod's, when one exists), and what each stage did."""

    ctx: CommandContext
    manifest: dict[str, Any] | None
    existing: Resource | None = None
    """The stored pod an apply (or a retried create) changes: it keeps what it was admitted
    with, and only a significant change of it is judged again."""
    notes: list[StageNote] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    namespace: Resource | None = None
    """The command's namespace, once a stage has loaded it (NamespaceLifecycle does first)."""

    @property
    def kind(self) -> str:
        assert self.ctx.ref is not None
        return self.ctx.ref.kind

    @property
    def creates_pod(self) -> bool:
        """A pod coming to life: what LimitRanger's bounds and the priority are decided for."""
        return self.kind == "Pod" and self.manifest is not None and self.existing is None

    def note(self, stage: str, action: Action, detail: str = "") -> None:
        self.notes.append(StageNote(stage, action, detail))


class AdmissionStage(Protocol):
    """One half of an admission plugin: mutating stages may replace ``review.manifest``;
    validating ones raise a FleetError to refuse, or add warnings and audit annotations."""

    @property
    def name(self) -> str: ...

    @property
    def phase(self) -> Phase: ...

    async def __call__(self, review: Review) -> None: ...


class Admit:
    """Admission: the chain of kube-apiserver's plugins fleetlog has, mutating stages first
    (LimitRanger's resource defaults, the Priority of the pod's PriorityClass,
    DefaultTolerationSeconds), then validating ones (the namespace exists, LimitRanger's
    bounds, PodSecurity, one global default PriorityClass), in the order of
    ``core.policy.admissionchain``. What each stage changed, refused, warned about or recorded
    is kept on the context for the command's audit record; warnings also go to the client.
    Quotas are charged in the Execute stage, atomically with the pod's creation."""

    def __init__(
        self,
        repository: AggregateRepository,
        priority_classes: Projection[ClusterModel],
        policies: NamespacePolicies | None = None,
        *,
        features: FeatureGates = DEFAULT_FEATURES,
        pods_of: PodsOf | None = None,
        vpas: Projection[ClusterModel] | None = None,
    ) -> None:
        """``pods_of``: how the pods of a namespace are read when its enforce level is raised
        (for the warnings about those that violate it; without it, no such warnings).
        ``vpas``: the cluster's VerticalPodAutoscalers (without it, no VPA stage)."""
        self._repository = repository
        stages: list[AdmissionStage] = [
            LimitRangerDefaults(policies, features=features),
            PriorityResolution(repository, priority_classes),
            TolerationSeconds(),
            *(
                [VerticalPodAutoscalerRequests(repository, vpas, policies)]
                if vpas is not None
                else []
            ),
            NamespaceLifecycle(repository),
            LimitRangerBounds(policies),
            NodeRestriction(repository),
            PodSecurity(repository, pods_of=pods_of),
            SingleGlobalDefault(priority_classes),
        ]
        self.stages = chain_order(stages)

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        await refuse_record_writes(ctx)
        if ctx.ref.kind != "Pod" or ctx.manifest is None:
            await self._run(ctx, None)
        elif ctx.verb != "create":
            await self._run(ctx, await self._repository.load(ctx.ref))
        else:
            await self._create_pod(ctx)

    async def _create_pod(self, ctx: CommandContext) -> None:
        """A ``create`` is admitted as a new pod without reading the log on a cache miss, as
        Kubernetes admits a create (Execute's optimistic append then finds an existing pod:
        ``AlreadyExists``, or the original's answer for a retry, neither of which depends on
        the manifest). Only if that admission refuses the pod is the log read: a retry of a
        create that landed before a policy changed is answered with its first outcome, never
        refused by the new policy."""
        assert ctx.ref is not None
        cached = await self._repository.load(ctx.ref, assume_new=True)
        try:
            await self._run(ctx, cached)
        except FleetError:
            if cached.last_seq:  # the cache knew the pod: that was the answer
                raise
            loaded = await self._repository.load(ctx.ref, fresh=True)
            if loaded.aggregate is None or not loaded.aggregate.exists:
                raise
            await self._run(ctx, loaded)

    async def _run(self, ctx: CommandContext, loaded: Loaded | None) -> None:
        """Every stage in order on a review of the command; what they did is kept on the
        context whether the command is admitted or refused (the refusal names its stage)."""
        existing = None
        if loaded is not None and loaded.aggregate is not None and loaded.aggregate.exists:
            existing = loaded.aggregate
        review = Review(ctx=ctx, manifest=ctx.manifest, existing=existing)
        try:
            for stage in self.stages:
                try:
                    await stage(review)
                except FleetError as exc:
                    review.note(stage.name, "denied", exc.message)
                    raise
        finally:
            ctx.admission = [str(note) for note in review.notes]
            ctx.warnings = review.warnings
            ctx.audit_annotations = review.annotations
        ctx.manifest = review.manifest


# -- mutating stages --------------------------------------------------------------------------


class LimitRangerDefaults:
    """LimitRanger on create: the namespace's defaults (or the cluster default) are stored in
    the pod. An existing pod keeps the resources and the annotation it was admitted with (a
    re-apply of its original manifest changes nothing; a real change of resources is refused
    by the pod's immutability rule)."""

    name = "LimitRanger"
    phase: Phase = "mutating"

    def __init__(
        self, policies: NamespacePolicies | None, *, features: FeatureGates = DEFAULT_FEATURES
    ) -> None:
        self._policies = policies
        self._features = features

    async def __call__(self, review: Review) -> None:
        if review.kind != "Pod" or review.manifest is None:
            return
        if review.existing is not None:
            review.manifest = _with_admitted_resources(review.manifest, review.existing.manifest)
            return
        if self._policies is None:
            return
        policies = await policies_of(review.ctx, self._policies)
        manifest = review.manifest
        limited, notes = default_limit_ranges(manifest, policies.limit_ranges)
        if not notes:
            return
        # A default limit below a stated request makes the pod invalid, as in Kubernetes:
        # what the defaults changed is validated again (not the whole pod).
        review.manifest = validate_limited(limited, manifest, features=self._features)
        review.note(self.name, "mutated", "defaulted " + "; ".join(notes))


class PriorityResolution:
    """Priority on create: ``spec.priorityClassName`` (or the global default class) becomes
    ``spec.priority`` and ``spec.preemptionPolicy``; an unknown class is refused. An existing
    pod keeps the priority it was given (its class may have changed or gone since)."""

    name = "Priority"
    phase: Phase = "mutating"

    def __init__(
        self, repository: AggregateRepository, priority_classes: Projection[ClusterModel]
    ) -> None:
        self._repository = repository
        self._priority_classes = priority_classes

    async def __call__(self, review: Review) -> None:
        if review.kind != "Pod" or review.manifest is None:
            return
        manifest = review.manifest
        if review.existing is not None:
            stored = review.existing.manifest.get("spec", {})
            spec = dict(manifest.get("spec", {}))
            for field_name in ("priority", "preemptionPolicy", "priorityClassName"):
                if field_name in stored and field_name not in spec:
                    spec[field_name] = stored[field_name]
            review.manifest = {**manifest, "spec": spec}
            return
        classes = _known_classes(self._priority_classes)
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
        resolved = resolve_priority(manifest, classes)
        if resolved is manifest:
            return
        review.manifest = resolved
        spec = resolved["spec"]
        source = spec.get("priorityClassName")
        detail = f"set priority {spec['priority']}" + (
            f" from PriorityClass {source}" if source else ""
        )
        review.note(self.name, "mutated", detail)


class TolerationSeconds:
    """DefaultTolerationSeconds: a pod not tolerating the ``not-ready``/``unreachable``
    NoExecute taints tolerates them for five minutes."""

    name = "DefaultTolerationSeconds"
    phase: Phase = "mutating"

    async def __call__(self, review: Review) -> None:
        if review.kind != "Pod" or review.manifest is None:
            return
        before = review.manifest
        review.manifest = default_toleration_seconds(before)
        if review.manifest is before:
            return
        known = {id(t) for t in before.get("spec", {}).get("tolerations") or ()}
        added = [t for t in review.manifest["spec"]["tolerations"] if id(t) not in known]
        keys = ", ".join(t["key"] for t in added)
        seconds = added[0]["tolerationSeconds"]
        review.note(self.name, "mutated", f"tolerates {keys} (NoExecute) for {seconds}s")


class VerticalPodAutoscalerRequests:
    """The VPA admission controller: a pod created for a VPA's target (its replica set or
    that set's deployment), in any mode but Off, gets the recommended requests (limits scaled
    to keep their ratio with ``RequestsAndLimits``; requests capped at the limit with
    ``RequestsOnly``), and the VPA's ``vpaUpdates`` and ``vpaObservedContainers`` annotations.
    A VPA without a recommendation yet changes nothing. A target whose proportional limit would
    pass the namespace's container LimitRange ``max`` is lowered to fit it, as the VPA caps it.
    Runs where kube-apiserver runs mutating webhooks: after the built-in mutating plugins,
    before every validating one (LimitRanger's bounds then judge the result)."""

    name = "VerticalPodAutoscaler"
    phase: Phase = "mutating"
    # The VPA's webhook also validates VPAs: their schema is checked on the way in
    # (``core.autoscaling.vertical_model``); what it only warns about is warned here.

    def __init__(
        self,
        repository: AggregateRepository,
        vpas: Projection[ClusterModel],
        policies: NamespacePolicies | None = None,
    ) -> None:
        self._repository = repository
        self._vpas = vpas
        self._policies = policies

    async def _chain(self, namespace: str, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The pod's controllers (its replica set, that set's deployment), read from the log
        (cached) only when a VPA in the namespace could match."""
        chain: list[tuple[str, str]] = []
        meta = manifest.get("metadata") or {}
        for _ in range(2):
            owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")),
                         None)  # fmt: skip
            if owner is None:
                break
            kind, name = str(owner.get("kind")), str(owner.get("name"))
            chain.append((kind, name))
            if kind not in KINDS:
                break
            loaded = await self._repository.load(AggregateRef(kind, namespace, name))
            if loaded.aggregate is None or not loaded.aggregate.exists:
                break
            meta = loaded.aggregate.manifest.get("metadata") or {}
        return chain

    async def __call__(self, review: Review) -> None:
        if review.kind == "VerticalPodAutoscaler" and review.manifest is not None:
            policy = (review.manifest.get("spec") or {}).get("updatePolicy") or {}
            if policy.get("updateMode") == DEPRECATED_AUTO:
                review.warnings.append(AUTO_DEPRECATION)
                review.note(self.name, "warned", AUTO_DEPRECATION)
            return
        if not review.creates_pod or review.manifest is None:
            return
        assert review.ctx.ref is not None
        namespace = review.ctx.ref.namespace
        candidates = sorted(self._vpas.model.list("VerticalPodAutoscaler", namespace),
                            key=lambda r: r.name)  # fmt: skip
        if not candidates:
            return
        chain = set(await self._chain(namespace, review.manifest))
        for record in candidates:
            ref = (record.manifest.get("spec") or {}).get("targetRef") or {}
            if (str(ref.get("kind")), str(ref.get("name"))) in chain:
                bounds = await self._limit_range(review)
                self._apply(review, record.name, record.manifest, bounds)
                return

    async def _limit_range(self, review: Review) -> tuple[dict[str, int], dict[str, int]]:
        """The namespace's container LimitRange ``max`` (the strictest) and ``default``."""
        maximum: dict[str, int] = {}
        default: dict[str, int] = {}
        if self._policies is None:
            return maximum, default
        policies = await policies_of(review.ctx, self._policies)
        for lr in policies.limit_ranges:
            for item in (lr.get("spec") or {}).get("limits") or ():
                if item.get("type") != "Container":
                    continue
                for resource, text in (item.get("max") or {}).items():
                    if resource in ("cpu", "memory"):
                        amount = amount_of(resource, str(text))
                        maximum[resource] = min(maximum.get(resource, amount), amount)
                for resource, text in (item.get("default") or {}).items():
                    if resource in ("cpu", "memory"):
                        default.setdefault(resource, amount_of(resource, str(text)))
        return maximum, default

    def _apply(
        self,
        review: Review,
        vpa_name: str,
        vpa: Mapping[str, Any],
        bounds: tuple[dict[str, int], dict[str, int]],
    ) -> None:
        parsed = parse_manifest(vpa)
        assert isinstance(parsed, VerticalPodAutoscalerModel)
        if parsed.spec.mode() == "Off" or parsed.status is None:
            return
        recommendation = parsed.status.recommendation
        given = recommendation.container_recommendations if recommendation is not None else None
        recs = {r.container_name: r for r in given or ()}
        assert review.manifest is not None
        manifest = review.manifest
        spec = dict(manifest.get("spec") or {})
        containers = [dict(c) for c in spec.get("containers") or ()]
        updates: list[str] = []
        details: list[str] = []
        observed: list[str] = []
        for index, container in enumerate(containers):
            cname = str(container.get("name"))
            observed.append(cname)
            rec = recs.get(cname)
            policy = policy_of(parsed.spec, cname)
            if rec is None or policy.mode == "Off":
                continue
            target = {r: amount_of(r, q) for r, q in rec.target.items()}
            given = container.get("resources") or {}
            target, capped = cap_to_limit_range(
                target,
                requests={r: amount_of(r, str(q)) for r, q in (given.get("requests") or {}).items()
                          if r in ("cpu", "memory")},
                limits={r: amount_of(r, str(q)) for r, q in (given.get("limits") or {}).items()
                        if r in ("cpu", "memory")},
                maximum=bounds[0], default=bounds[1],
            )  # fmt: skip
            resources, changes = apply_to_container(
                container.get("resources") or {}, target, policy
            )
            if not changes:
                continue
            container["resources"] = resources
            updates.append(f"container {index}: " + ", ".join(changes))
            shown = ", ".join(
                f"{r} {kind} {resources[part][r]}"
                for part, kind in (("requests", "request"), ("limits", "limit"))
                for r in sorted(resources.get(part) or {})
                if f"{r} {kind}" in changes
            )
            details.append(f"{cname}: {shown}" + "".join(f" ({c})" for c in capped))
        if not updates:
            return
        spec["containers"] = containers
        meta = dict(manifest.get("metadata") or {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            VPA_UPDATES_ANNOTATION: f"Pod resources updated by {vpa_name}: " + "; ".join(updates),
            VPA_OBSERVED_ANNOTATION: ", ".join(observed),
        }
        review.manifest = {**manifest, "metadata": meta, "spec": spec}
        review.note(
            self.name, "mutated",
            f"{vpa_name} ({parsed.spec.mode()}) set " + "; ".join(details),
        )  # fmt: skip


# -- validating stages ------------------------------------------------------------------------


class NamespaceLifecycle:
    """Objects are created in namespaces that exist."""

    name = "NamespaceLifecycle"
    phase: Phase = "validating"

    def __init__(self, repository: AggregateRepository) -> None:
        self._repository = repository

    async def __call__(self, review: Review) -> None:
        ref = review.ctx.ref
        assert ref is not None
        if not ref.namespace or review.ctx.verb not in ("create", "apply"):
            return
        namespace = AggregateRef("Namespace", "", ref.namespace)
        loaded = await self._repository.load(namespace)
        if (loaded.aggregate is None or not loaded.aggregate.exists) and (
            await self._repository.behind_leader([loaded])
        ):
            # Created since this gateway cached it, or the replica that answered lags: a
            # refusal is only said on the leader's word.
            loaded = await self._repository.load(namespace)
        if loaded.aggregate is None or not loaded.aggregate.exists:
            raise NotFound(
                f'namespace "{ref.namespace}" not found: create it first',
                field="metadata.namespace",
            )
        review.namespace = loaded.aggregate


class NodeRestriction:
    """A node agent writes only its own Node and the pods bound to it
    (``core.access.noderestriction``, kube's NodeRestriction plugin). Only a verified
    identity is held to it: an unsigned command on an open server states any actor."""

    name = "NodeRestriction"
    phase: Phase = "validating"

    def __init__(self, repository: AggregateRepository) -> None:
        self._repository = repository

    async def __call__(self, review: Review) -> None:
        ctx, ref = review.ctx, review.ctx.ref
        assert ref is not None
        if ctx.identity is None or noderestriction.node_of(ctx.identity.user.name) is None:
            return
        exists, bound_to = True, None
        if ref.kind == "Pod":
            stored = review.existing
            if stored is None:
                loaded = await self._repository.load(ref)
                if loaded.aggregate is not None and loaded.aggregate.exists:
                    stored = loaded.aggregate
            exists = stored is not None
            if stored is not None:
                bound_to = (stored.manifest.get("spec") or {}).get("nodeName") or None
        refused = noderestriction.refusal(
            noderestriction.NodeWrite(
                user=ctx.identity.user, kind=ref.kind, verb=ctx.verb, namespace=ref.namespace,
                name=ref.name, exists=exists, bound_to=bound_to,
            )
        )  # fmt: skip
        if refused is not None:
            raise FleetError(refused, code="forbidden")


class LimitRangerBounds:
    """LimitRanger's bounds (min, max, maxLimitRequestRatio) on a pod being created."""

    name = "LimitRanger"
    phase: Phase = "validating"

    def __init__(self, policies: NamespacePolicies | None) -> None:
        self._policies = policies

    async def __call__(self, review: Review) -> None:
        if not review.creates_pod or self._policies is None:
            return
        assert review.manifest is not None
        policies = await policies_of(review.ctx, self._policies)
        check_limit_ranges(review.manifest, policies.limit_ranges)


class PodSecurity:
    """Pod Security Admission, by the namespace's ``pod-security.kubernetes.io/*`` labels
    (``core.access.podsecurity``): a pod being created (or an existing one whose images
    change) is refused at the ``enforce`` level, warned about at ``warn`` and noted in the
    audit record at ``audit``; a workload's pod template is checked at ``warn`` and ``audit``
    only (its pods are checked when its controller creates them). A namespace's labels are
    validated, and raising its ``enforce`` level warns about the pods already there that
    violate the new level."""

    name = "PodSecurity"
    phase: Phase = "validating"

    def __init__(self, repository: AggregateRepository, *, pods_of: PodsOf | None) -> None:
        self._repository = repository
        self._pods_of = pods_of

    async def __call__(self, review: Review) -> None:
        manifest = review.manifest
        if manifest is None:
            return
        if review.kind == "Namespace":
            await self._namespace(review, manifest)
            return
        if review.kind == "Pod":
            spec, metadata = manifest.get("spec") or {}, manifest.get("metadata") or {}
            existing = review.existing
            if existing is not None and not podsecurity.significant_pod_update(
                spec, existing.manifest.get("spec") or {}
            ):
                return
            enforce = True
        elif review.kind in TEMPLATE_KINDS:
            template = (manifest.get("spec") or {}).get("template") or {}
            spec, metadata = template.get("spec") or {}, template.get("metadata") or {}
            enforce = False
        else:
            return
        policy = self._policy(review)
        if policy is None:
            return
        verdict = podsecurity.evaluate(policy, spec, metadata, enforce=enforce)
        review.annotations.update(verdict.annotations or {})
        if AUDIT_VIOLATIONS in review.annotations:
            review.note(self.name, "audited", review.annotations[AUDIT_VIOLATIONS])
        for warning in verdict.warnings:
            review.warnings.append(warning)
            review.note(self.name, "warned", warning)
        if verdict.denied:
            name = (manifest.get("metadata") or {}).get("name", "")
            raise FleetError(f'pods "{name}" is forbidden: {verdict.denied}', code="forbidden")

    @staticmethod
    def _policy(review: Review) -> podsecurity.NamespacePolicy | None:
        """The namespace's policy (None: no pod-security label, so nothing to check)."""
        namespace = review.namespace
        if namespace is None:
            return None
        labels = (namespace.manifest.get("metadata") or {}).get("labels") or {}
        if not any(key.startswith(podsecurity.LABEL_PREFIX) for key in labels):
            return None
        return podsecurity.NamespacePolicy.from_labels(labels)

    async def _namespace(self, review: Review, manifest: dict[str, Any]) -> None:
        """Kubernetes refuses a namespace with a level or version it does not know, and warns
        about existing pods when the ``enforce`` level is raised."""
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        problems = podsecurity.label_problems(labels)
        if problems:
            raise ValidationFailed("; ".join(problems), field="metadata.labels")
        ref = review.ctx.ref
        if self._pods_of is None or ref is None or review.ctx.verb != "apply":
            return
        level = podsecurity.NamespacePolicy.from_labels(labels).enforce
        if level == "privileged":
            return
        stored = (await self._repository.load(ref)).aggregate
        if stored is None or not stored.exists:
            return
        before = (stored.manifest.get("metadata") or {}).get("labels") or {}
        if podsecurity.NamespacePolicy.from_labels(before).enforce == level:
            return
        pods = await self._pods_of(ref.name)
        for warning in podsecurity.existing_pod_warnings(ref.name, level, pods):
            review.warnings.append(warning)
            review.note(self.name, "warned", warning)


class SingleGlobalDefault:
    """Priority's validating half: one PriorityClass at most is the global default."""

    name = "Priority"
    phase: Phase = "validating"

    def __init__(self, priority_classes: Projection[ClusterModel]) -> None:
        self._priority_classes = priority_classes

    async def __call__(self, review: Review) -> None:
        if review.kind == "PriorityClass" and review.manifest is not None:
            check_single_global_default(review.manifest, _known_classes(self._priority_classes))


def _known_classes(priority_classes: Projection[ClusterModel]) -> dict[str, dict[str, Any]]:
    return {r.name: r.manifest for r in priority_classes.model.list("PriorityClass")}


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
