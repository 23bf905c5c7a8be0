"""Mutating admission: defaults Kubernetes adds to objects as they are admitted.

These run in the gateway after validation and before the decision, and what they add is stored
in the object (so ``get -o yaml`` and the event history show it, as the API server's defaults
do). Each function takes a validated manifest and returns it, possibly with additions, and never
changes the manifest it was given. They are pure: whatever they need from the cluster (the
priority classes, the namespace's LimitRanges) is passed in.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.api.manifests import dump_manifest, parse_manifest
from core.errors import ValidationFailed
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.model import K8sModel
from core.meta.names import Annotations
from core.meta.quantity import parse_quantity
from core.meta.types import ObjectMeta
from core.nodes.status import NOT_READY_TAINT, UNREACHABLE_TAINT
from core.pods.containers import Container
from core.pods.model import PodSpec
from core.pods.resources import ResourceRequirements
from core.policy.priorityclass import DEFAULT_PRIORITY, SYSTEM_PRIORITY_CLASSES, PriorityClass

DEFAULT_TOLERATION_SECONDS = 300


def default_toleration_seconds(
    manifest: dict[str, Any], seconds: int = DEFAULT_TOLERATION_SECONDS
) -> dict[str, Any]:
    """Kubernetes' DefaultTolerationSeconds: a pod that does not already tolerate the
    ``not-ready`` / ``unreachable`` NoExecute taints gets tolerations for them, for ``seconds``,
    so it is evicted from a failed node after five minutes rather than at once."""
    if manifest.get("kind") != "Pod":
        return manifest
    spec = manifest.get("spec", {})
    tolerations: list[dict[str, Any]] = list(spec.get("tolerations") or [])

    def tolerated(taint_key: str) -> bool:
        # The same test as the Kubernetes plugin: key matches (or is empty) and the effect is
        # NoExecute (or empty, which means every effect).
        return any(
            t.get("key", "") in (taint_key, "") and t.get("effect", "") in ("NoExecute", "")
            for t in tolerations
        )

    added = [
        {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": seconds,
        }
        for key in (NOT_READY_TAINT, UNREACHABLE_TAINT)
        if not tolerated(key)
    ]
    if not added:
        return manifest
    return {**manifest, "spec": {**spec, "tolerations": tolerations + added}}


PriorityClassLike = PriorityClass | Mapping[str, Any]
"""A PriorityClass model, or its manifest as ``dump_manifest`` writes it."""


def _class_terms(priority_class: PriorityClassLike) -> tuple[int, bool, str]:
    """(value, globalDefault, preemptionPolicy) of a class given as a model or a manifest."""
    if isinstance(priority_class, PriorityClass):
        return (
            priority_class.value,
            priority_class.global_default,
            priority_class.preemption_policy,
        )
    return (
        int(priority_class["value"]),
        bool(priority_class.get("globalDefault", False)),
        str(priority_class.get("preemptionPolicy") or "PreemptLowerPriority"),
    )


def resolve_priority(
    manifest: dict[str, Any], priority_classes: Mapping[str, PriorityClassLike]
) -> dict[str, Any]:
    """Kubernetes' Priority admission plugin (on create): turn ``spec.priorityClassName`` into
    ``spec.priority`` and ``spec.preemptionPolicy``.

    ``priority_classes`` maps class name -> the stored class (model or manifest); the built-in
    ``system-cluster-critical`` / ``system-node-critical`` classes are known without being in
    it. A pod naming no class gets the ``globalDefault`` class (its name too; with several, the
    one with the lowest value, as Kubernetes picks after a race), or priority 0 and
    ``PreemptLowerPriority`` when there is none. An unknown class name is refused, and so is a
    pod stating a ``priority`` or ``preemptionPolicy`` other than the one computed (it may state
    the same one, so resolving is idempotent). Other kinds are returned unchanged.
    """
    if manifest.get("kind") != "Pod":
        return manifest
    spec: dict[str, Any] = manifest.get("spec", {})
    name: str = spec.get("priorityClassName") or ""
    if name:
        found = priority_classes.get(name)
        if found is None:
            found = SYSTEM_PRIORITY_CLASSES.get(name)
        if found is None:
            raise ValidationFailed(
                f'no PriorityClass with name "{name}" was found',
                field="spec.priorityClassName",
            )
        priority, _, policy = _class_terms(found)
    else:
        priority, policy = DEFAULT_PRIORITY, "PreemptLowerPriority"
        default: tuple[str, int, str] | None = None
        for class_name, candidate in priority_classes.items():
            value, global_default, candidate_policy = _class_terms(candidate)
            if global_default and (default is None or value < default[1]):
                default = (class_name, value, candidate_policy)
        if default is not None:
            name, priority, policy = default
    stated = spec.get("priority")
    if stated is not None and stated != priority:
        raise ValidationFailed(
            f"the integer value of priority ({stated}) must not be provided in pod spec; "
            f"priority admission controller computed {priority} from the given PriorityClass "
            "name",
            field="spec.priority",
        )
    stated_policy = spec.get("preemptionPolicy")
    if stated_policy is not None and stated_policy != policy:
        raise ValidationFailed(
            f"the string value of PreemptionPolicy ({stated_policy}) must not be provided in pod "
            f"spec; priority admission controller computed {policy} from the given "
            "PriorityClass name",
            field="spec.preemptionPolicy",
        )
    resolved = {**spec, "priority": priority, "preemptionPolicy": policy}
    if name:
        resolved["priorityClassName"] = name
    if resolved == spec:
        return manifest
    return {**manifest, "spec": resolved}


def check_single_global_default(
    manifest: dict[str, Any], priority_classes: Mapping[str, PriorityClassLike]
) -> dict[str, Any]:
    """The PriorityClass half of the Priority admission plugin: a class may be marked
    ``globalDefault`` only while no other class is (re-applying the default class itself is
    fine). Returns the manifest unchanged; other kinds pass."""
    if manifest.get("kind") != "PriorityClass" or not manifest.get("globalDefault"):
        return manifest
    own = (manifest.get("metadata") or {}).get("name")
    default: tuple[str, int] | None = None
    for class_name, candidate in priority_classes.items():
        value, global_default, _ = _class_terms(candidate)
        if global_default and (default is None or value < default[1]):
            default = (class_name, value)
    if default is not None and default[0] != own:
        raise ValidationFailed(
            f"PriorityClass {default[0]} is marked as default. Only one default can exist",
            field="globalDefault",
        )
    return manifest


# -- resource defaults and limits (LimitRanger) ------------------------------------------------

LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"
"""Where Kubernetes' LimitRanger records which defaults it set."""

CLUSTER_DEFAULT_REQUESTS: Mapping[str, str] = {"cpu": "100m", "memory": "128Mi"}
CLUSTER_DEFAULT_LIMITS: Mapping[str, str] = {"cpu": "500m", "memory": "512Mi"}
"""fleetlog's defaults for a namespace without a LimitRange (the seed's resource management):
a container that states nothing about cpu (or memory) gets this request and this limit."""

LimitRangeLike = Mapping[str, Any]
"""A LimitRange manifest as ``dump_manifest`` writes it (its Container items already defaulted
by the model: ``default`` from ``max``, ``defaultRequest`` from ``default`` then ``min``)."""


def _container_items(limit_ranges: Iterable[LimitRangeLike]) -> list[Mapping[str, Any]]:
    return [
        item
        for lr in limit_ranges
        for item in (lr.get("spec") or {}).get("limits") or []
        if item.get("type") == "Container"
    ]


def _merge(
    container: dict[str, Any], requests: Mapping[str, str], limits: Mapping[str, str]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """``mergeContainerResources``: a default fills only what the container does not state."""
    resources = dict(container.get("resources") or {})
    own_limits = dict(resources.get("limits") or {})
    own_requests = dict(resources.get("requests") or {})
    set_limits = sorted(k for k in limits if k not in own_limits)
    set_requests = sorted(k for k in requests if k not in own_requests)
    own_limits.update({k: limits[k] for k in set_limits})
    own_requests.update({k: requests[k] for k in set_requests})
    if own_limits:
        resources["limits"] = own_limits
    if own_requests:
        resources["requests"] = own_requests
    if not set_limits and not set_requests:
        return container, [], []
    return {**container, "resources": resources}, set_requests, set_limits


def _cluster_defaults(container: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The cluster default, per resource, for what the container states nothing about (a limit
    without a request already set the request when the pod was validated)."""
    stated = (container.get("resources") or {}).get("requests") or {}
    missing = [k for k in CLUSTER_DEFAULT_REQUESTS if k not in stated]
    return (
        {k: CLUSTER_DEFAULT_REQUESTS[k] for k in missing},
        {k: CLUSTER_DEFAULT_LIMITS[k] for k in missing},
    )


def _bound_problems(container: Mapping[str, Any], items: list[Mapping[str, Any]]) -> list[str]:
    """``PodValidateLimitFunc`` for Container items: min, max and maxLimitRequestRatio, in
    Kubernetes' words."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    problems: list[str] = []
    for item in items:
        for name, bound in (item.get("min") or {}).items():
            if name not in requests:
                problems.append(
                    f"minimum {name} usage per Container is {bound}.  No request is specified"
                )
            elif parse_quantity(requests[name]) < parse_quantity(bound):
                problems.append(
                    f"minimum {name} usage per Container is {bound}, but request is "
                    f"{requests[name]}"
                )
            elif name in limits and parse_quantity(limits[name]) < parse_quantity(bound):
                problems.append(
                    f"minimum {name} usage per Container is {bound}, but limit is {limits[name]}"
                )
        for name, bound in (item.get("max") or {}).items():
            if name not in limits:
                problems.append(
                    f"maximum {name} usage per Container is {bound}.  No limit is specified"
                )
            elif parse_quantity(limits[name]) > parse_quantity(bound):
                problems.append(
                    f"maximum {name} usage per Container is {bound}, but limit is {limits[name]}"
                )
            elif name in requests and parse_quantity(requests[name]) > parse_quantity(bound):
                problems.append(
                    f"maximum {name} usage per Container is {bound}, but request is "
                    f"{requests[name]}"
                )
        for name, bound in (item.get("maxLimitRequestRatio") or {}).items():
            request = parse_quantity(requests.get(name, "0"))
            limit = parse_quantity(limits.get(name, "0"))
            if request.sign() == 0:
                problems.append(
                    f"{name} max limit to request ratio per Container is {bound}, but no "
                    "request is specified or request is 0"
                )
            elif limit.sign() == 0:
                problems.append(
                    f"{name} max limit to request ratio per Container is {bound}, but no "
                    "limit is specified or limit is 0"
                )
            else:
                ratio = limit.amount / request.amount
                if ratio > parse_quantity(bound).amount:
                    problems.append(
                        f"{name} max limit to request ratio per Container is {bound}, but "
                        f"provided ratio is {float(ratio):f}"
                    )
    return problems


def apply_limit_ranges(
    manifest: dict[str, Any], limit_ranges: Sequence[LimitRangeLike]
) -> dict[str, Any]:
    """Kubernetes' LimitRanger admission plugin, for a pod being created: its defaults
    (:func:`default_limit_ranges`), then its bounds (:func:`check_limit_ranges`). Other kinds
    are returned unchanged."""
    defaulted, _ = default_limit_ranges(manifest, limit_ranges)
    check_limit_ranges(defaulted, limit_ranges)
    return defaulted


def default_limit_ranges(
    manifest: dict[str, Any], limit_ranges: Sequence[LimitRangeLike]
) -> tuple[dict[str, Any], list[str]]:
    """The LimitRanger's mutating half: the pod, and what it set.

    Each container (and init container) gets the ``defaultRequest`` and ``default`` (limit) of
    the namespace's LimitRanges for every resource it does not state; where the namespace has
    no LimitRange, fleetlog's cluster default applies instead (see
    :data:`CLUSTER_DEFAULT_REQUESTS`). What was set is recorded in the
    ``kubernetes.io/limit-ranger`` annotation ("LimitRanger plugin set: cpu, memory request
    for container main; ...") and returned, one entry per container and section (``cpu,
    memory request for container main``). Other kinds are returned unchanged.
    """
    if manifest.get("kind") != "Pod":
        return manifest, []
    default_requests: dict[str, str] = {}
    default_limits: dict[str, str] = {}
    for item in _container_items(limit_ranges):  # the first LimitRange stating a default wins
        for name, value in (item.get("defaultRequest") or {}).items():
            default_requests.setdefault(name, value)
        for name, value in (item.get("default") or {}).items():
            default_limits.setdefault(name, value)
    spec = dict(manifest.get("spec") or {})
    notes: list[str] = []
    for field_name, label in (("containers", "container"), ("initContainers", "init container")):
        merged = []
        for container in spec.get(field_name) or []:
            if limit_ranges:
                requests, limits = default_requests, default_limits
            else:
                requests, limits = _cluster_defaults(container)
            container, set_requests, set_limits = _merge(container, requests, limits)
            name = container.get("name")
            if set_requests:
                notes.append(f"{', '.join(set_requests)} request for {label} {name}")
            if set_limits:
                notes.append(f"{', '.join(set_limits)} limit for {label} {name}")
            merged.append(container)
        if field_name in spec:
            spec[field_name] = merged
    if not notes:
        return manifest, []
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        LIMIT_RANGER_ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes),
    }
    return {**manifest, "metadata": metadata, "spec": spec}, notes


def check_limit_ranges(manifest: dict[str, Any], limit_ranges: Sequence[LimitRangeLike]) -> None:
    """The LimitRanger's validating half: every container must respect each item's ``min``,
    ``max`` and ``maxLimitRequestRatio``; otherwise the pod is refused (``forbidden``) with
    every problem named, in Kubernetes' words. Other kinds pass."""
    if manifest.get("kind") != "Pod":
        return
    items = _container_items(limit_ranges)
    if not items:
        return
    spec = manifest.get("spec") or {}
    problems: list[str] = []
    for field_name in ("containers", "initContainers"):
        for container in spec.get(field_name) or []:
            problems += _bound_problems(container, items)
    if problems:
        pod_name = (manifest.get("metadata") or {}).get("name", "")
        raise ValidationFailed(
            f'pods "{pod_name}" is forbidden: ' + ", ".join(problems),
            code="forbidden",
            field="spec.containers",
        )


def validate_limited(
    limited: dict[str, Any],
    admitted: dict[str, Any],
    *,
    features: FeatureGates = DEFAULT_FEATURES,
) -> dict[str, Any]:
    """``limited`` (what :func:`apply_limit_ranges` made of the valid pod manifest
    ``admitted``) as ``dump_manifest(parse_manifest(limited))`` would give it, validating only
    what the LimitRanger changed.

    Why: a default can make a valid pod invalid (a default limit below a stated request, as in
    Kubernetes), so the result must be validated again, but validating the whole pod a second
    time was the largest single cost of a pod command. The LimitRanger changes only containers'
    ``resources`` and ``metadata.annotations``, and no validator of the pod model looks at those
    from outside their own types (``ResourceRequirements`` checks requests against limits
    within one container; the ``Annotations`` type checks keys and total size), so validating
    those parts with their own types accepts exactly what the whole model accepts, and their
    dumps are what the whole dump would hold there (keys in the model's order). When a part is
    invalid, the whole pod is parsed, so the error (its field path, and the count of further
    errors) is the one a full validation reports (with the same feature gates).
    """
    if limited is admitted:
        return admitted
    spec = dict(limited["spec"])
    old_spec = admitted.get("spec") or {}
    for field_name in ("containers", "initContainers"):
        containers = spec.get(field_name)
        if not containers:
            continue
        checked = []
        for container, before in zip(containers, old_spec.get(field_name) or (), strict=True):
            resources = container.get("resources")
            if container is not before and resources != before.get("resources"):
                dumped = _validated_resources(resources)
                if dumped is None:
                    return dump_manifest(parse_manifest(limited, features=features))
                container = _in_field_order({**container, "resources": dumped}, _CONTAINER_FIELDS)
            checked.append(container)
        spec[field_name] = checked
    metadata = limited["metadata"]
    if metadata is not admitted.get("metadata"):
        # Only the annotations changed (the rest of the metadata was validated with the pod).
        if not _valid_annotations(metadata.get("annotations") or {}):
            return dump_manifest(parse_manifest(limited, features=features))
        metadata = _in_field_order(metadata, _METADATA_FIELDS)
    return {**limited, "metadata": metadata, "spec": _in_field_order(spec, _POD_SPEC_FIELDS)}


def _validated_resources(resources: Any) -> dict[str, Any] | None:
    """``resources`` validated as a container's ``ResourceRequirements`` and dumped, or None
    if invalid. Pods of one template get the same defaults, so the answer for plain maps of
    text is remembered (the dump is copied: callers own what they get)."""
    key = _key(resources)
    if key is None:
        return _validate_resources(resources)
    dumped = _remembered_resources(key)
    if dumped is None:
        return None
    return {section: dict(values) for section, values in dumped.items()}


def _validate_resources(resources: Any) -> dict[str, Any] | None:
    try:
        model = ResourceRequirements.model_validate(
            resources, strict=True, by_alias=True, by_name=False
        )
    except ValidationError:
        return None
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


RememberedKey = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def _key(resources: Any) -> RememberedKey | None:
    """``resources`` as a hashable key keeping every order, if it is a map of maps of text
    (``requests``/``limits``); None otherwise (claims, or anything unexpected)."""
    if not isinstance(resources, dict):
        return None
    key = []
    for section, values in resources.items():
        if not isinstance(section, str) or not isinstance(values, dict):
            return None
        items = tuple(values.items())
        if not all(type(k) is str and type(v) is str for k, v in items):
            return None
        key.append((section, items))
    return tuple(key)


@functools.lru_cache(maxsize=1024)
def _remembered_resources(key: RememberedKey) -> dict[str, dict[str, str]] | None:
    return _validate_resources({section: dict(items) for section, items in key})


def _valid_annotations(annotations: dict[str, str]) -> bool:
    """Whether ``annotations`` are valid (keys, total size); the answer for small maps of text
    (the limit-ranger note and a few others, the same for every pod of a template) is
    remembered."""
    items = tuple(annotations.items())
    small = all(type(k) is str and type(v) is str and len(v) < 1024 for k, v in items)
    if small and len(items) <= 16:
        return _remembered_annotations(items)
    return _check_annotations(annotations)


@functools.lru_cache(maxsize=1024)
def _remembered_annotations(items: tuple[tuple[str, str], ...]) -> bool:
    return _check_annotations(dict(items))


def _check_annotations(annotations: Any) -> bool:
    try:
        _ANNOTATIONS.validate_python(annotations, strict=True)
    except ValidationError:
        return False
    return True


def _aliases(model: type[K8sModel]) -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in model.model_fields.items())


_ANNOTATIONS: TypeAdapter[dict[str, str]] = TypeAdapter(Annotations)
_CONTAINER_FIELDS = _aliases(Container)
_METADATA_FIELDS = _aliases(ObjectMeta)
_POD_SPEC_FIELDS = _aliases(PodSpec)


def _in_field_order(dumped: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A dumped model's map with its keys in the order the model's dump writes them (the
    admission steps add keys at the end: ``resources`` to a container that had none,
    ``tolerations`` and ``priority`` to a spec), so a pod's stored bytes are those a full
    validation and dump would write."""
    ordered = {key: dumped[key] for key in fields if key in dumped}
    # A key the model does not know (not a dumped map after all): leave the order alone.
    return ordered if len(ordered) == len(dumped) else dumped
