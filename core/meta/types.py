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
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.fields import Timestamp
from core.meta.labels import Selector
from core.meta.model import K8sModel, Problems, field_error, field_errors, invalid, unsupported
from core.meta.names import (
    Annotations,
    JoinedLabelValue,
    Labels,
    NameRule,
    QualifiedName,
    decimal_integer_errors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    generate_name_errors,
    joined_rule_problems,
    label_value_errors,
    qualified_name_errors,
    rule_problems,
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
        problems = rule_problems(dns1123_label_errors, value)
        if problems:
            raise field_errors(problems)
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


SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def selector_requirement_problems(
    key: str, operator: str, values: list[str] | None
) -> list[tuple[tuple[str | int, ...], str]]:
    """``ValidateLabelSelectorRequirement`` (and the operator/values half of
    ``ValidateNodeSelectorRequirement``, which adds Gt and Lt)."""
    found = Problems()
    if operator in ("In", "NotIn"):
        if not values:
            found.add(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'", "values"
            )
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            found.add(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "values",
            )
    else:
        found.add(invalid(operator, "not a valid selector operator"), "operator")
    found.extend(rule_problems(qualified_name_errors, key), "key")
    return found.items


class LabelSelectorRequirement(K8sModel):
    """One ``matchExpressions`` entry of a label selector: a key (a label key), an operator and,
    for In/NotIn, label values."""

    key: str
    operator: str
    values: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = Problems()
        found.extend(selector_requirement_problems(self.key, self.operator, self.values))
        for i, value in enumerate(self.values or ()):
            found.extend(rule_problems(label_value_errors, value), "values", i)
        found.check()
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
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS: Final = ("Equal", "Exists")


class Taint(K8sModel):
    """Repels pods that do not tolerate it (``key=value:effect``); ``validateNodeTaints``."""

    key: QualifiedName
    value: JoinedLabelValue | None = None
    effect: TaintEffect
    time_added: Timestamp | None = None


COMPARISON_OPERATORS: Final = ("Gt", "Lt")


def features_of(info: ValidationInfo) -> FeatureGates:
    """The feature gates a validation runs with (``parse_manifest(..., features=)``), Kubernetes'
    defaults when none were given."""
    context = info.context if isinstance(info.context, dict) else {}
    features = context.get("features")
    return features if isinstance(features, FeatureGates) else DEFAULT_FEATURES


class Toleration(K8sModel):
    """Lets a pod onto nodes with a matching taint. Empty effect matches every effect; an empty
    operator means Equal. Checked as ``ValidateTolerations`` checks it, including its habit of
    reporting a bad value at ``operator``. ``Gt``/``Lt`` are accepted only with the
    ``TaintTolerationComparisonOperators`` gate on (alpha), their value then a decimal integer."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        comparison = features_of(info).taint_toleration_comparison_operators
        found = Problems()
        key, operator, value = self.key or "", self.operator, self.value or ""
        effect = self.effect or ""
        if key:
            found.extend(rule_problems(qualified_name_errors, key), "key")
        elif operator != "Exists":
            found.add(
                invalid(
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all '
                    'values and all keys"',
                ),
                "operator",
            )
        if self.toleration_seconds is not None and effect != "NoExecute":
            found.add(
                invalid(effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"),
                "effect",
            )
        if operator in ("", "Equal"):
            found.extend(joined_rule_problems(label_value_errors, value), "operator")
        elif operator == "Exists":
            if value:
                found.add(
                    invalid(value, "value must be empty when `operator` is 'Exists'"), "operator"
                )
        elif comparison and operator in COMPARISON_OPERATORS:
            found.extend(rule_problems(decimal_integer_errors, value), "value")
        else:
            supported = TOLERATION_OPERATORS + (COMPARISON_OPERATORS if comparison else ())
            found.add(unsupported(operator, supported), "operator")
        if effect and effect not in TAINT_EFFECTS:
            found.add(unsupported(effect, TAINT_EFFECTS), "effect")
        found.check()
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
        found = Problems()
        if not meta.name and not meta.generate_name:
            found.add("Required value: name or generateName is required", "metadata", "name")
        if meta.name:
            found.extend(rule_problems(rule, meta.name), "metadata", "name")
        if meta.generate_name:
            for message in generate_name_errors(rule, meta.generate_name):
                found.add(invalid(meta.generate_name, message), "metadata", "generateName")
        if type(self).NAMESPACED:
            if not meta.namespace:
                self.metadata = meta.model_copy(update={"namespace": "default"})
        elif meta.namespace:
            found.add(
                f"Forbidden: not allowed on this type: {self.kind} is cluster-scoped",
                "metadata",
                "namespace",
            )
        found.check()
        return self
