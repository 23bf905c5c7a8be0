"""How recorded facts change a workload's manifest: its generation and the status (and
``deployment.kubernetes.io/*`` annotations) its controller records.
"""

from __future__ import annotations

from typing import Any


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
