"""The namespace aggregate: ``default`` and ``kube-system`` live for the life of the cluster."""

from __future__ import annotations

from datetime import datetime

from core.errors import (
    FleetError,
)
from core.meta.aggregate import Resource
from core.namespaces.status import EVOLVE as NAMESPACE_EVOLVE

PROTECTED_NAMESPACES = frozenset({"default", "kube-system"})
"""Namespaces Kubernetes refuses to delete (its NamespaceLifecycle admission plugin)."""


class Namespace(Resource):
    KIND = "Namespace"
    EVOLVE = NAMESPACE_EVOLVE

    def delete(self, *, reason: str, at: datetime, propagation_policy: str = "Background") -> None:
        """Delete the namespace (the garbage collector then deletes everything in it);
        ``default`` and ``kube-system`` may not be deleted, as in Kubernetes."""
        name = self.id.split("/", 2)[2]
        if name in PROTECTED_NAMESPACES:
            raise FleetError(
                f'namespace "{name}" may not be deleted: Kubernetes keeps '
                f"{' and '.join(sorted(PROTECTED_NAMESPACES))} for the life of the cluster",
                code="forbidden",
            )
        super().delete(reason=reason, at=at, propagation_policy=propagation_policy)
