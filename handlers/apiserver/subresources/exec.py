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

WebSocket frames are aiohttp's; channel bytes are ``core.kubeapi.streaming``'s. SPDY (kubectl's
fallback when a WebSocket upgrade fails) is not served: such a request is refused with a Status
that says so.

Security note (issue 17 adds authorization): today any authenticated caller may exec; whoever
it is, the command runs as the container's own user, never as the caller or the agent.
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
    STDERR,
    STDIN,
    STDOUT,
    choose_container,
    decode,
    encode,
    exec_options,
    exec_result,
    not_running,
)
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


async def serve_exec(
    resources: Resources, request: web.Request, path: ResourcePath, caller: Caller
) -> web.StreamResponse:
    if request.method not in ("GET", "POST"):
        raise method_not_allowed(path.target)
    options = exec_options(request.query, request.query.getall("command", []))
    record = await resources.current(path)
    container = choose_container(record.manifest, options.container, record.name)
    node = running_node(record)
    websocket = accept_websocket(request, EXEC_PROTOCOLS, "exec")
    session = await open_node_session(
        resources, node,
        {
            "op": "exec", "uid": record.uid, "namespace": record.namespace, "pod": record.name,
            "container": container, "command": list(options.command), "stdin": options.stdin,
            "tty": options.tty,
        },
    )  # fmt: skip
    try:
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
