"""The Namespace (core/v1): the scope that namespaced objects live in.

Why this exists: namespaces are created, listed and deleted like any other object, and their name
is stricter than most (a DNS-1123 label: no dots) because it becomes part of DNS names.
"""

from __future__ import annotations

from typing import Literal

from core.meta.model import K8sModel
from core.meta.names import QualifiedName, dns1123_label_errors
from core.meta.types import Condition, ResourceBase


class NamespaceSpec(K8sModel):
    finalizers: list[QualifiedName] | None = None


class NamespaceStatus(K8sModel):
    """Server-managed."""

    phase: Literal["Active", "Terminating"] | None = None
    conditions: list[Condition] | None = None


class Namespace(ResourceBase):
    """A namespace (core/v1, cluster-scoped)."""

    NAME_RULE = staticmethod(dns1123_label_errors)
    NAMESPACED = False

    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


__all__ = ["Namespace", "NamespaceSpec", "NamespaceStatus"]
