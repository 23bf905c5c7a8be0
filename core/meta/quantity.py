"""Kubernetes resource quantities (``100m``, ``128Mi``, ``1e3``) exactly as Kubernetes reads them.

Why this exists: every request, limit, capacity and autoscaler target in a manifest is a quantity,
and operators expect fleetlog to read ``1.5Gi`` or ``0.5`` exactly as the API server would, to
round the same way (values below a nano-unit round *up*, ``Value()`` rounds up) and to print the
same canonical form back (``1.5`` cpu is stored as ``1500m``). Floats would lose exactness, so the
value is held as a :class:`fractions.Fraction`.

The reference is apimachinery ``pkg/api/resource/quantity.go`` (``ParseQuantity``,
``CanonicalizeBytes``, ``ScaledValue``). Deliberate, documented differences:

* ``ParseQuantity``'s hand-written scanner accepts a few strings with no digits at all as zero
  (``"-"``, ``"."``, ``"Mi"``, ``"e3"``). The grammar documented in the same file requires a
  number, and such strings are almost always typos, so they are rejected here.
* Inputs longer than :data:`MAX_QUANTITY_LENGTH` characters and exponents beyond
  ±:data:`MAX_EXPONENT` are rejected instead of being parsed into astronomically large numbers.
* Values whose magnitude is beyond the largest int64 (:data:`MAX_VALUE`) are refused, where
  ParseQuantity caps binary-SI ones at it silently (``9Ei`` read as 2^63-1) and keeps decimal
  ones (``1e308``) that every consumer then projects through int64 (``Value()``), overflowing:
  a pod asking for ``1e308`` cpu was scheduled as asking for none (kubernetes#128684). For the
  same reason cpu, which Kubernetes counts in int64 millicores (``MilliValue()``, the
  scheduler's ``MilliCPU``), is bounded at :data:`MAX_MILLI_VALUE` millicores by
  :func:`resource_quantity_problem`.
* Kubernetes' ``String()`` echoes the caller's text back when it looks canonical enough (so
  ``"+1"`` or ``"1.100"`` print unchanged); fleetlog always prints the canonical form, which is what
  Kubernetes prints for every value it computes itself.
* A decimal-SI value above ``999E`` keeps the ``E`` suffix (``1000E``) instead of Kubernetes'
  suffix-less output, which would change the value when read back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from typing import Final

from core.errors import InvalidQuantity

__all__ = [
    "MAX_EXPONENT",
    "MAX_MILLI_VALUE",
    "MAX_QUANTITY_LENGTH",
    "MAX_VALUE",
    "MILLI_RESOURCES",
    "Quantity",
    "QuantityFormat",
    "canonical_quantity",
    "cpu_millis",
    "memory_bytes",
    "parse_quantity",
    "resource_quantity_problem",
]

MAX_QUANTITY_LENGTH: Final = 512
"""Longest quantity string accepted (Kubernetes has no limit; nobody needs more)."""

MAX_EXPONENT: Final = 1000
"""Largest magnitude of a decimal exponent (``1e1000``) accepted."""

MAX_VALUE: Final = 2**63 - 1
"""Largest magnitude of a quantity (int64, what ``Value()`` returns and binary SI is capped at)."""

MAX_MILLI_VALUE: Final = 2**63 - 1
"""Largest magnitude, in thousandths, of a resource counted in millis (cpu)."""

MILLI_RESOURCES: Final = frozenset({"cpu", "requests.cpu", "limits.cpu"})
"""Resource names counted in thousandths (pods, quotas and nodes name cpu these ways)."""

_NANO: Final = 10**9

_EXAMPLES: Final = "must be a quantity like 100m, 0.5, 128Mi, 1G"
_SUFFIX_HELP: Final = (
    "valid suffixes: n u m k M G T P E (decimal), Ki Mi Gi Ti Pi Ei (binary), "
    "or an exponent like e3 or E-3"
)


class QuantityFormat(StrEnum):
    """How a quantity was written, which decides how it is printed back."""

    BINARY_SI = "BinarySI"
    DECIMAL_SI = "DecimalSI"
    DECIMAL_EXPONENT = "DecimalExponent"


_DECIMAL_SUFFIXES: Final[dict[str, int]] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES: Final[dict[str, int]] = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_BY_EXPONENT: Final[dict[int, str]] = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER: Final[dict[int, str]] = {p: s for s, p in _BINARY_SUFFIXES.items()}

# sign, integer digits, optional "." and fraction digits, then everything else is the suffix.
_NUMBER_RE: Final = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT_RE: Final = re.compile(r"[eE]([+-]?[0-9]+)")


def _round_away_from_zero(value: Fraction) -> int:
    """Round to an integer away from zero, as apimachinery's ``RoundUp`` does for both signs."""
    if value >= 0:
        return math.ceil(value)
    return -math.ceil(-value)


def _to_nano(value: Fraction) -> Fraction:
    """Round a value up (away from zero) to a whole number of nano-units, like ParseQuantity."""
    if (value * _NANO).denominator == 1:
        return value
    return Fraction(_round_away_from_zero(value * _NANO), _NANO)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Quantity:
    """An exact, immutable Kubernetes quantity: a value plus the format it prints in.

    ``amount`` is always a whole number of nano-units (construction rounds away from zero, as
    ParseQuantity does). Equality, ordering and hashing look at the value only, so
    ``Quantity(1024) == parse_quantity("1Ki")``.
    """

    amount: Fraction
    format: QuantityFormat = QuantityFormat.DECIMAL_SI

    def __post_init__(self) -> None:
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, int | Fraction):
            raise TypeError(
                f"Quantity amount must be an int or Fraction, not {type(amount).__name__}"
            )
        object.__setattr__(self, "amount", _to_nano(Fraction(amount)))
        object.__setattr__(self, "format", QuantityFormat(self.format))

    # --- reading the value ---------------------------------------------------------------------

    def value(self) -> int:
        """The value as an integer, rounded up (away from zero) like Kubernetes ``Value()``."""
        return _round_away_from_zero(self.amount)

    def milli_value(self) -> int:
        """The value in thousandths, rounded up (away from zero) like ``MilliValue()``."""
        return _round_away_from_zero(self.amount * 1000)

    def scaled_value(self, exponent: int) -> int:
        """``ceil(value / 10**exponent)`` (away from zero), like ``ScaledValue(exponent)``."""
        return _round_away_from_zero(self.amount / Fraction(10) ** exponent)

    def is_zero(self) -> bool:
        """True when the value is exactly zero."""
        return self.amount == 0

    def sign(self) -> int:
        """-1, 0 or 1."""
        return (self.amount > 0) - (self.amount < 0)

    # --- arithmetic (the result keeps the left operand's format, unless that one is zero) -------

    def _result_format(self, other: Quantity) -> QuantityFormat:
        return other.format if self.amount == 0 else self.format

    def __add__(self, other: object) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.amount + other.amount, self._result_format(other))

    def __radd__(self, other: object) -> Quantity:
        # Lets ``sum(quantities)`` work: sum() starts from the integer 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: object) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.amount - other.amount, self._result_format(other))

    def __neg__(self) -> Quantity:
        return Quantity(-self.amount, self.format)

    def __abs__(self) -> Quantity:
        return Quantity(abs(self.amount), self.format)

    # --- comparison ----------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount == other.amount

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount < other.amount

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount <= other.amount

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount > other.amount

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount >= other.amount

    def __hash__(self) -> int:
        return hash(self.amount)

    def __bool__(self) -> bool:
        return self.amount != 0

    # --- printing ------------------------------------------------------------------------------

    def __str__(self) -> str:
        return _canonical_text(self.amount, self.format)

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


def _canonical_text(amount: Fraction, fmt: QuantityFormat) -> str:
    """Kubernetes' ``CanonicalizeBytes``: the shortest exact text in (or near) the given format."""
    if amount == 0:
        return "0"
    if fmt is QuantityFormat.BINARY_SI:
        if -1024 < amount < 1024 or amount.denominator != 1:
            # Small or fractional binary values print as decimal SI to avoid rounding.
            fmt = QuantityFormat.DECIMAL_SI
        else:
            mantissa = amount.numerator
            power = 0
            while mantissa % 1024 == 0 and power < 6:
                mantissa //= 1024
                power += 1
            if power:
                return f"{mantissa}{_BINARY_BY_POWER[power]}"
            # No binary suffix fits ("31.25Ki" is 32000): kube's String() prints "32000", which
            # reads back as decimal, so every object kube serves from storage shows "32k".
            # Print that directly, so the canonical text is a fixed point.
            fmt = QuantityFormat.DECIMAL_SI

    # Decimal: value = mantissa * 10**exponent with exponent a multiple of 3.
    mantissa = int(amount * _NANO)  # exact: amounts are whole nano-units
    exponent = -9
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    shift = exponent % 3
    mantissa *= 10**shift
    exponent -= shift
    if fmt is QuantityFormat.DECIMAL_EXPONENT:
        return f"{mantissa}" if exponent == 0 else f"{mantissa}e{exponent}"
    if exponent > 18:
        mantissa *= 10 ** (exponent - 18)
        exponent = 18
    return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"


def _invalid(text: str, reason: str | None, field: str | None) -> InvalidQuantity:
    shown = text if len(text) <= 40 else text[:37] + "..."
    message = f'Invalid value "{shown}": {_EXAMPLES}'
    if reason:
        message += f" ({reason})"
    return InvalidQuantity(message, field=field)


@lru_cache(maxsize=4096)
def _parse_text(text: str) -> Quantity:
    """Parse one string (cached: quantities are immutable and manifests repeat the same few)."""
    if text == "":
        raise _invalid(text, "empty string", None)
    if len(text) > MAX_QUANTITY_LENGTH:
        raise _invalid(text, f"longer than {MAX_QUANTITY_LENGTH} characters", None)
    if text != text.strip():
        raise _invalid(text, "leading or trailing whitespace is not allowed", None)
    match = _NUMBER_RE.fullmatch(text)
    if match is None:  # pragma: no cover - the pattern matches every string
        raise _invalid(text, None, None)
    sign, whole, fraction, suffix = match.groups()
    fraction = fraction or ""
    if not whole and not fraction:
        raise _invalid(text, "no digits before the suffix", None)

    if suffix in _DECIMAL_SUFFIXES:
        fmt = QuantityFormat.DECIMAL_SI
        exponent = _DECIMAL_SUFFIXES[suffix]
        base = 10
    elif suffix in _BINARY_SUFFIXES:
        fmt = QuantityFormat.BINARY_SI
        exponent = _BINARY_SUFFIXES[suffix] * 10
        base = 2
    elif (exp_match := _EXPONENT_RE.fullmatch(suffix)) is not None:
        fmt = QuantityFormat.DECIMAL_EXPONENT
        exponent = int(exp_match.group(1))
        base = 10
        if abs(exponent) > MAX_EXPONENT:
            raise _invalid(text, f"exponent beyond ±{MAX_EXPONENT}", None)
    else:
        shown = suffix if len(suffix) <= 20 else suffix[:17] + "..."
        raise _invalid(text, f'unknown suffix "{shown}"; {_SUFFIX_HELP}', None)

    amount = Fraction(int(whole + fraction or "0"), 10 ** len(fraction))
    if base == 10:
        amount *= Fraction(10) ** exponent
    else:
        amount *= 2**exponent
    if sign == "-":
        amount = -amount
    amount = _to_nano(amount)
    if abs(amount) > MAX_VALUE:
        raise _too_large(text, f"must be less than or equal to {MAX_VALUE}")
    if fmt is QuantityFormat.BINARY_SI and 0 < abs(amount) < 1:
        fmt = QuantityFormat.DECIMAL_SI
    return Quantity(amount, fmt)


def _too_large(text: str, bound: str) -> InvalidQuantity:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return InvalidQuantity(
        f'Invalid value "{shown}": {bound} (quantities are counted in int64, as Kubernetes '
        "counts them)"
    )


def resource_quantity_problem(name: str, value: Quantity) -> str | None:
    """Why ``value`` cannot be an amount of resource ``name`` (None when it can): cpu is
    counted in int64 millicores, so it may not exceed :data:`MAX_MILLI_VALUE` thousandths
    (about 9.2e15 cores). Everything else is already bounded by :func:`parse_quantity`."""
    if name in MILLI_RESOURCES and abs(value.amount) * 1000 > MAX_MILLI_VALUE:
        return _too_large(str(value), f"must be less than or equal to {MAX_MILLI_VALUE}m").message
    return None


def parse_quantity(value: str | int | float | Quantity, *, field: str | None = None) -> Quantity:
    """Parse a quantity exactly as ``resource.ParseQuantity`` does (see the module notes).

    Accepts the string forms (``"100m"``, ``"1.5Gi"``, ``"1e3"``), plus integers and floats as
    they come out of YAML (``cpu: 2``, ``cpu: 0.5``). Surrounding whitespace is *not* accepted.
    Raises :class:`InvalidQuantity` (with ``field`` when given) for anything else.
    """
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool):
        raise InvalidQuantity(f"Invalid value {str(value).lower()}: {_EXAMPLES}", field=field)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQuantity(f"Invalid value {value}: {_EXAMPLES}", field=field)
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidQuantity(
            f"Invalid value of type {type(value).__name__}: {_EXAMPLES}", field=field
        )
    try:
        return _parse_text(text)
    except InvalidQuantity as err:
        if field is None:
            raise
        raise InvalidQuantity(err.message, field=field) from None


def canonical_quantity(value: str | int | float | Quantity, *, field: str | None = None) -> str:
    """Parse, then print in canonical form (``"0.5"`` -> ``"500m"``, ``"1024Mi"`` -> ``"1Gi"``)."""
    if isinstance(value, str):
        try:
            return _canonical_text_of(value)
        except InvalidQuantity as err:
            if field is None:
                raise
            raise InvalidQuantity(err.message, field=field) from None
    return str(parse_quantity(value, field=field))


@lru_cache(maxsize=4096)
def _canonical_text_of(text: str) -> str:
    return str(_parse_text(text))


def cpu_millis(quantity: Quantity | str | int | float) -> int:
    """CPU in millicores, rounded up (``"100m"`` -> 100, ``"0.5"`` -> 500, ``"1n"`` -> 1)."""
    return parse_quantity(quantity).milli_value()


def memory_bytes(quantity: Quantity | str | int | float) -> int:
    """Memory (or any byte count) in bytes, rounded up (``"128Mi"`` -> 134217728)."""
    return parse_quantity(quantity).value()


def resource_amount(name: str, value: Quantity | str | int | float) -> int:
    """A resource quantity as the integer scheduling counts in: millicores for cpu, whole
    units (bytes, pods, devices) for everything else, rounded up like Kubernetes' Value()."""
    if isinstance(value, str):
        return _amount_of_text(name == "cpu", value)
    return cpu_millis(value) if name == "cpu" else parse_quantity(value).value()


@lru_cache(maxsize=4096)
def _amount_of_text(cpu: bool, text: str) -> int:
    """:func:`resource_amount` of a string, remembered: the scheduler's model, node ledgers and
    quota charges read the same few quantities (``100m``, ``500Mi``) for every pod, and exact
    parsing (fractions) was a tenth of a scheduler replica's time. A refusal is not remembered
    (``lru_cache`` keeps results only), so every bad value is still refused."""
    quantity = parse_quantity(text)
    return quantity.milli_value() if cpu else quantity.value()
