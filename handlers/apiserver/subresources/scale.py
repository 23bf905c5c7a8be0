"""``deployments/scale`` and ``replicasets/scale``: a workload's replica count as an
``autoscaling/v1`` Scale (get, update, patch).

Why this exists: ``kubectl scale`` (with or without ``--current-replicas``) and autoscalers
change replicas through this door without knowing the workload's kind. A write becomes the
gateway's ``scale`` command, the same one ``fleetlog scale`` sends, so it is admitted, audited
and recorded as a ``ScaledTo`` event; the Scale's ``metadata.resourceVersion`` is the
workload's, and a write that states one is pinned to it, so a change in between is refused as
kube's Conflict. A patch is computed on the Scale as it is and retried on a conflict, as
kube-apiserver retries a patch, unless the patch itself named a resourceVersion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.scale import ScaleRequest, requested_scale, scale_object
from core.kubeapi.status import method_not_allowed
from core.kubeapi.versions import parse_resource_version
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.resources import (
    check_preconditions,
    no_dry_run,
    not_found_object,
    patch_subresource,
)
from projections.cluster import ObjectRecord

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


def _scale_of(record: ObjectRecord) -> dict[str, Any]:
    return scale_object(
        manifest=record.manifest,
        namespace=record.namespace,
        uid=record.uid,
        resource_version=record.last_seq,
        created_ns=record.created_ns,
    )


async def _scale_to(
    resources: Resources,
    path: ResourcePath,
    caller: Caller,
    record: ObjectRecord,
    asked: ScaleRequest,
    *,
    pin: bool,
) -> web.StreamResponse:
    """Send the ``scale`` command; ``pin``: to the version the Scale was computed from even
    when the client stated none (a patch)."""
    assert path.name is not None
    expected = check_preconditions(path, record, asked.preconditions)
    if pin and expected is None:
        expected = record.version
    after = await resources.send_on_object(
        caller, path, "scale",
        {"name": path.name, "namespace": record.namespace, "replicas": asked.replicas},
        expected_version=expected,
    )  # fmt: skip
    return respond(_scale_of(after))


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    namespace = path.namespace or ""
    if request.method == "GET":
        await resources.reach(parse_resource_version(request.query.get("resourceVersion")))
        record = resources.record(path)
        if record is None:
            raise not_found_object(path)
        return respond(_scale_of(record))
    if request.method == "PUT":
        no_dry_run(request)
        body = await read_json(request)
        record = await resources.current(path)
        asked = requested_scale(body, target=path.target, namespace=namespace)
        return await _scale_to(resources, path, caller, record, asked, pin=False)
    if request.method == "PATCH":
        no_dry_run(request)
        return await patch_subresource(
            resources, request, path,
            shown=_scale_of,
            asked=lambda patched, _: requested_scale(
                patched, target=path.target, namespace=namespace
            ),
            write=lambda record, asked: _scale_to(
                resources, path, caller, record, asked, pin=True
            ),
        )  # fmt: skip
    raise method_not_allowed(path.target)
