"""A lean bulk reader of a stream: the path every whole-log walk takes (replay, verify, audit).

Why this exists: nats-py hands every delivered message through its protocol parser, a ``Msg``
object, a queue and an awaited callback, about 20 µs per message on the project's machines,
so a replay of a million events spent most of its time being delivered (see
docs/benchmarks.md). This reader opens its own connection to the same server, creates an
ephemeral *pull* consumer (no acks, memory storage) and parses the protocol stream in bulk
inside ``data_received``: a message costs a few slices and a split, and the handler is a plain
function call. It roughly doubles the raw read rate.

It is deliberately small: it reads a bounded range once and ends. The ordered push consumer of
``EventStore.subscribe`` stays the way to *follow* the log. A server this reader cannot talk to
plainly (TLS or authentication required) is read through nats-py instead (``usable``), and a
connection lost in the middle of a read resumes after the last message handed over.

Bounds, as :meth:`streams.eventstore.EventStore.replay_raw` defines them: every stored message
matching ``filter_subject`` from ``from_seq`` (or from the first stored at or after
``from_ns``) up to ``target`` and, if given, stored at or before ``until_ns``. The read ends at
the first message past a bound, at ``target``, or when the server reports nothing pending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.nuid import NUID

from streams.cancellation import checkpoint

log = structlog.get_logger(__name__)

StoredHandler = Callable[[int, str, int, bytes], None]
"""``handler(seq, subject, stored_ns, data)``: one stored message."""

PULL_BATCH = 4096
"""Messages per pull request; two are kept outstanding so the server never waits for us."""
PULL_EXPIRES_NS = 30_000_000_000
CONSUMER_IDLE_NS = 30_000_000_000
"""An abandoned consumer (the reader died) is removed by the server after this long."""
RESUME_ATTEMPTS = 5
STALL_CHECK_S = 10.0
STALL_CHECKS = 3


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


def usable(server_info: dict[str, Any]) -> bool:
    """Whether this reader can talk to a server announcing ``server_info`` (its INFO)."""
    return not (server_info.get("tls_required") or server_info.get("auth_required"))


class _Done(Exception):
    """Raised inside the parser when the read reached its end."""


class _ReadProtocol(asyncio.Protocol):
    """One connection: the NATS protocol as far as a pull read needs it."""

    def __init__(self, inbox: bytes, on_data: Callable[[bytes, bytes, bytes], None]) -> None:
        self.inbox_prefix = inbox + b"."
        self._on_data = on_data
        self.pull = b""
        """The pull request of this read (sent again when one expires before it is served)."""
        self._rest = b""
        self.transport: asyncio.Transport | None = None
        self.replies: dict[bytes, asyncio.Future[tuple[bytes, bytes]]] = {}
        self.pong: asyncio.Future[None] | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to the server lost: {exc or 'closed'}"))

    def _fail(self, exc: BaseException) -> None:
        if not self.finished.done():
            self.finished.set_exception(exc)
        for future in [self.pong, *self.replies.values()]:
            if future is not None and not future.done():
                future.set_exception(exc)

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
                        on_data(parts[0], parts[2], buf[start + int(parts[3]) : stop])
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
                        on_data(parts[0], parts[2], buf[start:stop])
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
        if status.startswith(b"409") and (b"Shutdown" in status or b"Deleted" in status):
            # The server is going away (or lost the consumer): read on from where we are.
            raise ConnectionError(status.decode(errors="replace"))
        if subject.startswith(self.inbox_prefix):
            raise LogReadError(f"the server ended the read: {status.decode(errors='replace')}")

    def _on_control(self, line: bytes) -> None:
        if line.startswith(b"PING"):
            self.write(b"PONG\r\n")
        elif line.startswith(b"PONG"):
            if self.pong is not None and not self.pong.done():
                self.pong.set_result(None)
        elif line.startswith(b"-ERR"):
            reason = line[5:].decode(errors="replace")
            raise LogReadError(f"the server refused the reader: {reason}")
        # INFO (a cluster update) and +OK need nothing.


class BulkRead:
    """One bounded read (see the module docstring); :meth:`run` hands every message over."""

    def __init__(
        self,
        host: str,
        port: int,
        stream: str,
        handler: StoredHandler,
        *,
        filter_subject: str,
        from_seq: int,
        from_ns: int,
        target: int,
        until_ns: int | None,
    ) -> None:
        self._host = host
        self._port = port
        self._stream = stream
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
            except (ConnectionError, OSError) as exc:
                if attempt == RESUME_ATTEMPTS:
                    raise LogReadError(f"reading {self._stream} failed: {exc}") from exc
                log.warning(
                    "logreader.resume", stream=self._stream, after=self.last_seq, error=str(exc)
                )
                await asyncio.sleep(0.2 * attempt)

    async def _read_once(self, *, resume: bool) -> None:
        loop = asyncio.get_running_loop()
        inbox = f"_FLREAD.{NUID().next().decode()}".encode()
        since_pull = 0
        target, until_ns, from_ns, handler = (
            self._target,
            self._until_ns,
            self._from_ns,
            self._handler,
        )
        protocol: _ReadProtocol
        pull = b""

        def on_data(subject: bytes, reply: bytes, data: bytes) -> None:
            nonlocal since_pull
            seq, stored_ns, pending = parse_ack_subject(reply)
            if seq <= self.last_seq:
                return
            if seq > target or (until_ns is not None and stored_ns > until_ns):
                raise _Done
            self.last_seq = seq
            self.delivered += 1
            if stored_ns >= from_ns:
                handler(seq, subject.decode(), stored_ns, data)
            if seq >= target or pending == 0:
                raise _Done
            since_pull += 1
            if since_pull == PULL_BATCH:
                since_pull = 0
                protocol.write(pull)

        _, protocol = await loop.create_connection(
            lambda: _ReadProtocol(inbox, on_data), self._host, self._port
        )
        try:
            protocol.pong = loop.create_future()
            connect = {
                "verbose": False,
                "pedantic": False,
                "headers": True,
                "no_responders": True,
                "protocol": 1,
                "lang": "python/fleetlog-reader",
                "version": "1",
                "name": "fleetlog-log-reader",
            }
            protocol.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
            protocol.write(b"SUB " + inbox + b".* 1\r\n")
            await asyncio.wait_for(protocol.pong, 10)
            created = await self._request(
                protocol, f"$JS.API.CONSUMER.CREATE.{self._stream}", self._consumer_config(resume)
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
                        f"PUB $JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer} ".encode()
                        + inbox
                        + f".pull {len(request)}\r\n{request}\r\n".encode()
                    )
                    protocol.pull = pull
                    protocol.write(pull + pull)
                    await self._wait_until_finished(protocol, pull)
            finally:
                if not protocol.transport_closed:
                    delete = f"$JS.API.CONSUMER.DELETE.{self._stream}.{consumer}"
                    protocol.write(f"PUB {delete} 0\r\n\r\nPING\r\n".encode())
        finally:
            if not protocol.finished.done():
                protocol.finished.cancel()  # ended early (nothing to read, or an error)
            if protocol.transport is not None:
                protocol.transport.close()

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
        reply = protocol.inbox_prefix + NUID().next()
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
