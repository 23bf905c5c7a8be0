"""OpenAPI documents (v2 and v3) for every kind fleetlog serves, generated from its pydantic models.

Why this exists: ``kubectl explain``, ``kubectl api-resources``' schema-aware commands, client-side
validation and code generators read the server's OpenAPI. The models that validate manifests
(``core.<kind>.model``) are the schema; this module turns their JSON Schema (pydantic's) into
the dialects Kubernetes clients parse: OpenAPI 3.0 (``/openapi/v3``, one document per
group/version, ``$ref`` into ``components/schemas``, ``x-kubernetes-group-version-kind`` on each
kind, ``x-kubernetes-int-or-string``) and Swagger 2.0 (``/openapi/v2``, no ``anyOf``/``const``,
which its parsers refuse). The paths say which operations each resource answers, with the
``fieldValidation`` parameter, so kubectl asks the server to validate instead of doing it
itself.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from core.api.catalog import KINDS
from core.kubeapi.resources import VERSIONED, APIResource

PREFIX = "dev.fleetlog."
_DROP = frozenset({"title", "additionalProperties"})


def _name(model: str) -> str:
    return f"{PREFIX}{model}"


def _raw_schemas() -> dict[str, Any]:
    """Every model's JSON Schema (pydantic's), one shared ``$defs`` namespace."""
    _, schema = models_json_schema(
        [(info.model, "validation") for info in KINDS.values()],
        ref_template="#/$defs/{model}",
    )
    return schema["$defs"]


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _int_or_string(options: list[Any]) -> bool:
    types = {o.get("type") for o in options if isinstance(o, dict)}
    return types == {"integer", "string"}


def _convert(node: Any, *, v2: bool) -> Any:
    """One schema node in the target dialect (recursively)."""
    if isinstance(node, list):
        return [_convert(item, v2=v2) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and value is None:
            continue
        if key == "$ref":
            target = _name(value.rsplit("/", 1)[1])
            out["$ref"] = f"#/definitions/{target}" if v2 else f"#/components/schemas/{target}"
        elif key == "const":
            out["enum"] = [value]
        elif key in ("anyOf", "oneOf"):
            options = [o for o in value if not _is_null(o)]
            if _int_or_string(options):
                out.update(
                    {"type": "string", "format": "int-or-string"}
                    if v2
                    else {"x-kubernetes-int-or-string": True,
                          "anyOf": [{"type": "integer"}, {"type": "string"}]}
                )  # fmt: skip
            elif len(options) == 1:
                out.update(_convert(options[0], v2=v2))
            elif not v2:
                out[key] = _convert(options, v2=v2)
            # Swagger 2.0 has no anyOf: a value of several shapes is left unconstrained.
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _convert(sub, v2=v2) for name, sub in value.items()}
        else:
            out[key] = _convert(value, v2=v2)
    if "$ref" in out and len(out) > 1:
        # A $ref's siblings are ignored by both dialects: kube wraps it in allOf.
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def schemas(*, v2: bool) -> dict[str, Any]:
    """name -> schema of every model, each kind's tagged with every group/version/kind it is
    served at (one schema: Istio's older versions have the same one as v1)."""
    served: dict[str, list[dict[str, str]]] = {}
    for resource in VERSIONED:
        served.setdefault(resource.kind, []).append(_gvk(resource))
    converted: dict[str, Any] = {}
    for model, schema in _raw_schemas().items():
        item = _convert(copy.deepcopy(schema), v2=v2)
        if model in served:
            item["x-kubernetes-group-version-kind"] = served[model]
        converted[_name(model)] = item
    return converted


def _gvk(resource: APIResource) -> dict[str, str]:
    return {"group": resource.group, "version": resource.version, "kind": resource.kind}


def resource_paths(resource: APIResource, *, v2: bool) -> dict[str, Any]:
    """The operations a resource answers, as kube-apiserver describes them."""
    prefix = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    collection = f"{prefix}{scope}/{resource.plural}"
    item = f"{collection}/{{name}}"
    ref = (
        f"#/definitions/{_name(resource.kind)}"
        if v2
        else f"#/components/schemas/{_name(resource.kind)}"
    )
    gvk = _gvk(resource)
    # kube's operation ids name the group and version; the stored version keeps the short
    # ids it always had, an older one adds its version so the ids stay unique.
    stored = KINDS[resource.kind].api_version == resource.group_version
    suffix = "" if stored else resource.version.capitalize()

    def parameter(name: str, where: str = "query", *, required: bool = False) -> dict[str, Any]:
        if v2:
            return {"name": name, "in": where, "type": "string", "uniqueItems": True,
                    **({"required": True} if required else {})}  # fmt: skip
        return {"name": name, "in": where, "schema": {"type": "string", "uniqueItems": True},
                **({"required": True} if required else {})}  # fmt: skip

    def operation(action: str, verb: str, *, body: bool = False) -> dict[str, Any]:
        op: dict[str, Any] = {
            "operationId": f"{verb}{resource.kind}{suffix}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}},
        }
        params = []
        if body:
            params += [parameter("dryRun"), parameter("fieldManager"), parameter("fieldValidation")]
            if v2:
                params.append(
                    {"name": "body", "in": "body", "required": True, "schema": {"$ref": ref}}
                )
            else:
                op["requestBody"] = {"content": {"application/json": {"schema": {"$ref": ref}}}}
        op["parameters"] = params
        return op

    path_params = [parameter("namespace", "path", required=True)] if resource.namespaced else []
    return {
        collection: {
            "get": operation("list", "list"),
            "post": operation("post", "create", body=True),
            "delete": operation("deletecollection", "deleteCollection"),
            "parameters": path_params,
        },
        item: {
            "get": operation("get", "read"),
            "put": operation("put", "replace", body=True),
            "patch": operation("patch", "patch", body=True),
            "delete": operation("delete", "delete"),
            "parameters": [*path_params, parameter("name", "path", required=True)],
        },
    }


def _info(title: str) -> dict[str, str]:
    return {"title": title, "version": "v1"}


def document_v2(version: str) -> dict[str, Any]:
    """The Swagger 2.0 document of the whole API (``/openapi/v2``)."""
    paths: dict[str, Any] = {}
    for resource in VERSIONED:
        paths.update(resource_paths(resource, v2=True))
    return {
        "swagger": "2.0",
        "info": _info(f"fleetlog {version}"),
        "paths": paths,
        "definitions": schemas(v2=True),
    }


def group_version_path(group: str, version: str) -> str:
    """``api/v1``, ``apis/apps/v1``: a group/version's key in ``/openapi/v3``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def document_v3(group: str, version: str, all_schemas: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group/version: its paths, and the schemas they reach
    (every model's: one set of components keeps the documents consistent)."""
    paths: dict[str, Any] = {}
    for resource in VERSIONED:
        if resource.group == group and resource.version == version:
            paths.update(resource_paths(resource, v2=False))
    return {
        "openapi": "3.0.0",
        "info": _info(f"fleetlog {group_version_path(group, version)}"),
        "paths": paths,
        "components": {"schemas": all_schemas},
    }
