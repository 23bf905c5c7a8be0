"""``pods/portforward`` over WebSocket: the kubelet's channel protocol for port-forwarding.

Why this exists: a pod's ports are reachable from its node only (its own network namespace), so
each forwarded connection becomes a byte-stream session with the node's agent over NATS
(``streams.nodestream``), which connects to ``localhost:<port>`` inside the pod's network
(``handlers.agent.streaming``). The WebSocket side is the kubelet's WebSocket port-forward
protocol (subprotocol ``v4.channel.k8s.io`` or ``portforward.k8s.io``): the request names its
ports (``?ports=8080,9090``); port *i* has data channel ``2i`` and error channel ``2i+1``; the
first message on each channel is the port (two bytes, little-endian); then the data channel
carries the connection's bytes both ways, and the error channel a text message if the
connection to the pod failed or broke. One WebSocket is one connection per port; it closes
when every port's connection has ended.

What ``kubectl port-forward`` itself speaks (1.31 and later) is the other protocol served
here: SPDY/3.1 tunnelled in binary WebSocket messages (subprotocol
``SPDY/3.1+portforward.k8s.io``), chosen when the client offers it. Then the connection is the
kubelet's SPDY port-forward (``handlers.apiserver.spdysession`` runs the frames): the client
opens two streams per forwarded connection, ``streamType`` ``error`` and ``data``, paired by
their ``requestID`` header and naming the pod's ``port``; once both have arrived the data
stream is piped to a node session as above, and if the connection to the pod fails or breaks
its message goes on the error stream; when the pod closes the connection both streams are
finished (FIN). A pair that is not complete within 30 s gets "timed out waiting for streams".
Streams with a missing or bad ``port`` or ``streamType`` are refused (RST_STREAM). When the
client goes away, every node session of the connection ends, and the agent closes the
connections to the pod. The ports come from the streams, so such a request needs no
``ports`` parameter. The same SPDY session is served over a plain ``Upgrade: SPDY/3.1``
(``handlers.apiserver.spdyupgrade``; stream protocol ``portforward.k8s.io``), kubectl's fallback
and what kubectl before 1.31 speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from core.kubeapi import spdy
from core.kubeapi.paths import ResourcePath
from core.kubeapi.status import APIError, method_not_allowed
from core.kubeapi.streaming import (
    PORTFORWARD_PROTOCOL_V1,
    PORTFORWARD_PROTOCOLS,
    SPDY_PORTFORWARD_PROTOCOL,
    ForwardRequest,
    decode,
    encode,
    forwarded_ports,
    port_preamble,
    spdy_forward_request,
)
from handlers.apiserver.spdysession import SpdyConnection, SpdyStream, StreamClosed, Transport
from handlers.apiserver.spdyupgrade import accept_spdy, wants_spdy
from handlers.apiserver.subresources.exec import (
    accept_websocket,
    offered_protocols,
    open_node_session,
    running_node,
)
from projections.cluster import ObjectRecord
from streams.nodestream import Session, SessionError

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


async def serve_portforward(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise method_not_allowed(path.target)
    if SPDY_PORTFORWARD_PROTOCOL in offered_protocols(request) or wants_spdy(request):
        return await _serve_spdy(resources, request, path)
    ports = forwarded_ports([*request.query.getall("ports", []), *request.query.getall("port", [])])
    record = await resources.current(path)
    node = running_node(record)
    websocket = accept_websocket(request, PORTFORWARD_PROTOCOLS, "port-forward")
    sessions: list[Session] = []
    try:
        for port in ports:
            sessions.append(
                await open_node_session(
                    resources,
                    node,
                    {
                        "op": "portforward",
                        "uid": record.uid,
                        "namespace": record.namespace,
                        "pod": record.name,
                        "port": port,
                    },
                )
            )
        await websocket.prepare(request)
        await _bridge(websocket, ports, sessions)
    finally:
        for session in sessions:
            await session.end({"error": "the client went away"})
    return websocket


async def _bridge(
    websocket: web.WebSocketResponse, ports: list[int], sessions: list[Session]
) -> None:
    protocol = websocket.ws_protocol or PORTFORWARD_PROTOCOLS[0]
    for i, port in enumerate(ports):
        await websocket.send_bytes(port_preamble(2 * i, port))
        await websocket.send_bytes(port_preamble(2 * i + 1, port))

    async def from_client() -> None:
        async for message in websocket:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                parsed = decode(message.data, protocol=protocol)
            except ValueError:
                continue
            index, kind = divmod(parsed.channel, 2)
            if kind != 0 or index >= len(sessions):
                continue
            with contextlib.suppress(SessionError):
                if parsed.close:
                    await sessions[index].eof(0)
                elif parsed.data:
                    await sessions[index].send(0, parsed.data)

    async def to_client(index: int, session: Session) -> None:
        async for frame in session.frames():
            if frame.data:
                await websocket.send_bytes(encode(2 * index, frame.data))
        with contextlib.suppress(Exception):
            outcome = await session.result
            if outcome.get("error"):
                await websocket.send_bytes(encode(2 * index + 1, str(outcome["error"]).encode()))

    reader = asyncio.create_task(from_client())
    writers = [asyncio.create_task(to_client(i, s)) for i, s in enumerate(sessions)]
    try:
        await asyncio.wait({reader, asyncio.gather(*writers)}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [reader, *writers]:
            task.cancel()
        await asyncio.gather(reader, *writers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await websocket.close()


# -- SPDY/3.1 (what kubectl port-forward speaks) --------------------------------------------

PAIR_TIMEOUT_S = 30.0
"""How long the kubelet waits for a request's second stream (its streamCreationTimeout)."""


async def _serve_spdy(
    resources: Resources, request: web.Request, path: ResourcePath
) -> web.StreamResponse:
    record = await resources.current(path)
    node = running_node(record)
    response: web.StreamResponse
    transport: Transport
    if wants_spdy(request):
        response, transport = await accept_spdy(request, (PORTFORWARD_PROTOCOL_V1,))
    else:
        websocket = accept_websocket(request, (SPDY_PORTFORWARD_PROTOCOL,), "port-forward")
        await websocket.prepare(request)
        response, transport = websocket, _WebSocketPipe(websocket)
    forwarder = _SpdyForwarder(resources, record, node)
    connection = SpdyConnection(transport, accept=forwarder.accept)
    try:
        await connection.run()
    finally:
        await forwarder.close()
    return response


class _WebSocketPipe:
    """SPDY's byte stream as kube tunnels it: the payloads of binary messages, in order."""

    def __init__(self, websocket: web.WebSocketResponse) -> None:
        self._websocket = websocket

    async def receive(self) -> bytes | None:
        message = await self._websocket.receive()
        if message.type == WSMsgType.BINARY:
            return bytes(message.data)
        if message.type == WSMsgType.TEXT:
            raise spdy.SessionError("a text message in a SPDY tunnel (only binary ones carry it)")
        return None  # closing, closed or broken

    async def send(self, data: bytes) -> None:
        await self._websocket.send_bytes(data)

    async def close(self) -> None:
        await self._websocket.close()


@dataclass(slots=True)
class _Pair:
    """The two streams of one forwarded connection, as they arrive."""

    request_id: str
    port: int
    data: SpdyStream | None = None
    error: SpdyStream | None = None


class _SpdyForwarder:
    """The kubelet's port-forward over one SPDY connection: pairs streams, forwards pairs."""

    def __init__(self, resources: Resources, record: ObjectRecord, node: str) -> None:
        self._resources = resources
        self._record = record
        self._node = node
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def accept(self, stream: SpdyStream) -> str | None:
        try:
            wanted = spdy_forward_request(stream.headers, stream_id=stream.id)
        except ValueError as exc:
            return str(exc)
        pair = self._pairs.get(wanted.request_id)
        if pair is None:
            pair = self._pairs[wanted.request_id] = _Pair(wanted.request_id, wanted.port)
            self._spawn(self._expire(pair))
        self._spawn(self._add(pair, stream, wanted))
        return None

    async def _add(self, pair: _Pair, stream: SpdyStream, wanted: ForwardRequest) -> None:
        slot = "error" if wanted.error_stream else "data"
        if getattr(pair, slot) is not None:
            await self._say(pair, f"error processing stream for request {pair.request_id}: "
                                  f"{slot} stream already assigned")  # fmt: skip
            await stream.reset()
            return
        setattr(pair, slot, stream)
        if pair.data is not None and pair.error is not None:
            self._pairs.pop(pair.request_id, None)
            await self._forward(pair, pair.data, pair.error)

    async def _expire(self, pair: _Pair) -> None:
        await asyncio.sleep(PAIR_TIMEOUT_S)
        if self._pairs.pop(pair.request_id, None) is pair:
            await self._say(pair, f"timed out waiting for streams (request {pair.request_id})")
            for stream in (pair.data, pair.error):
                if stream is not None:
                    await stream.close()

    async def _say(self, pair: _Pair, message: str) -> None:
        if pair.error is not None:
            with contextlib.suppress(StreamClosed):
                await pair.error.write(message.encode())

    async def _forward(self, pair: _Pair, data: SpdyStream, error: SpdyStream) -> None:
        record = self._record
        try:
            session = await open_node_session(
                self._resources, self._node,
                {"op": "portforward", "uid": record.uid, "namespace": record.namespace,
                 "pod": record.name, "port": pair.port},
            )  # fmt: skip
        except APIError as exc:
            await self._say(pair, f"error forwarding port {pair.port} to pod {record.name}, "
                                  f"uid {record.uid}: {exc.message}")  # fmt: skip
            await data.close()
            await error.close()
            return
        try:
            outcome = await _pipe(data, session)
            if outcome.get("error"):
                await self._say(pair, str(outcome["error"]))
        finally:
            await session.end({"error": "the client went away"})
            await data.close()
            await error.close()

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The connection has ended: stop every forward (their node sessions end with it)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pipe(data: SpdyStream, session: Session) -> dict[str, Any]:
    """Bytes both ways until the pod's side is done (the session's result) or the client
    resets the stream; the client's FIN is passed on as the end of its input."""

    async def upstream() -> None:
        async for chunk in data.chunks():
            await session.send(0, chunk)
        if data.reset_status is None:
            await session.eof(0)

    async def downstream() -> None:
        async for frame in session.frames():
            if frame.data:
                await data.write(frame.data)

    pushing = asyncio.create_task(upstream())
    pulling = asyncio.create_task(downstream())
    try:
        await asyncio.wait({pushing, pulling}, return_when=asyncio.FIRST_COMPLETED)
        if pushing.done() and not pulling.done() and data.reset_status is None:
            await asyncio.wait({pulling})  # the client's input has ended; the pod answers on
        if not pulling.done() or pulling.exception() is not None or data.reset_status is not None:
            return {}  # the client reset the stream or went away: nothing to tell it
        if not session.result.done():
            return {}
        error = session.result.exception()
        if error is not None:
            return {"error": error.message if isinstance(error, SessionError) else str(error)}
        return session.result.result()
    finally:
        for task in (pushing, pulling):
            task.cancel()
        await asyncio.gather(pushing, pulling, return_exceptions=True)
