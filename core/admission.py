"""Mutating admission: defaults Kubernetes adds to objects as they are admitted.

These run in the gateway after validation and before the decision, and what they add is stored
in the object (so ``get -o yaml`` and the event history show it, as the API server's defaults
do). Each function takes a validated manifest and returns it, possibly with additions, and never
changes the manifest it was given. They are pure: whatever they need from the cluster (the
priority classes) is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.aggregates import NOT_READY_TAINT, UNREACHABLE_TAINT
from core.errors import ValidationFailed
from core.resources.priorityclass import DEFAULT_PRIORITY, SYSTEM_PRIORITY_CLASSES, PriorityClass

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
