"""The gateway's API Priority and Fairness stage: right after authentication and routing, before
the manifest is parsed, a command waits for a seat of its priority level in its flow's queue, or
is refused with "too many requests".

Why this exists: one user flooding the gateway must not starve the others, and users must never
starve the controllers (issue 17). The stage classifies the command by the cluster's
FlowSchemas as the request kube-apiserver would see (verb, resource, namespace) from the
authenticated actor, and holds the seat until the command is answered (:meth:`release`,
called by the service whatever the outcome). A refusal appends nothing and is audited like any
refused command (code ``too_many_requests``, with ``retry_after`` seconds in the reply).

It runs before ``resolve_target`` as kube-apiserver's filter runs before the body is decoded:
a flood's refused commands must not pay the manifest's parse, else refusing them costs nearly
what serving them would. The object's namespace and name are read from the raw manifest
(:func:`target_of`), as ``resolve_target`` will find them for any manifest it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.access.flowdefaults import flow_user
from core.access.rbac import Request
from core.api.catalog import KINDS
from core.api.commands import ManifestBody
from core.kubeapi.resources import BY_KIND
from handlers.fairgate import FairGate
from handlers.gateway.context import CommandContext

KUBE_VERBS = {"apply": "patch", "scale": "patch", "cordon": "patch", "uncordon": "patch",
              "status": "update", "bind": "create", "evict": "create",
              "resize": "patch"}  # fmt: skip
"""fleetlog's command verbs as the kube verbs FlowSchema rules name (``create`` and ``delete``
are the same words)."""
SUBRESOURCES = {
    "scale": "scale", "status": "status", "bind": "binding", "evict": "eviction",
    "resize": "resize",
}  # fmt: skip


def target_of(ctx: CommandContext) -> tuple[str, str]:
    """``(namespace, name)`` of the command's object, without parsing its manifest: for every
    command ``resolve_target`` accepts, the namespace and name of the ``ctx.ref`` it sets
    (a namespaced kind's missing or empty namespace defaults to ``default``, a cluster-scoped
    kind's is ``""``). A malformed manifest gets a best guess: ``resolve_target`` refuses it
    afterwards, once it holds a seat (kube too decides priority before decoding a body)."""
    assert ctx.command is not None
    info = KINDS.get(ctx.kind)
    namespaced = info.namespaced if info is not None else True
    body = ctx.command.body
    if isinstance(body, ManifestBody):
        meta = body.manifest.get("metadata")
        if not isinstance(meta, Mapping):
            meta = {}
        name = meta.get("name")
        namespace = meta.get("namespace")
        if not namespaced:
            namespace = ""
        elif not namespace or not isinstance(namespace, str):
            namespace = "default"
        return namespace, name if isinstance(name, str) else ""
    # delete, scale, cordon, ...: the decoded body names its object (nodes have no namespace).
    return (getattr(body, "namespace", "") if namespaced else ""), body.name


def request_of(ctx: CommandContext) -> Request:
    """The command as the resource request kube-apiserver would classify."""
    resource = BY_KIND.get(ctx.kind)
    namespace, name = target_of(ctx)
    return Request(
        verb=KUBE_VERBS.get(ctx.verb, ctx.verb),
        resource=resource.plural if resource is not None else ctx.kind.lower() + "s",
        api_group=resource.group if resource is not None else "",
        namespace=namespace,
        name=name,
        subresource=SUBRESOURCES.get(ctx.verb, ""),
    )


class Fairness:
    """Waits for a seat; the service calls :meth:`release` once the command is answered."""

    def __init__(self, gate: FairGate) -> None:
        self.gate = gate

    async def __call__(self, ctx: CommandContext) -> None:
        # The verified identity's groups (none for an unsigned command on an open server).
        groups = ctx.identity.user.groups if ctx.identity is not None else ()
        ctx.seat = await self.gate.acquire(flow_user(ctx.actor, groups), request_of(ctx))

    def release(self, ctx: CommandContext) -> None:
        if ctx.seat is not None:
            seat, ctx.seat = ctx.seat, None
            self.gate.release(seat)
