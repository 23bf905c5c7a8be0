"""metrics.k8s.io/v1beta1 objects (``PodMetrics``, ``NodeMetrics``) from usage samples.

Why this exists: ``kubectl top`` reads the resource metrics API that metrics-server serves in
Kubernetes. fleetlog's node agents already sample every running container's cpu and memory
(``streams.telemetry``, what ``fleetlog top`` prints); this module turns one sample into the
object metrics-server would answer: the pod's or node's name, namespace and labels, the time the
sample was taken, the ``window`` it covers, and the usage as Kubernetes quantities (cpu in
millicores, memory in KiB). Like metrics-server it shows only what is current: a sample of an
object that no longer exists, from an earlier incarnation of it, or older than
``STALE_AFTER_S``, is no metrics at all. Pure: the caller reads the samples and the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.meta.timestamps import format_stamp

STALE_AFTER_S = 300.0
"""How old a sample may be and still be shown (``fleetlog top`` keeps the same horizon)."""
API_VERSION = "metrics.k8s.io/v1beta1"
_NS_PER_S = 1_000_000_000


def cpu_quantity(millicores: int) -> str:
    """Millicores as a Kubernetes quantity (``250m``; ``0`` for none)."""
    return f"{millicores}m" if millicores else "0"


def memory_quantity(memory_bytes: int) -> str:
    """Bytes as a Kubernetes quantity in KiB (``10240Ki``), as metrics-server reports them."""
    return f"{max(0, memory_bytes) // 1024}Ki"


def duration(seconds: float) -> str:
    """A Go ``time.Duration`` string (``10s``, ``1m30s``, ``500ms``): how ``window`` is
    written."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    text = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def fresh(*, sampled_ns: int, created_ns: int | None, now_ns: int) -> bool:
    """Whether a sample is shown: recent, and taken of this incarnation of its object."""
    if created_ns is not None and sampled_ns < created_ns:
        return False
    return sampled_ns >= now_ns - int(STALE_AFTER_S * _NS_PER_S)


def _metadata(
    *, name: str, namespace: str | None, labels: Mapping[str, str], created_ns: int | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["creationTimestamp"] = format_stamp(created_ns) if created_ns else None
    if labels:
        metadata["labels"] = dict(labels)
    return metadata


def usage(*, cpu_millicores: int, memory_bytes: int) -> dict[str, str]:
    return {"cpu": cpu_quantity(cpu_millicores), "memory": memory_quantity(memory_bytes)}


def pod_metrics(
    *,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    created_ns: int | None,
    sampled_ns: int,
    window_s: float,
    containers: Sequence[tuple[str, int, int]],
) -> dict[str, Any]:
    """A ``PodMetrics``: ``containers`` is (name, cpu millicores, memory bytes) per container."""
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": _metadata(name=name, namespace=namespace, labels=labels, created_ns=created_ns),
        "timestamp": format_stamp(sampled_ns),
        "window": duration(window_s),
        "containers": [
            {"name": c, "usage": usage(cpu_millicores=cpu, memory_bytes=memory)}
            for c, cpu, memory in containers
        ],
    }


def node_metrics(
    *,
    name: str,
    labels: Mapping[str, str],
    created_ns: int | None,
    sampled_ns: int,
    window_s: float,
    cpu_millicores: int,
    memory_bytes: int,
) -> dict[str, Any]:
    """A ``NodeMetrics``: the node's usage (what its pods use, as the agent sums it)."""
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": _metadata(name=name, namespace=None, labels=labels, created_ns=created_ns),
        "timestamp": format_stamp(sampled_ns),
        "window": duration(window_s),
        "usage": usage(cpu_millicores=cpu_millicores, memory_bytes=memory_bytes),
    }


def ordered_containers(
    spec_containers: Sequence[str], sampled: Mapping[str, tuple[int, int]]
) -> list[tuple[str, int, int]]:
    """The sampled containers in the pod spec's order (any the spec does not name after)."""
    names = [c for c in spec_containers if c in sampled]
    names += sorted(c for c in sampled if c not in names)
    return [(c, *sampled[c]) for c in names]
