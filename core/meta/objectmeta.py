"""``metadata``, owner references, conditions and the common shape of a top-level object.

Why this exists: identity (name, namespace, generateName), scope (namespaced or cluster-wide)
and ownership are checked the same way for every kind (``pkg/apis/core/validation``
``ValidateObjectMeta``); subclasses of :class:`ResourceBase` only pin their apiVersion, kind and
name rule.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from core.meta.fields import Timestamp
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    Annotations,
    Labels,
    NameRule,
    QualifiedName,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    generate_name_errors,
)

# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------


class OwnerReference(K8sModel):
    """The object that owns this one (a ReplicaSet owns its pods)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


def _check_namespace(value: str | None) -> str | None:
    # "" means "not given" (defaulted for namespaced kinds, allowed for cluster-scoped ones).
    if value:
        errs = dns1123_label_errors(value)
        if errs:
            raise field_error(invalid(value, "; ".join(errs)))
    return value


class ObjectMeta(K8sModel):
    """``metadata``: identity, labels and ownership, plus the server-managed fields.

    ``uid``, ``resourceVersion``, ``creationTimestamp`` and friends are accepted so that YAML
    exported from a cluster loads; fleetlog's gateway owns their values.
    """

    name: str | None = None
    generate_name: str | None = None
    namespace: Annotated[str | None, AfterValidator(_check_namespace)] = None
    labels: Labels | None = None
    annotations: Annotations | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[QualifiedName] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    deletion_grace_period_seconds: int | None = None
    self_link: str | None = None
    managed_fields: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _one_controller(self) -> Self:
        refs = self.owner_references or []
        controllers = [i for i, ref in enumerate(refs) if ref.controller]
        if len(controllers) > 1:
            raise field_error(
                "Invalid value: only one reference can have controller set to true",
                "ownerReferences",
                controllers[1],
                "controller",
            )
        return self


class Condition(K8sModel):
    """A status condition (Ready, Available, MemoryPressure, ...), as the server reports it."""

    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: Timestamp | None = None
    last_probe_time: Timestamp | None = None
    last_heartbeat_time: Timestamp | None = None
    last_update_time: Timestamp | None = None
    observed_generation: int | None = None


# --------------------------------------------------------------------------------------------
# The common shape of a top-level resource
# --------------------------------------------------------------------------------------------


class ResourceBase(K8sModel):
    """``apiVersion``, ``kind`` and ``metadata``, with the name and scope rules of the kind.

    Subclasses pin ``api_version``/``kind`` with ``Literal`` and set ``NAME_RULE`` and
    ``NAMESPACED``. Namespaced kinds get namespace ``"default"`` when none is given; a namespace
    on a cluster-scoped kind is an error.
    """

    NAME_RULE: ClassVar[NameRule] = staticmethod(dns1123_subdomain_errors)
    NAMESPACED: ClassVar[bool] = True

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="after")
    def _check_identity(self) -> Self:
        meta = self.metadata
        rule = type(self).NAME_RULE
        if not meta.name and not meta.generate_name:
            raise field_error(
                "Required value: name or generateName is required", "metadata", "name"
            )
        if meta.name:
            errs = rule(meta.name)
            if errs:
                raise field_error(invalid(meta.name, "; ".join(errs)), "metadata", "name")
        if meta.generate_name:
            errs = generate_name_errors(rule, meta.generate_name)
            if errs:
                raise field_error(
                    invalid(meta.generate_name, "; ".join(errs)), "metadata", "generateName"
                )
        if type(self).NAMESPACED:
            if not meta.namespace:
                self.metadata = meta.model_copy(update={"namespace": "default"})
        elif meta.namespace:
            raise field_error(
                f"Forbidden: not allowed on this type: {self.kind} is cluster-scoped",
                "metadata",
                "namespace",
            )
        return self
