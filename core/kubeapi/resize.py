"""What a write to ``pods/<name>/resize`` asks: new resources for the pod's containers.

Why this exists: ``kubectl patch pod NAME --subresource resize --patch …`` (and the VPA's
updater) send a whole Pod (PUT) or a patch of one (PATCH) to the resize subresource; only the
containers' cpu and memory may differ from the stored pod. kube-apiserver refuses any other
change with ``ValidatePodResize``'s Invalid; this reads the body, checks it against the pod as
the door shows it (``core.pods.resize.validate_resize``, so the refusal is kube's) and returns
the ``resize`` command's ``containers``: each changed container's whole new ``resources``.
Pure, so the refusals are pinned by unit tests; the gateway validates again against the pod it
decides on (the pod may have changed in between).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ValidationFailed
from core.kubeapi.objects import Preconditions, writable
from core.kubeapi.resources import APIResource
from core.kubeapi.status import Target, invalid
from core.pods.resize import validate_resize


@dataclass(frozen=True, slots=True)
class ResizeRequest:
    """The ``resize`` command's containers (empty: nothing changes) and the preconditions
    the body stated."""

    containers: list[dict[str, Any]]
    preconditions: Preconditions


def requested_resize(
    body: object,
    resource: APIResource,
    *,
    current: Mapping[str, Any],
    namespace: str,
    name: str,
) -> ResizeRequest:
    """The resize a PUT body (or a patched pod) asks of the pod shown as ``current``."""
    written = writable(body, resource, namespace=namespace, name=name)
    assert isinstance(body, dict)
    spec = body.get("spec")
    target = Target(resource.plural, resource.group, name, resource.kind)
    if not isinstance(spec, dict):
        spec = {}
    stored = current.get("spec") or {}
    try:
        change = validate_resize(
            stored, spec, qos_class=(current.get("status") or {}).get("qosClass")
        )
    except ValidationFailed as exc:
        raise invalid(target, exc.errors or ()) from None
    return ResizeRequest(
        containers=[{"name": n, "resources": r} for n, r in change.after.items()],
        preconditions=written.preconditions,
    )
