"""The faster header parser must agree with nats-py's own on every header block."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.natsfix import original_parse_header_lines, parse_header_lines

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
