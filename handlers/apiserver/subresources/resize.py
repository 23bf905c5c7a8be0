"""``pods/<name>/resize``: a pod's container resources changed in place (get, update, patch).

Why this exists: since Kubernetes 1.33 a pod's cpu and memory change only through this
subresource (``kubectl patch pod NAME --subresource resize --patch …``; the VPA updater's
InPlaceOrRecreate mode). A write becomes the gateway's ``resize`` command (the one
``fleetlog`` and the VPA send on the NATS door), so it is authorized as ``patch``
``pods/resize``, validated, charged to quotas, audited and recorded as ``PodResized``; the
answer is the pod. A body that states a resourceVersion is pinned to it; a patch is computed
on the pod as it is and retried on a conflict, as kube-apiserver retries a patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.resize import ResizeRequest, requested_resize
from core.kubeapi.status import method_not_allowed
from handlers.apiserver.http import JSON, read_json, respond
from handlers.apiserver.resources import check_preconditions, no_dry_run, patch_subresource
from projections.cluster import ObjectRecord

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


async def _resize(
    resources: Resources,
    path: ResourcePath,
    caller: Caller,
    record: ObjectRecord,
    asked: ResizeRequest,
    *,
    pin: bool,
) -> web.StreamResponse:
    assert path.name is not None
    expected = check_preconditions(path, record, asked.preconditions)
    if not asked.containers:
        return respond(resources.as_api_object(path.resource, record))
    if pin and expected is None:
        expected = record.version
    after = await resources.send_on_object(
        caller, path, "resize",
        {"name": path.name, "namespace": record.namespace, "containers": asked.containers},
        expected_version=expected,
    )  # fmt: skip
    return respond(resources.as_api_object(path.resource, after))


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    namespace = path.namespace or ""
    assert path.name is not None
    if request.method == "GET":
        return await resources.get(request, path)
    if request.method == "PUT":
        no_dry_run(request)
        body = await read_json(request, media_types=(JSON,))
        record = await resources.current(path)
        shown = resources.as_api_object(path.resource, record)
        asked = requested_resize(
            body, path.resource, current=shown, namespace=namespace, name=path.name
        )
        return await _resize(resources, path, caller, record, asked, pin=False)
    if request.method == "PATCH":
        no_dry_run(request)
        return await patch_subresource(
            resources, request, path,
            shown=lambda record: resources.as_api_object(path.resource, record),
            asked=lambda patched, shown: requested_resize(
                patched, path.resource, current=shown, namespace=namespace, name=path.name
            ),
            write=lambda record, asked: _resize(
                resources, path, caller, record, asked, pin=True
            ),
        )  # fmt: skip
    raise method_not_allowed(path.target)
