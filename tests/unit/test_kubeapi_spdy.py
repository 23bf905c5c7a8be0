"""SPDY/3.1 framing (core.kubeapi.spdy): frames, header compression, refusals, flow control."""

from __future__ import annotations

import zlib

import pytest

from core.kubeapi import spdy
from core.kubeapi.spdy import (
    Data,
    FlowWindows,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    Headers,
    Ping,
    RstStream,
    SessionError,
    Settings,
    StreamError,
    SynReply,
    SynStream,
    WindowUpdate,
)

# kubectl 1.37's first bytes on a port-forward tunnel (captured from its -v=9 log): the error
# stream's SYN_STREAM, its FIN, then the data stream's SYN_STREAM, whose header block is only
# 24 bytes because it leans on the first block's compression context.
KUBECTL_OPENING = bytes.fromhex(
    "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb"
    "45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff000000010100000080030001000000180000"
    "0003000000000000c2aa19540e2512d60b000000ffff"
)


def test_the_dictionary_is_the_drafts_byte_for_byte() -> None:
    # zlib puts the dictionary's Adler-32 in the stream and refuses any other dictionary.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 3821447106
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_kubectls_own_frames_decode_in_any_pieces() -> None:
    expected = [
        SynStream(stream_id=1, headers={"streamtype": "error", "port": "8080", "requestid": "0"}),
        Data(stream_id=1, fin=True),
        SynStream(stream_id=3, headers={"streamtype": "data", "port": "8080", "requestid": "0"}),
    ]
    assert FrameDecoder().feed(KUBECTL_OPENING) == expected
    piecewise = FrameDecoder()
    frames: list[object] = []
    for i in range(len(KUBECTL_OPENING)):  # kubectl writes a frame's fields one by one
        frames += piecewise.feed(KUBECTL_OPENING[i : i + 1])
    assert frames == expected


def test_every_frame_round_trips() -> None:
    frames: list[spdy.Frame] = [
        SynStream(stream_id=1, headers={"port": "80", "streamtype": "data"}, associated_to=0,
                  priority=3, slot=2, fin=True, unidirectional=True),
        SynReply(stream_id=1, headers={}),
        SynReply(stream_id=3, headers={"status": "200 OK"}, fin=True),
        Headers(stream_id=1, headers={"x": "a\x00b"}, fin=True),
        Data(stream_id=1, data=b"\x00" * 70_000),
        Data(stream_id=5, data=b"", fin=True),
        RstStream(stream_id=7, status=spdy.CANCEL),
        Settings(values={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20, 4: 100}, clear=True),
        Ping(ping_id=0xFFFFFFFF),
        GoAway(last_good_stream_id=9, status=spdy.GOAWAY_PROTOCOL_ERROR),
        WindowUpdate(stream_id=0, delta=spdy.MAX_WINDOW),
        WindowUpdate(stream_id=3, delta=1),
    ]  # fmt: skip
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(frame) for frame in frames)
    assert decoder.feed(wire) == frames
    assert decoder.feed(b"") == []


def test_header_compression_is_one_context_per_direction_for_the_connections_life() -> None:
    encoder = FrameEncoder()
    headers = {"streamtype": "data", "port": "8080", "requestid": "17"}
    first = encoder.encode(SynStream(stream_id=1, headers=headers))
    second = encoder.encode(SynStream(stream_id=3, headers=headers))
    third = encoder.encode(SynReply(stream_id=3, headers={"port": "8080"}))
    assert len(second) < len(first)  # the second block refers back into the first
    decoder = FrameDecoder()
    assert decoder.feed(first + second + third) == [
        SynStream(stream_id=1, headers=headers),
        SynStream(stream_id=3, headers=headers),
        SynReply(stream_id=3, headers={"port": "8080"}),
    ]
    # A decoder that did not see the first block cannot read the second.
    with pytest.raises(SessionError):
        FrameDecoder().feed(second)


def test_a_block_from_another_zlib_with_the_dictionary_decodes() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                  spdy.DICTIONARY)  # fmt: skip
    block = spdy.pack_headers({"port": "443"})
    compressed = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    body = (1).to_bytes(4, "big") + bytes(6) + compressed
    wire = bytes.fromhex("80030001") + len(body).to_bytes(4, "big") + body
    assert FrameDecoder().feed(wire) == [SynStream(stream_id=1, headers={"port": "443"})]


def _syn(block: bytes, *, stream_id: int = 1) -> bytes:
    compressor = zlib.compressobj(zdict=spdy.DICTIONARY)
    compressed = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    body = stream_id.to_bytes(4, "big") + bytes(6) + compressed
    return bytes.fromhex("80030001") + len(body).to_bytes(4, "big") + body


def test_a_malformed_header_block_refuses_its_stream_only() -> None:
    duplicate = b"".join(
        [(2).to_bytes(4, "big")]
        + [(4).to_bytes(4, "big") + b"port" + (2).to_bytes(4, "big") + b"80"] * 2
    )
    upper = (1).to_bytes(4, "big") + (4).to_bytes(4, "big") + b"Port" + (0).to_bytes(4, "big")
    short = (3).to_bytes(4, "big")
    for block, words in ((duplicate, "twice"), (upper, "lower case"), (short, "past the block")):
        decoder = FrameDecoder()
        (refused,) = decoder.feed(_syn(block))
        assert isinstance(refused, StreamError) and words in refused.message
        assert refused.status == spdy.PROTOCOL_ERROR and refused.stream_id == 1
        # The connection goes on: a ping after it still decodes.
        assert decoder.feed(FrameEncoder().encode(Ping(ping_id=1))) == [Ping(ping_id=1)]


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (bytes.fromhex("80020006 00000004 00000001"), "version 2"),
        (bytes.fromhex("80030006 00000005 0000000100"), "must be 4 bytes"),
        (bytes.fromhex("80030003 00000004 00000001"), "must be 8 bytes"),
        (bytes.fromhex("80030001 00000002 0000"), "too short"),
        (bytes.fromhex("00000000 01000000"), "stream 0"),
        (bytes.fromhex("80030004 00000008 00000002 00000007 00000001"), "wrong length"),
        (bytes.fromhex("80030009 00000008 00000000 00000000"), "session WINDOW_UPDATE of 0"),
        (bytes.fromhex("00000001 00ffffff"), "longer than"),
        (bytes.fromhex("80030001 0000000e 00000001 00000000 0000 deadbeef"), "does not inflate"),
    ],
)
def test_bad_frames_end_the_connection(wire: bytes, words: str) -> None:
    decoder = FrameDecoder()
    with pytest.raises(SessionError) as raised:
        decoder.feed(wire)
    assert words in raised.value.message
    assert raised.value.status == spdy.GOAWAY_PROTOCOL_ERROR
    with pytest.raises(SessionError):  # and it stays broken
        decoder.feed(FrameEncoder().encode(Ping(ping_id=1)))


def test_a_header_block_that_inflates_beyond_the_limit_is_refused() -> None:
    huge = spdy.pack_headers({"x": "a" * 300_000})
    with pytest.raises(SessionError, match="inflates beyond"):
        FrameDecoder().feed(_syn(huge))


def test_unknown_control_frames_are_skipped() -> None:
    credential = bytes.fromhex("8003000a 00000003 010203")
    ping = FrameEncoder().encode(Ping(ping_id=5))
    assert FrameDecoder().feed(credential + ping) == [Ping(ping_id=5)]


def test_the_encoder_refuses_what_the_format_cannot_carry() -> None:
    encoder = FrameEncoder()
    with pytest.raises(ValueError):
        encoder.encode(Data(stream_id=0, data=b"x"))
    with pytest.raises(ValueError):
        encoder.encode(WindowUpdate(stream_id=1, delta=0))
    with pytest.raises(ValueError):
        encoder.encode(RstStream(stream_id=2**31, status=1))


def test_window_updates_go_out_as_the_consumer_takes_the_data() -> None:
    windows = FlowWindows()
    windows.open(1)
    windows.received(1, 40_000)
    assert not windows.overrun(1)
    assert windows.consumed(1, 20_000) == []  # less than half a window taken
    assert windows.consumed(1, 20_000) == [
        WindowUpdate(stream_id=1, delta=40_000),
        WindowUpdate(stream_id=0, delta=40_000),
    ]
    windows.received(1, 65_536)  # the whole window again: allowed
    assert not windows.overrun(1)
    windows.received(1, 1)  # one byte beyond it
    assert windows.overrun(1)
    assert windows.consumed(1, 65_537)[0] == WindowUpdate(stream_id=1, delta=65_537)
    assert not windows.overrun(1)


def test_the_session_window_spans_every_stream() -> None:
    windows = FlowWindows()
    for sid in (1, 3):
        windows.open(sid)
        windows.received(sid, 40_000)
    assert windows.overrun(1) and windows.overrun(3)  # 80 000 > the session's 65 536
    updates = windows.consumed(1, 40_000)
    assert WindowUpdate(stream_id=0, delta=40_000) in updates
    assert not windows.overrun(1)


def test_sending_follows_the_peers_windows_once_it_keeps_them() -> None:
    windows = FlowWindows()
    windows.open(1)
    # kube's spdystream never sends WINDOW_UPDATE: its windows are not held to.
    windows.sent(1, 200_000)
    assert windows.sendable(1) == spdy.MAX_WINDOW

    keeper = FlowWindows()
    keeper.open(1)
    keeper.settings(Settings(values={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
    assert keeper.sendable(1) == 1000
    keeper.sent(1, 1000)
    assert keeper.sendable(1) == 0
    assert keeper.window_update(WindowUpdate(stream_id=1, delta=300)) is None
    assert keeper.sendable(1) == 300
    keeper.settings(Settings(values={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 500}))
    assert keeper.sendable(1) == 0  # the window shrank by 500: now -200, wait for updates
    keeper.window_update(WindowUpdate(stream_id=1, delta=250))
    assert keeper.sendable(1) == 50
    keeper.open(3)
    assert keeper.sendable(3) == 500  # new streams start from the new initial window


def test_the_session_send_window_bounds_every_stream() -> None:
    windows = FlowWindows()
    windows.open(1)
    windows.open(3)
    windows.window_update(WindowUpdate(stream_id=1, delta=100_000))
    windows.sent(1, 65_536)
    assert windows.sendable(1) == 0 and windows.sendable(3) == 0  # the session's is spent
    windows.window_update(WindowUpdate(stream_id=0, delta=10))
    assert windows.sendable(3) == 10


def test_a_window_that_overflows_is_an_error() -> None:
    windows = FlowWindows()
    windows.open(1)
    refused = windows.window_update(WindowUpdate(stream_id=1, delta=spdy.MAX_WINDOW))
    assert refused == StreamError(1, spdy.FLOW_CONTROL_ERROR,
                                  "the stream's send window overflows 2^31-1")  # fmt: skip
    with pytest.raises(SessionError):
        windows.window_update(WindowUpdate(stream_id=0, delta=spdy.MAX_WINDOW))
    assert windows.window_update(WindowUpdate(stream_id=99, delta=5)) is None  # ended stream
