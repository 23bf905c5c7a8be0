"""A Secret's manifest as the log keeps it (``core.access.secretdata``): every value sealed,
kubectl's last-applied note too; an unchanged value keeps its sealed text; readers of the log
see sizes, never values."""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Callable

import pytest

from core.access.secretdata import (
    LAST_APPLIED,
    SecretUnreadable,
    open_manifest,
    plain_sizes,
    redacted_manifest,
    seal_manifest,
)

KEY = bytes(range(32))
WHERE = {"namespace": "default", "name": "db", "uid": "u-1"}


def manifest(password: str, note: str | None = None) -> dict[str, object]:
    metadata: dict[str, object] = {"name": "db", "namespace": "default"}
    if note is not None:
        metadata["annotations"] = {LAST_APPLIED: note, "team": "a"}
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }  # fmt: skip


def nonces() -> Callable[[], bytes]:
    counter = itertools.count()
    return lambda: next(counter).to_bytes(12, "big")


def test_values_and_the_last_applied_note_are_sealed_and_open_again() -> None:
    plain = manifest("s3cret", note='{"stringData":{"password":"s3cret"}}')
    sealed = seal_manifest(plain, stored=None, data_key=KEY, nonce=lambda: os.urandom(12), **WHERE)
    assert "s3cret" not in repr(sealed)
    assert base64.b64encode(b"s3cret").decode() not in repr(sealed)
    assert sealed["metadata"]["annotations"]["team"] == "a"  # type: ignore[index]
    assert open_manifest(sealed, data_key=KEY, **WHERE) == plain
    assert redacted_manifest(sealed)["data"] == {"password": "<sealed, 6 bytes>"}
    assert plain_sizes(sealed) == {"password": 6}
    with pytest.raises(SecretUnreadable):
        open_manifest(sealed, data_key=bytes(32), **WHERE)
    with pytest.raises(SecretUnreadable):  # moved to another secret
        open_manifest(sealed, data_key=KEY, namespace="default", name="other", uid="u-1")


def test_an_unchanged_value_keeps_its_sealed_text_and_a_changed_one_is_sealed_anew() -> None:
    def sealed(password: str, stored: dict[str, object] | None) -> dict[str, object]:
        return seal_manifest(
            manifest(password), stored=stored, data_key=KEY, nonce=nonces(), **WHERE
        )

    first = sealed("one", None)
    again = sealed("one", first)
    assert again == first
    changed = sealed("two", first)
    assert changed["data"] != first["data"]
    opened = open_manifest(changed, data_key=KEY, **WHERE)
    assert base64.b64decode(opened["data"]["password"]) == b"two"
