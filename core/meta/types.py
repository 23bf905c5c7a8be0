"""The API types every kind shares: ``metadata`` with owner references, label selectors,
taints and tolerations, conditions, and the common shape of a top-level object.

Why this exists: identity (name, namespace, generateName), scope (namespaced or cluster-wide)
and ownership are checked the same way for every kind (``pkg/apis/core/validation``
``ValidateObjectMeta``); subclasses of :class:`ResourceBase` only pin their apiVersion, kind and
name rule. These are the *schemas* that validate what a user sends; what a selector or a
toleration *means* is decided by the light rule modules beside this one
(:mod:`core.meta.labels`, :mod:`core.meta.taints`), which readers and the scheduler use on stored
manifests without loading pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from core.meta.fields import Timestamp
from core.meta.labels import Selector
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    Annotations,
    Labels,
    LabelValue,
    NameRule,
    QualifiedName,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    generate_name_errors,
    qualified_name_errors,
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


class LabelSelectorRequirement(K8sModel):
    """One ``matchExpressions`` entry of a label selector."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = None

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        if self.operator in ("In", "NotIn") and not self.values:
            raise field_error(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'", "values"
            )
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise field_error(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "values",
            )
        return self


class LabelSelector(K8sModel):
    """A label query: ``matchLabels`` and ``matchExpressions`` are ANDed."""

    match_labels: Labels | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def is_empty(self) -> bool:
        """An empty selector matches everything (and is not allowed where one is required)."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """What :class:`core.meta.labels.Selector` says of this selector."""
        return Selector.from_manifest(self.model_dump(by_alias=True, exclude_none=True)).matches(
            labels
        )


TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Taint(K8sModel):
    """Repels pods that do not tolerate it (``key=value:effect``)."""

    key: QualifiedName
    value: LabelValue | None = None
    effect: TaintEffect
    time_added: Timestamp | None = None


class Toleration(K8sModel):
    """Lets a pod onto nodes with a matching taint. Empty effect matches every effect."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.key:
            errs = qualified_name_errors(self.key)
            if errs:
                raise field_error(invalid(self.key, "; ".join(errs)), "key")
        elif self.operator != "Exists":
            raise field_error(
                invalid(
                    self.operator,
                    'operator must be Exists when `key` is empty, which means "match all '
                    'values and all keys"',
                ),
                "operator",
            )
        if self.operator == "Exists" and self.value:
            raise field_error(
                invalid(self.value, "value must be empty when `operator` is 'Exists'"), "value"
            )
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise field_error(
                invalid(self.effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"),
                "effect",
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
