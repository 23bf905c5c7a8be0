"""A service's endpoints, read from its EndpointSlices: an index of slices by service, and the
query and watch subjects that answer for clients that prefer NATS to DNS.

Why this exists: the endpoint-slice controller, the query service and the node's forwarding all
ask "which slices belong to service S" on every change; walking every slice of a namespace each
time would cost the namespace's size per question. :class:`ServiceSlices` keeps the answer
current from the cluster projection's events (a slice belongs to the service its
``kubernetes.io/service-name`` label names, as kube-proxy reads it).

:class:`EndpointsService` serves, in the ``fleet-query`` queue group:

* ``fleet.qry.endpoints.<namespace>.<service>`` (tokens as ``streams.subjects.encode_token``
  writes them): a msgpack request (an empty body is fine; ``{"all": true}`` adds the endpoints
  that are not ready, with their conditions) answered, after the projection has applied
  everything in the log at that moment (read-your-writes), with the service's address, type
  and ports and its ready endpoints: ``{"ok", "position", "service": {...}, "endpoints":
  [{"address", "ports", "nodeName", "zone", "targetRef", "ready", "serving",
  "terminating"}]}``, or ``{"ok": false, "error": {"code": "not_found", ...}}``.
* ``fleet.watch.endpoints.<namespace>.<service>``: the same answer, published (core NATS, not
  JetStream) whenever the service or one of its slices changed, with ``"deleted": true`` once
  the service is gone. Changes that arrive together are published once, as of the latest.
  ``position`` is the log sequence the answer reflects: a client subscribes to the watch
  subject first, then asks the query subject, and applies the watch messages whose
  ``position`` is past the answer's (every ``up`` process publishes; equal positions are the
  same state). Who needs every intermediate state reads the log itself
  (``fleet.evt.endpointslice.<namespace>.>``).

A signed query is answered only when RBAC lets its signer ``get`` the service and ``list`` the
EndpointSlices of its namespace (``projections.readaccess``); the watch subjects are the
control plane's and admins' (the NATS wall lets users subscribe to their own inbox only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.access.readauth import endpoints_requests
from core.errors import FleetError
from core.services.slices import SERVICE_NAME_LABEL
from projections.cluster import ClusterModel, ObjectRecord
from projections.readaccess import ReadAccess
from projections.runtime import Projection
from streams.subjects import QUERY_PREFIX, WATCH_PREFIX, decode_token, encode_token

log = structlog.get_logger(__name__)

ENDPOINTS_QUERY_SUBJECT = f"{QUERY_PREFIX}.endpoints"
ENDPOINTS_WATCH_SUBJECT = f"{WATCH_PREFIX}.endpoints"
QUERY_QUEUE = "fleet-query"

Key = tuple[str, str]
"""(namespace, service name)."""


def query_subject(namespace: str, service: str) -> str:
    return f"{ENDPOINTS_QUERY_SUBJECT}.{encode_token(namespace)}.{encode_token(service)}"


def watch_subject(namespace: str, service: str) -> str:
    return f"{ENDPOINTS_WATCH_SUBJECT}.{encode_token(namespace)}.{encode_token(service)}"


class ServiceSlices:
    """Which EndpointSlices name each service (by ``kubernetes.io/service-name``), kept from
    the cluster projection's events; :meth:`observe` must see every event."""

    def __init__(self, model: ClusterModel) -> None:
        self._model = model
        self._slices: dict[Key, set[str]] = {}
        self._service_of: dict[Key, str] = {}  # (namespace, slice) -> service
        for record in model.list("EndpointSlice"):
            self._index(record.namespace, record.name)

    def observe(self, kind: str, namespace: str, name: str) -> list[Key]:
        """Fold a change of an object; returns the services whose slices it touched (the one
        it named before and the one it names now)."""
        if kind != "EndpointSlice":
            return []
        before = self._service_of.get((namespace, name))
        after = self._index(namespace, name)
        return [(namespace, s) for s in dict.fromkeys((before, after)) if s is not None]

    def _index(self, namespace: str, name: str) -> str | None:
        record = self._model.get("EndpointSlice", namespace, name)
        labels = ((record.manifest.get("metadata") or {}).get("labels") or {}) if record else {}
        service = labels.get(SERVICE_NAME_LABEL) or None
        key = (namespace, name)
        previous = self._service_of.get(key)
        if previous == service:
            return service
        if previous is not None:
            names = self._slices.get((namespace, previous))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._slices[(namespace, previous)]
            del self._service_of[key]
        if service is not None:
            self._service_of[key] = service
            self._slices.setdefault((namespace, service), set()).add(name)
        return service

    def of(self, namespace: str, service: str) -> Iterator[ObjectRecord]:
        """The slices naming the service, by name."""
        for name in sorted(self._slices.get((namespace, service), ())):
            record = self._model.get("EndpointSlice", namespace, name)
            if record is not None:
                yield record


def service_summary(record: ObjectRecord) -> dict[str, Any]:
    """What a client of the endpoints subjects needs of the service itself."""
    spec = record.manifest.get("spec") or {}
    out: dict[str, Any] = {
        "namespace": record.namespace,
        "name": record.name,
        "uid": record.uid,
        "type": spec.get("type", "ClusterIP"),
        "clusterIP": spec.get("clusterIP"),
        "clusterIPs": spec.get("clusterIPs") or [],
        "headless": spec.get("clusterIP") == "None",
        "ports": spec.get("ports") or [],
        "sessionAffinity": spec.get("sessionAffinity", "None"),
        "publishNotReadyAddresses": bool(spec.get("publishNotReadyAddresses")),
    }
    if spec.get("sessionAffinityConfig"):
        out["sessionAffinityConfig"] = spec["sessionAffinityConfig"]
    if spec.get("externalName"):
        out["externalName"] = spec["externalName"]
    annotations = (record.manifest.get("metadata") or {}).get("annotations")
    if annotations:
        out["annotations"] = annotations
    return out


def flattened(slices: Iterable[ObjectRecord], *, include_not_ready: bool) -> list[dict[str, Any]]:
    """One entry per endpoint address with the ports of its slice, ready ones only unless
    ``include_not_ready`` (an unset condition reads as Kubernetes reads it: ready, serving)."""
    out = []
    for record in slices:
        ports = [
            {k: p[k] for k in ("name", "port", "protocol", "appProtocol") if k in p}
            for p in record.manifest.get("ports") or ()
        ]
        for endpoint in record.manifest.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False
            if not ready and not include_not_ready:
                continue
            for address in endpoint.get("addresses") or ():
                entry: dict[str, Any] = {
                    "address": address,
                    "ports": ports,
                    "ready": ready,
                    "serving": conditions.get("serving", ready) is not False,
                    "terminating": bool(conditions.get("terminating")),
                }
                for field in ("nodeName", "zone", "hostname", "targetRef"):
                    if endpoint.get(field):
                        entry[field] = endpoint[field]
                out.append(entry)
    out.sort(key=lambda e: ((e.get("targetRef") or {}).get("name", ""), e["address"]))
    return out


def endpoints_answer(
    model: ClusterModel,
    slices: ServiceSlices,
    namespace: str,
    service: str,
    *,
    include_not_ready: bool = False,
) -> dict[str, Any]:
    record = model.get("Service", namespace, service)
    if record is None:
        return {
            "ok": False,
            "error": {
                "code": "not_found",
                "message": f'service "{service}" not found in namespace "{namespace}"',
            },
        }
    return {
        "ok": True,
        "service": service_summary(record),
        "endpoints": flattened(slices.of(namespace, service), include_not_ready=include_not_ready),
    }


class EndpointsService:
    """Answers ``fleet.qry.endpoints.<ns>.<svc>`` and publishes ``fleet.watch.endpoints.…``
    (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        *,
        read_access: ReadAccess | None = None,
    ) -> None:
        """``read_access``: who may read which service's endpoints (None: unsigned queries
        read every service's, signed ones are refused)."""
        self._nc = nc
        self._projection = projection
        self._read = read_access or ReadAccess()
        self.slices = ServiceSlices(projection.model)
        self._changed: set[Key] = set()
        self._wake = asyncio.Event()
        self.published = 0
        # From now on, not from run(): the index must not miss an event applied meanwhile.
        projection.listeners.append(self._on_event)

    def _on_event(self, event: Any) -> None:
        e = event.envelope
        if e.kind == "Service":
            self._changed.add((e.namespace, e.name))
        elif e.kind == "EndpointSlice":
            self._changed.update(self.slices.observe(e.kind, e.namespace, e.name))
        else:
            return
        self._wake.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve and publish until cancelled."""
        subscription = await self._nc.subscribe(
            f"{ENDPOINTS_QUERY_SUBJECT}.*.*", queue=QUERY_QUEUE, cb=self._answer
        )
        if ready is not None:
            ready.set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                changed, self._changed = self._changed, set()
                for namespace, service in sorted(changed):
                    await self._publish(namespace, service)
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._on_event)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _publish(self, namespace: str, service: str) -> None:
        answer = endpoints_answer(self._projection.model, self.slices, namespace, service)
        if not answer["ok"]:
            answer = {
                "ok": True,
                "deleted": True,
                "service": {"namespace": namespace, "name": service},
            }
        answer["position"] = self._projection.position
        await self._nc.publish(
            watch_subject(namespace, service), msgpack.packb(answer, use_bin_type=True)
        )
        self.published += 1

    async def _answer(self, msg: Msg) -> None:
        try:
            _, _, _, ns_token, name_token = msg.subject.split(".")
            namespace, service = decode_token(ns_token), decode_token(name_token)
            request = msgpack.unpackb(msg.data, raw=False) if msg.data else {}
            if not isinstance(request, dict):
                raise ValueError("the request must be a msgpack map (or empty)")
            reader = await self._read.reader(msg, request)
            for asked in endpoints_requests(namespace=namespace, service=service):
                await self._read.check(reader, asked)
            caught_up = await self._projection.wait_for_log_end(timeout=3.0)
            reply = endpoints_answer(
                self._projection.model,
                self.slices,
                namespace,
                service,
                include_not_ready=bool(request.get("all")),
            )
            reply["position"] = self._projection.position
            reply["caught_up"] = caught_up
        except FleetError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # a bad question must not stop the service
            log.warning("endpoints.query_failed", subject=msg.subject, error=str(exc))
            reply = {"ok": False, "error": {"code": "invalid", "message": f"bad query: {exc}"}}
        if msg.reply:
            await self._nc.publish(msg.reply, msgpack.packb(reply, use_bin_type=True))
