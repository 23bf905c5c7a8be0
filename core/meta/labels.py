"""Label selectors (meta/v1): the model that validates them, and how they match.

Why this exists: a label selector picks a workload's pods, a spread constraint's peers and a
service's endpoints; Kubernetes gives it one meaning (``matchLabels`` and ``matchExpressions``
ANDed; In, NotIn, Exists, DoesNotExist), which lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self

from pydantic import (
    model_validator,
)

from core.meta.model import K8sModel, field_error
from core.meta.names import Labels, LabelValue, QualifiedName

# --------------------------------------------------------------------------------------------
# Label selectors (meta/v1) and conditions, shared by several kinds
# --------------------------------------------------------------------------------------------


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

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in (self.values or ())
        if self.operator == "NotIn":
            return not present or labels[self.key] not in (self.values or ())
        if self.operator == "Exists":
            return present
        return not present


class LabelSelector(K8sModel):
    """A label query: ``matchLabels`` and ``matchExpressions`` are ANDed."""

    match_labels: Labels | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def is_empty(self) -> bool:
        """An empty selector matches everything (and is not allowed where one is required)."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or ())
