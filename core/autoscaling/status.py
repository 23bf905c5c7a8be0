"""How recorded facts change an HPA's (or a VPA's) manifest: the status its controller records.

Why this exists: this is the HPA's *evolve* (``core.meta.evolve``), the one table the
aggregate and the cluster read model fold ``HorizontalPodAutoscalerStatusUpdated`` with. The
status is replaced whole, as the status subresource replaces it; the spec never changes here.
Light: no pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.meta.evolve import Evolve, Evolving


def status_recorded(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return {**state.manifest, "status": payload["status"]}


EVOLVE: dict[str, Evolve] = {"HorizontalPodAutoscalerStatusUpdated": status_recorded}
"""How each of an HPA's own events changes its manifest (``…Updated`` replaces it)."""

VPA_EVOLVE: dict[str, Evolve] = {"VerticalPodAutoscalerStatusUpdated": status_recorded}
"""The same for a VPA: its recommender's ``VerticalPodAutoscalerStatusUpdated``."""
