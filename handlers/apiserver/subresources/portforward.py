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

Not served yet: kubectl ≥1.31 tunnels SPDY inside a WebSocket (``SPDY/3.1+portforward.k8s.io``)
and falls back to plain SPDY; neither is spoken here, and such a request is refused with a Status
saying which protocols are.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.status import method_not_allowed
from core.kubeapi.streaming import (
    PORTFORWARD_PROTOCOLS,
    decode,
    encode,
    forwarded_ports,
    port_preamble,
)
from handlers.apiserver.subresources.exec import (
    accept_websocket,
    open_node_session,
    running_node,
)
from streams.nodestream import Session, SessionError

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources


async def serve_portforward(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise method_not_allowed(path.target)
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
