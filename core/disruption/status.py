"""How recorded facts change a PodDisruptionBudget's manifest: the status written by its
controller, or by an eviction that used up one allowed disruption.

Why this exists: this is the PDB's *evolve* (``core.meta.evolve``), the one table the aggregate
and the cluster read model fold ``PodDisruptionBudgetStatusUpdated`` with. The status is
replaced whole, as kube's status subresource replaces it. Light: no pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.meta.evolve import Evolve, Evolving


def status_recorded(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return {**state.manifest, "status": payload["status"]}


EVOLVE: dict[str, Evolve] = {"PodDisruptionBudgetStatusUpdated": status_recorded}
"""How each of a PDB's own events changes its manifest (``…Updated`` replaces it)."""
