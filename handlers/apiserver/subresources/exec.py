"""``pods/exec`` over WebSocket: ``kubectl exec`` (``v5.channel.k8s.io``, ``v4.channel.k8s.io``).

Why this exists: a command must run on the pod's node, inside the container (its namespaces,
cgroup, user, environment and working directory), and only that node's agent can do it. So the
API server checks the request as kube-apiserver does (the pod exists, is bound and running, the
container is named when the pod has several: kube's Status otherwise, before any upgrade), opens
a byte-stream session with the node's agent over NATS (``streams.nodestream``; the agent side is
``handlers.agent.streaming``), and only then accepts the WebSocket. From there it is a bridge:

* client → agent: channel 0 (stdin) as data; ``v5``'s close of channel 0 as the end of stdin;
  with ``tty``, resize (4) as data on channel 4 (the agent sets the terminal's size; without a
  terminal it is dropped).
* agent → client: stdout (1) and stderr (2) as they come (with ``tty``, the terminal's output
  on stdout only, as kube: the command's stderr is the terminal too); when the command has
  ended, the error channel (3) carries a ``metav1.Status`` (Success, or ``NonZeroExitCode``
  with an ``ExitCode`` cause, which kubectl turns into its own exit code), then the WebSocket
  closes.
* the client leaving ends the session; the agent then kills the command's process group.

WebSocket frames are aiohttp's; channel bytes are ``core.kubeapi.streaming``'s.

The same bridge is served over a plain ``Upgrade: SPDY/3.1`` (``v4.channel.k8s.io``; kubectl's
fallback when a WebSocket upgrade fails, and ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``), as the
kubelet serves it: the client opens one SPDY stream per channel (``streamType`` error, stdin,
stdout, stderr, resize; each one the request asked for must arrive within 30 s), the resize
stream carries one JSON size after another, the command's end is the Status on the error
stream, and then every stream is finished.

Security note: the door authorizes ``create`` on ``pods/exec`` (``pods/attach``) before this runs
(``handlers.apiserver.server``); whoever the caller is, the command runs as the container's own
user, never as the caller or the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from core.kubeapi.paths import ResourcePath
from core.kubeapi.status import APIError, bad_request, method_not_allowed
from core.kubeapi.streaming import (
    ERROR,
    EXEC_PROTOCOLS,
    RESIZE,
    SPDY_EXEC_PROTOCOLS,
    STDERR,
    STDIN,
    STDOUT,
    ExecOptions,
    choose_container,
    decode,
    encode,
    exec_options,
    exec_result,
    exec_stream_kinds,
    not_running,
    resize_messages,
)
from handlers.apiserver.spdysession import SpdyConnection, SpdyStream, StreamClosed
from handlers.apiserver.spdyupgrade import accept_spdy, wants_spdy
from projections.cluster import ObjectRecord
from streams.nodestream import (
    NodeUnreachable,
    Session,
    SessionError,
    SessionRefused,
    open_session,
)

if TYPE_CHECKING:
    from handlers.apiserver.resources import Caller, Resources

MAX_MESSAGE = 1024 * 1024
STREAMS_TIMEOUT_S = 30.0
"""How long the kubelet waits for a SPDY exec's streams (its streamCreationTimeout)."""


async def serve_exec(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise method_not_allowed(path.target)
    options = exec_options(request.query, request.query.getall("command", []))
    record = await resources.current(path)
    container = choose_container(record.manifest, options.container, record.name)
    node = running_node(record)
    spdy_upgrade = wants_spdy(request)
    websocket = None if spdy_upgrade else accept_websocket(request, EXEC_PROTOCOLS, "exec")
    session = await open_node_session(
        resources, node,
        {
            "op": "exec", "uid": record.uid, "namespace": record.namespace, "pod": record.name,
            "container": container, "command": list(options.command), "stdin": options.stdin,
            "tty": options.tty,
        },
    )  # fmt: skip
    try:
        if websocket is None:
            return await _serve_spdy(request, session, options)
        await websocket.prepare(request)
        first = STDOUT if options.stdout else STDERR if options.stderr else ERROR
        await _bridge(
            websocket, session, command=options.command, stdin=options.stdin, tty=options.tty,
            first=first,
        )  # fmt: skip
    finally:
        await session.end({"error": "the client went away"})
    return websocket


def running_node(record: ObjectRecord) -> str:
    """The node of a pod that can be reached in (kube's BadRequest otherwise)."""
    manifest = record.manifest
    node = (manifest.get("spec") or {}).get("nodeName")
    if not node:
        raise bad_request(f"pod {record.name} does not have a host assigned")
    phase = (manifest.get("status") or {}).get("phase", "")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(
            f"cannot exec into a container in a completed pod; current phase is {phase}"
        )
    if phase != "Running":
        raise not_running(record.name, phase)
    return str(node)


def offered_protocols(request: web.Request) -> list[str]:
    """The WebSocket subprotocols a request offers, in its order."""
    offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return [name.strip() for name in offered.split(",") if name.strip()]


def accept_websocket(
    request: web.Request, protocols: Sequence[str], what: str
) -> web.WebSocketResponse:
    """The WebSocket to answer with, once the request offers one of ``protocols``."""
    upgrade = request.headers.get("Upgrade", "").lower()
    if upgrade != "websocket":
        raise bad_request(
            f"fleetlog serves {what} over WebSocket only (subprotocols {', '.join(protocols)}); "
            f"this request asked for {upgrade or 'no upgrade'}"
        )
    websocket = web.WebSocketResponse(
        protocols=tuple(protocols), max_msg_size=MAX_MESSAGE, autoping=True
    )
    ready = websocket.can_prepare(request)
    if not ready.ok or ready.protocol is None:
        raise bad_request(
            f"none of the offered WebSocket subprotocols is served for {what}: use one of "
            f"{', '.join(protocols)}"
        )
    return websocket


async def open_node_session(resources: Resources, node: str, body: dict[str, Any]) -> Session:
    try:
        return await open_session(resources.nc, node=node, request=body)
    except SessionRefused as exc:
        raise APIError(exc.code, exc.reason, exc.message) from None
    except NodeUnreachable as exc:
        raise APIError(503, "ServiceUnavailable", f"error dialing backend: {exc.message}") from None
    except SessionError as exc:
        raise APIError(500, "InternalError", exc.message) from None


async def _bridge(
    websocket: web.WebSocketResponse,
    session: Session,
    *,
    command: Sequence[str],
    stdin: bool,
    tty: bool,
    first: int,
) -> None:
    protocol = websocket.ws_protocol or EXEC_PROTOCOLS[-1]
    # The kubelet's signal that the streams are set up: an empty message on the first
    # channel the client reads.
    await websocket.send_bytes(encode(first, b""))

    async def from_client() -> None:
        async for message in websocket:
            if message.type != WSMsgType.BINARY:
                continue
            try:
                parsed = decode(message.data, protocol=protocol)
            except ValueError:
                continue
            if parsed.channel == RESIZE and tty and parsed.data:
                with contextlib.suppress(SessionError):
                    await session.send(RESIZE, parsed.data)
                continue
            if parsed.channel != STDIN or not stdin:
                continue  # input nobody asked to read, or a resize without a terminal
            with contextlib.suppress(SessionError):
                if parsed.close:
                    await session.eof(STDIN)
                elif parsed.data:
                    await session.send(STDIN, parsed.data)

    async def to_client() -> None:
        async for frame in session.frames():
            if frame.data and frame.channel in (STDOUT, STDERR):
                await websocket.send_bytes(encode(frame.channel, frame.data))

    reader = asyncio.create_task(from_client())
    writer = asyncio.create_task(to_client())
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        if writer.done() and writer.exception() is None:
            await websocket.send_bytes(encode(ERROR, _result(session, command)))
    finally:
        reader.cancel()
        writer.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await websocket.close()


def _result(session: Session, command: Sequence[str]) -> bytes:
    if not session.result.done():
        return exec_result(None, command=command, error="the session ended without a result")
    error = session.result.exception()
    if error is not None:
        message = error.message if isinstance(error, SessionError) else str(error)
        return exec_result(None, command=command, error=message)
    outcome = session.result.result()
    if "exitCode" in outcome:
        return exec_result(int(outcome["exitCode"]), command=command)
    return exec_result(None, command=command, error=str(outcome.get("error") or "exec failed"))


# -- SPDY/3.1 (kubectl's fallback) ----------------------------------------------------------


async def _serve_spdy(
    request: web.Request, session: Session, options: ExecOptions
) -> web.StreamResponse:
    response, pipe = await accept_spdy(request, SPDY_EXEC_PROTOCOLS)
    wanted = exec_stream_kinds(stdin=options.stdin, stdout=options.stdout,
                               stderr=options.stderr, tty=options.tty)  # fmt: skip
    streams: dict[str, SpdyStream] = {}
    complete = asyncio.Event()

    def accept(stream: SpdyStream) -> str | None:
        kind = stream.header("streamType")
        if kind not in wanted or kind in streams:
            return f"unexpected stream type {kind[:16]!r}"
        streams[kind] = stream
        if len(streams) == len(wanted):
            complete.set()
        return None

    connection = SpdyConnection(pipe, accept=accept)
    serving = asyncio.create_task(connection.run())
    try:
        ready = asyncio.create_task(complete.wait())
        await asyncio.wait({ready, serving}, timeout=STREAMS_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        ready.cancel()
        if complete.is_set() and not serving.done():
            await _bridge_spdy(streams, session, command=options.command, client=serving)
            # The client hangs up once it has read the end; wait for that rather than close
            # under its feet (a close with its frames unread could reset the connection).
            await asyncio.wait({serving}, timeout=STREAMS_TIMEOUT_S)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await pipe.close()
    return response


async def _bridge_spdy(
    streams: dict[str, SpdyStream],
    session: Session,
    *,
    command: Sequence[str],
    client: asyncio.Task[None],
) -> None:
    """Pipe the streams and the session until the command ends (then its Status goes on the
    error stream) or the client's connection does (``client``: the session ends with it)."""
    outputs = {STDOUT: streams.get("stdout"), STDERR: streams.get("stderr")}

    async def from_client(stream: SpdyStream | None, channel: int) -> None:
        if stream is None:
            return
        pending = b""
        async for chunk in stream.chunks():
            with contextlib.suppress(SessionError):
                if channel == RESIZE:
                    messages, pending = resize_messages(pending + chunk)
                    for message in messages:
                        await session.send(RESIZE, message)
                else:
                    await session.send(channel, chunk)
        if channel == STDIN and stream.reset_status is None:
            with contextlib.suppress(SessionError):
                await session.eof(STDIN)

    async def to_client() -> None:
        async for frame in session.frames():
            target = outputs.get(frame.channel)
            if frame.data and target is not None:
                await target.write(frame.data)

    readers = [
        asyncio.create_task(from_client(streams.get("stdin"), STDIN)),
        asyncio.create_task(from_client(streams.get("resize"), RESIZE)),
    ]
    writer = asyncio.create_task(to_client())
    try:
        await asyncio.wait({writer, client}, return_when=asyncio.FIRST_COMPLETED)
        if writer.done() and writer.exception() is None:
            error = streams["error"]
            with contextlib.suppress(StreamClosed):
                await error.write(_result(session, command))
    finally:
        for task in [*readers, writer]:
            task.cancel()
        await asyncio.gather(*readers, writer, return_exceptions=True)
        for stream in streams.values():
            await stream.close()
