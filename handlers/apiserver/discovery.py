"""Discovery and schema: ``/version``, ``/api``, ``/apis`` (legacy and aggregated), ``/openapi``.

Why this exists: before kubectl sends anything it asks the server which groups, versions and
resources exist (``kubectl api-resources`` prints exactly that) and, for ``explain`` and
validation, their OpenAPI. Everything here is derived from ``core.kubeapi.resources`` and the
pydantic models, so a kind added to the catalog is discovered and described without an edit
here. Documents are built on first use and kept (they only change with the code).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from aiohttp import web

from core.kubeapi import openapi
from core.kubeapi.paths import not_found
from core.kubeapi.resources import APIResource, group_versions, resources_of
from core.kubeapi.status import not_acceptable
from handlers.apiserver.http import JSON, _media_ranges, dumps, respond

KUBERNETES_VERSION = ("1", "37")
"""The Kubernetes release whose API this door follows (kubectl warns beyond one minor apart)."""


def version_info(fleetlog_version: str) -> dict[str, str]:
    major, minor = KUBERNETES_VERSION
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.0+fleetlog-{fleetlog_version}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": group_versions()[""],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_entry(g, vs) for g, vs in group_versions().items() if g],
    }


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            entry
            for r in resources_of(group, version)
            for entry in (r.discovery(), *r.subresource_discovery())
        ],
    }


def _aggregated_resource(resource: APIResource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource.plural,
        "responseKind": {
            "group": resource.group,
            "version": resource.version,
            "kind": resource.kind,
        },
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    if resource.subresources:
        entry["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": {"group": sub.group, "version": sub.version, "kind": sub.kind},
                "verbs": list(sub.verbs),
            }
            for sub in resource.subresources
        ]
    return entry


def aggregated(*, legacy: bool, version: str) -> dict[str, Any]:
    """The ``APIGroupDiscoveryList`` of the core group (``/api``) or the named ones (``/apis``)."""
    items = []
    for group, versions in group_versions().items():
        if (group == "") != legacy:
            continue
        items.append(
            {
                "metadata": {"name": group, "creationTimestamp": None},
                "versions": [
                    {
                        "version": v,
                        "resources": [_aggregated_resource(r) for r in resources_of(group, v)],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def aggregated_version(request: web.Request) -> str | None:
    """``v2`` or ``v2beta1`` when the client asks for aggregated discovery (first one it
    lists that this server serves), else None."""
    for media, params in _media_ranges(request.headers.get("Accept", "")):
        if (
            media == JSON
            and params.get("g") == "apidiscovery.k8s.io"
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in ("v2", "v2beta1")
        ):
            return params["v"]
    return None


def discovery_response(request: web.Request, *, legacy: bool) -> web.Response:
    version = aggregated_version(request)
    if version is None:
        return respond(api_versions(request.host) if legacy else api_group_list())
    body = dumps(aggregated(legacy=legacy, version=version))
    response = web.Response(body=body)
    response.headers["Content-Type"] = (
        f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
    )
    return response


def named_group(group: str) -> dict[str, Any]:
    versions = group_versions().get(group)
    if not group or versions is None:
        raise not_found()
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def group_version_resources(group: str, version: str) -> dict[str, Any]:
    if version not in group_versions().get(group, []):
        raise not_found()
    return api_resource_list(group, version)


def _accepts_json(request: web.Request) -> None:
    ranges = _media_ranges(request.headers.get("Accept", ""))
    if ranges and not any(m in (JSON, "application/*", "*/*") for m, _ in ranges):
        raise not_acceptable(JSON)


class OpenAPI:
    """The OpenAPI documents, built once."""

    def __init__(self, fleetlog_version: str) -> None:
        self._version = fleetlog_version

    @functools.cached_property
    def _v2(self) -> bytes:
        return dumps(openapi.document_v2(self._version))

    @functools.cached_property
    def _v3(self) -> dict[str, bytes]:
        schemas = openapi.schemas(v2=False)
        return {
            openapi.group_version_path(g, v): dumps(openapi.document_v3(g, v, schemas))
            for g, versions in group_versions().items()
            for v in versions
        }

    def v2(self, request: web.Request) -> web.Response:
        _accepts_json(request)
        return web.Response(body=self._v2, content_type=JSON)

    def v3_index(self, request: web.Request) -> web.Response:
        _accepts_json(request)
        paths = {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(doc)}"}
            for path, doc in self._v3.items()
        }
        return respond({"paths": paths})

    def v3_document(self, request: web.Request, path: str) -> web.Response:
        _accepts_json(request)
        doc = self._v3.get(path)
        if doc is None:
            raise not_found()
        response = web.Response(body=doc, content_type=JSON)
        response.headers["Etag"] = f'"{_hash(doc)}"'
        if request.query.get("hash"):
            response.headers["Cache-Control"] = "public, immutable"
        return response


def _hash(doc: bytes) -> str:
    return hashlib.sha512(doc).hexdigest()[:32].upper()
