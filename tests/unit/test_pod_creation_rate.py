"""The per-namespace ceiling on pods created by controllers: a burst, then the rate."""

from __future__ import annotations

import pytest

from core.workloads.creation_rate import BURST_REPLICAS, PodCreationRate

S = 1_000_000_000


def test_a_burst_then_the_rate_per_namespace() -> None:
    rate = PodCreationRate(per_second=100, burst=BURST_REPLICAS)
    assert rate.take("a", 1_000_000_000, 0) == 500
    assert rate.take("a", 10, 0) == 0
    assert rate.next_at_ns("a", 0) == S // 100
    assert rate.take("a", 1_000, S // 2) == 50
    assert rate.take("b", 1_000, S // 2) == 500  # another namespace has its own bucket


def test_tokens_never_exceed_the_burst_and_refused_pods_are_given_back() -> None:
    rate = PodCreationRate(per_second=10, burst=5)
    assert rate.take("a", 3, 0) == 3
    rate.give_back("a", 3, 0)
    assert rate.take("a", 100, 3600 * S) == 5


@pytest.mark.parametrize(("per_second", "burst"), [(0, 1), (-1, 5), (1, 0)])
def test_a_rate_that_would_never_create_is_refused(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError):
        PodCreationRate(per_second=per_second, burst=burst)
