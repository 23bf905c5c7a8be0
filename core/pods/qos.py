"""A pod's quality-of-service class, as kube-apiserver records it in ``status.qosClass`` when
the pod is created (``pkg/apis/core/helper/qos.GetPodQOS``).

Why this exists: clients read the class from the pod (``kubectl describe pod``'s "QoS Class",
tools that sort evictions by it), and Kubernetes sets it once, at creation, from the requests
and limits of the pod's containers and init containers; only cpu and memory count.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final, Literal

from core.errors import InvalidQuantity
from core.meta.quantity import parse_quantity

QOSClass = Literal["Guaranteed", "Burstable", "BestEffort"]
COUNTED: Final = ("cpu", "memory")


def _positive(values: Mapping[str, Any] | None) -> dict[str, Fraction]:
    amounts: dict[str, Fraction] = {}
    if not values:
        return amounts
    for name in COUNTED:
        text = values.get(name)
        if text is None:
            continue
        try:
            amount = parse_quantity(text).amount
        except InvalidQuantity:
            continue  # validation refuses such a pod; the class of a refused pod never shows
        if amount.numerator > 0:  # a Fraction's sign is its numerator's
            amounts[name] = amount
    return amounts


def pod_qos_class(spec: Mapping[str, Any]) -> QOSClass:
    """BestEffort: no container requests or limits cpu or memory. Guaranteed: every container
    limits both, and the pod's summed requests equal its summed limits (a request left out is
    its limit, as the API server's defaulting makes it). Burstable: anything else.

    The class of a shape of resources is remembered: every read model folding a pod's
    creation computes it, and the pods of a template share one shape, while the sums are
    exact fractions of parsed quantities."""
    key = _shape(spec)
    if key is None:
        return computed_qos_class(spec)
    return _remembered(key)


_PLAIN: Final = frozenset({str, int, float, type(None)})

Shape = tuple[tuple[tuple[tuple[type, Any], ...] | None, ...], ...]


def _shape(spec: Mapping[str, Any]) -> Shape | None:
    """All the class is computed from: per container (init containers after the others, as
    they are summed), the cpu and memory of its limits and of its requests, each value with
    its type (``True`` and ``1`` are equal keys but not equal quantities). None when a value is
    not plain text or a number (computed, not remembered)."""
    shape = []
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        sections: list[tuple[tuple[type, Any], ...] | None] = []
        for section in ("limits", "requests"):
            values = resources.get(section)
            if not values:
                sections.append(None)
                continue
            typed = tuple((type(v), v) for v in (values.get(name) for name in COUNTED))
            if not all(t in _PLAIN for t, _ in typed):
                return None
            sections.append(typed)
        shape.append(tuple(sections))
    return tuple(shape)


@lru_cache(maxsize=4096)
def _remembered(shape: Shape) -> QOSClass:
    containers = []
    for limits, requests in shape:
        resources = {}
        for section, typed in (("limits", limits), ("requests", requests)):
            if typed is not None:
                resources[section] = {n: v for n, (_, v) in zip(COUNTED, typed, strict=True)}
        containers.append({"resources": resources})
    return computed_qos_class({"containers": containers})


def computed_qos_class(spec: Mapping[str, Any]) -> QOSClass:
    """:func:`pod_qos_class` computed afresh (what the remembered answers are)."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        limited = _positive(resources.get("limits"))
        requested = {**limited, **_positive(resources.get("requests"))}
        # Sums start from the first amount rather than from Fraction(0): this runs for every
        # pod each read model folds, and most pods have one container.
        for name, amount in requested.items():
            summed = requests.get(name)
            requests[name] = amount if summed is None else summed + amount
        for name, amount in limited.items():
            summed = limits.get(name)
            limits[name] = amount if summed is None else summed + amount
        if not all(name in limited for name in COUNTED):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"
