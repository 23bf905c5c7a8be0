"""Reads of the streams themselves, served through the signed, RBAC-checked query path.

Why this exists: behind the NATS wall only admins may use JetStream's API, so ``fleetlog
logs``, ``top``, ``events``, ``replay``, ``--at`` and ``audit`` once worked for admins alone,
and issue 17 asks that a user who may see a namespace see its logs, events and past too, under
the same RBAC as ``get``.
This service reads the streams with the control plane's connection and hands each reader what
RBAC lets it see, as kube-apiserver (and metrics-server) would:

* ``logs``: a container's output, ``get pods/log`` on the pod;
* ``usage``: the latest samples of the live pods of a namespace (``list pods.metrics.k8s.io``)
  or of the live nodes (``list nodes.metrics.k8s.io``), at most :data:`STALE_AFTER_S` old;
* ``events``: the log's events under a subject filter, ``list events`` in the namespace asked
  (at the cluster scope without one);
* ``log``: the log's events under a subject filter and within bounds, each shown only if the
  reader may ``list`` its kind in its namespace (a server-side filter): what ``replay``,
  ``diff``, ``get``/``describe --at`` fold for a namespaced reader (:class:`ServedLog`);
* ``position``: where a point of the log is (sequences and store times, nothing of the events),
  for any verified reader, and whether the reader sees every event (an admin then folds the
  log itself, at the bulk reader's speed);
* ``audit``: only whether the reader may read the audit trail (``get`` on the non-resource URL
  ``/fleetlog/audit``; ``cluster-admin`` holds it): the trail itself is read by the caller, an
  admin who may read the streams.

Requests are msgpack maps on ``fleet.qry.read`` with an ``op``, sent by :func:`read_stream`
with a reply subject under the reader's own inbox (the only place a signed query is answered).
An answer is a run of frames to that subject (``{"ok": True, "items": [...]}`` …, then
``{"ok": True, "done": True}``, or ``{"ok": False, "error": …}``), so a big read streams in
chunks of at most :data:`FRAME_BYTES`. A followed read (``logs -f``, ``events -f``) goes on
until the reader is gone: every :data:`ALIVE_EVERY_S` the service asks ``<reply>.alive``, and
NATS' "no responders" (nobody subscribed any more) ends it; the reader need not answer (a
user may publish no reply anywhere), a timeout means it still listens.

Reads of a cluster without the service (no ``fleetlog up``) fall back to reading the streams
directly, as before: on an open server anyone may, behind the wall only admins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from core.errors import FleetError
from core.kubeapi.metrics import STALE_AFTER_S
from streams.commandbus import IMPERSONATE_HEADER, signature_headers
from streams.identity import credentials_of
from streams.serving import serve
from streams.subjects import QUERY_PREFIX

if TYPE_CHECKING:
    from projections.cluster import ClusterModel
    from projections.readaccess import ReadAccess, Reader
    from projections.runtime import Projection
    from streams.eventstore import EventStore

log = structlog.get_logger(__name__)

READ_SUBJECT = f"{QUERY_PREFIX}.read"
READ_QUEUE = "fleet-reads"
FRAME_BYTES = 512 * 1024
"""Payload bytes per frame (a NATS message is at most 1 MiB by default)."""
FLUSH_EVERY_S = 0.05
ALIVE_EVERY_S = 5.0
ALIVE_WAIT_S = 2.0
FIRST_FRAME_S = 10.0
"""How long a reader waits for the service's first frame before reading the streams itself."""

Frames = Callable[[dict[str, Any]], Awaitable[None]]


class ReaderGone(Exception):
    """Nobody listens on the reply subject any more: a followed read ends."""


class StreamReadService:
    """Serves the stream reads (see the module docstring) for each verified reader."""

    def __init__(
        self,
        nc: Client,
        store: EventStore,
        projection: Projection[ClusterModel],
        *,
        read_access: ReadAccess | None = None,
    ) -> None:
        from projections.readaccess import ReadAccess

        self._nc = nc
        self._store = store
        self._projection = projection
        self._read = read_access or ReadAccess()
        self.running: set[asyncio.Task[None]] = set()
        """The reads being answered (a followed one until its reader goes)."""

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; reads under way are cancelled with it."""
        try:
            await serve(self._nc, READ_SUBJECT, queue=READ_QUEUE, handler=self._on_request,
                        ready=ready)  # fmt: skip
        finally:
            for task in list(self.running):
                task.cancel()
            await asyncio.gather(*self.running, return_exceptions=True)

    async def _on_request(self, msg: Msg) -> None:
        # A followed read lasts as long as its reader: never inside the subscription's callback.
        task = asyncio.create_task(self._answer(msg))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _answer(self, msg: Msg) -> None:
        reply = msg.reply
        if not reply:
            return

        async def send(frame: dict[str, Any]) -> None:
            await self._nc.publish(reply, msgpack.packb(frame, use_bin_type=True))

        try:
            request = msgpack.unpackb(msg.data, raw=False)
            if not isinstance(request, dict):
                raise FleetError("a read is a msgpack map", code="invalid")
            reader = await self._read.reader(msg, request)
            await self._serve(request, reader, send, alive=f"{reply}.alive")
            await send({"ok": True, "done": True})
        except FleetError as exc:
            await send({"ok": False, "error": {"code": exc.code, "message": str(exc)}})
        except ReaderGone:
            return
        except Exception as exc:  # a bad read must not stop the service
            log.warning("stream_read.failed", error=str(exc))
            await send({"ok": False, "error": {"code": "invalid", "message": f"bad read: {exc}"}})

    async def _serve(
        self, request: dict[str, Any], reader: Reader, send: Frames, *, alive: str
    ) -> None:
        from core.access import readauth

        op = request.get("op")
        if op == "logs":
            namespace, pod = str(request["namespace"]), str(request["pod"])
            await self._read.check(reader, readauth.logs_request(namespace=namespace, pod=pod))
            await self._logs(request, send, alive=alive)
        elif op == "usage":
            kind = str(request.get("kind"))
            if kind not in ("pod", "node"):
                raise FleetError(f"usage is kept for pods and nodes, not {kind!r}", code="invalid")
            namespace = request.get("namespace")
            scope = str(namespace) if namespace is not None else None
            await self._read.check(reader, readauth.usage_request(kind=kind, namespace=scope))
            await send(
                {
                    "ok": True,
                    "items": self._usage(kind, scope, await _latest(self._nc, kind, scope)),
                }
            )
        elif op == "events":
            namespace = request.get("namespace")
            scope = str(namespace) if namespace is not None else None
            await self._read.check(reader, readauth.events_request(namespace=scope))
            await self._events(request, scope, send, alive=alive)
        elif op == "log":
            await self._log(request, reader, send)
        elif op == "position":
            # Sequences and store times only (how much the log holds, not what): any verified
            # reader may place a point in the log.
            await send({"ok": True, "items": [*await self._position(request), _sees_all(reader)]})
        elif op == "audit":
            await self._read.check(reader, readauth.audit_request())
        else:
            raise FleetError(f"no such read: {op!r}", code="invalid")

    async def _logs(self, request: dict[str, Any], send: Frames, *, alive: str) -> None:
        from streams.telemetry import LogsNotFound, open_logs

        try:
            chunks = await open_logs(
                self._nc, str(request["namespace"]), str(request["pod"]),
                str(request["container"]), pod_uid=request.get("pod_uid"),
                restart_count=request.get("restart_count"),
                previous=bool(request.get("previous")), tail=request.get("tail"),
                follow=bool(request.get("follow")),
            )  # fmt: skip
        except LogsNotFound as exc:
            raise FleetError(str(exc), code="not_found") from None
        batch = _Batch(send)
        follow = bool(request.get("follow"))
        try:
            async with asyncio.TaskGroup() as group:
                helpers = (
                    [
                        group.create_task(_Pinger(self._nc, alive).watch()),
                        group.create_task(batch.flush_periodically()),
                    ]
                    if follow
                    else []
                )
                async for at_ns, data in chunks:
                    await batch.add([at_ns, data], len(data))
                for helper in helpers:  # the instance followed has ended
                    helper.cancel()
        except* ReaderGone:
            raise ReaderGone() from None
        finally:
            await chunks.aclose()
        await batch.flush()

    def _usage(self, kind: str, namespace: str | None, samples: list[Any]) -> list[dict[str, Any]]:
        # As metrics-server: only objects that exist now, and only recent samples.
        fresh_ns = time.time_ns() - int(STALE_AFTER_S * 1e9)
        model = self._projection.model
        if kind == "node":
            live = {record.name for record in model.list("Node")}
            return [asdict(s) for s in samples if s.name in live and s.at_ns >= fresh_ns]
        pods = {(r.namespace, r.name) for r in model.list("Pod", namespace)}
        return [asdict(s) for s in samples if (s.namespace, s.name) in pods and s.at_ns >= fresh_ns]

    async def _events(
        self, request: dict[str, Any], namespace: str | None, send: Frames, *, alive: str
    ) -> None:
        from datetime import UTC, datetime

        from streams.subjects import event_filter

        kind = request.get("kind")
        name = request.get("name")
        subject = event_filter(str(kind) if kind else None, namespace, str(name) if name else None)
        since_s = request.get("since_s")
        start = datetime.fromtimestamp(since_s, tz=UTC) if since_s is not None else None
        batch = _Batch(send)
        follow = bool(request.get("follow"))

        def add(event: Any) -> None:
            batch.queue([event.seq, event.subject, event.stored_ns, event.data], len(event.data))

        async with asyncio.TaskGroup() as group:
            flusher = group.create_task(batch.flush_periodically())
            if not follow:
                await self._store.replay(add, filter_subject=subject, from_time=start)
                flusher.cancel()
            else:
                sub = await self._store.subscribe(
                    add, filter_subject=subject, from_time=start, new_only=start is None
                )
                try:
                    await _Pinger(self._nc, alive).watch()
                except ReaderGone:
                    flusher.cancel()
                    raise
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
        await batch.flush()

    async def _log(self, request: dict[str, Any], reader: Reader, send: Frames) -> None:
        """The log's events under a subject filter and within bounds, each one shown only if
        the reader may ``list`` its kind in its namespace (``readauth.replay_request``): what a
        replay or an ``--at`` fold of this reader may see."""
        from datetime import UTC, datetime

        from core.access.readauth import replay_request
        from projections.access import Forbidden
        from streams.subjects import ALL_EVENTS, EVENT_PREFIX, parse_event_subject

        subject = str(request.get("filter_subject") or ALL_EVENTS)
        if not subject.startswith(EVENT_PREFIX + "."):
            raise FleetError(f"{subject!r} is not a filter of the log's events", code="invalid")
        seen: dict[tuple[str, str], bool] = {}

        async def visible(item: list[Any]) -> bool:
            kind, namespace, _ = parse_event_subject(item[1])
            if (kind, namespace) not in seen:
                try:
                    await self._read.check(reader, replay_request(kind=kind, namespace=namespace))
                    seen[kind, namespace] = True
                except Forbidden:
                    seen[kind, namespace] = False
            return seen[kind, namespace]

        from_s = request.get("from_time_s")
        batch = _Batch(send, keep=visible if reader is not None else None)

        def add(event: Any) -> None:
            batch.queue([event.seq, event.subject, event.stored_ns, event.data], len(event.data))

        async with asyncio.TaskGroup() as group:
            flusher = group.create_task(batch.flush_periodically())
            last = await self._store.replay(
                add, filter_subject=subject, from_seq=int(request.get("from_seq") or 1),
                from_time=datetime.fromtimestamp(from_s, tz=UTC) if from_s is not None else None,
                until_seq=request.get("until_seq"), until_ns=request.get("until_ns"),
            )  # fmt: skip
            flusher.cancel()
        await batch.flush()
        await send({"ok": True, "items": [], "last": last})

    async def _position(self, request: dict[str, Any]) -> list[Any]:
        """[[last sequence, its stored ns or None], [seq, stored ns] of the direct get asked
        for (``direct``: JetStream's direct-get request) or None]."""
        from streams.jsapi import direct_get_position, stream_end

        end = await stream_end(self._nc, self._store.subjects)
        direct = request.get("direct")
        found = (
            await direct_get_position(self._nc, self._store.subjects, direct)
            if isinstance(direct, dict)
            else None
        )
        return [list(end), list(found) if found is not None else None]


def _sees_all(reader: Reader) -> bool:
    """Whether RBAC would show ``reader`` every event (``system:masters``, the control plane,
    or an unsigned read on an open server): such a reader may fold the log itself, at the
    bulk reader's speed, rather than through the service."""
    from core.access.bootstrap import SYSTEM_MASTERS

    return reader is None or reader.control_plane or SYSTEM_MASTERS in reader.user.groups


async def _latest(nc: Client, kind: str, namespace: str | None) -> list[Any]:
    from streams.telemetry import latest_usage

    if kind == "node":
        return await latest_usage(nc, "node")
    return await latest_usage(nc, "pod", namespace=namespace)


class _Batch:
    """Items gathered into frames of at most :data:`FRAME_BYTES` (see the module docstring)."""

    def __init__(
        self, send: Frames, *, keep: Callable[[Any], Awaitable[bool]] | None = None
    ) -> None:
        """``keep``: whether an item is sent at all (decided as it is flushed)."""
        self._send = send
        self._keep = keep
        self._items: list[Any] = []
        self._size = 0

    def queue(self, item: Any, size: int) -> None:
        self._items.append(item)
        self._size += size

    async def add(self, item: Any, size: int) -> None:
        if self._items and self._size + size > FRAME_BYTES:
            await self.flush()
        self.queue(item, size)

    async def flush(self) -> None:
        items, self._items, self._size = self._items, [], 0
        if self._keep is not None:
            items = [item for item in items if await self._keep(item)]
        frame: list[Any] = []
        size = 0
        for item in items:
            if frame and size + _size_of(item) > FRAME_BYTES:
                await self._send({"ok": True, "items": frame})
                frame, size = [], 0
            frame.append(item)
            size += _size_of(item)
        if frame:
            await self._send({"ok": True, "items": frame})

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            await self.flush()


def _size_of(item: Any) -> int:
    """The bytes an item's payload weighs (its last field)."""
    data = item[-1]
    return len(data) if isinstance(data, bytes | str) else 64


class _Pinger:
    """Asks ``<reply>.alive`` now and then; raises :class:`ReaderGone` when nobody listens."""

    def __init__(self, nc: Client, subject: str) -> None:
        self._nc = nc
        self._subject = subject

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_EVERY_S)
            try:
                await self._nc.request(self._subject, b"", timeout=ALIVE_WAIT_S)
            except NoRespondersError:
                raise ReaderGone() from None
            except (NatsTimeoutError, TimeoutError):
                continue  # it listens (a reader never answers)


# -- the reader's side ---------------------------------------------------------------------------


class NoService(Exception):
    """No stream read service answered: read the streams directly."""


def serves_signed_reads(nc: Client) -> bool:
    """Whether reads through ``nc`` go through the service first: a connection with
    credentials (behind the wall only the service may read for a user); an unsigned one reads
    the streams directly, as it always did."""
    return credentials_of(nc) is not None


async def read_stream(
    nc: Client,
    request: dict[str, Any],
    *,
    impersonate: str | None = None,
    first_frame_s: float = FIRST_FRAME_S,
) -> AsyncIterator[Any]:
    """The items the service answers ``request`` with, as they come; :class:`NoService` when
    no service answers, the refusal as :class:`FleetError` (``forbidden``, ``unauthorized``,
    ``not_found``…). Closing the iterator ends a followed read (the service notices)."""
    fields = dict(request)
    if impersonate is not None:
        fields["actor"] = impersonate
    payload = msgpack.packb(fields, use_bin_type=True)
    base = nc.new_inbox()
    reply = f"{base}.d"
    frames: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        if msg.subject == reply:
            frames.put_nowait(msg)

    sub = await nc.subscribe(f"{base}.>", cb=deliver)
    try:
        credentials = credentials_of(nc)
        seed = credentials.seed.encode() if credentials is not None else None
        headers = signature_headers(
            seed, subject=READ_SUBJECT, payload=payload, now_ns=time.time_ns()
        )
        if impersonate is not None:
            headers[IMPERSONATE_HEADER] = impersonate
        try:
            first = await _first_frame(nc, payload, reply, headers, frames, first_frame_s)
        except (NoRespondersError, NatsTimeoutError, TimeoutError):
            raise NoService() from None
        msg: Msg | None = first
        while True:
            if msg is None:
                msg = await frames.get()
            frame = msgpack.unpackb(msg.data, raw=False)
            msg = None
            if not frame.get("ok"):
                error = frame.get("error") or {}
                raise FleetError(error.get("message", "refused"), code=error.get("code", "invalid"))
            for item in frame.get("items") or ():
                yield item
            if frame.get("done"):
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _first_frame(
    nc: Client,
    payload: bytes,
    reply: str,
    headers: dict[str, str],
    frames: asyncio.Queue[Msg],
    wait_s: float,
) -> Msg:
    """Publish the read and wait for its first frame. The server answers a message nobody is
    subscribed to with a "no responders" status on its reply subject (nats-py asks for that
    when it connects): then, as after ``wait_s`` without a frame, there is no service."""
    await nc.publish(READ_SUBJECT, payload, reply=reply, headers=headers or None)
    first = await asyncio.wait_for(frames.get(), wait_s)
    if (first.headers or {}).get("Status") == "503":
        raise NoRespondersError()
    return first


async def may_read_audit(nc: Client, *, impersonate: str | None = None) -> bool:
    """Raise the service's refusal unless the caller may read the audit trail; False when no
    service answers (the caller then finds out by reading the streams)."""
    try:
        async for _ in read_stream(nc, {"op": "audit"}, impersonate=impersonate):
            pass
    except NoService:
        return False
    return True


class ServedLog:
    """The log as one reader may see it, read through the service: what ``ops.timetravel``
    folds for ``get --at``, ``replay`` and ``diff`` in place of an :class:`EventStore` (the
    same ``replay``, ``stream_last_seq`` and ``read_subject``), so a namespaced user travels
    in time over what RBAC lets it list, and nobody needs the streams' API."""

    def __init__(self, nc: Client, store: EventStore, *, impersonate: str | None) -> None:
        self._nc = nc
        self._store = store
        self._impersonate = impersonate

    @property
    def quarantine(self) -> Any:
        return self._store.quarantine

    @property
    def connection(self) -> Client:
        return self._nc

    def decoded(self, seq: int, subject: str, stored_ns: int, data: bytes) -> Any:
        return self._store.decoded(seq, subject, stored_ns, data)

    async def _items(self, request: dict[str, Any]) -> AsyncIterator[Any]:
        async for item in read_stream(self._nc, request, impersonate=self._impersonate):
            yield item

    async def locate(self, direct: dict[str, Any] | None = None) -> list[Any]:
        """[[last sequence, its stored ns], [seq, stored ns] of ``direct`` or None]."""
        request: dict[str, Any] = {"op": "position", "direct": direct}
        return [item async for item in self._items(request)]

    async def end(self) -> tuple[int, int | None]:
        last = (await self.locate())[0]
        return int(last[0]), last[1]

    async def sees_all(self) -> bool:
        """Whether the service would show this reader every event (an admin)."""
        return bool((await self.locate())[2])

    async def position(self, direct: dict[str, Any]) -> tuple[int, int] | None:
        found = (await self.locate(direct))[1]
        return (int(found[0]), int(found[1])) if found is not None else None

    async def stream_last_seq(self) -> int:
        return (await self.end())[0]

    async def replay(
        self,
        handler: Callable[[Any], None],
        *,
        filter_subject: str | None = None,
        from_seq: int = 1,
        from_time: Any = None,
        until_seq: int | None = None,
        until_ns: int | None = None,
        on_poison: Any = None,
    ) -> int:
        """As :meth:`EventStore.replay`, over the events the reader may see."""
        del on_poison  # the service skips poison as its store does
        request = {
            "op": "log", "filter_subject": filter_subject, "from_seq": from_seq,
            "from_time_s": from_time.timestamp() if from_time is not None else None,
            "until_seq": until_seq, "until_ns": until_ns,
        }  # fmt: skip
        last = 0
        async for seq, subject, stored_ns, data in self._items(request):
            event = self._store.decoded(seq, subject, stored_ns, data)
            if event is not None:
                handler(event)
                last = seq
        return last

    async def read_subject(self, subject: str, *, after_seq: int = 0) -> list[Any]:
        events: list[Any] = []
        await self.replay(events.append, filter_subject=subject, from_seq=after_seq + 1)
        return events


async def served_log(
    nc: Client, store: EventStore, *, impersonate: str | None = None
) -> ServedLog | None:
    """The log through the service for a session that signs its reads, when a service
    answers and the reader is not one who sees everything; None: read ``store`` itself
    (unsigned, an admin, or no ``fleetlog up`` serving)."""
    if not serves_signed_reads(nc):
        return None
    log = ServedLog(nc, store, impersonate=impersonate)
    try:
        if await log.sees_all():
            return None  # an admin reads the streams itself: a whole replay at full speed
    except NoService:
        return None
    return log
