"""Field-level differences between two manifests, as Kubernetes-style paths.

Used to say what an update changed (stored in ``*Updated`` events for audit and history) and to
enforce which fields of an object may change after creation.
"""

from __future__ import annotations

from typing import Any


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Paths (``spec.containers[0].image``) whose values differ between ``old`` and ``new``.

    Maps are compared key by key; lists of equal length element by element; anything else (and
    lists whose length changed) as a whole value.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out += changed_paths(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            out += changed_paths(a, b, f"{prefix}[{index}]")
        return out
    return [] if old == new else [prefix or "."]
