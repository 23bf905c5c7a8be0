"""How recorded facts change a workload's manifest: its generation and the status (and
``deployment.kubernetes.io/*`` annotations) its controller records.

Why this exists: this is the workloads' *evolve* (``core.meta.evolve``): :data:`EVOLVE` is the
one table the Deployment and ReplicaSet aggregates and the cluster read model fold their events
with.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from core.meta.evolve import Evolve, Evolving


def with_generation(manifest: dict[str, Any], generation: int) -> dict[str, Any]:
    """The manifest with ``metadata.generation`` (the spec's version) set."""
    return {**manifest, "metadata": {**(manifest.get("metadata") or {}), "generation": generation}}


def with_status_update(
    manifest: dict[str, Any], status: dict[str, Any], annotations: dict[str, str]
) -> dict[str, Any]:
    """The manifest with a controller's ``status`` and its annotations (an empty value removes
    the annotation)."""
    out = {**manifest, "status": status}
    if annotations:
        metadata = dict(manifest.get("metadata") or {})
        merged = {**(metadata.get("annotations") or {}), **annotations}
        merged = {k: v for k, v in merged.items() if v != ""}
        if merged:
            metadata["annotations"] = merged
        else:
            metadata.pop("annotations", None)
        out["metadata"] = metadata
    return out


# -- the workloads' evolve ---------------------------------------------------------------------


def _scaled(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """``ScaledTo``: the replica count, and one more generation (scaling changes the spec)."""
    manifest = copy.copy(state.manifest)
    manifest["spec"] = {**manifest.get("spec", {}), "replicas": payload["replicas"]}
    generation = (manifest.get("metadata") or {}).get("generation")
    if generation is not None:
        manifest = with_generation(manifest, generation + 1)
    return manifest


def status_updated(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    return with_status_update(state.manifest, payload["status"], payload.get("annotations") or {})


EVOLVE: dict[str, Evolve] = {
    "ScaledTo": _scaled,
    "DeploymentStatusUpdated": status_updated,
    "ReplicaSetStatusUpdated": status_updated,
}
"""How each of a workload's own events changes its manifest (``…Updated`` replaces it)."""
