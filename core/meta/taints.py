"""Taints and tolerations (core/v1): the models that validate them, and whether a toleration
tolerates a taint.

Why this exists: the scheduler's TaintToleration plugins, taint-based eviction and admission's
default tolerations must all agree on what a taint is and what tolerates it.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from core.meta.fields import Timestamp
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    LabelValue,
    QualifiedName,
    qualified_name_errors,
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
