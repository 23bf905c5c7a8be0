"""What a label selector means, and Go's integer reading of label values.

Why this exists: a label selector picks a workload's pods, a spread constraint's peers, a
disruption budget's pods and a service's endpoints; Kubernetes gives it one meaning
(``matchLabels`` and ``matchExpressions`` ANDed; In, NotIn, Exists, DoesNotExist), which lives
here once. :class:`Selector` is apimachinery's ``labels.Selector``: a selector compiled from the
stored manifest (``metav1.LabelSelectorAsSelector``), cheap enough for the scheduler's inner
loop and free of pydantic, so the command line and the read models can use it too. The schema
that validates a selector a user sends is :class:`core.meta.types.LabelSelector`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from core.errors import ValidationFailed

_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def parse_int64(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 10, 64)``: None when it would fail (how the ``Gt``/``Lt``
    operators of node selectors and tolerations read a label or taint value)."""
    if not _INT64_RE.fullmatch(text):
        return None
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


SET_OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})

Requirement = tuple[str, str, frozenset[str]]
"""``(key, operator, values)``."""


def set_operator_matches(
    op: str, key: str, values: frozenset[str], labels: Mapping[str, str]
) -> bool:
    """In / NotIn / Exists / DoesNotExist on a label map; any other operator does not match."""
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


class Selector:
    """A compiled ``metav1.LabelSelector``: requirements ANDed.

    ``None`` in a manifest means "matches nothing" (``LabelSelectorAsSelector(nil)``) and ``{}``
    means "matches everything"; use :meth:`from_manifest` to get that right.
    """

    __slots__ = ("nothing", "requirements")

    def __init__(self, requirements: tuple[Requirement, ...] = (), nothing: bool = False) -> None:
        self.requirements = requirements
        self.nothing = nothing

    @classmethod
    def from_manifest(
        cls, raw: Mapping[str, Any] | None, *, extra: Iterable[Requirement] = ()
    ) -> Selector:
        """Compile a selector; ``extra`` requirements are ANDed (matchLabelKeys merging)."""
        if raw is None:
            return NOTHING
        reqs: list[Requirement] = [
            (key, "In", frozenset((value,)))
            for key, value in (raw.get("matchLabels") or {}).items()
        ]
        for expr in raw.get("matchExpressions") or ():
            reqs.append((expr["key"], expr["operator"], frozenset(expr.get("values") or ())))
        reqs.extend(extra)
        return cls(tuple(reqs))

    @property
    def empty(self) -> bool:
        """No requirement at all: matches everything (``{}``)."""
        return not self.nothing and not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        for key, op, values in self.requirements:
            if not set_operator_matches(op, key, values, labels):
                return False
        return True

    def __repr__(self) -> str:
        return "Selector(NOTHING)" if self.nothing else f"Selector({self.requirements})"


EVERYTHING: Final = Selector()
NOTHING: Final = Selector(nothing=True)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a stored selector of an owner (a replica set's, a service's) matches ``labels``.
    An empty selector matches nothing here: Kubernetes refuses one where an owner needs it, and
    an owner never selects everything."""
    compiled = Selector.from_manifest(selector)
    return not compiled.empty and compiled.matches(labels)


_SELECTOR_KEY: Final = r"[A-Za-z0-9_./-]+"
_SELECTOR_VALUE: Final = r"[A-Za-z0-9_.-]*"
_EQUALITY_RE: Final = re.compile(rf"\s*({_SELECTOR_KEY})\s*(==|!=|=)\s*({_SELECTOR_VALUE})\s*")
_SET_RE: Final = re.compile(
    rf"\s*({_SELECTOR_KEY})\s+(in|notin)\s*\(\s*({_SELECTOR_VALUE}(?:\s*,\s*{_SELECTOR_VALUE})*)\s*\)\s*"
)
_EXISTS_RE: Final = re.compile(rf"\s*(!?)\s*({_SELECTOR_KEY})\s*")


def _split_requirements(text: str) -> list[str]:
    """Split on the commas that separate requirements, not those inside ``in (a, b)``."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def parse_selector_text(text: str) -> Selector:
    """A selector written as ``kubectl -l`` takes it (apimachinery's ``labels.Parse``):
    ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``, joined by
    commas. An empty text selects everything; anything else is a ValidationFailed naming the
    part at fault."""
    if not text.strip():
        return EVERYTHING
    reqs: list[Requirement] = []
    for part in _split_requirements(text):
        if equality := _EQUALITY_RE.fullmatch(part):
            key, op, value = equality.groups()
            reqs.append((key, "NotIn" if op == "!=" else "In", frozenset((value,))))
        elif in_set := _SET_RE.fullmatch(part):
            key, op, values = in_set.groups()
            chosen = frozenset(v.strip() for v in values.split(","))
            reqs.append((key, "In" if op == "in" else "NotIn", chosen))
        elif exists := _EXISTS_RE.fullmatch(part):
            bang, key = exists.groups()
            reqs.append((key, "DoesNotExist" if bang else "Exists", frozenset()))
        else:
            raise ValidationFailed(
                f"unable to parse requirement {part.strip()!r} of selector {text!r}: expected "
                "key=value, key!=value, key in (v1,v2), key notin (v1,v2), key or !key",
                field="selector",
            )
    return Selector(tuple(reqs))
