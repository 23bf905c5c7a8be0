"""The server side of a SPDY/3.1 connection (handlers.apiserver.spdysession) over an in-memory
byte pipe: stream acceptance, both flow-control directions, pings, resets.

Why this exists: kubectl's own SPDY library keeps no windows, so the e2e tests with kubectl
never exercise a window-keeping peer; these drive the session with frames made by
``core.kubeapi.spdy`` as such a peer would send them.
"""

from __future__ import annotations

import asyncio

import pytest

from core.kubeapi import spdy
from handlers.apiserver.spdysession import SpdyConnection, SpdyStream


class Pipe:
    """The client's end of an in-memory connection; the session gets the other end."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.from_server: asyncio.Queue[bytes] = asyncio.Queue()
        self.encoder = spdy.FrameEncoder()
        self.decoder = spdy.FrameDecoder()
        self.frames: list[spdy.Frame | spdy.StreamError] = []

    # the session's side
    async def receive(self) -> bytes | None:
        return await self.to_server.get()

    async def send(self, data: bytes) -> None:
        self.from_server.put_nowait(data)

    async def close(self) -> None:
        self.to_server.put_nowait(None)

    # the client's side
    def send_frame(self, frame: spdy.Frame) -> None:
        self.to_server.put_nowait(self.encoder.encode(frame))

    async def next_frame(self) -> spdy.Frame | spdy.StreamError:
        while not self.frames:
            data = await asyncio.wait_for(self.from_server.get(), 10)
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def quiet(self) -> bool:
        """Nothing more arrives for a moment (the server is waiting for something)."""
        await asyncio.sleep(0.2)
        return self.from_server.empty() and not self.frames


@pytest.fixture
async def served() -> tuple[Pipe, list[SpdyStream], asyncio.Task[None]]:
    pipe = Pipe()
    streams: list[SpdyStream] = []

    def accept(stream: SpdyStream) -> str | None:
        if stream.header("port") == "":
            return "no port"
        streams.append(stream)
        return None

    task = asyncio.create_task(SpdyConnection(pipe, accept=accept).run())
    yield pipe, streams, task
    pipe.to_server.put_nowait(None)
    await asyncio.wait_for(task, 10)


async def test_streams_are_accepted_or_refused_and_pings_answered(
    served: tuple[Pipe, list[SpdyStream], asyncio.Task[None]],
) -> None:
    pipe, streams, _ = served
    pipe.send_frame(spdy.SynStream(stream_id=1, headers={"port": "80"}))
    assert await pipe.next_frame() == spdy.SynReply(stream_id=1)
    pipe.send_frame(spdy.SynStream(stream_id=3, headers={}))
    assert await pipe.next_frame() == spdy.RstStream(stream_id=3, status=spdy.REFUSED_STREAM)
    pipe.send_frame(spdy.Ping(ping_id=9))
    assert await pipe.next_frame() == spdy.Ping(ping_id=9)
    pipe.send_frame(spdy.Data(stream_id=7, data=b"x"))
    assert await pipe.next_frame() == spdy.RstStream(stream_id=7, status=spdy.INVALID_STREAM)
    # A stream id that goes backwards breaks the connection.
    pipe.send_frame(spdy.SynStream(stream_id=1, headers={"port": "80"}))
    assert await pipe.next_frame() == spdy.GoAway(last_good_stream_id=3, status=1)
    assert len(streams) == 1 and streams[0].remote_closed  # and every stream has ended


async def test_a_window_keeping_peer_is_sent_no_more_than_its_window(
    served: tuple[Pipe, list[SpdyStream], asyncio.Task[None]],
) -> None:
    pipe, streams, _ = served
    pipe.send_frame(spdy.Settings(values={spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
    pipe.send_frame(spdy.SynStream(stream_id=1, headers={"port": "80"}))
    assert await pipe.next_frame() == spdy.SynReply(stream_id=1)
    writing = asyncio.create_task(streams[0].write(b"a" * 2500))
    assert await pipe.next_frame() == spdy.Data(stream_id=1, data=b"a" * 1000)
    assert await pipe.quiet() and not writing.done()  # the window is spent: it waits
    pipe.send_frame(spdy.WindowUpdate(stream_id=1, delta=2000))
    assert await pipe.next_frame() == spdy.Data(stream_id=1, data=b"a" * 1500)
    await asyncio.wait_for(writing, 10)


async def test_a_peer_without_windows_is_sent_everything(
    served: tuple[Pipe, list[SpdyStream], asyncio.Task[None]],
) -> None:
    pipe, streams, _ = served
    pipe.send_frame(spdy.SynStream(stream_id=1, headers={"port": "80"}))
    assert await pipe.next_frame() == spdy.SynReply(stream_id=1)
    await asyncio.wait_for(streams[0].write(b"b" * 200_000), 10)  # beyond any 64 KiB window
    received = b""
    while len(received) < 200_000:
        frame = await pipe.next_frame()
        assert isinstance(frame, spdy.Data)
        received += frame.data
    assert received == b"b" * 200_000


async def test_window_updates_follow_the_reader_and_an_overrun_is_held_back(
    served: tuple[Pipe, list[SpdyStream], asyncio.Task[None]],
) -> None:
    pipe, streams, _ = served
    pipe.send_frame(spdy.SynStream(stream_id=1, headers={"port": "80"}))
    assert await pipe.next_frame() == spdy.SynReply(stream_id=1)
    for _ in range(3):  # 96 KiB: beyond the 64 KiB window, as spdystream sends
        pipe.send_frame(spdy.Data(stream_id=1, data=b"c" * 32_768))
    pipe.send_frame(spdy.Ping(ping_id=11))
    # Nothing read yet: no updates, and the reader of the connection waits (the ping behind
    # the overrun is not answered until the stream's reader catches up).
    assert await pipe.quiet()
    chunks = streams[0].chunks()
    taken = [await anext(chunks) for _ in range(3)]
    assert sum(map(len, taken)) == 98_304
    # One stream and one session update per half window taken, and the ping's answer.
    answers = [await pipe.next_frame() for _ in range(7)]
    assert answers.count(spdy.WindowUpdate(stream_id=1, delta=32_768)) == 3
    assert answers.count(spdy.WindowUpdate(stream_id=0, delta=32_768)) == 3
    assert spdy.Ping(ping_id=11) in answers
    pipe.send_frame(spdy.RstStream(stream_id=1, status=spdy.CANCEL))
    assert [chunk async for chunk in chunks] == []  # a reset ends the stream's data
