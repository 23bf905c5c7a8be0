"""``projections.runtime.digest_of``: the digests of plain data stay what they were.

Controllers put a digest in idempotency keys (an EndpointSlice update, a ReplicaSet status)
and ``audit`` compares model digests, so a faster walk must hash the very same bytes: the
values below were computed by the first version of the function (maps sorted by the ``repr``
of their keys, tuples hashed as lists)."""

from __future__ import annotations

from typing import Any

import pytest

from projections.runtime import digest_of

CASES: list[tuple[Any, str]] = [
    ({}, "9e076ceaf246b6003d9c2680a2b4cf0bffd069805902b0b5edeebf49039fe4bd"),
    (
        {"b": [1, 2.5, None, True, b"x", ("t", {"z": 1, "a": [{}]})], "a": {"y": "é", "x": -7}},
        "68361565454ae13804152e196d94c4cdd2cbf185e610624bd2cbef241cbb2939",
    ),
    (
        {1: "one", "1": "str one", None: 0, "q'": 1, 'q"': 2, ("t", 2): 3, b"k": 4, False: 5},
        "080b25839174b710e8febffd1c60dbac83788b95b9f455906d77ef2cb3a0b44e",
    ),
    ([[], [[{"k": {}}]], "s"], "413fb5053c80f883895ceebd1d5d8acac4a83e892126cbb8381b05ea08068d7b"),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_digests_of_plain_data_are_those_of_the_first_version(data: Any, expected: str) -> None:
    assert digest_of(data) == expected


def test_key_order_does_not_change_a_digest() -> None:
    one = {"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": [1, {"b": 2, "a": 1}]}
    other = {
        "spec": [1, {"a": 1, "b": 2}],
        "metadata": {"labels": {"y": "2", "x": "1"}, "name": "a"},
    }
    assert digest_of(one) == digest_of(other)
    assert digest_of(one) != digest_of({**one, "spec": [{"a": 1, "b": 2}, 1]})
