"""Signed commands: who sent this command, proven, and never accepted twice.

Why this exists: the gateway must record as the actor the identity that really sent a command
(issue 17), and ``fleetlog audit verify`` must be able to prove it later (non-repudiation). So
every command is signed by its sender's ed25519 key (a NATS nkey, the same key the connection
authenticates with) over its subject, the digest of its payload, the time it was signed and a
nonce; the gateway checks the signature against the key the user registered, refuses a time
outside the allowed skew and a nonce it has seen within that window (a replay), and keeps the
signature with the audit record, where anyone holding the user's public key can check it again.

The signing input is versioned text, so the scheme can change without ambiguity::

    fleetlog-command-v1\\n<subject>\\n<sha256 of payload, hex>\\n<signed at, ns>\\n<nonce>

Pure: the clock and the nonce are passed in; keys are nkey strings (``SU…`` seeds, ``U…``
public keys). Signing uses the ``nkeys`` library; verification needs only the public key
(decoded here with nkeys' checksum, verified with libsodium through PyNaCl, nkeys' own
binding: on the gateway's hot path it is faster than OpenSSL's ed25519).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

SCHEME: Final = "fleetlog-command-v1"
SIGNER_HEADER: Final = "Fleet-Signer"
SIGNED_AT_HEADER: Final = "Fleet-Signed-At"
NONCE_HEADER: Final = "Fleet-Nonce"
SIGNATURE_HEADER: Final = "Fleet-Signature"
MAX_SKEW_NS: Final = 60 * 1_000_000_000
"""How far a command's signing time may be from the gateway's clock (either way). Every nonce
is remembered for twice this, so the window bounds the guard's memory (at 3,000 commands a
second, ~360,000 nonces); a cluster's clocks are kept within it by NTP."""
MAX_NONCE_LENGTH: Final = 64
NONCE_MARGIN_NS: Final = 30 * 1_000_000_000
"""What the gateways' shared nonce memory keeps a nonce for beyond twice the skew: their
clocks may disagree a little."""
NONCE_TTL_NS: Final = 2 * MAX_SKEW_NS + NONCE_MARGIN_NS
"""How long a nonce is remembered by the gateways together: longer than its signing time can
still pass the skew check of any of them."""


class SignatureRefused(Exception):
    """A command whose signature does not prove its sender; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Signature:
    """What proves a command's sender: kept with its audit record."""

    signer: str
    """The sender's public nkey (``U…``)."""
    signed_at_ns: int
    nonce: str
    signature: str
    """base64url of the 64-byte ed25519 signature."""

    def headers(self) -> dict[str, str]:
        return {
            SIGNER_HEADER: self.signer,
            SIGNED_AT_HEADER: str(self.signed_at_ns),
            NONCE_HEADER: self.nonce,
            SIGNATURE_HEADER: self.signature,
        }


def signing_input(*, subject: str, payload: bytes, signed_at_ns: int, nonce: str) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return digest_signing_input(subject=subject, digest=digest, signed_at_ns=signed_at_ns,
                                nonce=nonce)  # fmt: skip


def digest_signing_input(*, subject: str, digest: str, signed_at_ns: int, nonce: str) -> bytes:
    """What is signed, given the payload's digest (an audit record keeps only that)."""
    return f"{SCHEME}\n{subject}\n{digest}\n{signed_at_ns}\n{nonce}".encode()


@functools.lru_cache(maxsize=16)
def _keypair(seed: bytes) -> nkeys.KeyPair:
    """The key pair of a seed, made once per sender (a client signs every command with it)."""
    return nkeys.from_seed(seed)


def sign(seed: bytes, *, subject: str, payload: bytes, signed_at_ns: int, nonce: str) -> Signature:
    """Sign a command with the sender's nkey seed."""
    keys = _keypair(seed)
    raw = keys.sign(signing_input(subject=subject, payload=payload, signed_at_ns=signed_at_ns,
                                  nonce=nonce))  # fmt: skip
    return Signature(
        signer=keys.public_key.decode(),
        signed_at_ns=signed_at_ns,
        nonce=nonce,
        signature=base64.urlsafe_b64encode(raw).decode().rstrip("="),
    )


@functools.lru_cache(maxsize=4096)
def public_key_bytes(public_key: str) -> bytes:
    """The raw ed25519 key of a user nkey (``U…``): base32 of prefix, key and CRC-16 (kept
    for the signers seen: every command's signer is decoded; a malformed one is not kept)."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (ValueError, TypeError) as error:
        raise SignatureRefused(f"signer {public_key[:16]!r} is not an nkey") from error
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise SignatureRefused(f"signer {public_key[:16]!r} is not a user nkey (U…)")
    body, checksum = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != checksum:
        raise SignatureRefused(f"signer {public_key[:16]!r} has a bad checksum")
    return body[1:]


def signature_from_headers(headers: Mapping[str, str] | None) -> Signature:
    headers = headers or {}
    missing = [
        name
        for name in (SIGNER_HEADER, SIGNED_AT_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
        if not headers.get(name)
    ]
    if missing:
        raise SignatureRefused(
            "the command is not signed (missing " + ", ".join(missing) + "): send it with "
            "fleetlog's client and your credentials"
        )
    try:
        signed_at_ns = int(headers[SIGNED_AT_HEADER])
    except ValueError as error:
        raise SignatureRefused(f"{SIGNED_AT_HEADER} is not a time in nanoseconds") from error
    nonce = headers[NONCE_HEADER]
    if len(nonce) > MAX_NONCE_LENGTH:
        raise SignatureRefused(f"{NONCE_HEADER} is longer than {MAX_NONCE_LENGTH} characters")
    return Signature(
        signer=headers[SIGNER_HEADER],
        signed_at_ns=signed_at_ns,
        nonce=nonce,
        signature=headers[SIGNATURE_HEADER],
    )


def check_signature(signature: Signature, *, subject: str, payload: bytes) -> None:
    """Raise :class:`SignatureRefused` unless ``signature`` signs this subject and payload."""
    check_digest(signature, subject=subject, digest=hashlib.sha256(payload).hexdigest())


@functools.lru_cache(maxsize=4096)
def _verifier(public_key: str) -> VerifyKey:
    """A signer's key, decoded once (a gateway checks the same few signers again and again)."""
    return VerifyKey(public_key_bytes(public_key))


def check_digest(signature: Signature, *, subject: str, digest: str) -> None:
    """:func:`check_signature` for a payload known by its sha256 digest (hex)."""
    key = _verifier(signature.signer)
    try:
        raw = base64.urlsafe_b64decode(signature.signature + "=" * (-len(signature.signature) % 4))
        key.verify(
            digest_signing_input(subject=subject, digest=digest,
                                 signed_at_ns=signature.signed_at_ns, nonce=signature.nonce),
            raw,
        )  # fmt: skip
    except (BadSignatureError, ValueError, TypeError) as error:
        raise SignatureRefused(
            "the signature does not match the command (tampered with, or signed for another "
            "subject or payload)"
        ) from error


RECORDED_FIELDS: Final = ("signer", "subject", "digest", "signed_at", "nonce", "signature")
"""What an audit record keeps of a signed command (``handlers/gateway/audit.signature_of``)."""


def check_recorded(recorded: Mapping[str, str]) -> None:
    """Check a signature as an audit record keeps it (the payload by its digest): what
    ``fleetlog audit verify`` proves each signed command's sender with. Raises
    :class:`SignatureRefused` saying what is wrong."""
    missing = [name for name in RECORDED_FIELDS if not recorded.get(name)]
    if missing:
        raise SignatureRefused(f"the recorded signature lacks {', '.join(missing)}")
    try:
        signed_at_ns = int(recorded["signed_at"])
        signature = Signature(
            signer=recorded["signer"], signed_at_ns=signed_at_ns,
            nonce=recorded["nonce"], signature=recorded["signature"],
        )  # fmt: skip
        check_digest(signature, subject=recorded["subject"], digest=recorded["digest"])
    except SignatureRefused:
        raise
    except (ValueError, TypeError) as error:
        raise SignatureRefused(f"the recorded signature is malformed: {error}") from error


def check_time(
    signature: Signature,
    *,
    now_ns: int,
    max_skew_ns: int = MAX_SKEW_NS,
    what: str = "command",
    receiver: str = "gateway",
) -> None:
    """Refuse a signature made more than ``max_skew_ns`` from ``now_ns`` (the receiver's
    clock), either way: a stale request is refused even where no nonce is remembered."""
    skew = signature.signed_at_ns - now_ns
    if abs(skew) > max_skew_ns:
        direction = "ahead of" if skew > 0 else "behind"
        raise SignatureRefused(
            f"the {what} was signed {abs(skew) / 1e9:.0f} s {direction} the {receiver}'s "
            f"clock (at most {max_skew_ns / 1e9:.0f} s is accepted): check the clocks"
        )


def nonce_key(signature: Signature) -> str:
    """The key a signed command's nonce is claimed under in the gateways' shared memory:
    its signer and a digest of the nonce (a nonce may hold characters a key may not)."""
    digest = hashlib.sha256(signature.nonce.encode()).hexdigest()[:32]
    return f"{signature.signer}.{digest}"


@dataclass(slots=True)
class ReplayGuard:
    """Nonces seen within the skew window: a command is accepted once, and only when signed
    close enough to now that its nonce is still remembered."""

    max_skew_ns: int = MAX_SKEW_NS
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _expiry: deque[tuple[int, tuple[str, str]]] = field(default_factory=deque)
    """(forget at, key) in arrival order: a nonce is kept for twice the skew after it arrived,
    past the last moment its signing time could still pass the skew check."""

    def admit(self, signature: Signature, *, now_ns: int) -> None:
        check_time(signature, now_ns=now_ns, max_skew_ns=self.max_skew_ns)
        while self._expiry and self._expiry[0][0] < now_ns:
            self._seen.discard(self._expiry.popleft()[1])
        key = (signature.signer, signature.nonce)
        if key in self._seen:
            raise SignatureRefused(
                "this command was already received (its nonce was used): a replay is refused"
            )
        self._seen.add(key)
        self._expiry.append((now_ns + 2 * self.max_skew_ns, key))

    @property
    def remembered(self) -> int:
        """How many nonces the guard holds (its memory)."""
        return len(self._seen)


def verify(
    headers: Mapping[str, str] | None,
    *,
    subject: str,
    payload: bytes,
    users: Mapping[str, str],
    guard: ReplayGuard,
    now_ns: int,
) -> tuple[str, Signature]:
    """The user who sent this command (``users``: public nkey -> user name), with the
    signature that proves it; :class:`SignatureRefused` otherwise."""
    signature = signature_from_headers(headers)
    public_key_bytes(signature.signer)  # a malformed key is told apart from an unknown one
    user = users.get(signature.signer)
    if user is None:
        raise SignatureRefused(
            f"signer {signature.signer[:12]}… is not a user of this cluster (revoked, or never "
            "created: fleetlog user list)"
        )
    check_signature(signature, subject=subject, payload=payload)
    guard.admit(signature, now_ns=now_ns)
    return user, signature
