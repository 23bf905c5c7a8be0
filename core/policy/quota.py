"""Resource-quota arithmetic: what a pod costs, and how a quota reads.

Why this exists: the ``ResourceQuota`` aggregate (``core.policy.aggregates``) decides whether a
pod's charge fits, the read model shows ``status.used``, and both must count a pod the same way as
Kubernetes' quota evaluator: requests and limits summed over the containers, an init container
counting only if it asks for more than all the containers together (``PodRequests``), plus the
pod overhead. Amounts are integers in base units: cpu in millicores, memory in bytes, pods as a
count. ``cpu`` and ``memory`` in ``spec.hard`` are the same as ``requests.cpu`` and
``requests.memory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from core.meta.evolve import Evolve, Evolving
from core.meta.quantity import resource_amount

CHARGED: Final = ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
"""What every pod's charge records (whatever the quota limits today, so a later change of
``hard`` is checked against complete usage)."""

ALIASES: Final[Mapping[str, str]] = {"cpu": "requests.cpu", "memory": "requests.memory"}


def canonical(name: str) -> str:
    """``cpu`` -> ``requests.cpu``; other names as they are."""
    return ALIASES.get(name, name)


def _sum(containers: list[dict[str, Any]], section: str, resource: str) -> int:
    return sum(
        resource_amount(resource, value)
        for c in containers
        if (value := ((c.get("resources") or {}).get(section) or {}).get(resource)) is not None
    )


def pod_usage(manifest: Mapping[str, Any]) -> dict[str, int]:
    """What a pod is charged: ``{"pods": 1, "requests.cpu": millicores, ...}``."""
    spec = manifest.get("spec") or {}
    containers = list(spec.get("containers") or [])
    inits = list(spec.get("initContainers") or [])
    overhead = spec.get("overhead") or {}
    usage = {"pods": 1}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            amount = _sum(containers, section, resource)
            for init in inits:
                amount = max(amount, _sum([init], section, resource))
            if resource in overhead:
                amount += resource_amount(resource, overhead[resource])
            usage[f"{section}.{resource}"] = amount
    return usage


def unstated(manifest: Mapping[str, Any], hard: Mapping[str, Any]) -> dict[str, list[str]]:
    """Quota resources that ``hard`` limits but some container does not state (Kubernetes
    refuses such a pod: "must specify limits.cpu for: main"): resource -> container names."""
    spec = manifest.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    missing: dict[str, list[str]] = {}
    for name in sorted({canonical(n) for n in hard} - {"pods"}):
        section, resource = name.split(".", 1)
        names = [
            str(c.get("name"))
            for c in containers
            if resource not in ((c.get("resources") or {}).get(section) or {})
        ]
        if names:
            missing[name] = names
    return missing


def hard_amounts(hard: Mapping[str, str]) -> dict[str, int]:
    """``spec.hard`` in base units, keyed by canonical name (the stricter of an alias pair)."""
    out: dict[str, int] = {}
    for name, value in hard.items():
        key = canonical(name)
        resource = key.rsplit(".", 1)[-1]
        amount = resource_amount(resource, value)
        out[key] = min(out.get(key, amount), amount)
    return out


def format_amount(name: str, amount: int) -> str:
    """A base-unit amount as a quantity: ``1800m``, ``2``, ``256Mi``, ``3``."""
    resource = canonical(name).rsplit(".", 1)[-1]
    if resource == "cpu":
        return str(amount // 1000) if amount % 1000 == 0 else f"{amount}m"
    if resource == "memory" and amount:
        for suffix, power in (("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
            if amount % (1024**power) == 0:
                return f"{amount // 1024**power}{suffix}"
    return str(amount)


def quota_status(hard: Mapping[str, str], used: Mapping[str, int]) -> dict[str, Any]:
    """``status`` of a quota: ``hard`` as stated, ``used`` for each resource it names."""
    return {
        "hard": dict(hard),
        "used": {name: format_amount(name, used.get(canonical(name), 0)) for name in hard},
    }


def exceeded_message(
    quota: str,
    requested: Mapping[str, int],
    used: Mapping[str, int],
    hard: Mapping[str, str],
    over: list[str],
) -> str:
    """Kubernetes' wording, naming only the exceeded resources (as stated in ``hard``), then
    what is left of each: ``exceeded quota: compute, requested: requests.cpu=500m, used:
    requests.cpu=1800m, limited: requests.cpu=2, left: requests.cpu=200m``."""

    def listed(amounts: Mapping[str, int]) -> str:
        return ",".join(
            f"{name}={format_amount(name, amounts.get(canonical(name), 0))}" for name in over
        )

    limits = hard_amounts({name: hard[name] for name in over})
    left = {key: max(0, limits[key] - used.get(key, 0)) for key in limits}
    return (
        f"exceeded quota: {quota}, requested: {listed(requested)}, used: {listed(used)}, "
        f"limited: {','.join(f'{name}={hard[name]}' for name in over)}, left: {listed(left)}"
    )


def is_terminal(manifest: Mapping[str, Any]) -> bool:
    """A Succeeded or Failed pod: Kubernetes' quota no longer counts it."""
    return (manifest.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def reconcile_usage(
    charges: Mapping[str, Mapping[str, int]], pods: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """What the quota controller corrects in a ledger (pod key -> charged amounts) given the
    namespace's pods (key -> manifest): charges to give back (key -> why: the pod finished or
    no longer exists) and pods to count that hold no charge (created before the quota; key ->
    usage). Counting is not admission: it never refuses, as Kubernetes' recalculation does
    not."""
    release = {}
    for key in charges:
        manifest = pods.get(key)
        if manifest is None:
            release[key] = "pod no longer exists"
        elif is_terminal(manifest):
            release[key] = f"pod {manifest['status']['phase']}"
    count = {
        key: pod_usage(manifest)
        for key, manifest in pods.items()
        if key not in charges and not is_terminal(manifest)
    }
    return release, count


def with_quota_used(manifest: dict[str, Any], used: dict[str, int]) -> dict[str, Any]:
    """A quota manifest whose ``status`` shows its ``hard`` and the ``used`` totals (base
    units, canonical names) for each resource it limits."""
    hard = (manifest.get("spec") or {}).get("hard") or {}
    return {**manifest, "status": quota_status(hard, used)}


# -- the quota's evolve ------------------------------------------------------------------------


def _created(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """A new quota shows its ``hard`` with nothing used yet."""
    return with_quota_used(payload["manifest"], {})


def _used(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """``status.used``: the ledger's totals the charge or release recorded."""
    return with_quota_used(state.manifest, payload["used"])


EVOLVE: dict[str, Evolve] = {
    "ResourceQuotaCreated": _created,
    "QuotaCharged": _used,
    "QuotaReleased": _used,
}
"""How a quota's own events change its manifest (the aggregate also folds the charges of each
pod, which only it needs; ``ResourceQuotaUpdated`` replaces the manifest)."""
