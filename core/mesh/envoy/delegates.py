"""Delegate VirtualServices: a root route's ``delegate`` replaced by the delegate's routes,
merged under the root's match (:func:`merge_delegates`), as Istio merges them.

Why this exists: delegation rewrites the VirtualServices before anything is built from them
(the shared build merges them once per state); it reads only Istio's objects, none of Envoy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from core.mesh.kinds.http import HTTPMatchRequest, HTTPRoute
from core.mesh.kinds.objects import VirtualService

_INHERITED: Final = (
    "rewrite", "timeout", "retries", "fault", "mirror", "mirror_percentage", "mirrors",
    "headers", "cors_policy",
)  # fmt: skip
"""What a delegate's route takes from the root route that delegates to it when it does not set
it itself (Istio's ``mergeHTTPRoute``)."""


def merge_delegates(virtual_services: Sequence[VirtualService]) -> list[VirtualService]:
    """Istio's ``mergeVirtualServicesIfNeeded``: each root route naming a ``delegate`` is
    replaced by the delegate's routes, each matching where both the root's and its own match
    (a pair whose matches contradict is dropped), so the root's hosts and gateways serve them.
    A delegate that does not exist leaves no route; delegates themselves (no hosts) are
    dropped, as they never serve alone."""
    by_name = {
        (vs.metadata.namespace or "default", vs.metadata.name or ""): vs
        for vs in virtual_services
        if not vs.spec.hosts
    }
    if not by_name and not any(r.delegate for vs in virtual_services for r in vs.spec.http):
        return list(virtual_services)
    merged: list[VirtualService] = []
    for vs in virtual_services:
        if not vs.spec.hosts:
            continue
        if not any(route.delegate for route in vs.spec.http):
            merged.append(vs)
            continue
        namespace = vs.metadata.namespace or "default"
        routes: list[HTTPRoute] = []
        for root in vs.spec.http:
            if root.delegate is None:
                routes.append(root)
                continue
            key = (root.delegate.namespace or namespace, root.delegate.name)
            delegate = by_name.get(key)
            if delegate is None:
                continue
            for route in delegate.spec.http:
                routes += _merged_routes(root, route)
        spec = vs.spec.model_copy(update={"http": routes})
        merged.append(vs.model_copy(update={"spec": spec}))
    return merged


def _merged_routes(root: HTTPRoute, route: HTTPRoute) -> list[HTTPRoute]:
    update: dict[str, Any] = {
        name: getattr(root, name)
        for name in _INHERITED
        if getattr(route, name) in (None, []) and getattr(root, name) not in (None, [])
    }
    if not root.match:
        return [route.model_copy(update=update)] if update else [route]
    if not route.match:
        return [route.model_copy(update={**update, "match": list(root.match)})]
    matches = [
        found
        for outer in root.match
        for inner in route.match
        if (found := _merged_match(outer, inner)) is not None
    ]
    return [route.model_copy(update={**update, "match": matches})] if matches else []


def _merged_match(root: HTTPMatchRequest, inner: HTTPMatchRequest) -> HTTPMatchRequest | None:
    """Both matches at once, or None where they contradict (Istio's ``mergeHTTPMatchRequest``:
    the delegate's URI must lie within the root's)."""
    update: dict[str, Any] = {}
    if root.uri is not None and inner.uri is not None:
        outer, own = root.uri, inner.uri
        if outer.exact is not None:
            if own.exact != outer.exact:
                return None
        elif outer.prefix is not None:
            path = own.exact if own.exact is not None else own.prefix
            if path is None or not path.startswith(outer.prefix):
                return None
        else:
            return None  # a root regex cannot be narrowed; Istio refuses the pair too
    elif root.uri is not None:
        update["uri"] = root.uri
    for name in ("scheme", "method", "authority"):
        mine, theirs = getattr(inner, name), getattr(root, name)
        if theirs is not None and mine is not None and mine != theirs:
            return None
        if mine is None and theirs is not None:
            update[name] = theirs
    for name in ("headers", "query_params", "without_headers"):
        mine, theirs = getattr(inner, name), getattr(root, name)
        if any(key in mine and mine[key] != value for key, value in theirs.items()):
            return None
        if theirs:
            update[name] = {**theirs, **mine}
    if root.port and inner.port and root.port != inner.port:
        return None
    if root.port and not inner.port:
        update["port"] = root.port
    if root.source_labels:
        update["source_labels"] = {**root.source_labels, **inner.source_labels}
    if root.gateways and not inner.gateways:
        update["gateways"] = root.gateways
    return inner.model_copy(update=update) if update else inner
