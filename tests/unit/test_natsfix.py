"""The faster header parser must agree with nats-py's own on every header block, and a batch
queued as one buffer must be byte for byte what nats-py's ``publish`` writes message by
message."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from streams.natsfix import (
    Outgoing,
    encode_publishes,
    original_parse_header_lines,
    parse_header_lines,
)

header_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda k, v, sep: k + sep + v,
            st.sampled_from(
                [b"Nats-Msg-Id", b"A B", b" Lead", b"Tail ", b"x\tY", b"\xc3\xa9", b"", b"K"]
            ),
            st.binary(max_size=20),
            st.sampled_from([b":", b": ", b":\t", b""]),
        ),
    ),
    max_size=8,
).map(b"\r\n".join)


@given(header_bytes)
def test_same_result_as_nats_py(raw: bytes) -> None:
    assert parse_header_lines(raw) == original_parse_header_lines(raw)


def test_typical_event_headers() -> None:
    raw = b"Nats-Msg-Id: t:0\r\nNats-Expected-Last-Subject-Sequence: 12\r\n\r\n"
    assert parse_header_lines(raw) == {
        "Nats-Msg-Id": "t:0",
        "Nats-Expected-Last-Subject-Sequence": "12",
    }


def nats_py_bytes(messages: list[Outgoing]) -> bytes:
    """What nats-py's publish path queues for ``messages``, one call each (a client that never
    connected keeps what it would send in its pending buffer)."""
    client = Client()

    async def queue() -> None:
        for subject, payload, reply, headers in messages:
            await client._send_publish(subject, reply, payload, len(payload), dict(headers))

    asyncio.run(queue())
    return b"".join(client._pending)


header_values = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)
outgoing = st.tuples(
    st.sampled_from(["fleet.evt.pod.default.web-0", "fleet.evt.node._.n1", "a"]),
    st.binary(max_size=64),
    st.sampled_from(["", "_FLACK.abc.1"]),
    st.dictionaries(
        st.sampled_from(["Nats-Msg-Id", "Nats-Batch-Id", "Nats-Batch-Sequence", "X-Y"]),
        header_values,
        max_size=4,
    ),
)


@given(st.lists(outgoing, min_size=1, max_size=6))
def test_a_batch_is_one_buffer_of_what_nats_py_writes_per_message(
    messages: list[Outgoing],
) -> None:
    assert encode_publishes(messages) == nats_py_bytes(messages)


def test_an_atomic_batch_of_bindings_encodes_as_nats_py_would() -> None:
    messages: list[Outgoing] = [
        (
            f"fleet.evt.pod.bench.pod-{i}",
            b"\x85payload" * 20,
            "_FLACK.x.7" if i == 511 else "",
            {
                "Nats-Msg-Id": f"bind.sched-0.9f2c:{i}",
                "Nats-Expected-Last-Subject-Sequence": str(1000 + i),
                "Nats-Batch-Id": "B7Q2",
                "Nats-Batch-Sequence": str(i + 1),
                **({"Nats-Batch-Commit": "1"} if i == 511 else {}),
            },
        )
        for i in range(512)
    ]
    assert encode_publishes(messages) == nats_py_bytes(messages)


def test_headers_nats_py_would_rewrite_go_through_its_publish() -> None:
    for headers in ({"K": " padded"}, {"K": "two\r\nlines"}, {"K": "é"}, {"A B": "v"}):
        assert encode_publishes([("s", b"", "", headers)]) is None
    assert encode_publishes([("with space", b"", "", {})]) is None
