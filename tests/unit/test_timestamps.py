"""Condition stamps: ``format_stamp`` remembers recent seconds, and gives exactly what formatting
the instant with ``datetime`` gives, a hair before the next second included."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

import core.meta.timestamps as timestamps
from core.meta.aggregate import timestamp_from_ns
from core.meta.timestamps import format_stamp, parse_stamp, stamp_of

SECOND = 1_795_664_444 * 1_000_000_000  # 2026-11-26T03:40:44Z


def by_datetime(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_instants_of_one_second_share_its_stamp() -> None:
    first = format_stamp(SECOND + 500_000_000)
    assert first == "2026-11-26T03:40:44Z"
    assert format_stamp(SECOND + 20_000) is first  # remembered, not formatted again
    assert format_stamp(SECOND + 999_000_000) == first


def test_an_instant_a_hair_before_the_next_second_is_rounded_into_it_as_datetime_does() -> None:
    format_stamp(SECOND + 1)  # the second is remembered ...
    for within in (999_999_499, 999_999_500, 999_999_999):
        # ... but float seconds rounded to microseconds carry into the next one
        assert format_stamp(SECOND + within) == by_datetime(SECOND + within)
    assert format_stamp(SECOND + 999_999_999) == "2026-11-26T03:40:45Z"
    assert format_stamp(SECOND) == format_stamp(SECOND + 9_999) == "2026-11-26T03:40:44Z"


def test_the_remembered_seconds_are_bounded() -> None:
    for second in range(3 * timestamps._STAMPS_KEPT):
        format_stamp(SECOND + second * 1_000_000_000 + 1_000_000)
    assert len(timestamps._STAMPS) <= timestamps._STAMPS_KEPT


@given(
    st.one_of(
        st.integers(0, 4_000_000_000 * 1_000_000_000),
        st.integers(1_700_000_000, 1_900_000_000).flatmap(
            lambda s: st.integers(-20_000, 20_000).map(lambda d: s * 1_000_000_000 + d)
        ),
    )
)
def test_format_stamp_is_the_datetime_stamp(ns: int) -> None:
    format_stamp(ns - ns % 1_000_000_000 + 500_000_000)  # whatever its second holds already
    assert format_stamp(ns) == by_datetime(ns)
    assert format_stamp(ns) == stamp_of(timestamp_from_ns(ns))


def test_a_stamp_reads_back_as_its_whole_second() -> None:
    assert parse_stamp(format_stamp(SECOND + 700_000_000)) == SECOND


@given(
    st.datetimes(timezones=st.one_of(st.just(UTC), st.timezones())),
    st.integers(0, 3),
)
def test_stamp_of_remembers_exactly_what_strftime_writes(at: datetime, repeat: int) -> None:
    for _ in range(repeat + 1):  # the first call may format, the others are remembered
        assert stamp_of(at) == at.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_stamp_of_remembers_a_bounded_number_of_seconds() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for second in range(3 * timestamps._STAMPS_KEPT):
        stamp_of(datetime.fromtimestamp(base + second, tz=UTC))
    assert len(timestamps._DATETIME_STAMPS) <= timestamps._STAMPS_KEPT
