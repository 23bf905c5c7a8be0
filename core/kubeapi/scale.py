"""The ``autoscaling/v1`` Scale object: a workload's replica count seen on its own.

Why this exists: ``kubectl scale`` and every autoscaler change a deployment's or a replica set's
replicas through the ``scale`` subresource, without knowing the kind's spec: they read a
``Scale`` (``spec.replicas``, ``status.replicas`` and ``status.selector`` in its string form, the
one a metrics pipeline matches pods with) and write one back, with the workload's
resourceVersion as the precondition. This module builds the Scale of a stored workload and
reads what a client's Scale asks for; the HTTP door turns that into the gateway's ``scale``
command. Pure, so the string form of a selector and the refusals are pinned by unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import FieldError
from core.kubeapi.objects import Preconditions
from core.kubeapi.status import Target, bad_request, invalid
from core.kubeapi.versions import parse_resource_version
from core.meta.timestamps import format_stamp

SCALE_API_VERSION = "autoscaling/v1"
MAX_REPLICAS = 2**31 - 1
"""``spec.replicas`` is an int32."""

_OPERATORS = {"In": "in", "NotIn": "notin"}


def selector_text(selector: Mapping[str, Any] | None) -> str:
    """A ``metav1.LabelSelector`` as apimachinery prints the selector it compiles to: the
    requirements sorted by key, ``key=value`` for a label to match, ``key in (a,b)`` /
    ``key notin (a,b)`` with sorted values, ``key`` and ``!key`` for Exists / DoesNotExist."""
    if not selector:
        return ""
    parts: list[tuple[str, str]] = [
        (key, f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expr in selector.get("matchExpressions") or ():
        key, op = str(expr.get("key", "")), expr.get("operator")
        values = ",".join(sorted(str(v) for v in expr.get("values") or ()))
        if op in _OPERATORS:
            parts.append((key, f"{key} {_OPERATORS[op]} ({values})"))
        elif op == "Exists":
            parts.append((key, key))
        elif op == "DoesNotExist":
            parts.append((key, f"!{key}"))
    # A stable sort by key, as labels.Selector keeps its requirements.
    return ",".join(text for _, text in sorted(parts, key=lambda part: part[0]))


def scale_object(
    *,
    manifest: Mapping[str, Any],
    namespace: str,
    uid: str,
    resource_version: int,
    created_ns: int,
) -> dict[str, Any]:
    """The Scale of a stored deployment or replica set (its desired and observed replicas)."""
    metadata = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    status = manifest.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": SCALE_API_VERSION,
        "metadata": {
            "name": metadata.get("name", ""),
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": str(resource_version),
            "creationTimestamp": format_stamp(created_ns),
        },
        "spec": {"replicas": int(spec.get("replicas", 1))},
        "status": {
            "replicas": int(status.get("replicas") or 0),
            "selector": selector_text(spec.get("selector")),
        },
    }


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    """What a client's Scale asks: the replica count, and the version it was computed on."""

    replicas: int
    preconditions: Preconditions


def requested_scale(body: object, *, target: Target, namespace: str) -> ScaleRequest:
    """A client's Scale (an update's body, or the result of a patch) checked as kube-apiserver's
    scale subresource checks it: a Scale of this object, with ``spec.replicas`` a non-negative
    int32."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object", target)
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind != "Scale" or api_version not in (SCALE_API_VERSION, None):
        raise bad_request(
            f"the object in the data ({api_version}, Kind={kind}) is not an "
            f"{SCALE_API_VERSION} Scale",
            target,
        )
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise bad_request("metadata must be an object", target)
    if metadata.get("name") != target.name:
        raise bad_request(
            f"the name of the object ({metadata.get('name')}) does not match the name on the "
            f"URL ({target.name})",
            target,
        )
    stated_namespace = metadata.get("namespace")
    if stated_namespace and stated_namespace != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
            target,
        )
    spec = body.get("spec") or {}
    replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
    scale_target = Target(target.resource, "autoscaling", target.name, "Scale")
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise invalid(
            scale_target,
            (FieldError("spec.replicas", f"Invalid value: {replicas!r}: must be an integer"),),
        )
    if replicas < 0:
        raise invalid(
            scale_target,
            (FieldError("spec.replicas",
                        f"Invalid value: {replicas}: must be greater than or equal to 0"),),
        )  # fmt: skip
    if replicas > MAX_REPLICAS:
        raise invalid(
            scale_target,
            (FieldError("spec.replicas",
                        f"Invalid value: {replicas}: must be less than or equal to "
                        f"{MAX_REPLICAS}"),),
        )  # fmt: skip
    uid, rv = metadata.get("uid"), metadata.get("resourceVersion")
    return ScaleRequest(
        replicas=replicas,
        preconditions=Preconditions(
            uid=uid if isinstance(uid, str) and uid else None,
            resource_version=parse_resource_version(rv if isinstance(rv, str) else None),
        ),
    )
