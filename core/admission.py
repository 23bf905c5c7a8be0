"""Mutating admission: defaults Kubernetes adds to objects as they are admitted.

These run in the gateway after validation and before the decision, and what they add is stored
in the object (so ``get -o yaml`` and the event history show it, as the API server's defaults
do). Each function takes a validated manifest and returns it, possibly with additions.
"""

from __future__ import annotations

from typing import Any

from core.aggregates import NOT_READY_TAINT, UNREACHABLE_TAINT

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
