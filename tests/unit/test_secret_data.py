"""Secret values are sealed per secret and shredded with their key (``core.access.secretdata``):
the clear value appears nowhere in what is stored, a sealed value opens only in its own secret
under its own key, and without the data key nothing opens."""

from __future__ import annotations

import itertools
import os

import pytest

from core.access.secretdata import (
    SecretUnreadable,
    is_sealed,
    open_sealed,
    redacted,
    seal,
    unwrap_data_key,
    wrap_data_key,
)

CLUSTER_KEY = os.urandom(32)
DATA_KEY = os.urandom(32)
WHERE = {"namespace": "shop", "name": "db", "uid": "uid-1"}
_counter = itertools.count()


def nonce() -> bytes:
    return next(_counter).to_bytes(12, "big")


def test_values_are_sealed_and_open_again_in_their_own_secret() -> None:
    values = {"DB_PASSWORD": b"hunter2-correct-horse", "user": b"app"}
    sealed = seal(values, data_key=DATA_KEY, nonce=nonce, **WHERE)
    assert sorted(sealed) == ["DB_PASSWORD", "user"]
    assert all(is_sealed(v) for v in sealed.values())
    stored = repr(sealed).encode()
    assert b"hunter2" not in stored and b"app'" not in stored
    assert open_sealed(sealed, data_key=DATA_KEY, **WHERE) == values
    assert redacted(sealed) == {
        "DB_PASSWORD": "<sealed, 21 bytes>",
        "user": "<sealed, 3 bytes>",
    }


def test_the_same_value_seals_differently_each_time() -> None:
    first = seal({"k": b"v"}, data_key=DATA_KEY, nonce=nonce, **WHERE)
    second = seal({"k": b"v"}, data_key=DATA_KEY, nonce=nonce, **WHERE)
    assert first != second


@pytest.mark.parametrize(
    "elsewhere",
    [
        {**WHERE, "name": "other"},
        {**WHERE, "namespace": "bank"},
        {**WHERE, "uid": "uid-2"},  # the same name, deleted and created again
    ],
)
def test_a_sealed_value_moved_to_another_secret_does_not_open(elsewhere: dict[str, str]) -> None:
    sealed = seal({"k": b"v"}, data_key=DATA_KEY, nonce=nonce, **WHERE)
    with pytest.raises(SecretUnreadable, match="does not open"):
        open_sealed(sealed, data_key=DATA_KEY, **elsewhere)
    renamed = {"other-key": sealed["k"]}
    with pytest.raises(SecretUnreadable):
        open_sealed(renamed, data_key=DATA_KEY, **WHERE)


def test_an_altered_value_or_another_key_does_not_open() -> None:
    sealed = seal({"k": b"value"}, data_key=DATA_KEY, nonce=nonce, **WHERE)
    text = sealed["k"]
    flipped = text[:-6] + ("A" if text[-6] != "A" else "B") + text[-5:]
    with pytest.raises(SecretUnreadable):
        open_sealed({"k": flipped}, data_key=DATA_KEY, **WHERE)
    with pytest.raises(SecretUnreadable):
        open_sealed(sealed, data_key=os.urandom(32), **WHERE)
    with pytest.raises(SecretUnreadable, match="not a sealed value"):
        open_sealed({"k": "plain"}, data_key=DATA_KEY, **WHERE)


def test_data_keys_are_wrapped_by_the_cluster_key() -> None:
    wrapped = wrap_data_key(CLUSTER_KEY, DATA_KEY)
    assert DATA_KEY not in wrapped
    assert unwrap_data_key(CLUSTER_KEY, wrapped) == DATA_KEY
    with pytest.raises(SecretUnreadable, match="does not unwrap"):
        unwrap_data_key(os.urandom(32), wrapped)
