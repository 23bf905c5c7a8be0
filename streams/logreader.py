"""A lean bulk reader of a stream: the path every whole-log walk takes (replay, verify, audit).

Why this exists: nats-py hands every delivered message through its protocol parser, a ``Msg``
object, a queue and an awaited callback, about 20 µs per message on the project's machines,
so a replay of a million events spent most of its time being delivered (see
docs/benchmarks.md). This reader opens its own connection to the same server, creates an
ephemeral *pull* consumer (no acks, memory storage) and parses the protocol stream in bulk
inside ``data_received``: a message costs a few slices and a split, and the handler is a plain
function call. It roughly doubles the raw read rate.

A bounded read (:class:`BulkRead`) reads a range once and ends; a connection lost in the middle
resumes after the last message handed over. :class:`LiveRead` *follows* the log the same way,
for a reader that must keep up with a busy log (the scheduler folds three messages per pod it
places): pull requests with idle heartbeats are kept outstanding for ever, and anything that
could leave a hole — a lost connection, an outage of any length, a silent server, a consumer
the server lost, a break in the consumer's delivery sequence — ends that consumer, and a new
one starts after the last message handed over. It is gap-free by construction: every message
handed over is the next one the server's consumer delivered.

It connects as the client it reads for (:func:`dial_for`): the server that client is connected
to, in its JetStream domain (:mod:`streams.jsapi`), with its nkey (signing the server's nonce,
and reading under the identity's own inbox prefix, as :mod:`streams.natsauth` requires), or its
user and password or token (given as options or in the URL), and with TLS when the server asks
for it (the client's TLS context, server name and handshake-first setting). What it cannot
do: sign with a JWT or a credentials file nats-py was given itself, and speak websocket. For
such a client, or when the server
refuses the reader, or when nats-py no longer exposes what :func:`dial_for` reads,
:class:`ReaderUnavailable` is raised before anything is handed over (or, on a resume, after the
last message handed over), and :meth:`streams.eventstore.EventStore.replay_raw` reads the rest
through nats-py's ordered consumer instead, with one warning per connection.

Bounds, as :meth:`streams.eventstore.EventStore.replay_raw` defines them: every stored message
matching ``filter_subject`` from ``from_seq`` (or from the first stored at or after
``from_ns``) up to ``target`` and, if given, stored at or before ``until_ns``. The read ends at
the first message past a bound, at ``target``, or when the server reports nothing pending.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.client import Client

from streams.cancellation import checkpoint
from streams.identity import Credentials, credentials_of
from streams.jsapi import StreamSubjects
from streams.seal import seal_from_header_block

log = structlog.get_logger(__name__)

StoredHandler = Callable[[int, str, int, bytes, bytes | None], None]
"""``(seq, subject, stored_ns, data, seal)``: ``seal`` is the message's ``Fleet-Seal`` header
(see :mod:`streams.seal`), None when it has none."""
"""``handler(seq, subject, stored_ns, data)``: one stored message."""

PULL_BATCH = 4096
"""Messages per pull request; two are kept outstanding so the server never waits for us."""
PULL_EXPIRES_NS = 30_000_000_000
CONSUMER_IDLE_NS = 30_000_000_000
"""An abandoned consumer (the reader died) is removed by the server after this long."""
RESUME_ATTEMPTS = 5
STALL_CHECK_S = 10.0
STALL_CHECKS = 3
CONNECT_TIMEOUT_S = 10.0


def parse_ack_subject(reply: str | bytes) -> tuple[int, int, int]:
    """(stream sequence, timestamp ns, pending) from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or the v2 form
    with domain and account hash in front; parsed by hand because it is on the hot path (as
    ``str`` from nats-py, as ``bytes`` from this reader).
    """
    tokens = reply.split(".") if isinstance(reply, str) else reply.split(b".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    return int(tokens[7]), int(tokens[9]), int(tokens[10])


class LogReadError(RuntimeError):
    """The server refused or broke off a read (the message says which and why)."""


class ReaderUnavailable(LogReadError):
    """This reader cannot read for this client (see the module docstring): read through
    nats-py instead, after :attr:`BulkRead.last_seq`."""


@dataclass(frozen=True, slots=True)
class Dial:
    """How the reader reaches and joins the server a client is connected to."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_context: ssl.SSLContext | None = None
    """The client's own (None: the system's trust store, as nats-py does)."""
    tls_hostname: str | None = None
    tls_first: bool = False
    credentials: Credentials | None = None
    """The client's nkey (:func:`streams.connection.connect`'s credentials)."""

    @property
    def inbox(self) -> str:
        """Where this reader's replies and deliveries come to."""
        prefix = self.credentials.inbox_prefix if self.credentials is not None else "_FLREAD"
        return f"{prefix}.{secrets.token_hex(11)}"


_unavailable: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()
"""Clients this reader cannot serve, with why (each reported once)."""


def dial_for(nc: Client) -> Dial | None:
    """How to read for ``nc`` (None while it is not connected); :class:`ReaderUnavailable`
    when this reader cannot."""
    known = _unavailable.get(nc)
    if known is not None:
        raise ReaderUnavailable(known)
    try:
        return _dial(nc)
    except ReaderUnavailable as exc:
        unavailable(nc, str(exc))
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # nats-py changed what a client exposes: read through it instead of failing.
        reason = f"cannot read the connection's settings from nats-py ({exc!r})"
        unavailable(nc, reason)
        raise ReaderUnavailable(reason) from exc


def unavailable(nc: Client, reason: str) -> None:
    """Remember that ``nc`` is read through nats-py; warn the first time."""
    if nc not in _unavailable:
        _unavailable[nc] = reason
        log.warning(
            "logreader.unavailable",
            reason=reason,
            effect="whole-log reads of this connection go through nats-py (slower)",
        )


def _dial(nc: Client) -> Dial | None:
    url = nc.connected_url
    if url is None or url.hostname is None:
        return None  # reconnecting: nats-py waits for the connection, this time
    if url.scheme in ("ws", "wss"):
        raise ReaderUnavailable("the client speaks websocket")
    credentials = credentials_of(nc)
    if credentials is None and getattr(nc, "_signature_cb", None) is not None:
        raise ReaderUnavailable("the client signs the server's nonce (nkeys, JWT or credentials)")
    options: dict[str, Any] = nc.options
    user, password, token = options["user"], options["password"], options["token"]
    if user is not None and password is not None:
        user, password, token = _resolve(user), _resolve(password), None
    elif token is not None:
        user, password, token = None, None, _resolve(token)
    elif url.username is not None and url.password is None:
        user, password, token = None, None, url.username
    else:
        user, password, token = url.username, url.password, None
    return Dial(
        host=url.hostname,
        port=url.port or 4222,
        user=user,
        password=password,
        token=token,
        tls_context=options.get("tls"),
        tls_hostname=options.get("tls_hostname"),
        tls_first=bool(options.get("tls_handshake_first")),
        credentials=credentials,
    )


def _resolve(value: Any) -> str:
    return str(value() if callable(value) else value)


def _tls_context(dial: Dial) -> ssl.SSLContext:
    return dial.tls_context or ssl.create_default_context()


class _Done(Exception):
    """Raised inside the parser when the read reached its end."""


class HandlerFailed(Exception):
    """The caller's handler raised: not the connection's fault, so the read is not resumed and
    the handler's own exception (``__cause__``) is what the caller gets."""


class _ReadProtocol(asyncio.Protocol):
    """One connection: the NATS protocol as far as a pull read needs it."""

    def __init__(self, inbox: bytes, on_data: Callable[[bytes, bytes, bytes, bytes], None]) -> None:
        self.inbox_prefix = inbox + b"."
        self._on_data = on_data
        self.pull = b""
        """The pull request of this read (sent again when one expires before it is served)."""
        self._rest = b""
        self.transport: asyncio.Transport | None = None
        self.replies: dict[bytes, asyncio.Future[tuple[bytes, bytes]]] = {}
        loop = asyncio.get_running_loop()
        self.info: asyncio.Future[dict[str, Any]] = loop.create_future()
        """The server's first INFO (what it requires: TLS, credentials)."""
        self.pong: asyncio.Future[None] = loop.create_future()
        """The answer to the PING after CONNECT: the server accepted the reader."""
        self.finished: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to the server lost: {exc or 'closed'}"))

    def _fail(self, exc: BaseException) -> None:
        if not self.finished.done():
            self.finished.set_exception(exc)
        for future in [self.info, self.pong, *self.replies.values()]:
            if not future.done():
                future.set_exception(exc)

    def settle(self) -> None:
        """The read is over: cancel what is still awaited; a failure already seen or
        superseded (a -ERR before the connection closed) needs no more reporting."""
        for future in (self.info, self.pong, self.finished):
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()

    @property
    def transport_closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.finished.done():
            return
        buf = self._rest + data if self._rest else data
        size = len(buf)
        pos = 0
        on_data = self._on_data
        try:
            while True:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                op = buf[pos : pos + 4]
                if op == b"HMSG":
                    # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
                    parts = buf[pos + 5 : end].split(b" ")
                    start = end + 2
                    stop = start + int(parts[-1])
                    if size < stop + 2:
                        break
                    if len(parts) == 5:
                        header_end = start + int(parts[3])
                        on_data(parts[0], parts[2], buf[header_end:stop], buf[start:header_end])
                    else:
                        self._on_reply(parts[0], buf[start:stop], int(parts[2]))
                    pos = stop + 2
                elif op == b"MSG ":
                    # MSG <subject> <sid> [reply] <bytes>
                    parts = buf[pos + 4 : end].split(b" ")
                    start = end + 2
                    stop = start + int(parts[-1])
                    if size < stop + 2:
                        break
                    if len(parts) == 4:
                        on_data(parts[0], parts[2], buf[start:stop], b"")
                    else:
                        self._on_reply(parts[0], buf[start:stop], 0)
                    pos = stop + 2
                else:
                    self._on_control(buf[pos:end])
                    pos = end + 2
        except _Done:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        except Exception as exc:  # a handler's or the server's error ends the read
            self._fail(exc)
            return
        self._rest = buf[pos:]

    def _on_reply(self, subject: bytes, message: bytes, header_bytes: int) -> None:
        """A message without a reply subject: an API answer, or a pull request's status."""
        headers, body = message[:header_bytes], message[header_bytes:]
        future = self.replies.pop(subject, None)
        if future is not None:
            if not future.done():
                future.set_result((headers, body))
            return
        status = headers.split(b"\r\n", 1)[0][len(b"NATS/1.0") :].strip()
        if status.startswith(b"408"):
            # A pull request expired before it was served in full (a slow handler): ask again.
            if self.pull:
                self.write(self.pull)
            return
        if status.startswith(b"503") or (
            status.startswith(b"409") and (b"Shutdown" in status or b"Deleted" in status)
        ):
            # The server is going away or lost the consumer (a pull sent while its JetStream
            # shuts down finds no responder): read on from where we are.
            raise ConnectionError(status.decode(errors="replace"))
        if subject.startswith(self.inbox_prefix):
            raise LogReadError(f"the server ended the read: {status.decode(errors='replace')}")

    def _on_control(self, line: bytes) -> None:
        if line.startswith(b"PING"):
            self.write(b"PONG\r\n")
        elif line.startswith(b"PONG"):
            if not self.pong.done():
                self.pong.set_result(None)
        elif line.startswith(b"-ERR"):
            reason = line[5:].decode(errors="replace")
            raise LogReadError(f"the server refused the reader: {reason}")
        elif line.startswith(b"INFO ") and not self.info.done():
            self.info.set_result(json.loads(line[5:]))
        # Later INFOs (cluster updates) and +OK need nothing.


class BulkRead:
    """One bounded read (see the module docstring); :meth:`run` hands every message over."""

    def __init__(
        self,
        dial: Dial,
        stream: StreamSubjects,
        handler: StoredHandler,
        *,
        filter_subject: str,
        from_seq: int,
        from_ns: int,
        target: int,
        until_ns: int | None,
    ) -> None:
        self._dial = dial
        self._subjects = stream
        self._stream = stream.stream
        self._handler = handler
        self._filter = filter_subject
        self._from_seq = max(1, from_seq)
        self._from_ns = from_ns
        self._target = target
        self._until_ns = until_ns
        self.last_seq = 0
        """The last stream sequence handed over (or skipped as before ``from_ns``)."""
        self.delivered = 0

    async def run(self) -> None:
        for attempt in range(1, RESUME_ATTEMPTS + 1):
            try:
                await self._read_once(resume=self.last_seq > 0)
                return
            except HandlerFailed as failed:
                if failed.__cause__ is None:
                    raise
                raise failed.__cause__ from None
            except (ConnectionError, OSError) as exc:
                if attempt == RESUME_ATTEMPTS:
                    raise LogReadError(f"reading {self._stream} failed: {exc}") from exc
                log.warning(
                    "logreader.resume", stream=self._stream, after=self.last_seq, error=str(exc)
                )
                await asyncio.sleep(0.2 * attempt)

    async def _read_once(self, *, resume: bool) -> None:
        loop = asyncio.get_running_loop()
        inbox = self._dial.inbox.encode()
        since_pull = 0
        target, until_ns, from_ns, handler = (
            self._target,
            self._until_ns,
            self._from_ns,
            self._handler,
        )
        pull = b""

        def on_data(subject: bytes, reply: bytes, data: bytes, header_block: bytes) -> None:
            nonlocal since_pull
            seq, stored_ns, pending = parse_ack_subject(reply)
            if seq <= self.last_seq:
                return
            if seq > target or (until_ns is not None and stored_ns > until_ns):
                raise _Done
            self.last_seq = seq
            self.delivered += 1
            if stored_ns >= from_ns:
                try:
                    handler(
                        seq, subject.decode(), stored_ns, data,
                        seal_from_header_block(header_block) if header_block else None,
                    )  # fmt: skip
                except Exception as exc:
                    raise HandlerFailed from exc
            if seq >= target or pending == 0:
                raise _Done
            since_pull += 1
            if since_pull == PULL_BATCH:
                since_pull = 0
                protocol.write(pull)

        protocol = _ReadProtocol(inbox, on_data)
        try:
            await self._join(loop, protocol)
            created = await self._request(
                protocol, self._subjects.consumer_create, self._consumer_config(resume)
            )
            if "error" in created:
                raise LogReadError(
                    f"cannot read {self._stream}: {created['error'].get('description')}"
                )
            consumer = created["name"]
            try:
                if int(created.get("num_pending", 0)) > 0:
                    request = json.dumps({"batch": PULL_BATCH, "expires": PULL_EXPIRES_NS})
                    pull = (
                        f"PUB {self._subjects.consumer_next(consumer)} ".encode()
                        + inbox
                        + f".pull {len(request)}\r\n{request}\r\n".encode()
                    )
                    protocol.pull = pull
                    protocol.write(pull + pull)
                    await self._wait_until_finished(protocol, pull)
            finally:
                if not protocol.transport_closed:
                    delete = self._subjects.consumer_delete(consumer)
                    protocol.write(f"PUB {delete} 0\r\n\r\nPING\r\n".encode())
        finally:
            protocol.settle()
            if protocol.transport is not None:
                protocol.transport.close()

    async def _join(self, loop: asyncio.AbstractEventLoop, protocol: _ReadProtocol) -> None:
        """Connect ``protocol`` as the client would: TLS when the server (or the client's
        handshake-first setting) wants it, its credentials when the server wants them.
        :class:`ReaderUnavailable` when that fails for a reason retrying will not mend."""
        dial = self._dial
        hostname = dial.tls_hostname or dial.host
        try:
            await loop.create_connection(
                lambda: protocol,
                dial.host,
                dial.port,
                ssl=_tls_context(dial) if dial.tls_first else None,
                server_hostname=hostname if dial.tls_first else None,
            )
            info = await asyncio.wait_for(protocol.info, CONNECT_TIMEOUT_S)
            if info.get("tls_required") and not dial.tls_first:
                assert protocol.transport is not None
                upgraded = await loop.start_tls(
                    protocol.transport, protocol, _tls_context(dial), server_hostname=hostname
                )
                if upgraded is None:
                    raise ReaderUnavailable("the connection could not be upgraded to TLS")
                protocol.transport = upgraded
        except ssl.SSLError as exc:
            raise ReaderUnavailable(f"TLS with the server failed: {exc}") from exc
        except LogReadError as exc:  # the server's -ERR before anything was asked
            raise ReaderUnavailable(str(exc)) from exc
        connect: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "lang": "python/fleetlog-reader",
            "version": "1",
            "name": "fleetlog-log-reader",
        }
        if info.get("auth_required"):
            if dial.credentials is not None:
                nonce = str(info.get("nonce", "")).encode()
                connect.update(nkey=dial.credentials.public_key, sig=dial.credentials.sign(nonce))
            elif dial.token is not None:
                connect["auth_token"] = dial.token
            elif dial.user is not None:
                connect.update(user=dial.user, **{"pass": dial.password or ""})
            else:
                raise ReaderUnavailable(
                    "the server wants credentials and the client has no user, password or token"
                )
        protocol.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        protocol.write(b"SUB " + protocol.inbox_prefix + b"* 1\r\n")
        try:
            await asyncio.wait_for(protocol.pong, CONNECT_TIMEOUT_S)
        except LogReadError as exc:  # the server's -ERR (credentials refused, say)
            raise ReaderUnavailable(str(exc)) from exc

    async def _wait_until_finished(self, protocol: _ReadProtocol, pull: bytes) -> None:
        """Wait for the end of the read; a read that stops moving gets another pull request
        (in case one was lost) and, if still nothing comes, fails instead of hanging."""
        seen, idle_checks = self.delivered, 0
        while True:
            checkpoint()
            try:
                await asyncio.wait_for(asyncio.shield(protocol.finished), STALL_CHECK_S)
                return
            except TimeoutError:
                if self.delivered != seen:
                    seen, idle_checks = self.delivered, 0
                    continue
                idle_checks += 1
                if idle_checks == STALL_CHECKS:
                    raise LogReadError(
                        f"reading {self._stream} stalled: nothing arrived for "
                        f"{STALL_CHECK_S * STALL_CHECKS:.0f} s after sequence {self.last_seq}"
                    ) from None
                protocol.write(pull)

    def _consumer_config(self, resume: bool) -> dict[str, Any]:
        config: dict[str, Any] = {
            "ack_policy": "none",
            "filter_subject": self._filter,
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": CONSUMER_IDLE_NS,
        }
        if resume or self._from_ns == 0:
            start = self.last_seq + 1 if resume else self._from_seq
            if start > 1:
                config.update(deliver_policy="by_start_sequence", opt_start_seq=start)
            else:
                config["deliver_policy"] = "all"
        else:
            instant = datetime.fromtimestamp(self._from_ns // 1_000_000_000, tz=UTC)
            config.update(
                deliver_policy="by_start_time",
                opt_start_time=instant.strftime("%Y-%m-%dT%H:%M:%S.")
                + f"{self._from_ns % 1_000_000_000:09d}Z",
            )
        return {"stream_name": self._stream, "config": config}

    async def _request(
        self, protocol: _ReadProtocol, subject: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        reply = protocol.inbox_prefix + secrets.token_hex(11).encode()
        future: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()
        protocol.replies[reply] = future
        data = json.dumps(body).encode()
        protocol.write(
            f"PUB {subject} ".encode() + reply + f" {len(data)}\r\n".encode() + data + b"\r\n"
        )
        headers, answer = await asyncio.wait_for(future, 10)
        if headers and b" 503" in headers.split(b"\r\n", 1)[0]:
            raise LogReadError(f"no JetStream answers {subject}: is the stream there?")
        result: dict[str, Any] = json.loads(answer)
        return result


LIVE_HEARTBEAT_NS = 2_000_000_000
"""The server says it is there this often while a live pull request waits for messages."""
LIVE_EXPIRES_NS = 30_000_000_000
LIVE_SILENCE_S = 3 * LIVE_HEARTBEAT_NS / 1e9
"""A live read that hears nothing (no message, no heartbeat) for this long starts again."""
LIVE_RETRY_S = 0.1
LIVE_RETRY_MAX_S = 2.0


class _FollowProtocol(_ReadProtocol):
    """:class:`_ReadProtocol` that also takes the pull requests' idle heartbeats."""

    def __init__(self, inbox: bytes, on_data: Callable[[bytes, bytes, bytes, bytes], None]) -> None:
        super().__init__(inbox, on_data)
        self.heard = time.monotonic()

    def _on_reply(self, subject: bytes, message: bytes, header_bytes: int) -> None:
        self.heard = time.monotonic()
        status = message[:header_bytes].split(b"\r\n", 1)[0][len(b"NATS/1.0") :].strip()
        if status.startswith(b"100"):
            return  # an idle heartbeat: the server and the consumer are there
        if status.startswith(b"409"):
            # The consumer is gone or moved (leadership change, deleted, a pull refused):
            # start again after the last message.
            raise ConnectionError(status.decode(errors="replace"))
        super()._on_reply(subject, message, header_bytes)


class LiveRead(BulkRead):
    """Follow a stream live from ``from_seq`` on until cancelled (see the module docstring).

    ``dial`` is asked for how to reach the server before every (re)start; None means the
    client is reconnecting itself, and the read waits. :class:`ReaderUnavailable` from it ends
    :meth:`run` (the caller follows through nats-py from :attr:`last_seq` instead)."""

    def __init__(
        self,
        dial: Callable[[], Dial | None],
        stream: StreamSubjects,
        handler: StoredHandler,
        *,
        filter_subject: str,
        from_seq: int,
    ) -> None:
        super().__init__(
            Dial(host="", port=0), stream, handler, filter_subject=filter_subject,
            from_seq=from_seq, from_ns=0, target=2**63, until_ns=None,
        )  # fmt: skip
        self._dial_of = dial
        self.restarts = 0
        """How many times a consumer was started again (after an outage, a gap, a silence)."""

    async def run(self) -> None:
        retry = LIVE_RETRY_S
        while True:
            checkpoint()
            dial = self._dial_of()
            if dial is None:
                await asyncio.sleep(retry)
                continue
            self._dial = dial
            before = self.delivered
            try:
                await self._follow_once()
            except HandlerFailed as failed:
                if failed.__cause__ is None:
                    raise
                raise failed.__cause__ from None
            except ReaderUnavailable:
                raise
            except (ConnectionError, OSError, LogReadError, TimeoutError) as exc:
                self.restarts += 1
                # Quiet: an outage is reported once by the client's own connection.
                log.debug("logreader.follow_again", after=self.last_seq, error=str(exc))
            retry = LIVE_RETRY_S if self.delivered != before else min(LIVE_RETRY_MAX_S, retry * 2)
            await asyncio.sleep(retry)

    async def _follow_once(self) -> None:
        loop = asyncio.get_running_loop()
        inbox = self._dial.inbox.encode()
        handler = self._handler
        since_pull = 0
        next_delivery = 0  # the consumer sequence the next message must carry (0: any)
        pull = b""

        def on_data(subject: bytes, reply: bytes, data: bytes, header_block: bytes) -> None:
            nonlocal since_pull, next_delivery
            protocol.heard = time.monotonic()
            tokens = reply.split(b".")
            delivery = int(tokens[6] if len(tokens) == 9 else tokens[8])
            if next_delivery and delivery != next_delivery:
                raise ConnectionError(f"delivery {delivery} came instead of {next_delivery}")
            next_delivery = delivery + 1
            seq, stored_ns, _ = parse_ack_subject(reply)
            if seq > self.last_seq:
                self.last_seq = seq
                self.delivered += 1
                try:
                    handler(
                        seq, subject.decode(), stored_ns, data,
                        seal_from_header_block(header_block) if header_block else None,
                    )  # fmt: skip
                except Exception as exc:
                    raise HandlerFailed from exc
            since_pull += 1
            if since_pull == PULL_BATCH:
                since_pull = 0
                protocol.write(pull)

        protocol = _FollowProtocol(inbox, on_data)
        try:
            await self._join(loop, protocol)
            created = await self._request(
                protocol, self._subjects.consumer_create, self._consumer_config(self.last_seq > 0)
            )
            if "error" in created:
                raise LogReadError(
                    f"cannot follow {self._stream}: {created['error'].get('description')}"
                )
            consumer = created["name"]
            try:
                request = json.dumps(
                    {"batch": PULL_BATCH, "expires": LIVE_EXPIRES_NS,
                     "idle_heartbeat": LIVE_HEARTBEAT_NS}
                )  # fmt: skip
                pull = (
                    f"PUB {self._subjects.consumer_next(consumer)} ".encode()
                    + inbox
                    + f".pull {len(request)}\r\n{request}\r\n".encode()
                )
                protocol.pull = pull
                protocol.write(pull + pull)
                while True:
                    try:
                        await asyncio.wait_for(asyncio.shield(protocol.finished), LIVE_SILENCE_S)
                    except TimeoutError:
                        if time.monotonic() - protocol.heard > LIVE_SILENCE_S:
                            raise ConnectionError("the server went silent") from None
                        continue
                    raise ConnectionError("the live read ended")
            finally:
                if not protocol.transport_closed:
                    delete = self._subjects.consumer_delete(consumer)
                    protocol.write(f"PUB {delete} 0\r\n\r\nPING\r\n".encode())
        finally:
            protocol.settle()
            if protocol.transport is not None:
                protocol.transport.close()
