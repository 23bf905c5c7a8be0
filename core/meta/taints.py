"""What a taint repels and what tolerates it: ``Toleration.ToleratesTaint`` (core/v1 helpers).

Why this exists: the scheduler's TaintToleration plugins, taint-based eviction and admission's
default tolerations must all agree on what a taint is and what tolerates it. :class:`NodeTaint`
and :class:`PodToleration` are read once from stored manifests into small slotted objects (the
scheduler compares them for every node it looks at) and decide matching here, once. The schemas
that validate what a user sends are :class:`core.meta.types.Taint` and
:class:`core.meta.types.Toleration`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.labels import parse_int64
from core.meta.timestamps import parse_stamp

NO_SCHEDULE: Final = "NoSchedule"
PREFER_NO_SCHEDULE: Final = "PreferNoSchedule"
NO_EXECUTE: Final = "NoExecute"


class NodeTaint:
    """``key=value:effect`` (value "" when absent), and when it was added (ns since the epoch;
    None when the manifest does not say, which is all the scheduler needs)."""

    __slots__ = ("added_ns", "effect", "key", "value")

    def __init__(self, key: str, value: str, effect: str, added_ns: int | None = None) -> None:
        self.key = key
        self.value = value
        self.effect = effect
        self.added_ns = added_ns

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any]) -> NodeTaint:
        return cls(
            raw["key"], raw.get("value") or "", raw["effect"], parse_stamp(raw.get("timeAdded"))
        )

    def describe(self) -> str:
        """``key=value:effect`` (``key:effect`` without a value), as kubectl prints a taint."""
        if self.value:
            return f"{self.key}={self.value}:{self.effect}"
        return f"{self.key}:{self.effect}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeTaint):
            return NotImplemented
        return (self.key, self.value, self.effect, self.added_ns) == (
            other.key,
            other.value,
            other.effect,
            other.added_ns,
        )

    def __hash__(self) -> int:
        return hash((self.key, self.value, self.effect, self.added_ns))

    def __repr__(self) -> str:
        return f"NodeTaint({self.describe()})"


class PodToleration:
    """A toleration; empty strings where the manifest leaves a field out.

    ``comparison_operators`` is the ``TaintTolerationComparisonOperators`` gate (alpha, off by
    default) of whoever reads the toleration: off, a ``Gt``/``Lt`` toleration (stored while the
    gate was on) tolerates nothing, as in Kubernetes."""

    __slots__ = ("comparison_operators", "effect", "key", "operator", "seconds", "value")

    def __init__(
        self,
        key: str = "",
        operator: str = "Equal",
        value: str = "",
        effect: str = "",
        seconds: int | None = None,
        *,
        comparison_operators: bool = False,
    ) -> None:
        self.key = key
        self.operator = operator or "Equal"
        self.value = value
        self.effect = effect
        self.seconds = seconds
        self.comparison_operators = comparison_operators

    @classmethod
    def from_manifest(
        cls, raw: Mapping[str, Any], *, comparison_operators: bool = False
    ) -> PodToleration:
        return cls(
            raw.get("key") or "",
            raw.get("operator") or "Equal",
            raw.get("value") or "",
            raw.get("effect") or "",
            raw.get("tolerationSeconds"),
            comparison_operators=comparison_operators,
        )

    def tolerates(self, taint: NodeTaint) -> bool:
        """``Toleration.ToleratesTaint`` (core/v1 helpers), with the alpha Gt/Lt when gated on:
        the taint's value compared, as an integer, with the toleration's."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        op = self.operator
        if op == "Equal":
            return self.value == taint.value
        if op == "Exists":
            return True
        if op in ("Gt", "Lt") and self.comparison_operators:
            mine, theirs = parse_int64(self.value), parse_int64(taint.value)
            if mine is None or theirs is None:
                return False
            return theirs > mine if op == "Gt" else theirs < mine
        return False

    def __repr__(self) -> str:
        return (
            f"PodToleration({self.key} {self.operator} {self.value}:{self.effect}"
            f"{'' if self.seconds is None else f' for {self.seconds}s'})"
        )


def tolerations_tolerate_taint(tolerations: Iterable[PodToleration], taint: NodeTaint) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def pod_tolerations(
    pod_manifest: Mapping[str, Any], *, features: FeatureGates = DEFAULT_FEATURES
) -> tuple[PodToleration, ...]:
    """The tolerations of a stored pod manifest, in order, read with ``features``' gates."""
    comparison = features.taint_toleration_comparison_operators
    return tuple(
        PodToleration.from_manifest(raw, comparison_operators=comparison)
        for raw in (pod_manifest.get("spec") or {}).get("tolerations") or ()
    )


def node_taints(node_manifest: Mapping[str, Any]) -> tuple[NodeTaint, ...]:
    """The taints of a stored node manifest, in order."""
    raw_taints = (node_manifest.get("spec") or {}).get("taints") or ()
    return tuple(NodeTaint.from_manifest(raw) for raw in raw_taints)
