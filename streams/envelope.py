"""The msgpack envelope every event on ``FLEET`` is stored in, and its codec.

One envelope carries one domain event plus the facts an auditor needs about it: a unique id, the
event type and schema version, the aggregate it belongs to and its version there, when it was
decided, who decided it (``actor``), the command that started the chain (``correlation_id``) and
the event or command that directly caused it (``causation_id``). Keys are short because the log
is read a million events at a time; everything else that reads envelopes goes through
:class:`Envelope` and never sees the short keys.

Decoding upcasts old schema versions to the current one (see ``core.events``), so readers only
ever see current payload shapes while the stored bytes stay as they were written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from core.errors import ValidationFailed
from core.events import upcast

_packb = msgpack.Packer(use_bin_type=True).pack


@dataclass(slots=True)
class Envelope:
    """One event with its metadata, as written to and read from the log."""

    event_id: str
    type: str
    schema_version: int
    kind: str
    namespace: str
    name: str
    version: int
    timestamp_ns: int
    actor: str
    correlation_id: str
    causation_id: str
    payload: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _packb(
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
            }
        )

    @property
    def aggregate_id(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def decode_envelope(data: bytes) -> Envelope:
    """Decode stored bytes into an :class:`Envelope`, upcasting old payload versions."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        event_type = raw["t"]
        schema_version = raw["sv"]
        payload = raw["d"]
        if not isinstance(payload, dict):
            raise TypeError("payload is not a map")
        schema_version, payload = upcast(event_type, schema_version, payload)
        return Envelope(
            raw["id"],
            event_type,
            schema_version,
            raw["k"],
            raw["ns"],
            raw["n"],
            raw["v"],
            raw["ts"],
            raw["a"],
            raw["corr"],
            raw["cause"],
            payload,
        )
    except (KeyError, TypeError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise ValidationFailed(f"not a fleetlog event envelope: {exc}") from exc


@dataclass(slots=True)
class StoredEvent:
    """An envelope as found in the stream: with its stream sequence, subject and store time."""

    seq: int
    subject: str
    stored_ns: int
    envelope: Envelope
