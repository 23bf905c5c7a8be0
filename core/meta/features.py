"""Feature gates: named switches for behaviours Kubernetes has not made generally available.

Why this exists: an alpha behaviour of Kubernetes is off unless the cluster's operator turns it
on (``--feature-gates Name=true``), and fleetlog follows Kubernetes, so its alpha behaviours are
off by default too and sit behind the gate Kubernetes uses for them. A :class:`FeatureGates`
value is read once from the command line (:meth:`FeatureGates.parse`, with
``component-base/featuregate``'s error messages) and passed down to what needs it (the API's
validation, the scheduler, taint eviction); it is a value, not a process-wide setting, so tests
and several roles in one process can each have their own.

The gates fleetlog knows, with Kubernetes' defaults and stages:

* ``TaintTolerationComparisonOperators`` (alpha since v1.35, off): the ``Gt``/``Lt`` toleration
  operators. Off, the API refuses a toleration using them (``Unsupported value``) and no matcher
  honours one already stored; on, both accept them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from core.errors import FieldError, ValidationFailed

Stage = Literal["ALPHA", "BETA", "GA", "DEPRECATED"]


@dataclass(frozen=True, slots=True)
class Feature:
    """A gate: its Kubernetes name, default, stage and what it switches."""

    name: str
    default: bool
    stage: Stage
    description: str


TAINT_TOLERATION_COMPARISON_OPERATORS: Final = "TaintTolerationComparisonOperators"

KNOWN_FEATURES: Final[Mapping[str, Feature]] = {
    feature.name: feature
    for feature in (
        Feature(
            TAINT_TOLERATION_COMPARISON_OPERATORS,
            default=False,
            stage="ALPHA",
            description="the Gt and Lt toleration operators (integer comparison of the taint's "
            "value with the toleration's)",
        ),
    )
}

_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``; None when it would fail."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


@dataclass(frozen=True)
class FeatureGates:
    """The state of every known gate: Kubernetes' defaults, changed by ``overrides``."""

    overrides: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.overrides) - set(KNOWN_FEATURES))
        if unknown:
            raise ValueError(f"unrecognized feature gate: {', '.join(unknown)}")
        object.__setattr__(self, "overrides", dict(self.overrides))

    def enabled(self, name: str) -> bool:
        """Whether gate ``name`` is on. Asking for a gate fleetlog does not know is a bug."""
        feature = KNOWN_FEATURES[name]
        return self.overrides.get(name, feature.default)

    @property
    def taint_toleration_comparison_operators(self) -> bool:
        return self.enabled(TAINT_TOLERATION_COMPARISON_OPERATORS)

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> FeatureGates:
        """``--feature-gates Name=true,Other=false`` (the option may also be given several
        times). Every problem is reported, in Kubernetes' words, plus the gates there are."""
        parts: list[str] = []
        for chunk in [text] if isinstance(text, str) else list(text or ()):
            parts += chunk.split(",")
        overrides: dict[str, bool] = {}
        problems: list[str] = []
        for part in parts:
            if not part.strip():
                continue
            name, sep, raw = part.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep:
                problems.append(f"missing bool value for {name}")
                continue
            value = _parse_bool(raw)
            if value is None:
                problems.append(
                    f'invalid value of {name}={raw}, err: strconv.ParseBool: parsing "{raw}": '
                    "invalid syntax"
                )
                continue
            if name not in KNOWN_FEATURES:
                known = ", ".join(
                    f"{f.name} ({f.stage}, default {str(f.default).lower()})"
                    for f in KNOWN_FEATURES.values()
                )
                problems.append(f"unrecognized feature gate: {name} (known gates: {known})")
                continue
            overrides[name] = value
        if problems:
            errors = [FieldError("--feature-gates", problem) for problem in problems]
            raise ValidationFailed(problems[0], field="--feature-gates", errors=errors)
        return cls(overrides)

    def __str__(self) -> str:
        """The ``--feature-gates`` value that gives this state (only what differs from the
        defaults), e.g. to start another process the same way."""
        return ",".join(f"{name}={str(on).lower()}" for name, on in sorted(self.overrides.items()))


DEFAULT_FEATURES: Final = FeatureGates()
"""Kubernetes' defaults: every alpha gate off."""
