"""Quantities must read, round and print exactly as Kubernetes' resource.Quantity does.

Expected values were checked against apimachinery pkg/api/resource (ParseQuantity,
CanonicalizeBytes, ScaledValue) and its test tables.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.errors import InvalidQuantity, ValidationFailed
from core.meta.quantity import (
    Quantity,
    QuantityFormat,
    canonical_quantity,
    cpu_millis,
    memory_bytes,
    parse_quantity,
    resource_quantity_problem,
)

BIN = QuantityFormat.BINARY_SI
DEC = QuantityFormat.DECIMAL_SI
EXP = QuantityFormat.DECIMAL_EXPONENT


@pytest.mark.parametrize(
    ("text", "amount", "fmt", "canonical"),
    [
        # the everyday forms
        ("100m", Fraction(1, 10), DEC, "100m"),
        ("0.5", Fraction(1, 2), DEC, "500m"),
        ("1.5", Fraction(3, 2), DEC, "1500m"),
        ("128Mi", 128 * 2**20, BIN, "128Mi"),
        ("1.5Gi", 3 * 2**29, BIN, "1536Mi"),
        ("1G", 10**9, DEC, "1G"),
        ("1000", 1000, DEC, "1k"),
        ("1000M", 10**9, DEC, "1G"),
        ("1024Mi", 2**30, BIN, "1Gi"),
        ("-1", -1, DEC, "-1"),
        ("0", 0, DEC, "0"),
        ("0Ki", 0, BIN, "0"),
        # decimal point forms
        ("1.", 1, DEC, "1"),
        (".5", Fraction(1, 2), DEC, "500m"),
        ("1.G", 10**9, DEC, "1G"),
        ("+.5", Fraction(1, 2), DEC, "500m"),
        ("100.035k", 100035, DEC, "100035"),
        ("0.0005k", Fraction(1, 2), DEC, "500m"),
        # exponents
        ("1e3", 1000, EXP, "1e3"),
        ("1E-3", Fraction(1, 1000), EXP, "1e-3"),
        ("1.2e3", 1200, EXP, "1200"),
        ("1.3E+6", 1_300_000, EXP, "1300e3"),
        ("1E", 10**18, DEC, "1E"),  # a bare E is the exa suffix, not an exponent
        ("9E", 9 * 10**18, DEC, "9E"),
        # rounding up to whole nano-units
        ("3.001n", Fraction(4, 10**9), DEC, "4n"),
        ("1.1E-9", Fraction(2, 10**9), EXP, "2e-9"),
        ("0.00000012345", Fraction(124, 10**9), DEC, "124n"),
        ("-0.5n", Fraction(-1, 10**9), DEC, "-1n"),
        # fractional binary values stay binary when whole, print as decimal otherwise
        ("0.5Mi", 512 * 1024, BIN, "512Ki"),
        ("0.5Ki", 512, BIN, "512"),
        ("100.035Ki", Fraction(10243584, 100), BIN, "102435840m"),
        (".001Ki", Fraction(1024, 1000), BIN, "1024m"),
        ("0.000000000001Ki", Fraction(2, 10**9), DEC, "2n"),
        # the largest int64 is the largest quantity
        ("9223372036854775807", 2**63 - 1, DEC, "9223372036854775807"),
        ("7Ei", 7 * 2**60, BIN, "7Ei"),
    ],
)
def test_parse_matches_kubernetes(text: str, amount: Fraction | int, fmt, canonical: str):
    q = parse_quantity(text)
    assert q.amount == amount
    assert q.format is fmt
    assert str(q) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "1 Mi",
        "1mi",
        "1K",
        "1Ki ",
        "1e",
        "1.1.M",
        "1+1.0M",
        "0.1am",
        "aoeu",
        ".5i",
        "-3.01e-",
        "1e1.5",
        "1,5",
        "\uff11",  # a full-width digit is not a digit here
        "1e999999",
    ],
)
def test_invalid_strings_are_rejected_with_an_example(text: str):
    with pytest.raises(InvalidQuantity) as info:
        parse_quantity(text)
    assert "must be a quantity like 100m, 0.5, 128Mi, 1G" in info.value.message
    assert isinstance(info.value, ValidationFailed)


@pytest.mark.parametrize("text", ["Mi", "-", ".", "e3", "+"])
def test_strings_without_digits_are_rejected_although_kubernetes_reads_them_as_zero(text: str):
    with pytest.raises(InvalidQuantity, match="no digits"):
        parse_quantity(text)


def test_unknown_suffix_message_lists_the_valid_ones():
    with pytest.raises(InvalidQuantity) as info:
        parse_quantity("1K")
    assert '"1K"' in info.value.message
    assert 'unknown suffix "K"' in info.value.message
    assert "Ki Mi Gi" in info.value.message


def test_field_is_attached_when_given():
    with pytest.raises(InvalidQuantity) as info:
        parse_quantity("lots", field="spec.containers[0].resources.limits.cpu")
    assert info.value.field == "spec.containers[0].resources.limits.cpu"


def test_numbers_from_yaml_are_accepted():
    assert str(parse_quantity(2)) == "2"
    assert str(parse_quantity(0.5)) == "500m"
    assert str(parse_quantity(0.1)) == "100m"
    assert parse_quantity(1e-05).amount == Fraction(1, 100000)
    assert parse_quantity(10**18).value() == 10**18
    with pytest.raises(InvalidQuantity, match="must be less than or equal to 9223372036854775807"):
        parse_quantity(10**30)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, None, [1]])
def test_non_quantities_are_rejected(value: object):
    with pytest.raises(InvalidQuantity):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value", "milli"),
    [
        ("100m", 1, 100),
        ("1", 1, 1000),
        ("1.5", 2, 1500),
        ("1n", 1, 1),
        ("1500u", 1, 2),
        ("9.01", 10, 9010),
        ("128Mi", 134217728, 134217728000),
        # like Value()/MilliValue() on the int64 path: rounded away from zero
        ("-9.01", -10, -9010),
        ("-1n", -1, -1),
    ],
)
def test_value_and_milli_value_round_up(text: str, value: int, milli: int):
    q = parse_quantity(text)
    assert q.value() == value
    assert q.milli_value() == milli


def test_scaled_value_rounds_up():
    assert parse_quantity("1").scaled_value(-3) == 1000
    assert parse_quantity("1500").scaled_value(3) == 2
    assert parse_quantity("1Gi").scaled_value(6) == 1074


def test_cpu_and_memory_helpers():
    assert cpu_millis("100m") == 100
    assert cpu_millis("0.5") == 500
    assert cpu_millis(2) == 2000
    assert cpu_millis("1n") == 1
    assert cpu_millis(parse_quantity("1.5")) == 1500
    assert memory_bytes("128Mi") == 128 * 1024 * 1024
    assert memory_bytes("1G") == 10**9
    assert memory_bytes("0.5") == 1
    assert memory_bytes("1.5Ki") == 1536


def test_equality_ordering_and_hash_look_at_the_value_only():
    assert parse_quantity("1Ki") == parse_quantity("1024")
    assert parse_quantity("1") == parse_quantity("1000m")
    assert parse_quantity("1e3") == parse_quantity("1k")
    assert hash(parse_quantity("1Ki")) == hash(parse_quantity("1024"))
    assert len({parse_quantity("1"), parse_quantity("1000m"), parse_quantity("1.0")}) == 1
    assert parse_quantity("100m") < parse_quantity("1") <= parse_quantity("1000m")
    assert parse_quantity("1Gi") > parse_quantity("1G") >= parse_quantity("1000M")
    assert sorted(parse_quantity(s) for s in ["1Gi", "1", "500m", "1G"]) == [
        parse_quantity("500m"),
        parse_quantity("1"),
        parse_quantity("1G"),
        parse_quantity("1Gi"),
    ]
    assert parse_quantity("1") != 1  # a quantity is not a number


def test_arithmetic_keeps_the_left_format_unless_it_is_zero():
    assert str(parse_quantity("1Ki") + parse_quantity("1")) == "1025"
    assert str(parse_quantity("1Gi") + parse_quantity("1Gi")) == "2Gi"
    assert (parse_quantity("1Gi") + parse_quantity("1G")).format is BIN
    assert (parse_quantity("0") + parse_quantity("1Ki")).format is BIN
    assert str(parse_quantity("0") + parse_quantity("1Ki")) == "1Ki"
    assert (parse_quantity("0") - parse_quantity("1Ki")).format is BIN
    assert str(parse_quantity("1") - parse_quantity("1500m")) == "-500m"
    assert str(-parse_quantity("1Mi")) == "-1Mi"
    assert str(sum([parse_quantity("100m"), parse_quantity("250m")])) == "350m"


def test_quantity_is_immutable():
    q = parse_quantity("1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.amount = Fraction(2)  # type: ignore[misc]


def test_constructor_rounds_to_nano_units_away_from_zero():
    assert Quantity(Fraction(1, 10**10)).amount == Fraction(1, 10**9)
    assert Quantity(Fraction(-1, 10**10)).amount == Fraction(-1, 10**9)
    assert str(Quantity(1536 * 1024**2, BIN)) == "1536Mi"
    assert repr(Quantity(Fraction(3, 2))) == "Quantity('1500m')"


def test_decimal_values_beyond_exa_keep_the_exa_suffix():
    # Only arithmetic (a sum of quotas, say) can make one: parsing refuses them.
    assert str(Quantity(10**21)) == "1000E"
    assert str(Quantity(12 * 10**18)) == "12E"


@pytest.mark.parametrize(
    "text",
    ["1e308", "99999999999999999999999Ei", "9Ei", "12E", "9223372036854775808", "-1e19"],
)
def test_quantities_beyond_int64_are_refused_where_kubernetes_would_overflow(text: str):
    with pytest.raises(InvalidQuantity) as info:
        parse_quantity(text)
    assert info.value.message == (
        f'Invalid value "{text}": must be less than or equal to 9223372036854775807 '
        "(quantities are counted in int64, as Kubernetes counts them)"
    )


def test_cpu_is_bounded_in_int64_millicores():
    assert resource_quantity_problem("cpu", parse_quantity("9223372036854775807m")) is None
    assert resource_quantity_problem("memory", parse_quantity("1e16")) is None
    for name in ("cpu", "requests.cpu", "limits.cpu"):
        assert resource_quantity_problem(name, parse_quantity("1e16")) == (
            'Invalid value "10e15": must be less than or equal to 9223372036854775807m '
            "(quantities are counted in int64, as Kubernetes counts them)"
        )


def test_canonical_quantity():
    assert canonical_quantity("0.5") == "500m"
    assert canonical_quantity("2048Ki") == "2Mi"
    assert canonical_quantity(1) == "1"


# --- properties -------------------------------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=0, max_size=12)
_suffix = st.sampled_from(
    ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
) | st.builds(
    lambda e, sign, n: f"{e}{sign}{n}",
    st.sampled_from(["e", "E"]),
    st.sampled_from(["", "+", "-"]),
    st.integers(min_value=0, max_value=40),
)


@st.composite
def quantity_strings(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "+", "-"]))
    whole = draw(_digits)
    point = draw(st.booleans())
    fraction = draw(_digits) if point else ""
    if not whole and not fraction:
        whole = "0"
    return f"{sign}{whole}{'.' if point else ''}{fraction}{draw(_suffix)}"


def _parsed_within_int64(text: str) -> Quantity | None:
    """The quantity, or None when it is refused for being beyond int64 (and only then)."""
    try:
        return parse_quantity(text)
    except InvalidQuantity as err:
        assert "must be less than or equal to 9223372036854775807 " in err.message
        return None


@given(quantity_strings())
def test_printed_form_parses_back_to_an_equal_value(text: str):
    q = _parsed_within_int64(text)
    if q is None:
        return
    again = parse_quantity(str(q))
    assert again == q
    assert str(again) == str(q)  # the canonical form is a fixed point


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(list(QuantityFormat)))
def test_any_nano_multiple_prints_and_parses_back(nanos: int, fmt: QuantityFormat):
    q = Quantity(Fraction(nanos, 10**9), fmt)
    assert parse_quantity(str(q)) == q


@given(st.text(max_size=30))
def test_arbitrary_text_either_parses_or_raises_invalid_quantity(text: str):
    try:
        q = parse_quantity(text)
    except InvalidQuantity:
        return
    assert parse_quantity(str(q)) == q


@given(quantity_strings(), quantity_strings())
def test_addition_and_subtraction_are_exact(a: str, b: str):
    qa, qb = _parsed_within_int64(a), _parsed_within_int64(b)
    assume(qa is not None and qb is not None)
    assert qa is not None and qb is not None
    assert (qa + qb).amount == qa.amount + qb.amount
    assert (qa + qb) - qb == qa


def test_a_binary_quantity_no_binary_suffix_fits_prints_as_kube_serves_it() -> None:
    # kube's String() of "31.25Ki" is "32000", which reads back as decimal: every object kube
    # serves from storage shows "32k". The canonical text must be a fixed point (hypothesis
    # found the pod that did not round-trip).
    from core.meta.quantity import canonical_quantity

    assert canonical_quantity("31.25Ki") == "32k"
    assert canonical_quantity(canonical_quantity("31.25Ki")) == "32k"
    assert canonical_quantity("1.5Ki") == "1536"
    assert canonical_quantity("1536Ki") == "1536Ki"
