"""core/v1 ``events``, derived from the log: what ``kubectl describe`` shows under Events and
``kubectl get events`` lists (``-w`` follows).

Why this exists: kubectl's describe pages list the events recorded about an object
(``/api/v1/namespaces/<ns>/events?fieldSelector=involvedObject.name=…``). fleetlog stores no
Event objects: its log already records every fact, and ``projections.kube_events`` derives
from it the events Kubernetes' components would have recorded (the same ones ``fleetlog
describe`` shows). This module serves them read-only: get and list (as kube's server-side Table
too: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE), with kube's ``involvedObject.*``, ``reason``,
``source`` and ``type`` field selectors, and watch; a write is refused with a Status saying why,
since there is nothing to write to.

A watch follows the read model: every event of an object that records events (and of a pod or
replica set, its controller's, whose events are derived from its dependents') marks that object;
its events are derived again and compared with what the watcher was sent: a new one is ADDED,
one counted again MODIFIED, one whose object is gone DELETED (as a list no longer shows it).
Without a resourceVersion it starts with every current event ADDED; from a resourceVersion N,
with the current events last seen after N (an event's resourceVersion is the log position of
its last occurrence, so a client resuming from N misses none; what happened in between is
seen counted, as kube's event correlator counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.kubeapi.objects import bookmark, list_object
from core.kubeapi.paths import ResourcePath
from core.kubeapi.resources import BY_KIND, EVENTS
from core.kubeapi.selectors import FieldSelector, parse_field_selector
from core.kubeapi.status import APIError, bad_request, too_large_resource_version
from core.kubeapi.tables import Columns, IncludeObject, include_object, table, table_row
from core.kubeapi.versions import watch_from
from core.meta.timestamps import format_stamp
from handlers.apiserver.http import JSON, Format, dumps, flag, respond, response_format
from handlers.apiserver.watch import DEFAULT_TIMEOUT_S
from projections import kube_events
from projections.cluster import ClusterModel, ObjectRecord
from projections.history_service import read_history
from streams.envelope import StoredEvent
from streams.subjects import event_filter, event_subject

if TYPE_CHECKING:
    from handlers.apiserver.resources import Resources

RECORDED_ON = ("Pod", "Node", "Deployment", "ReplicaSet")
"""The kinds whose components record events (``projections.kube_events.events_of``)."""
DEPENDENTS = {"Deployment": "ReplicaSet", "ReplicaSet": "Pod"}
CONTROLLERS = {dependent: owner for owner, dependent in DEPENDENTS.items()}
NODE_EVENTS_NAMESPACE = "default"
"""Where the kubelet and node controller record a node's events (it has no namespace)."""
BOOKMARK_EVERY_S = 60.0
Key = tuple[str, str, str]
"""(kind, namespace, name) of an object events are recorded on."""
Event = dict[str, Any]


def read_only(path: ResourcePath, method: str) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        f"{method} is not allowed on events: fleetlog derives events from its log (what its "
        "components did), so they are read-only (get, list, watch)",
        path.target,
    )


async def serve(
    resources: Resources, request: web.Request, path: ResourcePath
) -> web.StreamResponse:
    if request.method != "GET":
        raise read_only(path, request.method)
    fields = parse_field_selector(request.query.get("fieldSelector"), "Event")
    fmt = response_format(request, table_allowed=True)
    include = include_object(request.query.get("includeObject"))
    columns = resources.columns_of("Event")
    if path.legacy_watch or flag(request, "watch"):
        return await _watch(resources, request, path, fields, fmt, columns, include)
    model = await resources.read_model()
    position = resources.position
    events = [
        event
        for record in _candidates(model.list, path, fields)
        for event in await _events_of(resources, record)
        if _selected(event, path, fields)
    ]
    now_ns = time.time_ns()
    if path.name is not None:
        found = next((e for e in events if e["metadata"]["name"] == path.name), None)
        if found is None:
            raise APIError(404, "NotFound", f'events "{path.name}" not found', path.target)
        if fmt == "table":
            row = table_row(columns, found, found, now_ns=now_ns, include=include)
            return respond(table(columns, [row], resource_version=_rv(found)))
        return respond(found)
    events.sort(key=lambda e: (e["lastTimestamp"], _rv(e)))
    if fmt == "table":
        rows = [table_row(columns, e, e, now_ns=now_ns, include=include) for e in events]
        return respond(table(columns, rows, resource_version=position))
    return respond(list_object(EVENTS, events, resource_version=position))


def _rv(event: Event) -> int:
    return int(event["metadata"]["resourceVersion"])


def _selected(event: Event, path: ResourcePath, fields: FieldSelector) -> bool:
    if path.namespace is not None and event["metadata"]["namespace"] != path.namespace:
        return False
    return fields.matches(event)


def _pinned(fields: FieldSelector, field: str) -> str | None:
    for r in fields.requirements:
        if r.field == field and r.equal:
            return r.value
    return None


def _reaches(key: Key, path: ResourcePath, fields: FieldSelector) -> bool:
    """Whether the events of the object ``key`` can be among those the request selects."""
    kind, namespace, name = key
    if kind not in RECORDED_ON:
        return False
    pinned_kind = _pinned(fields, "involvedObject.kind")
    pinned_name = _pinned(fields, "involvedObject.name")
    if (pinned_kind is not None and pinned_kind != kind) or (
        pinned_name is not None and pinned_name != name
    ):
        return False
    shown_in = NODE_EVENTS_NAMESPACE if kind == "Node" else namespace
    return path.namespace is None or path.namespace == shown_in


def _candidates(listing: Any, path: ResourcePath, fields: FieldSelector) -> list[ObjectRecord]:
    """The objects whose events the request may reach (narrowed by the selector, as kubectl
    describe always narrows it to one object)."""
    out: list[ObjectRecord] = []
    for k in RECORDED_ON:
        namespace = None if k == "Node" else path.namespace
        for record in listing(k, namespace):
            if _reaches((k, record.namespace, record.name), path, fields):
                out.append(record)
    return out


def _controller(record: ObjectRecord) -> Key | None:
    """The object whose derived events a change of ``record`` may change (a pod's replica
    set, a replica set's deployment)."""
    owner_kind = CONTROLLERS.get(record.kind)
    if owner_kind is None:
        return None
    for ref in (record.manifest.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == owner_kind and ref.get("name"):
            return (owner_kind, record.namespace, str(ref["name"]))
    return None


async def _watch(
    resources: Resources,
    request: web.Request,
    path: ResourcePath,
    fields: FieldSelector,
    fmt: Format,
    columns: Columns,
    include: IncludeObject,
) -> web.StreamResponse:
    start = watch_from(
        request.query.get("resourceVersion"),
        request.query.get("resourceVersionMatch"),
        request.query.get("sendInitialEvents"),
    )
    timeout = request.query.get("timeoutSeconds")
    try:
        timeout_s = float(int(timeout)) if timeout else DEFAULT_TIMEOUT_S
    except ValueError:
        raise bad_request(f'invalid timeoutSeconds "{timeout[:32]}"') from None
    bookmarks = flag(request, "allowWatchBookmarks")
    marked: set[Key] = set()
    woken = asyncio.Event()

    def noticed(event: StoredEvent) -> None:
        e = event.envelope
        if e.kind in RECORDED_ON:
            marked.add((e.kind, e.namespace, e.name))
            woken.set()

    # Following before the first derivation: a change racing it is derived again, never lost.
    stop_following = resources.follow(noticed)
    try:
        model = await resources.read_model()
        if start.rv > resources.position:
            raise too_large_resource_version(start.rv, resources.position)
        response = web.StreamResponse(status=200)
        response.content_type = JSON
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = _Stream(response, fmt, columns, include)
        sent: dict[Key, dict[str, Event]] = {}
        owners: dict[Key, Key] = {}
        for record in _candidates(model.list, path, fields):
            key = (record.kind, record.namespace, record.name)
            events = await _selected_events(resources, record, path, fields)
            sent[key] = {e["metadata"]["name"]: e for e in events}
            for event in events:
                if start.initial or _rv(event) > start.rv:
                    await stream.send("ADDED", event)
        for record in [*model.list("Pod"), *model.list("ReplicaSet")]:
            owner = _controller(record)
            if owner is not None:
                owners[(record.kind, record.namespace, record.name)] = owner
        if start.initial_events_end:
            await stream.send_bookmark(resources.position, initial_end=True)
        deadline = time.monotonic() + timeout_s
        while stream.open and (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(min(remaining, BOOKMARK_EVERY_S)):
                    await woken.wait()
            except TimeoutError:
                if bookmarks and not marked:
                    await stream.send_bookmark(resources.position)
                continue
            woken.clear()
            changed = set(marked)
            marked.clear()
            model = await resources.read_model()
            affected = set(changed)
            for key in changed:
                record = model.get(*key)
                owner = _controller(record) if record is not None else None
                if owner is not None:
                    owners[key] = owner
                owner = owners.get(key) if owner is None else owner
                if owner is not None:
                    affected.add(owner)
            for key in sorted(affected):
                if _reaches(key, path, fields):
                    await _send_changes(resources, stream, model, key, path, fields, sent)
        await stream.close()
        return response
    finally:
        stop_following()


async def _selected_events(
    resources: Resources, record: ObjectRecord, path: ResourcePath, fields: FieldSelector
) -> list[Event]:
    return [e for e in await _events_of(resources, record) if _selected(e, path, fields)]


async def _send_changes(
    resources: Resources,
    stream: _Stream,
    model: ClusterModel,
    key: Key,
    path: ResourcePath,
    fields: FieldSelector,
    sent: dict[Key, dict[str, Event]],
) -> None:
    """Derive the events of ``key`` again and send how they differ from what was sent."""
    record = model.get(*key)
    now = [] if record is None else await _selected_events(resources, record, path, fields)
    before = sent.get(key, {})
    after = {e["metadata"]["name"]: e for e in now}
    for name, event in after.items():
        was = before.get(name)
        if was is None:
            await stream.send("ADDED", event)
        elif _rv(was) != _rv(event):
            await stream.send("MODIFIED", event)
    for name, event in before.items():
        if name not in after:
            gone = {**event, "metadata": {**event["metadata"],
                                          "resourceVersion": str(resources.position)}}  # fmt: skip
            await stream.send("DELETED", gone)
    if after:
        sent[key] = after
    else:
        sent.pop(key, None)


class _Stream:
    """A watch's answer: one JSON watch event per line, as objects or Table rows."""

    def __init__(
        self, response: web.StreamResponse, fmt: Format, columns: Columns, include: IncludeObject
    ) -> None:
        self._response = response
        self._fmt = fmt
        self._columns = columns
        self._include = include
        self._first_row = True
        self.open = True

    async def send(self, kind: str, event: Event) -> None:
        obj: dict[str, Any] = event
        if self._fmt == "table":
            row = table_row(self._columns, event, event, now_ns=time.time_ns(),
                            include=self._include)  # fmt: skip
            obj = table(self._columns, [row], resource_version=_rv(event),
                        with_definitions=self._first_row)  # fmt: skip
            self._first_row = False
        await self._write({"type": kind, "object": obj})

    async def send_bookmark(self, position: int, *, initial_end: bool = False) -> None:
        await self._write(
            {"type": "BOOKMARK", "object": bookmark(EVENTS, position, initial_end=initial_end)}
        )

    async def _write(self, value: dict[str, Any]) -> None:
        if not self.open:
            return
        try:
            await self._response.write(dumps(value) + b"\n")
        except (ConnectionResetError, RuntimeError):
            self.open = False

    async def close(self) -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await self._response.write_eof()


async def _events_of(resources: Resources, record: ObjectRecord) -> list[dict[str, Any]]:
    history = await read_history(
        resources.nc, resources.store, event_subject(record.kind, record.namespace, record.name)
    )
    created = next((ev.seq for ev in reversed(history) if ev.envelope.type.endswith("Created")), 0)
    related: list[Any] = []
    dependent = DEPENDENTS.get(record.kind)
    if dependent is not None and created:
        await resources.store.replay(
            related.append,
            filter_subject=event_filter(dependent, record.namespace),
            from_seq=created,
        )
    item = record.as_dict()
    shown = kube_events.correlate(
        kube_events.events_of(item, [ev for ev in history if ev.seq >= created], related)
    )
    return [_event_object(record, s) for s in shown]


def _event_object(record: ObjectRecord, shown: kube_events.Shown) -> dict[str, Any]:
    resource = BY_KIND[record.kind]
    namespace = record.namespace or NODE_EVENTS_NAMESPACE
    key = f"{record.uid}/{shown.type}/{shown.reason}/{shown.source}/{shown.message}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{record.name}.{digest[:16]}",
            "namespace": namespace,
            "uid": f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
            "resourceVersion": str(shown.last_seq),
            "creationTimestamp": format_stamp(shown.first_ns),
        },
        "involvedObject": {
            "kind": record.kind,
            "namespace": record.namespace,
            "name": record.name,
            "uid": record.uid,
            "apiVersion": resource.group_version,
            "resourceVersion": str(record.last_seq),
        },
        "reason": shown.reason,
        "message": shown.message,
        "source": {"component": shown.source},
        "firstTimestamp": format_stamp(shown.first_ns),
        "lastTimestamp": format_stamp(shown.last_ns),
        "count": shown.count,
        "type": shown.type,
        "eventTime": None,
        "reportingComponent": shown.source,
        "reportingInstance": "",
    }
