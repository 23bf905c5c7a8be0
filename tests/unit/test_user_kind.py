"""The User kind (``core.access.users``): a user's key is an nkey's public key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.access.users import User
from core.meta.model import to_validation_failed
from streams.identity import Credentials, generate_seed


def _user(public_key: str, groups: list[str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "auth.fleetlog.dev/v1",
        "kind": "User",
        "metadata": {"name": "alice"},
        "spec": {"publicKey": public_key, "groups": groups or []},
    }


def test_a_user_with_an_nkey_is_valid() -> None:
    user = User.model_validate(_user(Credentials(generate_seed()).public_key, ["dev"]))
    assert user.spec.groups == ["dev"] and not user.spec.revoked


@pytest.mark.parametrize("key", ["", "not-a-key", "a-seed"])
def test_a_public_key_that_is_not_a_user_nkey_is_refused(key: str) -> None:
    key = generate_seed() if key == "a-seed" else key
    with pytest.raises(ValidationError) as caught:
        User.model_validate(_user(key))
    failed = to_validation_failed(caught.value)
    assert any(error.field == "spec.publicKey" for error in failed.errors), failed


def test_a_user_holds_a_token_hash_never_a_token() -> None:
    from core.access.users import token_hash

    key = Credentials(generate_seed()).public_key
    spec = {"publicKey": key, "tokenHash": token_hash("secret"),
            "tokenExpiresAt": "2027-01-01T00:00:00Z"}  # fmt: skip
    User.model_validate({"metadata": {"name": "a"}, "spec": spec})
    with pytest.raises(ValidationError) as caught:
        User.model_validate({"metadata": {"name": "a"}, "spec": {**spec, "tokenHash": "secret"}})
    failed = to_validation_failed(caught.value)
    assert any(error.field == "spec.tokenHash" for error in failed.errors), failed
