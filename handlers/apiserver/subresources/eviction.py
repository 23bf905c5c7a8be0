"""``pods/<name>/eviction``: evict a pod (what ``kubectl drain`` POSTs), honouring its budget.

Why this exists: an ``Eviction`` is a delete that a PodDisruptionBudget may refuse. The door
checks the body (``core.kubeapi.podwrites``) and the DeleteOptions it carries (preconditions on
uid and resourceVersion, the propagation policy; dryRun is refused as on any delete), then
sends the gateway's ``evict`` command: the gateway decides against the pod's budget and appends
the deletion and the budget's new status together (``core.disruption.eviction``). The answers
are kube's: ``Status`` 201 on success; **429 TooManyRequests** "Cannot evict pod as it would
violate the pod's disruption budget." with the ``DisruptionBudget`` cause (which budget, how
many healthy pods it needs and has) when no disruption is left; a ``Status`` with code 500 when
the pod has more than one budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.disruption.budget import MULTIPLE_BUDGETS_MESSAGE
from core.errors import FleetError
from core.kubeapi.paths import ResourcePath
from core.kubeapi.podwrites import created_status, eviction_delete_options
from core.kubeapi.status import APIError, Target, bad_request, method_not_allowed
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.resources import check_preconditions, delete_options, no_dry_run
from streams.commandbus import CommandFailed

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


class _SeveralBudgets(Exception):
    """The gateway found more than one budget: kube answers a Status, not an error."""


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
    expected = check_preconditions(path, record, options.preconditions)
    target = Target("pods", "", record.name, "Pod")

    def refusal(error: FleetError) -> APIError | None:
        if error.code == "internal" and error.message == MULTIPLE_BUDGETS_MESSAGE:
            raise _SeveralBudgets
        if error.code == "too_many_requests" and isinstance(error, CommandFailed):
            details = error.details
            causes = tuple(dict(c) for c in details.get("causes") or ())
            retry = details.get("retry_after")
            return APIError(
                429, "TooManyRequests", error.message, target, causes,
                retry_after=int(retry) if retry else None,
            )  # fmt: skip
        return None

    command: dict[str, Any] = {
        "name": record.name,
        "namespace": record.namespace,
        "propagationPolicy": options.propagation,
    }
    try:
        seq = await resources.send(
            caller, target, "Pod", "evict", command, expected_version=expected, refusal=refusal
        )
    except _SeveralBudgets:
        failure = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": MULTIPLE_BUDGETS_MESSAGE, "code": 500}  # fmt: skip
        return respond(failure, status=500)
    await resources.after_write(path, record.name, seq)
    return respond(created_status(), status=201)
