"""Watches: a chunked stream of ADDED / MODIFIED / DELETED / BOOKMARK events, from now or from
any point the log still holds.

Why this exists: informers, ``kubectl get -w`` and controllers built on client-go follow
objects through watches. In fleetlog a watch is a replay followed by the live tail (DESIGN.md,
"Two doors"): from no resourceVersion (or "0") it starts with the current state as ADDED
events; from a resourceVersion N it folds the kind's history up to the read model's position
(a private read model, so it sees every object as it was at each event) and sends every change
after N — Kubernetes answers "410 Gone" there once etcd has compacted, fleetlog only for N
before the log's first event. Then it follows the shared read model: one listener
(:class:`WatchHub`) hands each folded event of a watched kind to its watchers, which classify
it against what they have sent (a label or field selector that stops matching is a DELETED,
as in Kubernetes) and queue it for their connection.

A watcher that falls more than ``MAX_QUEUED`` events behind is closed (the client re-lists
and watches again, from its last resourceVersion, losing nothing), so a stuck reader cannot
hold the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from core.access.secretdata import redacted_manifest
from core.kubeapi.objects import api_object, bookmark
from core.kubeapi.resources import APIResource
from core.kubeapi.status import gone, too_large_resource_version
from core.kubeapi.tables import Columns, IncludeObject, table, table_row
from core.kubeapi.versions import WatchFrom
from handlers.apiserver.http import JSON, Format, dumps
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_filter

log = structlog.get_logger(__name__)

Key = tuple[str, str, str]
Item = dict[str, Any]
MAX_QUEUED = 100_000
DEFAULT_TIMEOUT_S = 1800.0
"""kube-apiserver's ``--min-request-timeout``: how long a watch without ``timeoutSeconds``
lasts (clients watch again from their last resourceVersion)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One event of a watched kind, as the read model shows its object right after it."""

    seq: int
    key: Key
    item: Item | None
    """The object's read-model record (``ObjectRecord.as_dict``); None: it is gone."""


@dataclass(frozen=True, slots=True)
class Emitted:
    type: str
    item: Item
    resource_version: int
    initial_end: bool = False


@dataclass(eq=False)
class Watcher:
    """One watch: what it has sent (``known``), and its queue of events to send."""

    kind: str
    namespace: str | None
    matches: Callable[[Item], bool]
    after: int = 0
    live: bool = False
    known: dict[Key, Item] = field(default_factory=dict)
    pending: list[Change] = field(default_factory=list)
    out: asyncio.Queue[Emitted | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, change: Change) -> None:
        """From the live read model: classified now, or kept until the history is sent."""
        if self.live:
            self.observe(change)
        else:
            self.pending.append(change)

    def observe(self, change: Change) -> None:
        """Classify a change against what this watcher has seen (Kubernetes' rules: an
        object that starts matching is ADDED, one that stops is DELETED)."""
        now = change.item is not None and self.matches(change.item)
        was = change.key in self.known
        if now:
            assert change.item is not None
            self.known[change.key] = change.item
            self._emit(Emitted("MODIFIED" if was else "ADDED", change.item, change.seq), change)
        elif was:
            last = self.known.pop(change.key)
            self._emit(Emitted("DELETED", last, change.seq), change)

    def _emit(self, event: Emitted, change: Change) -> None:
        if change.seq <= self.after or self.overflowed:
            return
        if self.out.qsize() >= MAX_QUEUED:
            self.overflowed = True
            self.out.put_nowait(None)
            return
        self.out.put_nowait(event)

    def go_live(self) -> None:
        for change in self.pending:
            self.observe(change)
        self.pending = []
        self.live = True


class WatchHub:
    """The shared read model's one listener for every watch."""

    def __init__(self, projection: Projection[ClusterModel]) -> None:
        self._projection = projection
        self._watchers: dict[str, set[Watcher]] = {}
        projection.listeners.append(self._on_event)

    @property
    def count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _on_event(self, event: StoredEvent) -> None:
        e = event.envelope
        watchers = self._watchers.get(e.kind)
        if not watchers:
            return
        record = self._projection.model.get(e.kind, e.namespace, e.name)
        change = Change(
            event.seq, (e.kind, e.namespace, e.name), record.as_dict() if record else None
        )
        for watcher in list(watchers):
            if watcher.namespace is None or watcher.namespace == e.namespace:
                watcher.offer(change)

    def add(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.kind, set()).add(watcher)

    def remove(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.kind)
        if watchers is not None:
            watchers.discard(watcher)


@dataclass(frozen=True)
class WatchRequest:
    resource: APIResource
    namespace: str | None
    matches: Callable[[Item], bool]
    start: WatchFrom
    format: Format
    columns: Columns
    include: IncludeObject
    bookmarks: bool
    timeout_s: float


def object_of(resource: APIResource, item: Item, resource_version: int) -> dict[str, Any]:
    manifest = item["manifest"]
    if resource.kind == "Secret":
        # A watch replays the log, where a Secret's values are sealed: it shows their sizes
        # (a get shows the values).
        manifest = redacted_manifest(manifest)
    return api_object(
        resource,
        manifest=manifest,
        namespace=item["namespace"],
        uid=item["uid"],
        resource_version=resource_version,
        created_ns=item["created_ns"],
    )


class Watches:
    """Serves watch requests against the shared read model and the log."""

    def __init__(
        self,
        projection: Projection[ClusterModel],
        store: EventStore,
        *,
        bookmark_every_s: float = 60.0,
    ) -> None:
        self._projection = projection
        self._store = store
        self.hub = WatchHub(projection)
        self._bookmark_every_s = bookmark_every_s

    async def serve(self, request: web.Request, watch: WatchRequest) -> web.StreamResponse:
        resource = watch.resource
        watcher = Watcher(resource.kind, watch.namespace, watch.matches)
        history: asyncio.Task[None] | None = None
        rv = watch.start.rv
        if rv > self._projection.position and not await self._projection.wait_for(rv, 5.0):
            raise too_large_resource_version(rv, self._projection.position)
        if watch.start.initial or rv >= self._projection.position:
            # From the read model as it is (the initial events, or a watch from the version a
            # list was just read at: nothing to replay). No await between the snapshot and
            # the registration: the hub hands over exactly the events after its position.
            self.hub.add(watcher)
            model = self._projection.model
            watcher.after = 0 if watch.start.initial else self._projection.position
            for record in model.list(resource.kind, watch.namespace):
                item = record.as_dict()
                watcher.observe(
                    Change(record.last_seq, (record.kind, record.namespace, record.name), item)
                )
            watcher.after = self._projection.position
            watcher.live = True
            if watch.start.initial_events_end:
                watcher.out.put_nowait(
                    Emitted("BOOKMARK", {}, self._projection.position, initial_end=True)
                )
        else:
            first = int((await self._store.stream_info())["state"].get("first_seq") or 1)
            if rv < first - 1:
                raise gone(rv, first - 1)
            watcher.after = rv
            self.hub.add(watcher)
            history = asyncio.create_task(self._replay(watcher, self._projection.position))
        try:
            return await self._stream(request, watch, watcher, history)
        finally:
            self.hub.remove(watcher)
            if history is not None and not history.done():
                history.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await history

    async def _replay(self, watcher: Watcher, until: int) -> None:
        """Fold the kind's history up to ``until`` (where the live events begin) into a
        private read model, emitting every change after the watch's resourceVersion."""
        namespace = watcher.namespace
        private = Projection(
            ClusterModel(), self._store, filter_subject=event_filter(watcher.kind, namespace)
        )

        def folded(event: StoredEvent) -> None:
            e = event.envelope
            record = private.model.get(e.kind, e.namespace, e.name)
            key = (e.kind, e.namespace, e.name)
            watcher.observe(Change(event.seq, key, record.as_dict() if record else None))

        private.listeners.append(folded)
        if until > 0:
            await private.catch_up(until_seq=until)
        watcher.go_live()

    async def _stream(
        self,
        request: web.Request,
        watch: WatchRequest,
        watcher: Watcher,
        history: asyncio.Task[None] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = JSON
        response.enable_chunked_encoding()
        await response.prepare(request)
        deadline = time.monotonic() + watch.timeout_s
        first_row = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if history is not None and history.done() and history.exception() is not None:
                log.warning("apiserver.watch_history_failed", error=str(history.exception()))
                break
            wait = min(remaining, self._bookmark_every_s)
            try:
                emitted = await asyncio.wait_for(watcher.out.get(), timeout=wait)
            except TimeoutError:
                if watch.bookmarks and watcher.live and watcher.out.empty():
                    emitted = Emitted("BOOKMARK", {}, self._projection.position)
                else:
                    continue
            if emitted is None:
                break  # overflowed: the client watches again from its last resourceVersion
            if emitted.type == "BOOKMARK":
                if not watch.bookmarks and not emitted.initial_end:
                    continue
                obj: dict[str, Any] = bookmark(
                    watch.resource, emitted.resource_version, initial_end=emitted.initial_end
                )
            else:
                obj = object_of(watch.resource, emitted.item, emitted.resource_version)
                if watch.format == "table":
                    obj = table(
                        watch.columns,
                        [table_row(watch.columns, emitted.item, obj,
                                   now_ns=time.time_ns(), include=watch.include)],
                        resource_version=emitted.resource_version,
                        with_definitions=first_row,
                    )  # fmt: skip
                    first_row = False
            try:
                await response.write(dumps({"type": emitted.type, "object": obj}) + b"\n")
            except (ConnectionResetError, RuntimeError):
                break
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response


def selector_matcher(
    labels: Callable[[Mapping[str, str]], bool],
    fields: Callable[[Mapping[str, Any]], bool] | None,
) -> Callable[[Item], bool]:
    """Whether a read-model item matches a label selector (and a field selector, which reads
    the object with its namespace and name filled in)."""

    def matches(item: Item) -> bool:
        manifest = item["manifest"]
        metadata = manifest.get("metadata") or {}
        if not labels(metadata.get("labels") or {}):
            return False
        if fields is None:
            return True
        view = {**manifest, "metadata": {**metadata, "name": item["name"],
                                         "namespace": item["namespace"]}}  # fmt: skip
        return fields(view)

    return matches
