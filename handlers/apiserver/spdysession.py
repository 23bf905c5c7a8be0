"""One SPDY/3.1 connection, server side: streams the client opens, each a two-way pipe.

Why this exists: ``kubectl port-forward`` multiplexes its forwarded connections as SPDY
streams over one connection (tunnelled in binary WebSocket messages, or a plain
``Upgrade: SPDY/3.1``). The frames and their arithmetic are pure (``core.kubeapi.spdy``); this
module runs them over a byte transport: one task reads frames and dispatches them, streams
are read and written by whoever took them, and every frame written passes one lock (the
header compressor is one stream of zlib for the connection's life, so frames must leave in
the order they were encoded).

Lifecycle: :meth:`SpdyConnection.run` returns when the transport ends (the client left, or
said GOAWAY and closed) or the client broke the protocol (answered with GOAWAY). Either way
every stream ends: its readers see the end of data, its writers :class:`StreamClosed`. The
owner decides what a new stream is for: ``accept`` returns ``None`` to take it (SYN_REPLY is
sent) or a reason to refuse it (RST_STREAM with REFUSED_STREAM).

Flow control follows :class:`core.kubeapi.spdy.FlowWindows`: WINDOW_UPDATEs go out as a
stream's reader takes its data; a peer that overruns its window (kube's spdystream keeps none)
is held back by reading no further frames until the reader catches up, so memory stays bounded
by one window per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import structlog

from core.kubeapi import spdy

log = structlog.get_logger(__name__)

WRITE_CHUNK = 32 * 1024


class Transport(Protocol):
    """A reliable, ordered byte pipe to the client (WebSocket messages or a raw connection)."""

    async def receive(self) -> bytes | None:
        """The next bytes; ``None`` once the client has closed."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class StreamClosed(Exception):
    """Writing on a stream this side has finished, or the client reset, or the connection
    ended."""


class SpdyStream:
    """One client-opened stream: read the client's data, write this side's, half-close."""

    def __init__(
        self, connection: SpdyConnection, stream_id: int, headers: Mapping[str, str]
    ) -> None:
        self._connection = connection
        self.id = stream_id
        self.headers = dict(headers)
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.remote_closed = False
        """The client sent FIN (or reset, or the connection ended): no more data comes."""
        self.local_closed = False
        self.reset_status: int | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._buffered = 0

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The client's data until its FIN, a reset or the connection's end."""
        while True:
            chunk = await self._incoming.get()
            if chunk is None:
                self._incoming.put_nowait(None)
                return
            self._buffered -= len(chunk)
            # Taken is consumed: the window reopens now, not when the next chunk is asked for.
            await self._connection._consumed(self, len(chunk))
            yield chunk

    async def write(self, data: bytes) -> None:
        """Send ``data`` (in frames the peer's window allows); StreamClosed once it cannot."""
        view = memoryview(data)
        while view:
            size = await self._connection._send_credit(self, len(view))
            await self._connection._write(spdy.Data(stream_id=self.id, data=bytes(view[:size])))
            view = view[size:]

    async def close(self) -> None:
        """This side sends no more (DATA with FIN). Closing twice, or after a reset, is a no-op."""
        if self.local_closed or self.reset_status is not None or self._connection.ended:
            self.local_closed = True
            return
        self.local_closed = True
        with contextlib.suppress(StreamClosed):
            await self._connection._write(spdy.Data(stream_id=self.id, fin=True))
        self._connection._forget_if_done(self)

    async def reset(self, status: int = spdy.CANCEL) -> None:
        """Abort the stream both ways (RST_STREAM)."""
        if self.reset_status is not None:
            return
        self._ended_by_reset(status)
        with contextlib.suppress(StreamClosed):
            await self._connection._write(spdy.RstStream(stream_id=self.id, status=status))

    # -- the connection's side -----------------------------------------------------------

    def _data(self, data: bytes, *, fin: bool) -> None:
        if data:
            self._buffered += len(data)
            self._incoming.put_nowait(data)
        if fin:
            self._remote_end()

    def _remote_end(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            self._incoming.put_nowait(None)

    def _ended_by_reset(self, status: int) -> None:
        self.reset_status = status
        self.local_closed = True
        self._remote_end()
        self._drained.set()  # nobody will read what is buffered: stop holding the peer back
        self._connection._forget(self)


class SpdyConnection:
    """A SPDY/3.1 server session over ``transport``; ``accept`` decides on each new stream."""

    def __init__(
        self,
        transport: Transport,
        *,
        accept: Callable[[SpdyStream], str | None],
        max_frame: int = spdy.MAX_FRAME,
    ) -> None:
        self._transport = transport
        self._accept = accept
        self._decoder = spdy.FrameDecoder(max_frame=max_frame)
        self._encoder = spdy.FrameEncoder()
        self._windows = spdy.FlowWindows()
        self._streams: dict[int, SpdyStream] = {}
        self._last_stream_id = 0
        self._write_lock = asyncio.Lock()
        self._credit = asyncio.Condition()
        self._going_away = False
        self.ended = False

    async def run(self) -> None:
        """Serve until the client leaves or breaks the protocol; then every stream ends."""
        try:
            while (data := await self._transport.receive()) is not None:
                for item in self._decoder.feed(data):
                    await self._dispatch(item)
        except spdy.SessionError as exc:
            log.info("spdy.session_error", error=exc.message)
            with contextlib.suppress(Exception):
                await self._write(
                    spdy.GoAway(last_good_stream_id=self._last_stream_id, status=exc.status)
                )
        finally:
            await self._end()

    async def _end(self) -> None:
        self.ended = True
        for stream in list(self._streams.values()):
            stream.local_closed = True
            stream._remote_end()
        self._streams.clear()
        async with self._credit:
            self._credit.notify_all()
        with contextlib.suppress(Exception):
            await self._transport.close()

    # -- reading -------------------------------------------------------------------------

    async def _dispatch(self, item: spdy.Frame | spdy.StreamError) -> None:
        match item:
            case spdy.StreamError(stream_id=sid, status=status, message=message):
                log.info("spdy.stream_refused", stream=sid, error=message)
                stream = self._streams.get(sid)
                if stream is not None:
                    await stream.reset(status)
                else:
                    await self._write(spdy.RstStream(stream_id=sid, status=status))
            case spdy.SynStream():
                await self._syn_stream(item)
            case spdy.Data(stream_id=sid, data=data, fin=fin):
                stream = self._streams.get(sid)
                if stream is None or stream.remote_closed:
                    status = spdy.INVALID_STREAM if stream is None else spdy.STREAM_ALREADY_CLOSED
                    await self._write(spdy.RstStream(stream_id=sid, status=status))
                    return
                self._windows.received(sid, len(data))
                stream._data(data, fin=fin)
                self._forget_if_done(stream)
                # A peer that ignores its window is held back here (see the module docstring).
                while (self._windows.overrun(sid) and stream._buffered > 0
                       and stream.reset_status is None):  # fmt: skip
                    stream._drained.clear()
                    await stream._drained.wait()
            case spdy.RstStream(stream_id=sid, status=status):
                stream = self._streams.get(sid)
                if stream is not None:
                    stream._ended_by_reset(status)
                    async with self._credit:
                        self._credit.notify_all()
            case spdy.Settings():
                self._windows.settings(item)
                async with self._credit:
                    self._credit.notify_all()
            case spdy.WindowUpdate():
                error = self._windows.window_update(item)
                if error is not None:
                    await self._dispatch(error)
                async with self._credit:
                    self._credit.notify_all()
            case spdy.Ping(ping_id=ping_id):
                if ping_id % 2 == 1:  # the client's (a server's own pings are even)
                    await self._write(item)
            case spdy.GoAway():
                self._going_away = True  # no new streams; open ones run to their end
            case spdy.SynReply(stream_id=sid):
                # This side opens no streams, so there is nothing to reply to.
                await self._write(spdy.RstStream(stream_id=sid, status=spdy.INVALID_STREAM))
            case spdy.Headers():
                pass  # extra headers on an open stream mean nothing to a pipe

    async def _syn_stream(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_stream_id:
            raise spdy.SessionError(
                f"stream {sid} is not a new client stream (odd and above {self._last_stream_id})"
            )
        self._last_stream_id = sid
        if self._going_away:
            await self._write(spdy.RstStream(stream_id=sid, status=spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, frame.headers)
        refusal = self._accept(stream)
        if refusal is not None:
            log.info("spdy.stream_refused", stream=sid, reason=refusal)
            await self._write(spdy.RstStream(stream_id=sid, status=spdy.REFUSED_STREAM))
            return
        self._streams[sid] = stream
        self._windows.open(sid)
        if frame.fin or frame.unidirectional:
            stream._remote_end()
        await self._write(spdy.SynReply(stream_id=sid))

    # -- the streams' side ---------------------------------------------------------------

    async def _consumed(self, stream: SpdyStream, size: int) -> None:
        if stream._buffered <= 0:
            stream._drained.set()
        if self.ended:
            return
        for update in self._windows.consumed(stream.id, size):
            if update.stream_id != 0 and stream.remote_closed:
                continue  # the client sends nothing more on it
            with contextlib.suppress(StreamClosed):
                await self._write(update)

    async def _send_credit(self, stream: SpdyStream, wanted: int) -> int:
        async with self._credit:
            while True:
                if stream.local_closed or stream.reset_status is not None or self.ended:
                    raise StreamClosed(f"stream {stream.id} is closed")
                allowed = self._windows.sendable(stream.id)
                if allowed > 0:
                    size = min(wanted, allowed, WRITE_CHUNK)
                    self._windows.sent(stream.id, size)
                    return size
                await self._credit.wait()

    async def _write(self, frame: spdy.Frame) -> None:
        async with self._write_lock:
            if self.ended and not isinstance(frame, spdy.GoAway):
                raise StreamClosed("the connection has ended")
            try:
                await self._transport.send(self._encoder.encode(frame))
            except (ConnectionError, RuntimeError) as exc:
                raise StreamClosed(f"the connection failed: {exc}") from None

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._forget(stream)

    def _forget(self, stream: SpdyStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
            self._windows.close(stream.id)
