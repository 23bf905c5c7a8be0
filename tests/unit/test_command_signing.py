"""Signed commands (``core.access.signing``): a signature proves the sender of exactly this
subject and payload, a replay or a stale time is refused, and each refusal says what to fix."""

from __future__ import annotations

import os

import nkeys
import pytest

from core.access.signing import (
    MAX_SKEW_NS,
    NONCE_TTL_NS,
    ReplayGuard,
    SignatureRefused,
    check_time,
    nonce_key,
    sign,
    signature_from_headers,
    verify,
)

NOW = 1_800_000_000 * 1_000_000_000
SUBJECT = "fleet.cmd.Pod.apply"
PAYLOAD = b"\x81\xa8manifest\x80"


def user_seed() -> bytes:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


ALICE_SEED = user_seed()
ALICE_KEY = nkeys.from_seed(ALICE_SEED).public_key.decode()
USERS = {ALICE_KEY: "alice"}


def headers(seed: bytes = ALICE_SEED, *, subject: str = SUBJECT, payload: bytes = PAYLOAD,
            at: int = NOW, nonce: str = "n-1") -> dict[str, str]:  # fmt: skip
    return sign(seed, subject=subject, payload=payload, signed_at_ns=at, nonce=nonce).headers()


def check(sent: dict[str, str], *, guard: ReplayGuard | None = None, payload: bytes = PAYLOAD,
          subject: str = SUBJECT, now: int = NOW) -> str:  # fmt: skip
    user, _ = verify(sent, subject=subject, payload=payload, users=USERS,
                     guard=guard or ReplayGuard(), now_ns=now)  # fmt: skip
    return user


def refused(sent: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(SignatureRefused) as info:
        check(sent, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_a_signed_command_names_its_sender() -> None:
    sent = headers()
    assert sent["Fleet-Signer"] == ALICE_KEY and sent["Fleet-Signer"].startswith("U")
    assert check(sent) == "alice"


def test_a_signature_covers_subject_payload_time_and_nonce() -> None:
    sent = headers()
    assert "does not match" in refused(sent, payload=PAYLOAD + b"x")
    assert "does not match" in refused(sent, subject="fleet.cmd.Pod.delete")
    assert "does not match" in refused({**sent, "Fleet-Nonce": "n-2"})
    assert "does not match" in refused({**sent, "Fleet-Signed-At": str(NOW + 1)})
    other = headers(user_seed())
    # another key's valid signature, presented under alice's key
    assert "does not match" in refused({**sent, "Fleet-Signature": other["Fleet-Signature"]})


def test_an_unknown_or_malformed_signer_is_refused() -> None:
    assert "is not a user of this cluster" in refused(headers(user_seed()))
    assert "not an nkey" in refused({**headers(), "Fleet-Signer": "not-base32!"})
    account = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT))
    forged = {**headers(), "Fleet-Signer": account.public_key.decode()}
    with pytest.raises(SignatureRefused, match="not a user nkey"):
        verify(forged, subject=SUBJECT, payload=PAYLOAD,
               users={forged["Fleet-Signer"]: "acct"}, guard=ReplayGuard(), now_ns=NOW)  # fmt: skip


def test_an_unsigned_command_is_told_how_to_sign() -> None:
    message = refused({})
    assert "not signed" in message and "Fleet-Signature" in message
    assert "not a time" in refused({**headers(), "Fleet-Signed-At": "soon"})


def test_a_replay_within_the_window_and_a_stale_time_are_refused() -> None:
    guard = ReplayGuard()
    sent = headers()
    assert check(sent, guard=guard) == "alice"
    assert "replay" in refused(sent, guard=guard, now=NOW + 1_000_000_000)
    assert "behind the gateway's clock" in refused(sent, now=NOW + MAX_SKEW_NS + 1)
    ahead = headers(at=NOW + MAX_SKEW_NS + 1, nonce="n-3")
    assert "ahead of the gateway's clock" in refused(ahead)


def test_a_query_keeps_no_nonce_but_its_signing_time_is_still_checked() -> None:
    signature = sign(ALICE_SEED, subject="fleet.qry.cluster", payload=PAYLOAD,
                     signed_at_ns=NOW, nonce="q-1")  # fmt: skip
    for now in (NOW, NOW + 1, NOW + MAX_SKEW_NS):  # the same query again: still fresh
        check_time(signature, now_ns=now, what="request", receiver="query service")
    with pytest.raises(SignatureRefused) as stale:
        check_time(signature, now_ns=NOW + MAX_SKEW_NS + 1, what="request",
                   receiver="query service")  # fmt: skip
    assert str(stale.value).startswith(
        "the request was signed 60 s behind the query service's clock"
    )


def test_the_guard_forgets_nonces_once_they_could_no_longer_pass_the_clock_check() -> None:
    guard = ReplayGuard()
    for i in range(100):
        check(headers(nonce=f"n{i}", at=NOW), guard=guard)
    assert guard.remembered == 100
    later = NOW + 2 * MAX_SKEW_NS + 1
    check(headers(nonce="late", at=later), guard=guard, now=later)
    assert guard.remembered == 1


def test_a_signature_kept_in_an_audit_record_is_checked_from_the_record_alone() -> None:
    import hashlib

    from core.access.signing import check_recorded

    signed = sign(ALICE_SEED, subject=SUBJECT, payload=PAYLOAD, signed_at_ns=NOW, nonce="n-1")
    recorded = {
        "signer": signed.signer, "subject": SUBJECT,
        "digest": hashlib.sha256(PAYLOAD).hexdigest(), "signed_at": str(NOW), "nonce": "n-1",
        "signature": signed.signature,
    }  # fmt: skip
    check_recorded(recorded)  # proves alice sent exactly that payload to that subject
    for field, value in (("digest", "0" * 64), ("subject", "fleet.cmd.Pod.delete"),
                         ("nonce", "n-2"), ("signed_at", str(NOW + 1))):  # fmt: skip
        with pytest.raises(SignatureRefused, match="does not match"):
            check_recorded({**recorded, field: value})
    with pytest.raises(SignatureRefused, match="lacks signature"):
        check_recorded({**recorded, "signature": ""})
    with pytest.raises(SignatureRefused, match="malformed"):
        check_recorded({**recorded, "signed_at": "yesterday"})
    with pytest.raises(SignatureRefused, match=r"not (an|a user) nkey"):
        check_recorded({**recorded, "signer": "not-a-key"})


def test_a_nonce_is_claimed_under_its_signer_and_a_key_safe_digest() -> None:
    import re

    odd = signature_from_headers(headers(nonce="a nonce/with*odd>chars"))
    key = nonce_key(odd)
    assert key.startswith(ALICE_KEY + ".") and re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key)
    assert key == nonce_key(signature_from_headers(headers(nonce="a nonce/with*odd>chars")))
    assert key != nonce_key(signature_from_headers(headers(nonce="n-2")))
    bob = signature_from_headers(headers(user_seed(), nonce="a nonce/with*odd>chars"))
    assert nonce_key(bob) != key


def test_the_shared_memory_outlives_every_time_the_skew_check_still_accepts() -> None:
    from streams.definitions import NONCE_TTL_SECONDS, nonce_bucket

    # First seen at the earliest (signed 60 s ahead), accepted until 60 s after signing.
    assert NONCE_TTL_NS > 2 * MAX_SKEW_NS
    assert NONCE_TTL_SECONDS * 1_000_000_000 == NONCE_TTL_NS
    assert nonce_bucket().config["max_age"] == NONCE_TTL_NS
