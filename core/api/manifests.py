"""Reading and writing manifests: the one door between untrusted documents and the models.

Why this exists: callers (the CLI, the gateway, tests) hand over whatever a YAML or JSON file
contained. This module decides which model applies from ``kind``/``apiVersion``, validates
strictly (Kubernetes spelling only, no type coercion: ``"80"`` is not a port number), and turns
every failure into one ``ValidationFailed``/``UnknownKind`` that names the offending field. It
also writes a model back to the plain JSON-compatible shape that parses to an equal model, which
is what goes into events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from pydantic import ValidationError

from core.api.catalog import API_VERSION_ALIASES, CONVERSIONS, KINDS, ResourceModel
from core.errors import UnknownKind, ValidationFailed
from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.model import invalid, show, to_validation_failed
from core.meta.types import ResourceBase


def parse_manifest(doc: object, *, features: FeatureGates = DEFAULT_FEATURES) -> ResourceModel:
    """Validate one manifest (a parsed YAML/JSON document) into its resource model, with the
    alpha fields and values ``features`` turns on accepted.

    Raises ``UnknownKind`` for a kind fleetlog does not know, and ``ValidationFailed`` (or its
    subclass ``InvalidQuantity``) for anything else, listing every problem in ``errors`` with its
    Kubernetes-style path (unknown fields first; ``field``/``message`` are the first of them).
    """
    if not isinstance(doc, Mapping):
        raise ValidationFailed(
            "a manifest must be a mapping with apiVersion, kind, metadata and spec, "
            f"not {show(doc)}"
        )
    kind = doc.get("kind")
    if kind is None:
        raise ValidationFailed('missing required field "kind"', field="kind")
    if not isinstance(kind, str):
        raise ValidationFailed(invalid(kind, "must be a string"), field="kind")
    info = KINDS.get(kind)
    known = ", ".join(sorted(KINDS))
    if info is None:
        hint = next((f' (did you mean "{k}"?)' for k in KINDS if k.lower() == kind.lower()), "")
        raise UnknownKind(f"unknown kind {show(kind)}{hint}; known kinds: {known}", field="kind")
    api_version = doc.get("apiVersion")
    if api_version is None:
        raise ValidationFailed(
            f'missing required field "apiVersion" (kind {kind} is "{info.api_version}")',
            field="apiVersion",
        )
    convert = CONVERSIONS.get((kind, api_version)) if isinstance(api_version, str) else None
    if convert is not None:
        doc = convert(doc)
        api_version = doc["apiVersion"]
    if isinstance(api_version, str) and API_VERSION_ALIASES.get(api_version) == info.api_version:
        doc = {**doc, "apiVersion": info.api_version}
    elif api_version != info.api_version:
        raise ValidationFailed(
            invalid(api_version, f'kind {kind} has apiVersion "{info.api_version}"'),
            field="apiVersion",
        )
    try:
        resource = info.model.model_validate(
            dict(doc),
            strict=True,
            by_alias=True,
            by_name=False,
            context={"features": features},
        )
    except ValidationError as err:
        raise to_validation_failed(err) from None
    return cast("ResourceModel", resource)


def dump_manifest(resource: ResourceBase) -> dict[str, Any]:
    """The JSON-compatible manifest of ``resource`` (camelCase, no nulls, canonical quantities).

    ``parse_manifest(dump_manifest(r)) == r`` for every valid resource.
    """
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)


def resource_key(resource: ResourceBase) -> tuple[str, str, str]:
    """``(kind, namespace or "", name)``: how an object is identified in the log."""
    meta = resource.metadata
    return (resource.kind, meta.namespace or "", meta.name or "")
