"""``pods/<name>/binding``: bind a pending pod to a node (what a scheduler of one's own POSTs).

Why this exists: Kubernetes lets any scheduler place a pod by POSTing a ``Binding``; fleetlog
decides it as its own scheduler's binding is decided, through the gateway's ``bind`` command:
the pod must exist and be unbound, and the node must exist and fit the pod's requests, which
are reserved on it in the same append (kube-apiserver does not look at the node; fleetlog's
node ledger is what keeps racing schedulers from over-committing it, so a node that does not
exist is NotFound and one that cannot fit the pod is a Conflict). A pod already on a node is
kube's 409 Conflict ("already assigned"); success is a ``Status`` with code 201.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from core.errors import FleetError
from core.kubeapi.paths import ResourcePath
from core.kubeapi.podwrites import binding_node, created_status
from core.kubeapi.resources import BY_KIND
from core.kubeapi.status import APIError, Target, conflict, method_not_allowed
from handlers.apiserver.http import read_json, respond
from handlers.apiserver.resources import no_dry_run, not_found_object_of

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


def _assigned(target: Target, pod: str, node: str) -> APIError:
    return conflict(target, f'pod {pod} is already assigned to node "{node}"')


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method != "POST":
        raise method_not_allowed(path.target)
    no_dry_run(request)
    assert path.name is not None
    pod = path.name
    namespace = path.namespace or ""
    target = Target("pods/binding", "", pod, "Binding")
    node = binding_node(await read_json(request), name=pod, namespace=namespace)
    record = await resources.current(path)
    bound = (record.manifest.get("spec") or {}).get("nodeName")
    if bound:
        raise _assigned(target, pod, bound)
    if resources.lookup("Node", "", node) is None:
        raise not_found_object_of(BY_KIND["Node"], node)

    def refusal(error: FleetError) -> APIError | None:
        if error.code == "invalid_transition" and error.field == "spec.nodeName":
            return conflict(target, f"pod {pod} is already assigned to a node")  # a race
        if error.code == "insufficient_resources":
            return conflict(target, error.message)
        if error.code == "not_found":
            return APIError(404, "NotFound", error.message, target)
        return None

    seq = await resources.send(
        caller, target, "Pod", "bind", {"name": pod, "namespace": namespace, "node": node},
        refusal=refusal,
    )  # fmt: skip
    await resources.after_write(path, pod, seq)
    return respond(created_status(), status=201)
