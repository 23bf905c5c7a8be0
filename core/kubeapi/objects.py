"""Objects as the Kubernetes API shows them, and manifests as a client's request may set them.

Why this exists: the read model keeps each object's manifest as it was decided, with the
server's own facts beside it (uid, the stream sequence of its last event, when it was created).
A client sees them folded into ``metadata`` (``uid``, ``resourceVersion``, ``creationTimestamp``),
inside lists (``PodList``), watch events and bookmarks. In the other direction, what a client
sends for a create or an update is untrusted: the fields the server owns are dropped (status,
uid, resourceVersion …), the namespace and name must agree with the URL, and the
preconditions a client states in the body (uid, resourceVersion) are taken out to be checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.config.model import string_data_merged
from core.errors import FieldError
from core.kubeapi.resources import APIResource
from core.kubeapi.status import Target, bad_request, invalid
from core.kubeapi.versions import parse_resource_version
from core.meta.names import generated_name
from core.meta.timestamps import format_stamp

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
"""``metadata`` fields the server sets: a client's values are not stored (kube's
``ObjectMetaUpdateValidation``/``FillObjectMetaSystemFields``)."""


def api_object(
    resource: APIResource,
    *,
    manifest: Mapping[str, Any],
    namespace: str,
    uid: str,
    resource_version: int,
    created_ns: int,
) -> dict[str, Any]:
    """The object as a client reads it: apiVersion and kind first, the server's metadata in."""
    metadata = dict(manifest.get("metadata") or {})
    if resource.namespaced and namespace:
        metadata["namespace"] = namespace
    metadata["uid"] = uid
    metadata["resourceVersion"] = str(resource_version)
    metadata["creationTimestamp"] = format_stamp(created_ns)
    obj = {"apiVersion": resource.group_version, "kind": resource.kind}
    obj.update(manifest)
    # Stored at one version, read at the one the URL names (Istio's v1beta1 is v1's schema).
    obj["apiVersion"] = resource.group_version
    obj["metadata"] = metadata
    return obj


def list_metadata(
    resource_version: int, continue_token: str = "", remaining: int | None = None
) -> dict[str, Any]:
    """A list's ``ListMeta``: its resourceVersion, and where a paged list goes on."""
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if continue_token:
        metadata["continue"] = continue_token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
    return metadata


def list_object(
    resource: APIResource,
    items: list[dict[str, Any]],
    *,
    resource_version: int,
    continue_token: str = "",
    remaining: int | None = None,
) -> dict[str, Any]:
    metadata = list_metadata(resource_version, continue_token, remaining)
    return {
        "apiVersion": resource.group_version,
        "kind": resource.list_kind,
        "metadata": metadata,
        "items": items,
    }


def bookmark(
    resource: APIResource, resource_version: int, *, initial_end: bool = False
) -> dict[str, Any]:
    """A watch's BOOKMARK: only the resourceVersion the watcher has seen everything up to."""
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"apiVersion": resource.group_version, "kind": resource.kind, "metadata": metadata}


@dataclass(frozen=True, slots=True)
class Preconditions:
    """What the object must still be for a write to apply (body metadata or DeleteOptions)."""

    uid: str | None = None
    resource_version: int | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """A client's object made ready for the gateway, with the preconditions it stated."""

    manifest: dict[str, Any]
    name: str
    preconditions: Preconditions


def writable(
    body: object,
    resource: APIResource,
    *,
    namespace: str,
    name: str | None = None,
    name_entropy: bytes = b"",
) -> Written:
    """A create's (``name`` None) or an update's object checked against its URL, without the
    fields the server owns. ``name_entropy`` chooses the suffix that completes a
    ``generateName`` (:func:`~core.meta.names.generated_name`; random bytes chosen by the
    caller: no randomness here)."""
    target = Target(resource=resource.plural, group=resource.group, name=name or "")
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object", target)
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if not kind:
        raise bad_request("Object 'Kind' is missing in the request body", target)
    if kind != resource.kind or api_version != resource.group_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({resource.group_version})"
            if kind == resource.kind
            else f"the kind in the data ({kind}) does not match the resource "
            f"{resource.plural} ({resource.kind})",
            target,
        )
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object", target)
    metadata = dict(metadata)
    if resource.namespaced:
        stated = metadata.get("namespace")
        if stated and stated != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
                target,
            )
        metadata["namespace"] = namespace
    elif metadata.get("namespace"):
        metadata.pop("namespace")
    stated_name = metadata.get("name")
    if name is not None:
        if stated_name != name:
            raise bad_request(
                f"the name of the object ({stated_name}) does not match the name on the URL "
                f"({name})",
                target,
            )
    elif not stated_name:
        prefix = metadata.get("generateName")
        if not prefix or not isinstance(prefix, str):
            raise invalid(
                Target(resource.plural, resource.group, "", resource.kind),
                (FieldError("metadata.name", "Required value: name or generateName is required"),),
            )
        metadata["name"] = generated_name(prefix, name_entropy)
    uid = metadata.get("uid")
    rv = metadata.get("resourceVersion")
    preconditions = Preconditions(
        uid=uid if isinstance(uid, str) and uid else None,
        resource_version=parse_resource_version(rv if isinstance(rv, str) else None),
    )
    for field in SERVER_METADATA:
        metadata.pop(field, None)
    manifest = {k: v for k, v in body.items() if k != "status"}
    manifest["metadata"] = metadata
    if resource.kind == "Secret":
        manifest = string_data_merged(manifest)
    return Written(manifest=manifest, name=str(metadata["name"]), preconditions=preconditions)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """What a write to ``<plural>/<name>/status`` asks: the object's status (None: the body
    has none), and the preconditions it stated. Everything else in the body is ignored, as
    kube's status strategies reset the spec and metadata to the stored object's."""

    status: dict[str, Any] | None
    preconditions: Preconditions


def status_write(body: object, resource: APIResource, *, namespace: str, name: str) -> StatusWrite:
    """A status update's (or a patched object's) status, checked against its URL like an
    update."""
    written = writable(body, resource, namespace=namespace, name=name)
    assert isinstance(body, dict)
    status = body.get("status")
    if status is not None and not isinstance(status, dict):
        raise bad_request("status must be an object", Target(resource.plural, resource.group, name))
    return StatusWrite(status=status, preconditions=written.preconditions)
