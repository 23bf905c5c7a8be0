"""What a ``Binding`` (``pods/binding``) and an ``Eviction`` (``pods/eviction``) ask for.

Why this exists: both are POSTed to a pod's subresource by other schedulers and by ``kubectl
drain``; kube-apiserver checks their bodies before anything happens (the name agrees with the
URL, a binding names a node, an eviction's DeleteOptions is an object), and answers a success
with a ``Status`` of code 201 rather than an object. Pure, so those refusals are pinned by unit
tests; the HTTP door turns what is asked into the gateway's ``bind`` or ``delete`` command.
"""

from __future__ import annotations

from typing import Any

from core.errors import FieldError
from core.kubeapi.status import Target, bad_request, invalid

EVICTION_VERSIONS = ("policy/v1", "policy/v1beta1")


def binding_node(body: object, *, name: str, namespace: str) -> str:
    """The node a ``v1`` Binding of pod ``name`` names (``ValidatePodBinding``)."""
    target = Target("pods", "", name, "Binding")
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object", target)
    if body.get("kind") != "Binding" or body.get("apiVersion") not in ("v1", None):
        raise bad_request(
            f"the object in the data ({body.get('apiVersion')}, Kind={body.get('kind')}) is "
            "not a v1 Binding",
            target,
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("name") != name:
        raise bad_request("name in URL does not match name in Binding object", target)
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
            target,
        )
    bound_to = body.get("target")
    if not isinstance(bound_to, dict):
        bound_to = {}
    kind, node = bound_to.get("kind"), bound_to.get("name")
    if kind not in (None, "", "Node"):
        raise invalid(
            target,
            (FieldError("target.kind",
                        f'Unsupported value: "{str(kind)[:64]}": supported values: "Node", '
                        '"<empty>"'),),
        )  # fmt: skip
    if not isinstance(node, str) or not node:
        raise invalid(target, (FieldError("target.name", "Required value"),))
    return node


def eviction_delete_options(body: object, *, name: str, namespace: str) -> dict[str, Any]:
    """The DeleteOptions inside a ``policy/v1`` Eviction of pod ``name`` (``{}``: none)."""
    target = Target("pods", "", name, "Eviction")
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object", target)
    if body.get("kind") != "Eviction" or body.get("apiVersion") not in (*EVICTION_VERSIONS, None):
        raise bad_request(
            f"the object in the data ({body.get('apiVersion')}, Kind={body.get('kind')}) is "
            "not a policy/v1 Eviction",
            target,
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("name") != name:
        raise bad_request("name in URL does not match name in Eviction object", target)
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
            target,
        )
    options = body.get("deleteOptions")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise bad_request("deleteOptions must be an object", target)
    return options


def created_status() -> dict[str, Any]:
    """What a successful binding or eviction answers (with HTTP 201)."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}  # fmt: skip
