"""A command seen as Kubernetes' authorizer sees a request: who sent it (the verified signer,
perhaps impersonating someone) and which verb on which resource it asks for.

Why this exists: the gateway authorizes every command with RBAC (issue 17), whose rules speak
kube's verbs and resources (``create pods``, ``update deployments/scale``, ``patch nodes``),
while fleetlog's commands have verbs of their own (``apply``, ``scale``, ``cordon``…). This
module is the one translation, so ``fleetlog auth can-i`` and the gateway answer the same
question the same way; and it says who a signer is (a user of the log, the bootstrap admin, a
control-plane component) in kube's ``user.Info`` terms. Pure: the gateway passes in the read
model's users and the control plane's keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.access.bootstrap import AUTHENTICATED, SYSTEM_MASTERS
from core.access.rbac import Request, User
from core.kubeapi.resources import BY_KIND

CONTROL_PLANE_GROUP: Final = "system:control-plane"
"""The group of fleetlog's own components (controllers, scheduler, agents, the HTTP door):
allowed as system components, as kube's ``system:masters``-bound controller identities are."""
IMPERSONATE: Final = "impersonate"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who holds a key: the user the gateway records as the actor, and whether it is one of
    the control plane's own identities (trusted to name the component acting)."""

    user: User
    control_plane: bool = False
    nodes_only: bool = False
    """A key the node agents hold: its commands act only as a node (``system:node/<name>``),
    which NodeRestriction then keeps to that node (``core.access.noderestriction``)."""


def user_identity(name: str, groups: Iterable[str]) -> Identity:
    """A user as kube authenticates one: its groups plus ``system:authenticated``."""
    listed = tuple(dict.fromkeys([*groups, AUTHENTICATED]))
    return Identity(User(name, listed))


def admin_identity(name: str) -> Identity:
    return user_identity(name, (SYSTEM_MASTERS,))


def control_plane_identity(role: str) -> Identity:
    return Identity(User(f"system:{role}", (CONTROL_PLANE_GROUP, AUTHENTICATED)), True)


def users_by_key(users: Iterable[Mapping[str, Any]]) -> dict[str, Identity]:
    """Public nkey -> identity, for the unrevoked User manifests of the log."""
    known: dict[str, Identity] = {}
    for manifest in users:
        spec = manifest.get("spec") or {}
        key = spec.get("publicKey")
        if spec.get("revoked") or not isinstance(key, str) or not key:
            continue
        name = str((manifest.get("metadata") or {}).get("name") or "")
        known[key] = user_identity(name, [str(g) for g in spec.get("groups") or ()])
    return known


def node_agent_identity(role: str) -> Identity:
    """The key of the node agents (``agent.nk``): a control-plane identity whose commands
    must name the node acting (:func:`node_actor_problem`)."""
    return Identity(
        User(f"system:{role}", (CONTROL_PLANE_GROUP, AUTHENTICATED)), True, nodes_only=True
    )


def node_actor_problem(caller: Identity, stated: str) -> str | None:
    """Why a command signed with a node agents' key may not act as ``stated`` (None: it
    may): such a key acts only as a node, never as a controller, a user or itself."""
    if not caller.nodes_only:
        return None
    for prefix in ("system:node/", "system:node:"):
        if stated.startswith(prefix) and len(stated) > len(prefix):
            return None
    return (
        f"the node agents' key ({caller.user.name}) acts only as a node (system:node/NAME), "
        f"not as {stated!r}"
    )


def acting_as(caller: Identity, stated: str) -> Identity:
    """The identity a control-plane caller acts as: the one it states. A control-plane key
    is trusted to say which of its parts is acting (``system:replicaset-controller``) and, for
    the Kubernetes door, which of its own authenticated clients it sends for; without a stated
    name it is its own."""
    return Identity(User(stated or caller.user.name, caller.user.groups), True)


def impersonation(target: str) -> Request:
    """kube's check for ``--as``: ``impersonate`` on ``users`` named as the target."""
    return Request(verb=IMPERSONATE, resource="users", name=target)


def kube_verbs(verb: str, *, exists: bool) -> tuple[str, str]:
    """A command verb's kube verb and subresource (``apply`` creates what does not exist and
    patches what does, as ``kubectl apply``)."""
    match verb:
        case "create":
            return "create", ""
        case "apply":
            return ("patch" if exists else "create"), ""
        case "delete":
            return "delete", ""
        case "scale":
            return "update", "scale"
        case "status":
            return "update", "status"
        case "bind":
            return "create", "binding"
        case "evict":
            return "create", "eviction"
        case "resize":
            return "patch", "resize"
        case "cordon" | "uncordon":
            return "patch", ""
    return verb, ""


def command_request(*, kind: str, verb: str, namespace: str, name: str, exists: bool) -> Request:
    """The RBAC request a command on ``kind`` makes (``scale`` of a Deployment: ``update``
    ``deployments/scale`` in group ``apps``)."""
    resource = BY_KIND.get(kind)
    plural, group = (resource.plural, resource.group) if resource else (kind.lower() + "s", "")
    kube_verb, subresource = kube_verbs(verb, exists=exists)
    return Request(
        verb=kube_verb,
        resource=plural,
        api_group=group,
        namespace=namespace,
        name=name,
        subresource=subresource,
    )


def request_for(*, verb: str, kind: str, namespace: str = "", name: str = "") -> Request:
    """``auth can-i VERB KIND``: kube's verb as given, on the kind's resource (``KIND`` may be
    ``deployments/scale``, a plural, or a kind name)."""
    base, _, subresource = kind.partition("/")
    resource = BY_KIND.get(base) or next(
        (r for r in BY_KIND.values() if base.lower() in (r.plural, r.singular, *r.short_names)),
        None,
    )
    plural, group = (resource.plural, resource.group) if resource else (base.lower(), "")
    return Request(
        verb=verb,
        resource=plural,
        api_group=group,
        namespace=namespace if resource is None or resource.namespaced else "",
        name=name,
        subresource=subresource,
    )
