"""The plain SPDY upgrade (``Connection: Upgrade``, ``Upgrade: SPDY/3.1``): kubectl's fallback
when a WebSocket upgrade fails, and what kubectl before 1.31 speaks for port-forward.

Why this exists: once SPDY's frames are served over a WebSocket (``handlers.apiserver.
spdysession``), the same session runs over the raw connection just as well; all that differs is
the handshake. The client offers its stream protocols in ``X-Stream-Protocol-Version`` (kube's
``httpstream.Handshake``: the first one offered that the server serves is chosen and echoed; no
offer at all is accepted as the legacy unversioned protocol; none in common is 403 naming what
is served), the server answers ``101 Switching Protocols``, and from then on the connection's
bytes are SPDY frames both ways.

aiohttp switches its HTTP parser off only for WebSocket and ``tcp`` upgrades, so the switch is
made here the way aiohttp's own WebSocket response makes it: after the 101 is written, the
request's protocol is given a payload parser of ours (:class:`UpgradedConnection`), which then
receives every byte the connection brings, and keep-alive is turned off so the connection ends
with this request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from core.kubeapi.status import APIError

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
MAX_BUFFERED = 1024 * 1024
"""Bytes read ahead of the SPDY session before the connection stops being read."""


def wants_spdy(request: web.Request) -> bool:
    """The request asks to switch the connection to SPDY/3.1."""
    connection = {v.strip().lower() for v in request.headers.get("Connection", "").split(",")}
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "spdy/3.1"


def negotiate(request: web.Request, served: Sequence[str]) -> str:
    """The stream protocol to speak ("" for a client that names none), as kube chooses it."""
    offered = [
        name.strip()
        for value in request.headers.getall(PROTOCOL_HEADER, [])
        for name in value.split(",")
        if name.strip()
    ]
    if not offered:
        return ""
    for name in offered:
        if name in served:
            return name
    raise APIError(
        403,
        "Forbidden",
        f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
        f"server accepts {list(served)}",
    )


class UpgradedConnection:
    """The connection after the 101: aiohttp's payload parser on the way in (it calls
    :meth:`feed_data` with whatever arrives), and a SPDY session's transport both ways."""

    def __init__(self, request: web.Request, writer: AbstractStreamWriter) -> None:
        transport = request.transport
        assert transport is not None, "the connection closed before the upgrade"
        self._transport = transport
        self._writer = writer
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffered = 0
        self._paused = False

    # aiohttp's payload parser interface

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._chunks.put_nowait(bytes(data))
        self._buffered += len(data)
        if self._buffered > MAX_BUFFERED and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self._chunks.put_nowait(None)

    # the SPDY session's transport

    async def receive(self) -> bytes | None:
        chunk = await self._chunks.get()
        if chunk is None:
            self._chunks.put_nowait(None)
            return None
        self._buffered -= len(chunk)
        if self._paused and self._buffered < MAX_BUFFERED // 2:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._transport.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._transport.close()


async def accept_spdy(
    request: web.Request, served: Sequence[str]
) -> tuple[web.StreamResponse, UpgradedConnection]:
    """Answer 101 and take the connection over; raises kube's 403 when no protocol fits."""
    chosen = negotiate(request, served)
    response = web.StreamResponse(
        status=101,
        headers={"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE,
                 **({PROTOCOL_HEADER: chosen} if chosen else {})},
    )  # fmt: skip
    response.force_close()
    writer = await response.prepare(request)
    assert writer is not None
    connection = UpgradedConnection(request, writer)
    request.protocol.set_parser(connection)  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    return response, connection
