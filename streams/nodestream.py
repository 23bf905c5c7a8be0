"""Byte-stream sessions between the API server and one node's agent, over core NATS.

Why this exists: ``kubectl exec`` and ``kubectl port-forward`` need a two-way pipe of bytes from
the client, through the API server, to a process or a socket on the pod's node, and the only
thing the API server and a node share is NATS. The API server does not run anything itself: the
command must run on the node, inside the container (``handlers.agent.streaming``), so each
WebSocket the API server accepts becomes one session here, and the node agent does the work.

How a session runs (both sides are :class:`Session`; only the opening differs):

* **Open** (request/reply): the opener subscribes to an inbox of its own, then sends a request
  to ``fleet.node.<node>.session`` (:func:`session_subject`, one subject per node; that node's
  agent is its only subscriber) whose JSON body says what to open (``{"op": "exec", ...}``) and
  names the opener's inbox. The agent answers ``{"inbox": ...}`` (its own inbox for this
  session) or ``{"error": {"code", "reason", "message"}}`` when it refuses (the pod or container
  is not there): :class:`SessionRefused`, nothing was started. Nobody answering means no agent
  of that node is connected: :class:`NodeUnreachable`, said with the node's name.
* **Frames**: each side publishes to the other's inbox; the header ``Fleet-Op`` says what a
  frame is: ``data`` (``Fleet-Channel``, the body is bytes), ``eof`` (this side sends no more
  on ``Fleet-Channel``), ``ack`` (``Fleet-Acked``: the total of data bytes consumed), ``end``
  (the last frame; the body is the JSON result, e.g. an exit code), ``ping`` (a request, answered
  at once from the subscription's callback). Core NATS keeps the order of one connection's
  messages to one subscriber, so frames arrive in the order they were sent.
* **Flow control**: a sender may have at most ``window`` bytes of data not yet acknowledged;
  the receiver acknowledges as its consumer takes the data (not when it arrives), so a slow
  reader (a process not reading stdin, a client not reading stdout) holds the writer back
  instead of filling memory. A frame larger than ``max_frame`` or data beyond the window is a
  protocol violation: the receiver ends the session with an error (:class:`ProtocolViolation`).
* **Teardown**: either side ends with :meth:`Session.end` (``end`` frame, then its inbox is
  unsubscribed). A side that vanishes without a word (process killed, connection lost) is
  noticed by the other's pings: no responders on its inbox, or no answer within
  ``peer_timeout_s``: the session ends as :class:`SessionLost`, and its owner tears down what it
  pipes to (the agent kills the exec'd process, closes the socket; the API server closes the
  WebSocket).

Security: issue 17 adds authorization; until then anyone who may publish on
``fleet.node.<node>.session`` can open sessions on that node, exactly as anyone who may send
commands can write the log. Whatever opens the session, the agent never runs a command as
anyone but the container's own user (``handlers.agent.runtime.RunningContainer.enter_argv``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from streams.subjects import encode_token

log = structlog.get_logger(__name__)

SESSION_PREFIX = "fleet.node"
HDR_OP = "Fleet-Op"
HDR_CHANNEL = "Fleet-Channel"
HDR_ACKED = "Fleet-Acked"
MAX_OPEN_BYTES = 64 * 1024
"""The largest open request an agent reads (a command line and its options)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How a session paces and watches itself (both sides use the same values)."""

    max_frame: int = 32 * 1024
    """The largest data frame; a larger one is refused (the session ends with an error)."""
    window: int = 256 * 1024
    """Data bytes a sender may have in flight before the receiver's consumer takes them."""
    ping_s: float = 2.0
    peer_timeout_s: float = 10.0
    open_timeout_s: float = 5.0


def session_subject(node: str) -> str:
    """The subject a node's agent takes session requests on."""
    return f"{SESSION_PREFIX}.{encode_token(node)}.session"


class SessionError(Exception):
    """A session could not be opened or did not end with its peer's result."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NodeUnreachable(SessionError):
    """No agent of the node answered the open request."""


class SessionLost(SessionError):
    """The peer went away without ending the session."""


class ProtocolViolation(SessionError):
    """The peer sent what the protocol forbids (an oversize frame, data beyond the window)."""


class SessionRefused(SessionError):
    """The agent refused to open the session; ``code``/``reason`` are Kubernetes' (a Status)."""

    def __init__(self, message: str, *, code: int = 400, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class Frame:
    """What arrived on one channel: bytes, or (``eof``) the peer's end of that channel."""

    channel: int
    data: bytes = b""
    eof: bool = False


_END = object()


class Session:
    """One side of a session: send on channels, iterate what arrives, end it."""

    def __init__(self, nc: Client, *, limits: Limits) -> None:
        self._nc = nc
        self.limits = limits
        self.inbox = nc.new_inbox()
        self.peer = ""
        self._sub: Subscription | None = None
        self._incoming: asyncio.Queue[Frame | object] = asyncio.Queue()
        self._buffered = 0
        self._consumed = 0
        self._acked_out = 0
        self._sent = 0
        self._peer_acked = 0
        self._credit = asyncio.Event()
        self._credit.set()
        self._send_lock = asyncio.Lock()
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        """The peer's ``end`` body; or SessionLost / ProtocolViolation; set once."""
        self._keepalive: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._sub = await self._nc.subscribe(self.inbox, cb=self._on_message)

    def _start(self, peer: str) -> None:
        self.peer = peer
        self._keepalive = asyncio.create_task(self._ping_peer())

    @property
    def ended(self) -> bool:
        return self.result.done()

    async def end(self, result: dict[str, Any] | None = None) -> None:
        """Send the last frame (``result``: what the peer's ``result`` becomes) and stop
        listening. Ending twice, or after the peer ended, only stops listening."""
        if not self.result.done():
            self.result.set_exception(SessionError("ended by this side"))
            self.result.exception()  # retrieved: nobody needs to await our own end
            if self.peer:
                with contextlib.suppress(Exception):
                    await self._nc.publish(
                        self.peer, json.dumps(result or {}).encode(), headers={HDR_OP: "end"}
                    )
        await self._stop()

    async def _stop(self) -> None:
        self._incoming.put_nowait(_END)
        self._credit.set()
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if self._sub is not None:
            sub, self._sub = self._sub, None
            # A task of its own: unsubscribing cancels the task that runs the subscription's
            # callbacks, and this may be running in one of them.
            task = asyncio.create_task(_unsubscribe(sub))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
            await asyncio.shield(task)

    async def _fail(self, error: SessionError, *, tell_peer: bool) -> None:
        if self.result.done():
            return
        self.result.set_exception(error)
        log.info("nodestream.failed", inbox=self.inbox, error=error.message)
        if tell_peer and self.peer:
            with contextlib.suppress(Exception):
                await self._nc.publish(
                    self.peer, json.dumps({"error": error.message}).encode(),
                    headers={HDR_OP: "end"},
                )  # fmt: skip
        await self._stop()

    async def _ping_peer(self) -> None:
        while not self.result.done():
            await asyncio.sleep(self.limits.ping_s)
            try:
                await self._nc.request(
                    self.peer, b"", timeout=self.limits.peer_timeout_s, headers={HDR_OP: "ping"}
                )
            except NoRespondersError:
                await self._fail(SessionLost("the other side of the session has gone"),
                                 tell_peer=False)  # fmt: skip
            except (NatsTimeout, TimeoutError):
                await self._fail(
                    SessionLost(
                        f"the other side of the session did not answer for "
                        f"{self.limits.peer_timeout_s:g}s"
                    ),
                    tell_peer=True,
                )
            except Exception as exc:  # the connection itself is closing
                await self._fail(SessionLost(f"the session's connection failed: {exc!r}"),
                                 tell_peer=False)  # fmt: skip

    # -- receiving -------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        op = headers.get(HDR_OP, "")
        if op == "ping":
            if msg.reply:
                with contextlib.suppress(Exception):
                    await self._nc.publish(msg.reply, b"")
            return
        if self.result.done():
            return
        if op == "data":
            size = len(msg.data)
            if size > self.limits.max_frame:
                await self._fail(
                    ProtocolViolation(
                        f"a frame of {size} bytes is larger than the session's "
                        f"{self.limits.max_frame}-byte limit"
                    ),
                    tell_peer=True,
                )
                return
            if self._buffered + size > self.limits.window:
                await self._fail(
                    ProtocolViolation(
                        f"the peer sent beyond the session's {self.limits.window}-byte window"
                    ),
                    tell_peer=True,
                )
                return
            self._buffered += size
            self._incoming.put_nowait(Frame(_channel(headers), msg.data))
        elif op == "eof":
            self._incoming.put_nowait(Frame(_channel(headers), eof=True))
        elif op == "ack":
            with contextlib.suppress(ValueError):
                self._peer_acked = max(self._peer_acked, int(headers.get(HDR_ACKED, "0")))
            if self._sent - self._peer_acked < self.limits.window:
                self._credit.set()
        elif op == "end":
            try:
                body = json.loads(msg.data or b"{}")
            except ValueError:
                body = {"error": "the peer ended the session with an unreadable result"}
            self.result.set_result(body if isinstance(body, dict) else {})
            await self._stop()

    async def frames(self) -> AsyncIterator[Frame]:
        """What the peer sends, in order, until the session ends (by either side)."""
        while True:
            item = await self._incoming.get()
            if item is _END:
                self._incoming.put_nowait(_END)  # every later iteration ends too
                return
            assert isinstance(item, Frame)
            yield item
            if item.data:
                self._buffered -= len(item.data)
                self._consumed += len(item.data)
                unacked = self._consumed - self._acked_out
                if unacked >= self.limits.window // 4 or self._incoming.empty():
                    self._acked_out = self._consumed
                    with contextlib.suppress(Exception):
                        await self._nc.publish(
                            self.peer, b"", headers={HDR_OP: "ack",
                                                     HDR_ACKED: str(self._consumed)},
                        )  # fmt: skip

    # -- sending ---------------------------------------------------------------------------

    async def send(self, channel: int, data: bytes) -> None:
        """Send ``data`` on ``channel`` (in frames of at most ``max_frame``), waiting while the
        window is full. Raises the session's error once it has ended."""
        view = memoryview(data)
        async with self._send_lock:
            for start in range(0, len(view), self.limits.max_frame):
                piece = bytes(view[start : start + self.limits.max_frame])
                while self._sent - self._peer_acked + len(piece) > self.limits.window:
                    self._check_open()
                    self._credit.clear()
                    await self._credit.wait()
                self._check_open()
                self._sent += len(piece)
                await self._nc.publish(
                    self.peer, piece, headers={HDR_OP: "data", HDR_CHANNEL: str(channel)}
                )

    async def eof(self, channel: int) -> None:
        """This side sends no more on ``channel``."""
        self._check_open()
        async with self._send_lock:
            await self._nc.publish(
                self.peer, b"", headers={HDR_OP: "eof", HDR_CHANNEL: str(channel)}
            )

    def _check_open(self) -> None:
        if self.result.done():
            error = self.result.exception()
            raise error if isinstance(error, SessionError) else SessionError("session ended")


_BACKGROUND: set[asyncio.Task[None]] = set()


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


def _channel(headers: dict[str, str]) -> int:
    try:
        return int(headers.get(HDR_CHANNEL, "0"))
    except ValueError:
        return -1


# -- opening -----------------------------------------------------------------------------------


async def open_session(
    nc: Client, *, node: str, request: dict[str, Any], limits: Limits | None = None
) -> Session:
    """Ask ``node``'s agent to open what ``request`` says; the session, started."""
    limits = limits or Limits()
    session = Session(nc, limits=limits)
    await session._listen()
    body = json.dumps({**request, "inbox": session.inbox}).encode()
    subject = session_subject(node)
    try:
        reply = await nc.request(subject, body, timeout=limits.open_timeout_s)
        answer = json.loads(reply.data)
    except NoRespondersError:
        await session._stop()
        raise NodeUnreachable(
            f'node "{node}" has no agent answering on NATS ({subject}): is its agent running?'
        ) from None
    except (NatsTimeout, TimeoutError):
        await session._stop()
        raise NodeUnreachable(
            f'the agent of node "{node}" did not answer within {limits.open_timeout_s:g}s'
        ) from None
    except ValueError:
        await session._stop()
        raise SessionError(f'the agent of node "{node}" answered unreadably') from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is not None or not isinstance(answer, dict) or not answer.get("inbox"):
        await session._stop()
        error = error if isinstance(error, dict) else {}
        raise SessionRefused(
            str(error.get("message") or "the agent refused the session"),
            code=int(error.get("code") or 400),
            reason=str(error.get("reason") or "BadRequest"),
        )
    session._start(str(answer["inbox"]))
    return session


SessionRunner = Callable[[Session], Awaitable[dict[str, Any]]]
"""Runs an accepted session; what it returns is sent as the ``end`` frame."""
Prepare = Callable[[dict[str, Any]], Awaitable[SessionRunner]]
"""Decides on an open request: a runner, or :class:`SessionRefused`."""


async def serve_sessions(
    nc: Client, *, node: str, prepare: Prepare, limits: Limits | None = None
) -> None:
    """Answer ``node``'s session requests until cancelled; cancelling ends every open session
    (its runner is cancelled, then the peer is told)."""
    limits = limits or Limits()
    running: set[asyncio.Task[None]] = set()

    async def run(session: Session, runner: SessionRunner) -> None:
        try:
            outcome = await runner(session)
        except asyncio.CancelledError:
            await session.end({"error": f'the agent of node "{node}" stopped'})
            raise
        except SessionError as exc:
            outcome = {"error": exc.message}
        except Exception as exc:
            log.exception("nodestream.runner_failed", node=node)
            outcome = {"error": f"the agent failed: {type(exc).__name__}"}
        await session.end(outcome)

    async def on_request(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            if len(msg.data) > MAX_OPEN_BYTES:
                raise SessionRefused(f"the open request is larger than {MAX_OPEN_BYTES} bytes")
            try:
                request = json.loads(msg.data)
            except ValueError:
                raise SessionRefused("the open request is not JSON") from None
            if not isinstance(request, dict) or not isinstance(request.get("inbox"), str):
                raise SessionRefused("the open request names no inbox")
            runner = await prepare(request)
        except SessionRefused as exc:
            await nc.publish(msg.reply, json.dumps({"error": exc.as_json()}).encode())
            return
        session = Session(nc, limits=limits)
        await session._listen()
        session._start(request["inbox"])
        task = asyncio.create_task(run(session, runner))
        running.add(task)
        task.add_done_callback(running.discard)
        await nc.publish(msg.reply, json.dumps({"inbox": session.inbox}).encode())

    sub = await nc.subscribe(session_subject(node), cb=on_request)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
