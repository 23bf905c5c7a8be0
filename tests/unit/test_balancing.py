"""The five balancing policies and ClientIP affinity behave as named."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.services.balancing import (
    POLICY_ANNOTATION,
    Balancer,
    ClientAffinity,
    Endpoint,
    HashRing,
    Policy,
    policy_of,
    policy_problem,
)

PODS = [Endpoint(f"100.96.0.{i}", 8080) for i in range(2, 6)]


def balancer(policy: Policy, endpoints: list[Endpoint] = PODS, seed: int = 7) -> Balancer:
    chosen = Balancer(policy, rng=random.Random(seed))
    chosen.update(endpoints)
    return chosen


def test_the_annotation_names_the_policy_and_anything_else_is_refused() -> None:
    assert policy_of(None) is Policy.ROUND_ROBIN
    assert policy_of({POLICY_ANNOTATION: "RING_HASH"}) is Policy.RING_HASH
    assert policy_problem({POLICY_ANNOTATION: "LEAST_REQUEST"}) is None
    assert policy_problem({}) is None
    assert policy_problem({POLICY_ANNOTATION: "round_robin"}) == (
        'Unsupported value "round_robin": supported values: "ROUND_ROBIN", "LEAST_REQUEST", '
        '"RING_HASH", "RANDOM", "PASSTHROUGH"'
    )


def test_round_robin_takes_each_endpoint_in_turn() -> None:
    picker = balancer(Policy.ROUND_ROBIN)
    picks = [picker.pick(client="c") for _ in range(8)]
    assert Counter(picks) == {endpoint: 2 for endpoint in PODS}
    assert picks[:4] == picks[4:]  # the same cycle, from wherever it started


def test_round_robin_keeps_going_when_an_endpoint_leaves() -> None:
    picker = balancer(Policy.ROUND_ROBIN)
    picker.pick(client="c")
    picker.update(PODS[:3])
    assert set(picker.pick(client="c") for _ in range(3)) == set(PODS[:3])


def test_least_request_prefers_the_idle_endpoint() -> None:
    busy, idle = PODS[0], PODS[1]
    picker = balancer(Policy.LEAST_REQUEST, [busy, idle])
    picker.opened(busy)
    assert {picker.pick(client="c") for _ in range(50)} == {idle}
    picker.closed(busy)
    assert {picker.pick(client="c") for _ in range(50)} == {busy, idle}


def test_least_request_among_many_avoids_the_loaded_ones() -> None:
    picker = balancer(Policy.LEAST_REQUEST)
    for endpoint in PODS[:3]:
        for _ in range(5):
            picker.opened(endpoint)
    picks = Counter(picker.pick(client="c") for _ in range(2000))
    # The idle one wins every draw it is in: half of them with four endpoints, two drawn.
    assert picks[PODS[3]] > 900


def test_ring_hash_sends_a_key_always_to_the_same_endpoint() -> None:
    picker = balancer(Policy.RING_HASH)
    for client in (f"10.1.0.{i}" for i in range(50)):
        first = picker.pick(client=client)
        assert all(picker.pick(client=client) == first for _ in range(5))
    # Rebuilt from scratch in another order, in another process: the same answers.
    again = balancer(Policy.RING_HASH, list(reversed(PODS)), seed=99)
    assert all(picker.pick(client=f"k{i}") == again.pick(client=f"k{i}") for i in range(200))


def test_removing_an_endpoint_remaps_only_the_keys_it_held() -> None:
    keys = [f"client-{i}" for i in range(5000)]
    before = HashRing(PODS)
    after = HashRing(PODS[1:])
    moved = [k for k in keys if before.lookup(k) != after.lookup(k)]
    assert moved and all(before.lookup(k) == PODS[0] for k in moved)
    held = sum(1 for k in keys if before.lookup(k) == PODS[0])
    assert len(moved) == held
    # Each endpoint holds a fair share (within a third of the mean of 1,250).
    shares = Counter(before.lookup(k) for k in keys)
    assert all(abs(count - 1250) < 420 for count in shares.values())


def test_random_reaches_every_endpoint_evenly() -> None:
    picker = balancer(Policy.RANDOM)
    picks = Counter(picker.pick(client="c") for _ in range(4000))
    assert set(picks) == set(PODS) and all(800 < n < 1200 for n in picks.values())


def test_passthrough_goes_to_the_original_destination() -> None:
    picker = balancer(Policy.PASSTHROUGH)
    elsewhere = Endpoint("100.96.3.9", 9090)
    assert picker.pick(client="c", original=elsewhere) == elsewhere
    assert picker.pick(client="c") is None


@pytest.mark.parametrize("policy", [p for p in Policy if p is not Policy.PASSTHROUGH])
def test_no_ready_endpoint_means_no_pick(policy: Policy) -> None:
    assert balancer(policy, []).pick(client="c") is None


def test_client_affinity_holds_until_timeout_or_the_endpoint_leaves() -> None:
    affinity = ClientAffinity(timeout_seconds=10)
    affinity.remember("10.0.0.1", PODS[0], now=100.0)
    assert affinity.remembered("10.0.0.1", ready=PODS, now=105.0) == PODS[0]
    affinity.remember("10.0.0.1", PODS[0], now=105.0)
    assert affinity.remembered("10.0.0.1", ready=PODS, now=114.0) == PODS[0]  # renewed at 105
    assert affinity.remembered("10.0.0.1", ready=PODS, now=116.0) is None
    affinity.remember("10.0.0.2", PODS[1], now=0.0)
    assert affinity.remembered("10.0.0.2", ready=PODS[2:], now=1.0) is None  # not ready
    affinity.remember("10.0.0.3", PODS[1], now=0.0)
    affinity.expire(now=20.0)
    assert affinity.remembered("10.0.0.3", ready=PODS, now=20.0) is None
