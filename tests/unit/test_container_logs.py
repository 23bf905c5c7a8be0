"""The rules that bound a container's output (``core.pods.containerlogs``): the kubelet's
rotation settings and when a file rotates, when a file is looked at again, what shipping skips
and how it says so, and which of a container's instances keep their files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ValidationFailed
from core.pods.containerlogs import (
    RATE_HALF_LIFE_S,
    Allowance,
    ContainerLogPolicy,
    ShippingLimits,
    dropped_marker,
    flooded,
    growth_rate,
    next_check,
    plan_rotation,
    plan_shipping,
    refill,
    spend,
    stale_instances,
)

MI = 1024 * 1024


def test_the_defaults_are_the_kubelets_10mi_and_5_files() -> None:
    policy = ContainerLogPolicy.parse()
    assert (policy.max_size, policy.max_files) == (10 * MI, 5)
    assert ContainerLogPolicy() == policy
    assert policy.disk_bound == 50 * MI


@pytest.mark.parametrize(
    ("size", "files", "problem"),
    [
        ("10Mi", 1, "--container-log-max-files 1: must be greater than 1"),
        ("10Mi", 0, "--container-log-max-files 0: must be greater than 1"),
        ("0", 5, "must be greater than 0"),
        ("-1Mi", 5, "must be greater than 0"),
        ("ten", 5, "--container-log-max-size 'ten': Invalid value"),
        ("1e400", 5, "--container-log-max-size '1e400'"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_flag(size: str, files: int, problem: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        ContainerLogPolicy.parse(max_size=size, max_files=files)
    assert problem in caught.value.message


def test_a_quantity_of_any_form_is_a_size_in_bytes() -> None:
    assert ContainerLogPolicy.parse(max_size="1M", max_files=2).max_size == 1_000_000
    assert ContainerLogPolicy.parse(max_size="512Ki", max_files=2).max_size == 512 * 1024


def test_a_file_rotates_once_it_reaches_the_size_keeping_files_minus_one_rotated() -> None:
    policy = ContainerLogPolicy(max_size=100, max_files=3)
    assert plan_rotation(size=99, rotated=[], policy=policy) is None
    first = plan_rotation(size=100, rotated=[], policy=policy)
    assert first is not None and (first.keep_from, first.size, first.remove) == (0, 100, ())
    # Two rotated files kept with the live one: the oldest goes as the third is made.
    assert plan_rotation(size=120, rotated=[1], policy=policy).remove == ()  # type: ignore[union-attr]
    third = plan_rotation(size=120, rotated=[1, 2], policy=policy)
    assert third is not None and third.remove == (1,)
    # An older table (a smaller max-files than before) is trimmed at once.
    assert plan_rotation(size=100, rotated=[4, 5, 6, 7], policy=policy).remove == (4, 5, 6)  # type: ignore[union-attr]


def test_a_file_found_beyond_the_size_keeps_only_its_newest_max_size_bytes() -> None:
    policy = ContainerLogPolicy(max_size=100, max_files=2)
    rotation = plan_rotation(size=150, rotated=[3], policy=policy)
    assert rotation is not None and rotation.copies
    assert (rotation.keep_from, rotation.size, rotation.remove) == (50, 150, (3,))


def test_a_flooded_file_is_emptied_without_a_copy_and_the_rotated_files_stay() -> None:
    policy = ContainerLogPolicy(max_size=100, max_files=3)
    rotation = plan_rotation(size=200, rotated=[1, 2], policy=policy)
    assert rotation is not None and not rotation.copies
    assert (rotation.keep_from, rotation.size, rotation.remove) == (200, 200, ())
    assert plan_rotation(size=10_000, rotated=[1, 2, 3], policy=policy).remove == (1,)  # type: ignore[union-attr]


LIMITS = ShippingLimits(rate=1_000, burst=4_000, backlog=10_000)


def test_shipping_takes_what_the_budget_allows_from_where_it_stopped() -> None:
    plan = plan_shipping(position=500, end=3_000, oldest=0, budget=1_000, limits=LIMITS)
    assert (plan.start, plan.until, plan.dropped) == (500, 1_500, 0)
    plan = plan_shipping(position=500, end=800, oldest=0, budget=1_000, limits=LIMITS)
    assert (plan.start, plan.until, plan.dropped) == (500, 800, 0)


def test_a_backlog_beyond_the_limit_skips_to_the_newest_output() -> None:
    plan = plan_shipping(position=0, end=123_456_789, oldest=0, budget=1_000, limits=LIMITS)
    assert plan.start == 123_456_789 - 10_000
    assert plan.dropped == 123_446_789
    assert plan.until == plan.start + 1_000


def test_output_rotated_away_before_it_was_shipped_is_skipped() -> None:
    plan = plan_shipping(position=100, end=5_000, oldest=2_000, budget=500, limits=LIMITS)
    assert (plan.start, plan.until, plan.dropped) == (2_000, 2_500, 1_900)


def test_the_allowance_refills_at_the_rate_up_to_the_burst() -> None:
    full = refill(None, now=10.0, limits=LIMITS)
    assert full == Allowance(4_000.0, 10.0)
    spent = spend(full, 3_500)
    assert refill(spent, now=10.5, limits=LIMITS) == Allowance(1_000.0, 10.5)
    assert refill(spent, now=100.0, limits=LIMITS).tokens == 4_000.0
    assert refill(spent, now=9.0, limits=LIMITS).tokens == 500.0  # a clock step back adds none


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ShippingLimits(rate=0)


def test_the_marker_is_a_line_of_its_own() -> None:
    assert dropped_marker(123456789) == b"[fleetlog: 123456789 bytes of output dropped]\n"
    assert dropped_marker(5, mid_line=True) == b"\n[fleetlog: 5 bytes of output dropped]\n"


def test_the_newest_two_instances_of_a_container_keep_their_files() -> None:
    assert stale_instances([0]) == []
    assert stale_instances([0, 1]) == []
    assert stale_instances([3, 0, 2, 1]) == [0, 1]
    assert stale_instances([5, 7, 6], keep=1) == [5, 6]


def test_a_file_is_looked_at_again_when_it_would_reach_the_size() -> None:
    policy = ContainerLogPolicy(max_size=10 * MI, max_files=5)
    at_a_gigabyte = next_check(size=0, rate=1e9, policy=policy, shortest=0.002, longest=0.05)
    assert at_a_gigabyte == pytest.approx(10 * MI / 1e9)  # ~10.5 ms: when it gets there
    half_way = next_check(size=5 * MI, rate=1e9, policy=policy, shortest=0.002, longest=0.05)
    assert half_way == pytest.approx(at_a_gigabyte / 2)
    # Never sooner than the shortest (a flood), never later than the longest (quiet).
    assert next_check(size=0, rate=1e12, policy=policy, shortest=0.002, longest=0.05) == 0.002
    assert next_check(size=11 * MI, rate=1e9, policy=policy, shortest=0.002, longest=0.05) == 0.002
    assert next_check(size=0, rate=1e3, policy=policy, shortest=0.002, longest=0.05) == 0.05
    assert next_check(size=0, rate=0.0, policy=policy, shortest=0.002, longest=0.05) == 0.05


@given(
    size=st.integers(min_value=0, max_value=1 << 40),
    rate=st.floats(min_value=0, max_value=1e13, allow_nan=False),
)
def test_the_next_look_is_always_within_its_limits(size: int, rate: float) -> None:
    policy = ContainerLogPolicy(max_size=MI, max_files=2)
    wait = next_check(size=size, rate=rate, policy=policy, shortest=0.002, longest=0.05)
    assert 0.002 <= wait <= 0.05


def test_the_rate_remembers_the_fastest_recent_growth() -> None:
    flood = growth_rate(0.0, grown=2_000_000, elapsed=0.002)
    assert flood == pytest.approx(1e9)
    # A pause (the kernel holding a writer that dirties pages too fast) keeps it hot ...
    assert growth_rate(flood, grown=0, elapsed=0.2) == pytest.approx(1e9 * 0.5**0.2)
    # ... and a second without such growth halves it; faster growth is taken at once.
    assert growth_rate(flood, grown=0, elapsed=RATE_HALF_LIFE_S) == pytest.approx(5e8)
    assert growth_rate(flood, grown=4_000_000, elapsed=0.002) == pytest.approx(2e9)
    assert growth_rate(flood, grown=10, elapsed=0.0) == flood  # no time: nothing learnt
    # One write just after a look is spread over the resolution, not a flood.
    burst = growth_rate(0.0, grown=4096, elapsed=0.00001, resolution=0.002)
    assert burst == pytest.approx(2_048_000) and not flooded(burst)


def test_a_writer_at_64_mib_a_second_floods_and_its_file_is_not_copied() -> None:
    policy = ContainerLogPolicy(max_size=10 * MI, max_files=5)
    assert flooded(1e9) and flooded(64 * MI)
    assert not flooded(64 * MI - 1) and not flooded(0.0)
    copied = plan_rotation(size=11 * MI, rotated=[1, 2, 3, 4], policy=policy)
    assert copied is not None and copied.copies and copied.remove == (1,)
    emptied = plan_rotation(size=11 * MI, rotated=[1, 2, 3, 4], policy=policy, flood=True)
    assert emptied is not None and not emptied.copies and emptied.remove == ()
    assert plan_rotation(size=9 * MI, rotated=[], policy=policy, flood=True) is None
