"""Kubernetes' NodeRestriction admission plugin: a node agent writes only its own node and the
pods bound to it.

Why this exists: a node agent holds a key the gateway trusts, so without this any agent (or
whoever stole its key) could cordon every other node or rewrite the status of pods running
elsewhere (issue 17). Kube-apiserver confines each kubelet (user ``system:node:<name>`` in
``system:nodes``) with the Node authorizer and this plugin; fleetlog's agents act as
``system:node/<name>`` (the gateway's verified actor), and both spellings are node identities
here. What a node may write through the gateway:

* its own ``Node`` (register, status, cordon): any other node is refused with kube's ``node
  "n1" is not allowed to modify node "n2"``;
* the status of a pod whose ``spec.nodeName`` is itself (``node "n1" can only update pod status
  for pods with spec.nodeName set to itself``), and the deletion or eviction of such a pod
  (``... can only delete pods with spec.nodeName set to itself``, ``... can only evict ...``);
* no pod creation (kube admits only mirror pods, which fleetlog has not:
  ``pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create
  mirror pods``), no other change of a pod, and nothing of any other kind (kube's Node
  authorizer: ``User "system:node:n1" cannot create resource "deployments" ...``).

The node's lease lives in a key-value bucket, not behind the gateway. Pure: the caller passes
the command and the pod's bound node.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.access.commandauth import command_request
from core.access.rbac import User, forbidden_status_message

NODE_PREFIXES = ("system:node:", "system:node/")
"""kube's node user names (``system:node:<name>``) and the actor fleetlog's agents state."""


def node_of(user_name: str) -> str | None:
    """The node an identity is the agent of, or None for anyone else."""
    for prefix in NODE_PREFIXES:
        if user_name.startswith(prefix) and len(user_name) > len(prefix):
            return user_name[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class NodeWrite:
    """A command as NodeRestriction sees it: who, which verb, on what; ``bound_to`` the
    ``spec.nodeName`` of the stored pod it changes (None: no such pod, or not bound)."""

    user: User
    kind: str
    verb: str
    namespace: str
    name: str
    exists: bool = True
    bound_to: str | None = None


def refusal(write: NodeWrite) -> str | None:
    """Kube's Forbidden message when the node identity may not make ``write`` (None: allowed,
    or not a node identity)."""
    node = node_of(write.user.name)
    if node is None:
        return None
    if write.kind == "Node":
        if write.name == node:
            return None
        return _forbidden("nodes", write.name, f'node "{node}" is not allowed to modify node '
                          f'"{write.name}"')  # fmt: skip
    if write.kind == "Pod":
        if write.verb == "status":
            if write.bound_to == node:
                return None
            return _forbidden("pods", write.name, f'node "{node}" can only update pod status '
                              "for pods with spec.nodeName set to itself")  # fmt: skip
        if write.verb == "delete":
            if write.bound_to == node:
                return None
            return _forbidden("pods", write.name, f'node "{node}" can only delete pods with '
                              "spec.nodeName set to itself")  # fmt: skip
        if write.verb == "evict":
            if write.bound_to == node:
                return None
            return _forbidden("pods", write.name, f'node "{node}" can only evict pods with '
                              "spec.nodeName set to itself")  # fmt: skip
        if write.verb in ("create", "apply") and not write.exists:
            return _forbidden("pods", write.name, 'pod does not have "kubernetes.io/config.mirror" '
                              f'annotation, node "{node}" can only create mirror pods')  # fmt: skip
    request = command_request(
        kind=write.kind, verb=write.verb, namespace=write.namespace, name=write.name,
        exists=write.exists,
    )  # fmt: skip
    qualified = f"{request.resource}.{request.api_group}" if request.api_group else request.resource
    return forbidden_status_message(
        write.user, request, qualified_resource=qualified,
        reason=f'node "{node}" may write only its own Node and the status of the pods bound to it',
    )  # fmt: skip


def _forbidden(resource: str, name: str, why: str) -> str:
    """kube's ``admission.NewForbidden``: ``pods "x" is forbidden: <why>``."""
    return f'{resource} "{name}" is forbidden: {why}'
