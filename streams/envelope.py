"""The msgpack envelope every event on ``FLEET`` is stored in, and its codec.

One envelope carries one domain event plus the facts an auditor needs about it: a unique id, the
event type and schema version, the aggregate it belongs to and its version there, when it was
decided, who decided it (``actor``), the command that started the chain (``correlation_id``) and
the event or command that directly caused it (``causation_id``). Keys are short because the log
is read a million events at a time; everything else that reads envelopes goes through
:class:`Envelope` and never sees the short keys.

Decoding upcasts old schema versions to the current one (see ``core.api.events``), so readers only
ever see current payload shapes while the stored bytes stay as they were written.

**Tamper evidence.** Every envelope is sealed with a hash chained to the previous event of its
aggregate (its subject), so altering, inserting or removing a stored event breaks the chain
where it happened (``streams/integrity.py`` walks the log and finds the breaks). The exact rule:

* The stored map has 14 entries in this fixed order: ``id t sv k ns n v ts a corr cause d p h``.
  ``p`` (the *link*) is the first 8 bytes of the previous hash (empty for an aggregate's first
  event): it is not needed to chain, but it lets a verifier tell "this event was altered" from
  "this event follows another predecessor" (an insertion or a removal). ``h`` is 32 bytes.
* The *canonical bytes* C of a stored event are its bytes without the final ``h`` entry: the same
  entries byte for byte, under a map header counting one entry less. Since :meth:`Envelope.seal`
  writes a fixed key order with msgpack-python's minimal encodings, C is deterministic, and the
  stored bytes are C with its header bumped and ``h`` appended (the map is packed once).
* ``h = SHA-256(P || C)`` where P is the previous event's hash on the same subject (32 bytes), or
  nothing (zero bytes, :data:`GENESIS`) for the subject's first event. A deleted and re-created
  object keeps its subject, so its chain simply continues.
* Events written before hashes existed have no ``p``/``h``. Their hash is *implied* by the same
  rule with C = their stored bytes as they are, so the first sealed event after them chains to
  (and thereby seals) the whole earlier history of its subject: an old event altered later
  still breaks the chain at the first sealed event after it. Chaining new events to "nothing"
  instead would have left the old history open to rewriting forever.

A chain is evidence, not proof against someone who can write the log and recompute every hash
after the event they change; anchoring the verifier's ``head_digest`` elsewhere closes that.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import msgpack
import msgspec

from core.api.events import upcast, upcast_needed
from core.errors import ValidationFailed

_packb = msgpack.Packer(use_bin_type=True).pack

GENESIS = b""
"""The previous hash of an aggregate's first event: nothing came before it."""
HASH_BYTES = 32
LINK_BYTES = 8
"""How much of the previous hash an envelope repeats in ``p``."""
_SEAL_HEAD = b"\xa1h\xc4\x20"  # the key "h" (fixstr) and a 32-byte bin8 header
_SEAL_ENTRY_BYTES = len(_SEAL_HEAD) + HASH_BYTES
_SEALED_HEADER = b"\x8e"  # fixmap of 14 entries; the canonical map (13 entries) is 0x8d


def chain_hash(previous: bytes, canonical: bytes) -> bytes:
    """``SHA-256(previous || canonical)``: the hash that seals an event (see the module doc)."""
    return sha256(previous + canonical).digest()


def split_seal(data: bytes, raw: dict[str, Any]) -> tuple[bytes, bytes]:
    """(canonical bytes, stored ``h``) of a stored envelope whose decoded map is ``raw``.

    An envelope without ``h`` (written before hashes) is its own canonical form, with an empty
    seal. Raises ValueError when ``h`` is there but not as the final 32-byte entry, since the
    canonical bytes cannot then be told apart from the seal.
    """
    seal = raw.get("h")
    if seal is None:
        return data, b""
    if (
        not isinstance(seal, bytes)
        or len(seal) != HASH_BYTES
        or next(reversed(raw)) != "h"
        or data[-_SEAL_ENTRY_BYTES:] != _SEAL_HEAD + seal
    ):
        raise ValueError("h is not the final 32-byte entry of the envelope")
    first = data[0]
    if 0x81 <= first <= 0x8F:
        start, count = 1, first & 0x0F
    elif first == 0xDE:
        start, count = 3, int.from_bytes(data[1:3], "big")
    elif first == 0xDF:
        start, count = 5, int.from_bytes(data[1:5], "big")
    else:
        raise ValueError("an envelope is not a map")
    return _map_header(count - 1) + data[start:-_SEAL_ENTRY_BYTES], seal


def _map_header(count: int) -> bytes:
    if count <= 0x0F:
        return bytes([0x80 | count])
    if count <= 0xFFFF:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


class Envelope(msgspec.Struct, gc=False):
    """One event with its metadata, as written to and read from the log.

    A ``msgspec.Struct`` because a replay decodes a million of these: msgspec reads the stored
    map straight into the struct (skipping ``p``, which only a verifier needs), about twice as
    fast as msgpack-python's map plus a copy into an object (docs/benchmarks.md). The field
    names on the log are the short keys. ``gc=False``: an envelope never takes part in a
    reference cycle (it holds plain data), so the cyclic collector need not track it.
    """

    event_id: str = msgspec.field(name="id")
    type: str = msgspec.field(name="t")
    schema_version: int = msgspec.field(name="sv")
    kind: str = msgspec.field(name="k")
    namespace: str = msgspec.field(name="ns")
    name: str = msgspec.field(name="n")
    version: int = msgspec.field(name="v")
    timestamp_ns: int = msgspec.field(name="ts")
    actor: str = msgspec.field(name="a")
    correlation_id: str = msgspec.field(name="corr")
    causation_id: str = msgspec.field(name="cause")
    payload: dict[str, Any] = msgspec.field(name="d", default_factory=dict)
    chain_hash: bytes = msgspec.field(name="h", default=b"")
    """The stored seal ``h`` as decoded (empty for an event written before hashes); writers
    do not set it, :meth:`seal` computes it."""

    def encode(self, previous: bytes = GENESIS) -> bytes:
        """The stored bytes, sealed after ``previous`` (the hash of the aggregate's previous
        event; :data:`GENESIS` for its first)."""
        return self.seal(previous)[0]

    def seal(self, previous: bytes) -> tuple[bytes, bytes]:
        """(stored bytes, their hash ``h``) of this event chained after ``previous``."""
        canonical = _packb(
            {
                "id": self.event_id,
                "t": self.type,
                "sv": self.schema_version,
                "k": self.kind,
                "ns": self.namespace,
                "n": self.name,
                "v": self.version,
                "ts": self.timestamp_ns,
                "a": self.actor,
                "corr": self.correlation_id,
                "cause": self.causation_id,
                "d": self.payload,
                "p": previous[:LINK_BYTES],
            }
        )
        digest = chain_hash(previous, canonical)
        return _SEALED_HEADER + canonical[1:] + _SEAL_HEAD + digest, digest

    @property
    def aggregate_id(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def _refuse_extension(code: int, data: memoryview) -> Any:
    raise ValueError(f"MessagePack extension type {code} is not used in fleetlog events")


_decode = msgspec.msgpack.Decoder(Envelope, ext_hook=_refuse_extension).decode


def decode_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """Decode stored bytes into an :class:`Envelope`, upcasting old payload versions.

    Everything that is not an envelope (not a map, a missing or mistyped entry, bytes after
    the map) is refused with :class:`ValidationFailed` saying what and where.
    """
    try:
        envelope = _decode(data)
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"not a fleetlog event envelope: {exc}") from exc
    if upcast_needed(envelope.type, envelope.schema_version):
        envelope.schema_version, envelope.payload = upcast(
            envelope.type, envelope.schema_version, envelope.payload
        )
    return envelope


class StoredEvent(msgspec.Struct, gc=False):
    """An envelope as found in the stream: with its stream sequence, subject and store time."""

    seq: int
    subject: str
    stored_ns: int
    envelope: Envelope
    data: bytes = b""
    """The stored bytes it was decoded from (empty where a reader did not keep them)."""
