"""Decoding envelopes (and the upcast fast path it goes through): for every envelope a writer
produces, exactly the envelope the straightforward msgpack decode gave, field by field and type
by type; anything else refused with a message that says what and where (msgspec checks the
envelope's types, which the msgpack decode did not)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.api.events import upcast
from core.errors import ValidationFailed
from streams.envelope import Envelope, decode_envelope


def reference_decode(data: bytes) -> Envelope:
    """``decode_envelope`` as it was (msgpack-python, before msgspec)."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        event_type = raw["t"]
        schema_version = raw["sv"]
        payload = raw["d"]
        if not isinstance(payload, dict):
            raise TypeError("payload is not a map")
        schema_version, payload = upcast(event_type, schema_version, payload)
        return Envelope(
            raw["id"], event_type, schema_version, raw["k"], raw["ns"], raw["n"], raw["v"],
            raw["ts"], raw["a"], raw["corr"], raw["cause"], payload,
            seal if isinstance(seal := raw.get("h", b""), bytes) else b"",
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise ValidationFailed(f"not a fleetlog event envelope: {exc}") from exc


def canonical(value: Any) -> Any:
    """Every value with its type, every dict with its key order."""
    if isinstance(value, Envelope):
        return canonical([getattr(value, name) for name in Envelope.__struct_fields__])
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canonical(v) for v in value])
    return (type(value).__name__, value)


def outcome(decode: Any, data: Any) -> Any:
    try:
        return canonical(decode(data))
    except ValidationFailed as exc:
        return ("ValidationFailed", str(exc))


def envelope(payload: dict[str, Any], **fields: Any) -> Envelope:
    base: dict[str, Any] = {
        "event_id": "0b6e4c3a-7a0e-4f0e-9d55-2c1c1f6b6a01",
        "type": "ContainerExited",
        "schema_version": 1,
        "kind": "Pod",
        "namespace": "default",
        "name": "web-7d9f8-abcde",
        "version": 7,
        "timestamp_ns": 1_795_664_444_233_443_060,
        "actor": "node:n1",
        "correlation_id": "c",
        "causation_id": "",
        "payload": payload,
    }
    return Envelope(**{**base, **fields})


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=12), JSON, max_size=6), st.binary(max_size=32))
def test_any_envelope_decodes_exactly_as_before(payload: dict[str, Any], previous: bytes) -> None:
    data = envelope(payload).encode(previous)
    assert outcome(decode_envelope, data) == outcome(reference_decode, data)
    for other in (bytearray(data), memoryview(data)):
        assert outcome(decode_envelope, other) == outcome(reference_decode, data)


def test_a_realistic_envelope_decodes_to_the_same_objects() -> None:
    payload = {
        "container": "app",
        "exit_code": 137,
        "signal": 9,
        "reason": "OOMKilled",
        "message": "naïve ünïcode ✓",
        "restart_count": 3,
        "started_at_ns": 1_795_664_440_000_000_000,
        "finished_at_ns": None,
        "backoff_seconds": 10.5,
        "plugin_scores": {"NodeResourcesFit": 94},
        "victims": [],
    }
    data = envelope(payload).encode(b"\x01" * 32)
    decoded = decode_envelope(data)
    assert canonical(decoded) == canonical(reference_decode(data))
    assert decoded.chain_hash and decoded.payload == payload


FIELDS: dict[str, Any] = {
    "id": "i", "t": "ScaledTo", "sv": 1, "k": "Deployment", "ns": "d", "n": "w", "v": 1,
    "ts": 1, "a": "a", "corr": "", "cause": "", "d": {"replicas": 3},
}  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (msgpack.packb({**FIELDS, "d": {"x": msgpack.ExtType(5, b"ab")}}), "extension type 5"),
        (msgpack.packb({**FIELDS, "v": "7"}), "Expected `int`, got `str` - at `$.v`"),
        (msgpack.packb({**FIELDS, "ts": True}), "at `$.ts`"),
        (msgpack.packb({**FIELDS, "h": None}), "at `$.h`"),
        (msgpack.packb({**FIELDS, "d": [1]}), "Expected `object`, got `array` - at `$.d`"),
        (msgpack.packb({**FIELDS, "d": {1: 2}}), "at `key` in `$.d`"),
        (
            msgpack.packb({k: v for k, v in FIELDS.items() if k != "t"}),
            "missing required field `t`",
        ),
        (msgpack.packb({b"t": 1}), "Expected `str`, got `bytes`"),
        (msgpack.packb({1: 2}), "Expected `str`, got `int`"),
        (msgpack.packb([FIELDS]), "Expected `object`, got `array`"),
        (b"\xc1", "malformed"),
        (b"", "truncated"),
        (b"\xa2\xff\xfe", "Expected `object`"),
        ("text", "bytes-like"),
        (None, "bytes-like"),
    ],
)
def test_what_is_not_an_envelope_is_refused_saying_what_and_where(bad: Any, says: str) -> None:
    with pytest.raises(ValidationFailed, match="not a fleetlog event envelope") as refused:
        decode_envelope(bad)
    assert says in str(refused.value)


def test_an_envelope_without_a_seal_or_link_decodes() -> None:
    decoded = decode_envelope(msgpack.packb(FIELDS))
    assert decoded.chain_hash == b"" and decoded.payload == {"replicas": 3}
    assert canonical(decoded) == canonical(reference_decode(msgpack.packb(FIELDS)))


def test_bytes_after_the_map_are_refused() -> None:
    sealed = envelope({"reason": "x"}).encode(b"\x02" * 32)
    unsealed = msgpack.packb(
        {"id": "i", "t": "PodReady", "sv": 1, "k": "Pod", "ns": "d", "n": "w", "v": 1,
         "ts": 1, "a": "a", "corr": "", "cause": "", "d": {}},
        use_bin_type=True,
    )  # fmt: skip
    assert decode_envelope(unsealed).chain_hash == b""
    for data in (sealed + b"\x00", sealed + sealed, unsealed + b"\x00", unsealed + sealed):
        with pytest.raises(ValidationFailed, match="trailing characters"):
            decode_envelope(data)


def test_upcast_returns_a_current_payload_as_it_is_and_walks_an_old_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import core.api.events as events

    payload = {"replicas": 3}
    assert upcast("ScaledTo", 1, payload)[1] is payload  # current: nothing to do
    assert upcast("NoSuchEvent", 7, payload) == (7, payload)  # a type without versions
    with pytest.raises(ValidationFailed, match="newer than this build knows"):
        upcast("ScaledTo", 2, payload)
    upcasters = events.Upcasters({"ScaledTo": 3})
    upcasters.register("ScaledTo", 1)(lambda p: {**p, "reason": "legacy"})
    upcasters.register("ScaledTo", 2)(lambda p: {**p, "previous": 0})
    monkeypatch.setattr(events, "UPCASTERS", upcasters)  # read per call, not captured
    assert upcast("ScaledTo", 1, payload) == (3, {"replicas": 3, "reason": "legacy", "previous": 0})
    assert upcast("ScaledTo", 3, payload)[1] is payload
    monkeypatch.setattr(events, "UPCASTERS", events.Upcasters({"Gappy": 2}))
    with pytest.raises(ValidationFailed, match="no upcaster for Gappy from version 1"):
        upcast("Gappy", 1, payload)


def test_decoding_an_old_schema_version_upcasts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.api.events as events

    upcasters = events.Upcasters({"ScaledTo": 2})
    upcasters.register("ScaledTo", 1)(lambda p: {**p, "reason": "legacy"})
    monkeypatch.setattr(events, "UPCASTERS", upcasters)
    decoded = decode_envelope(msgpack.packb(FIELDS))
    assert (decoded.schema_version, decoded.payload) == (2, {"replicas": 3, "reason": "legacy"})
    current = decode_envelope(msgpack.packb({**FIELDS, "sv": 2}))
    assert (current.schema_version, current.payload) == (2, {"replicas": 3})
    with pytest.raises(ValidationFailed, match="newer than this build knows"):
        decode_envelope(msgpack.packb({**FIELDS, "sv": 3}))
