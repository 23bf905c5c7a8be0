"""``fleetlog top nodes|pods``: kubectl top's columns over the agents' usage samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.render.text import table

if TYPE_CHECKING:
    pass


# -- top -------------------------------------------------------------------------------------------


def cores(millicores: int) -> str:
    """kubectl top's CPU column: always millicores (``250m``)."""
    return f"{int(millicores)}m"


def mebibytes(amount: int) -> str:
    """kubectl top's MEMORY column: always whole mebibytes (``64Mi``)."""
    return f"{int(amount) // (1024 * 1024)}Mi"


def _percent(used: int, capacity: int) -> str:
    return f"{used * 100 // capacity}%" if capacity > 0 else "<unknown>"


TOP_NODE_HEADERS = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
TOP_POD_HEADERS = ["NAME", "CPU(cores)", "MEMORY(bytes)"]


def top_nodes_table(nodes: Sequence[Any]) -> str:
    """``fleetlog top nodes`` from the latest :class:`streams.telemetry.NodeUsage` samples."""
    rows = [
        [
            n.name,
            cores(n.cpu_millicores),
            _percent(n.cpu_millicores, n.cpu_capacity_millicores),
            mebibytes(n.memory_bytes),
            _percent(n.memory_bytes, n.memory_capacity_bytes),
        ]
        for n in nodes
    ]
    return table(TOP_NODE_HEADERS, rows)


def top_pods_table(pods: Sequence[Any], *, show_namespace: bool) -> str:
    """``fleetlog top pods`` from the latest :class:`streams.telemetry.PodUsage` samples."""
    headers = (["NAMESPACE"] if show_namespace else []) + TOP_POD_HEADERS
    rows = [
        ([p.namespace] if show_namespace else [])
        + [p.name, cores(p.cpu_millicores), mebibytes(p.memory_bytes)]
        for p in pods
    ]
    return table(headers, rows)
