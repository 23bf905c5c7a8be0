"""core/v1 ``events``, derived from the log: what ``kubectl describe`` shows under Events.

Why this exists: kubectl's describe pages list the events recorded about an object
(``/api/v1/namespaces/<ns>/events?fieldSelector=involvedObject.name=…``). fleetlog stores no
Event objects: its log already records every fact, and ``projections.kube_events`` derives
from it the events Kubernetes' components would have recorded (the same ones ``fleetlog
describe`` shows). This module serves them read-only (get and list, with kube's
``involvedObject.*``, ``reason``, ``source`` and ``type`` field selectors); a write is refused
with a Status saying why, since there is nothing to write to.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.kubeapi.objects import list_object
from core.kubeapi.paths import ResourcePath
from core.kubeapi.resources import BY_KIND, EVENTS
from core.kubeapi.selectors import FieldSelector, parse_field_selector
from core.kubeapi.status import APIError
from core.meta.timestamps import format_stamp
from handlers.apiserver.http import respond
from projections import kube_events
from projections.cluster import ObjectRecord
from projections.history_service import read_history
from streams.subjects import event_filter, event_subject

if TYPE_CHECKING:
    from handlers.apiserver.resources import Resources

RECORDED_ON = ("Pod", "Node", "Deployment", "ReplicaSet")
"""The kinds whose components record events (``projections.kube_events.events_of``)."""
DEPENDENTS = {"Deployment": "ReplicaSet", "ReplicaSet": "Pod"}
NODE_EVENTS_NAMESPACE = "default"
"""Where the kubelet and node controller record a node's events (it has no namespace)."""


def read_only(path: ResourcePath, method: str) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        f"{method} is not allowed on events: fleetlog derives events from its log (what its "
        "components did), so they are read-only (get, list)",
        path.target,
    )


async def serve(resources: Resources, request: web.Request, path: ResourcePath) -> web.Response:
    if request.method != "GET":
        raise read_only(path, request.method)
    if path.legacy_watch or request.query.get("watch") in ("true", "1"):
        raise read_only(path, "watch")
    fields = parse_field_selector(request.query.get("fieldSelector"), "Event")
    model = await resources.read_model()
    position = resources.position
    events = [
        event
        for record in _candidates(model.list, path, fields)
        for event in await _events_of(resources, record)
    ]
    events = [e for e in events if fields.matches(e)]
    if path.namespace is not None:
        events = [e for e in events if e["metadata"]["namespace"] == path.namespace]
    if path.name is not None:
        found = next((e for e in events if e["metadata"]["name"] == path.name), None)
        if found is None:
            raise APIError(404, "NotFound", f'events "{path.name}" not found', path.target)
        return respond(found)
    events.sort(key=lambda e: (e["lastTimestamp"], int(e["metadata"]["resourceVersion"])))
    return respond(list_object(EVENTS, events, resource_version=position))


def _pinned(fields: FieldSelector, field: str) -> str | None:
    for r in fields.requirements:
        if r.field == field and r.equal:
            return r.value
    return None


def _candidates(listing: Any, path: ResourcePath, fields: FieldSelector) -> list[ObjectRecord]:
    """The objects whose events the request may reach (narrowed by the selector, as kubectl
    describe always narrows it to one object)."""
    kind = _pinned(fields, "involvedObject.kind")
    name = _pinned(fields, "involvedObject.name")
    out: list[ObjectRecord] = []
    for k in RECORDED_ON:
        if kind is not None and kind != k:
            continue
        namespace = None if k == "Node" else path.namespace
        for record in listing(k, namespace):
            if name is None or record.name == name:
                out.append(record)
    return out


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
