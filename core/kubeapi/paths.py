"""What a request's URL names: a resource (in a namespace or not), an object, a subresource.

Why this exists: every request to ``/api/v1/…`` and ``/apis/<group>/<version>/…`` names its
target by position (``namespaces/<ns>/<plural>/<name>/<subresource>``), and the server must tell
"a namespace named pods" from "the pods of a namespace" before it does anything. Pure, so the
rules are pinned by unit tests; an unknown group, version or resource is kube's NotFound
("the server could not find the requested resource").
"""

from __future__ import annotations

from dataclasses import dataclass

from core.kubeapi.resources import BY_PATH, APIResource
from core.kubeapi.status import APIError, Target


@dataclass(frozen=True, slots=True)
class ResourcePath:
    resource: APIResource
    namespace: str | None = None
    """The namespace the URL names; None: all namespaces (or a cluster-scoped resource)."""
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False
    """``/api/v1/watch/…``: the deprecated form of ``?watch=true``."""

    @property
    def target(self) -> Target:
        return Target(
            resource=self.resource.plural,
            group=self.resource.group,
            name=self.name or "",
            kind=self.resource.kind,
        )


def not_found(detail: str = "") -> APIError:
    message = "the server could not find the requested resource"
    return APIError(404, "NotFound", f"{message} ({detail})" if detail else message)


def parse_resource_path(group: str, version: str, segments: list[str]) -> ResourcePath:
    """The target of ``/api/v1/<segments>`` (group "") or ``/apis/<group>/<version>/<segments>``."""
    legacy_watch = bool(segments) and segments[0] == "watch"
    if legacy_watch:
        segments = segments[1:]
    if not segments or any(not s for s in segments):
        raise not_found()
    namespace: str | None = None
    if segments[0] == "namespaces" and len(segments) >= 3:
        candidate = BY_PATH.get((group, version, segments[2]))
        if candidate is not None and candidate.namespaced:
            namespace, segments = segments[1], segments[2:]
    resource = BY_PATH.get((group, version, segments[0]))
    if resource is None:
        raise not_found()
    if resource.namespaced is False and namespace is not None:
        raise not_found()
    if len(segments) > 3:
        raise not_found()
    name = segments[1] if len(segments) > 1 else None
    subresource = segments[2] if len(segments) > 2 else None
    return ResourcePath(
        resource=resource,
        namespace=namespace,
        name=name,
        subresource=subresource,
        legacy_watch=legacy_watch,
    )
