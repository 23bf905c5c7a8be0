"""A namespace's evolve: a new namespace is ``Active``, as kube-apiserver's create makes it.

Why this exists: clients wait on ``status.phase`` (``kubectl get ns x -o
jsonpath={.status.phase}``, test harnesses that wait for ``Active``); fleetlog deletes a
namespace at once (its garbage collector empties it), so ``Terminating`` is never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.meta.evolve import Evolve, Evolving


def _created(state: Evolving, payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    manifest: dict[str, Any] = payload["manifest"]
    status = dict(manifest.get("status") or {})
    status.setdefault("phase", "Active")
    return {**manifest, "status": status}


EVOLVE: dict[str, Evolve] = {"NamespaceCreated": _created}
