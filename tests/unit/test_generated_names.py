"""A ``generateName`` completed as kube-apiserver's SimpleNameGenerator does: prefix cut to 58,
five characters of kube's alphabet, chosen by the entropy the caller gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.meta.names import (
    GENERATED_SUFFIX_ALPHABET,
    MAX_GENERATED_PREFIX,
    dns1123_subdomain_errors,
    generated_name,
)


@given(
    prefix=st.from_regex(r"[a-z][a-z0-9-]{0,80}", fullmatch=True),
    entropy=st.binary(min_size=8, max_size=16),
)
def test_a_generated_name_is_the_cut_prefix_and_five_of_kubes_alphabet(
    prefix: str, entropy: bytes
) -> None:
    name = generated_name(prefix, entropy)
    kept = prefix[:MAX_GENERATED_PREFIX]
    assert name.startswith(kept) and len(name) == len(kept) + 5 <= 63
    assert set(name[len(kept) :]) <= set(GENERATED_SUFFIX_ALPHABET)
    assert generated_name(prefix, entropy) == name  # the entropy alone chooses
    assert dns1123_subdomain_errors(name) == []  # a valid prefix makes a valid name


def test_other_entropy_gives_other_suffixes() -> None:
    names = {generated_name("web-", i.to_bytes(8, "big") * 2) for i in range(0, 2000, 7)}
    assert len(names) > 250


def test_too_little_entropy_is_refused() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        generated_name("web-", b"1234567")
