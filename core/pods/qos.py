"""A pod's quality-of-service class, as kube-apiserver records it in ``status.qosClass`` when
the pod is created (``pkg/apis/core/helper/qos.GetPodQOS``).

Why this exists: clients read the class from the pod (``kubectl describe pod``'s "QoS Class",
tools that sort evictions by it), and Kubernetes sets it once, at creation, from the requests
and limits of the pod's containers and init containers; only cpu and memory count.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
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
    its limit, as the API server's defaulting makes it). Burstable: anything else."""
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
