"""The writers' seal: a keyed MAC on every event the control plane appends, so that an event
that did not come from a fleetlog writer is told apart even when its hash chain is right.

Why this exists: the hash chain (``streams/envelope.py``) shows that the log was not altered
after the fact, but anyone who may publish on ``fleet.evt.>`` can compute a chain: a correctly
chained ``PodCreated`` sent straight to the stream skipped admission and was run (issue 17).
Each message a writer appends carries ``Fleet-Seal``, an HMAC-SHA256 of its subject and its
stored bytes under the cluster's seal key, which only the control plane's writers hold (a file
``up`` creates, 0600, in ``<data dir>/pki/``; other roles are given it with ``--seal-key``). A
reader that holds the key quarantines a message whose seal is missing or wrong (the poison
path: skipped, reported, never acted on) and ``fleetlog audit verify`` reports it.

The key file also says from which stream sequence on every event is sealed (``since``): events
stored before a cluster had a key stay readable. Without a key nothing is sealed or checked,
as on a bare nats-server the tests start.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from core.errors import FleetError

SEAL_HEADER = "Fleet-Seal"
_SEAL_HEADER_BYTES = b"\r\nFleet-Seal: "
KEY_BYTES = 32
_BLOCK = 64
"""SHA-256's block size, which HMAC pads its key to."""
SEAL_BYTES = 16
"""The MAC is truncated to 128 bits (RFC 2104 allows it; a forger must guess all of them)."""


class SealKeyError(FleetError):
    """The seal key is missing, unreadable, malformed or not the log's: said with what to do."""

    code = "seal_key"


@dataclass(frozen=True, slots=True)
class SealKey:
    """The cluster's seal key, and the first stream sequence sealed under it."""

    key: bytes
    since: int = 0
    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # HMAC's keyed inner and outer states, made once: each seal copies them (OpenSSL's
        # one-shot HMAC costs twice as much per call, on every event appended and read).
        padded = self.key.ljust(_BLOCK, b"\0")
        object.__setattr__(self, "_inner", sha256(bytes(b ^ 0x36 for b in padded)))
        object.__setattr__(self, "_outer", sha256(bytes(b ^ 0x5C for b in padded)))

    def seal(self, subject: str, data: bytes) -> str:
        """The ``Fleet-Seal`` value of a message stored on ``subject`` as ``data``: HMAC-SHA256
        of ``subject``, a zero byte and ``data``, truncated to 128 bits, base64."""
        return self._mac(subject, data).decode()

    def holds(self, seq: int, subject: str, data: bytes, seal: str | bytes | None) -> bool:
        """Whether the message at ``seq`` is a writer's: sealed right, or stored before the
        key's ``since``."""
        if seq <= self.since:
            return True
        if not seal:
            return False
        if isinstance(seal, str):
            seal = seal.encode()
        return hmac.compare_digest(seal, self._mac(subject, data))

    def _mac(self, subject: str, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(subject.encode())
        inner.update(b"\0")
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base64.b64encode(outer.digest()[:SEAL_BYTES])


def seal_from_header_block(block: bytes) -> bytes | None:
    """The ``Fleet-Seal`` value in a raw NATS header block (``NATS/1.0\\r\\nKey: v\\r\\n…``),
    or None."""
    at = block.find(_SEAL_HEADER_BYTES)
    if at < 0:
        return None
    start = at + len(_SEAL_HEADER_BYTES)
    end = block.find(b"\r\n", start)
    return block[start : end if end >= 0 else len(block)]


def create_seal_key(path: Path, *, since: int) -> SealKey:
    """Write a new random key to ``path`` (0600; a directory made for it 0700) and return it."""
    if not path.parent.exists():  # a directory given by the caller keeps its mode
        path.parent.mkdir(parents=True)
        os.chmod(path.parent, 0o700)
    key = SealKey(secrets.token_bytes(KEY_BYTES), since)
    text = json.dumps({"key": base64.b64encode(key.key).decode(), "since": since})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    return key


def load_seal_key(path: Path) -> SealKey:
    """The key in ``path``; :class:`SealKeyError` saying what is wrong otherwise."""
    try:
        raw = json.loads(path.read_text())
        key = base64.b64decode(raw["key"], validate=True)
        since = int(raw.get("since", 0))
    except FileNotFoundError:
        raise SealKeyError(
            f"seal key {path} not found: give the file `fleetlog up` wrote in its data "
            "directory (pki/seal.key)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SealKeyError(f"seal key {path} is not a fleetlog seal key: {exc}") from None
    if len(key) != KEY_BYTES or since < 0:
        raise SealKeyError(f"seal key {path} is not a fleetlog seal key: wrong length")
    if path.stat().st_mode & 0o077:
        raise SealKeyError(
            f"seal key {path} is readable by others: `chmod 600 {path}` (anyone who reads it "
            "can write events the control plane trusts)"
        )
    return SealKey(key, since)


_configured: SealKey | None = None
_given: Path | None = None


def use(key: SealKey | None, *, given: Path | None = None) -> None:
    """Make ``key`` the process's seal key: every :class:`~streams.eventstore.EventStore` of
    ``FLEET`` opened afterwards seals what it appends and checks what it reads. Set once by the
    CLI when a role starts; tests pass keys to the stores they open instead. ``given``: the
    file it was read from (or that was named but does not exist yet: ``key`` None)."""
    global _configured, _given
    _configured, _given = key, given


def configured() -> SealKey | None:
    return _configured


def given_path() -> Path | None:
    """The key file the process was told of, if any (said when a writer is refused)."""
    return _given
