"""``pods/<name>/eviction``: evict a pod (what ``kubectl drain`` POSTs) as a graceful delete.

Why this exists: an ``Eviction`` is a delete that a disruption budget may refuse. fleetlog has
no PodDisruptionBudgets yet, so every eviction of an existing pod is allowed: it becomes the
gateway's ``delete`` command with the DeleteOptions the Eviction carries (preconditions on uid
and resourceVersion, the propagation policy; dryRun is refused as on any delete), and answers
kube's ``Status`` with code 201. The 429 TooManyRequests answer ("Cannot evict pod as it would
violate the pod's disruption budget") comes with the budgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.podwrites import created_status, eviction_delete_options
from core.kubeapi.status import bad_request, method_not_allowed
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.resources import delete_options, no_dry_run

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method != "POST":
        raise method_not_allowed(path.target)
    no_dry_run(request)
    assert path.name is not None
    body = await read_json(request)
    options = delete_options(
        eviction_delete_options(body, name=path.name, namespace=path.namespace or ""),
        {},
        path.target,
    )
    if options.dry_run:
        raise bad_request(
            "dryRun on an eviction is not supported by fleetlog yet: nothing was done"
        )
    record = await resources.current(path)
    await resources.delete_one(path, record, caller, options)
    return respond(created_status(), status=201)
