"""The endpoint-slice controller: each service with a selector has EndpointSlices listing the
pods behind it, with their readiness, node and zone.

Why this exists: the node's forwarding, cluster DNS, ``fleetlog get endpoints`` and the
endpoints query subject all read which pods stand behind a service; Kubernetes derives that
from pods into EndpointSlices (``pkg/controller/endpointslice``) and so does fleetlog. It runs
on the shared controller loop (role ``endpointslice-controller``, leader-elected), keyed by
service, and writes through the command gateway (actor ``system:endpointslice-controller``), so
every slice change is an ordinary, attributed event whose causation names the pod or service
change that led to it. What the slices should say is decided by ``core.services.slices``.

What makes a service due:

* its own events (created, changed, deleted);
* a pod change that matters to an endpoint (labels, address, readiness, node, phase, deletion,
  hostname, container ports), for the services whose selector matches the pod now or matched it
  before; a pod change that changes none of that (a container restart, a probe that did not
  flip readiness) costs a dictionary lookup and makes nothing due, and a pod in a namespace
  without services costs less;
* a slice of the service changed by someone else (a user deleting a managed slice gets it back);
* a node whose zone label changed (every service, since endpoints carry the zone).

A reconcile reads the service, the pods its selector matches (:class:`ServicePods`, an index
kept from the events) and the service's managed slices from the cluster projection, asks
``plan_slices`` for the writes, sends them (creates, updates and deletes with
``expected_version``, so a slice changed meanwhile is decided again), and waits for them to
reach the projection before it returns. A deleted service's slices are left to the
garbage collector (they name the service as their owner). Difference from Kubernetes: a
service that loses its selector (or becomes ExternalName) has its managed slices deleted
rather than left stale.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client

from core.errors import FleetError
from core.services.slices import (
    ZONE_LABEL,
    PodState,
    SlicePlan,
    desired_endpoints,
    is_managed,
    plan_slices,
    pod_address,
    pod_ready,
    selects,
)
from handlers.controller import Cause, ControllerLoop, Leadership, LoopOptions
from handlers.replicaset_controller import generated_name
from projections.cluster import ClusterModel, ObjectRecord
from projections.endpoints import ServiceSlices
from projections.runtime import Projection, digest_of
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.leases import LeaderLease

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = structlog.get_logger(__name__)

ROLE = "endpointslice-controller"
ACTOR = f"system:{ROLE}"

Key = tuple[str, str]
"""(namespace, service name)."""


def pod_view(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What of a pod can change its endpoints: a pod event that leaves this as it was (a
    container restart, a log line's worth of status) concerns no service."""
    metadata = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    status = manifest.get("status") or {}
    ports = tuple(
        (p.get("name"), p.get("containerPort"), p.get("protocol", "TCP"))
        for c in spec.get("containers") or ()
        for p in c.get("ports") or ()
        if p.get("name")
    )
    labels = metadata.get("labels") or {}
    return (
        tuple(sorted(labels.items())),
        pod_address(manifest),
        pod_ready(manifest),
        spec.get("nodeName"),
        status.get("phase") in ("Succeeded", "Failed"),
        bool(metadata.get("deletionTimestamp")),
        spec.get("hostname"),
        spec.get("subdomain"),
        ports,
    )


class ServicePods:
    """Which pods each service's selector matches, kept from the read model's events, so a
    reconcile reads a service's pods (not its namespace's) and a pod event costs the services
    that could match it (not every service of its namespace).

    Services are indexed by one pair of their selector: a pod's candidates are the services
    indexed under one of its labels, then checked whole. A pod seen in a namespace with
    services keeps the :func:`pod_view` it was last seen with, so an event that changed
    nothing an endpoint shows is told apart at once."""

    def __init__(self, model: ClusterModel) -> None:
        self._model = model
        self.selectors: dict[str, dict[str, dict[str, str]]] = {}
        """namespace -> service -> selector, for the services that get slices."""
        self._by_pair: dict[str, dict[tuple[str, str], set[str]]] = {}
        self._pods: dict[Key, tuple[tuple[Any, ...], frozenset[str]]] = {}
        self.members: dict[Key, set[str]] = {}
        """(namespace, service) -> the names of the pods its selector matches."""
        for record in model.list("Service"):
            self._set_selector(record.namespace, record.name, _selector(record))
        for namespace in list(self.selectors):
            for pod in model.list("Pod", namespace):
                self._remember(namespace, pod)

    def service_changed(self, namespace: str, name: str) -> None:
        """Fold a change of a service: when its selector changed, find its pods again."""
        record = self._model.get("Service", namespace, name)
        selector = _selector(record) if record is not None else None
        if selector == self.selectors.get(namespace, {}).get(name):
            return
        self._set_selector(namespace, name, selector)
        for pod in sorted(self.members.get((namespace, name), ())):
            known = self._pods.get((namespace, pod))
            if known is not None:
                self._set((namespace, pod), known[0], known[1] - {name})
        if selector is None:
            return
        for record_ in self._model.list("Pod", namespace):
            labels = (record_.manifest.get("metadata") or {}).get("labels") or {}
            if selects(selector, labels):
                known = self._pods.get((namespace, record_.name))
                if known is None:
                    self._remember(namespace, record_)
                else:
                    self._set((namespace, record_.name), known[0], known[1] | {name})

    def pod_changed(self, namespace: str, name: str) -> list[Key]:
        """Fold a change of a pod; the services whose endpoints it may change (those that
        matched it before and those that match it now)."""
        key = (namespace, name)
        known = self._pods.get(key)
        if known is None and namespace not in self.selectors:
            return []  # no service could care (the common case of a busy cluster)
        record = self._model.get("Pod", namespace, name)
        before = known[1] if known is not None else frozenset()
        if record is None:
            if known is not None:
                self._set(key, None, frozenset())
            return [(namespace, service) for service in sorted(before)]
        view = pod_view(record.manifest)
        if known is not None and known[0] == view:
            return []
        now = self._matching(namespace, record)
        self._set(key, view, now)
        return [(namespace, service) for service in sorted(now | before)]

    def services(self) -> list[Key]:
        return [(ns, name) for ns, services in self.selectors.items() for name in services]

    def _remember(self, namespace: str, record: ObjectRecord) -> None:
        self._set(
            (namespace, record.name), pod_view(record.manifest), self._matching(namespace, record)
        )

    def _matching(self, namespace: str, record: ObjectRecord) -> frozenset[str]:
        selectors = self.selectors.get(namespace)
        if not selectors:
            return frozenset()
        labels = (record.manifest.get("metadata") or {}).get("labels") or {}
        pairs = self._by_pair[namespace]
        candidates = {s for pair in labels.items() for s in pairs.get(pair, ())}
        return frozenset(s for s in candidates if selects(selectors[s], labels))

    def _set(self, key: Key, view: tuple[Any, ...] | None, services: frozenset[str]) -> None:
        namespace, name = key
        known = self._pods.get(key)
        before = known[1] if known is not None else frozenset()
        for service in before - services:
            members = self.members.get((namespace, service))
            if members is not None:
                members.discard(name)
                if not members:
                    del self.members[(namespace, service)]
        for service in services - before:
            self.members.setdefault((namespace, service), set()).add(name)
        if view is None or (not services and namespace not in self.selectors):
            self._pods.pop(key, None)
        else:
            self._pods[key] = (view, services)

    def _set_selector(self, namespace: str, name: str, selector: dict[str, str] | None) -> None:
        services = self.selectors.setdefault(namespace, {})
        pairs = self._by_pair.setdefault(namespace, {})
        old = services.pop(name, None)
        if old:
            indexed = pairs.get(min(old.items()))
            if indexed is not None:
                indexed.discard(name)
                if not indexed:
                    del pairs[min(old.items())]
        if selector:
            services[name] = selector
            pairs.setdefault(min(selector.items()), set()).add(name)
        if not services:
            del self.selectors[namespace]
            del self._by_pair[namespace]


class EndpointSliceController:
    def __init__(
        self,
        nc: Client,
        projection: Projection[ClusterModel],
        leader: Leadership,
        **options: Unpack[LoopOptions],
    ) -> None:
        self._projection = projection
        self._commands = CommandClient(nc, actor=ACTOR)
        model = projection.model
        self._slices = ServiceSlices(model)
        self._pods = ServicePods(model)
        self._zones: dict[str, str] = {}
        for record in model.list("Node"):
            self._zones[record.name] = _zone(record)
        self._due: tuple[int, list[Key]] = (0, [])
        # The indexes follow the projection from now on, not from when the loop starts: a
        # slice missed meanwhile would be created twice. The loop's listener, registered
        # after this one, takes the keys each event made due (:meth:`_keys_of`).
        projection.listeners.append(self._observe)
        self.loop: ControllerLoop[Key] = ControllerLoop(
            role=ROLE,
            projection=projection,
            leader=leader,
            reconcile=self.reconcile,
            keys_of=self._keys_of,
            kind="Service",
            actor=ACTOR,
            all_keys=lambda: [(r.namespace, r.name) for r in model.list("Service")],
            **options,
        )
        self.writes = 0

    @classmethod
    async def create(
        cls, nc: Client, projection: Projection[ClusterModel], **options: Unpack[LoopOptions]
    ) -> EndpointSliceController:
        leader = await LeaderLease.open(nc, ROLE)
        return cls(nc, projection, leader, **options)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        try:
            await self.loop.run(ready)
        finally:
            with contextlib.suppress(ValueError):
                self._projection.listeners.remove(self._observe)

    # -- what makes a service due ----------------------------------------------------------------

    def _keys_of(self, event: StoredEvent) -> Iterable[Key]:
        seq, keys = self._due
        return keys if seq == event.seq else []

    def _observe(self, event: StoredEvent) -> None:
        self._due = (event.seq, self._fold(event))

    def _fold(self, event: StoredEvent) -> list[Key]:
        """Bring the indexes up to date with ``event``; the services it makes due."""
        e = event.envelope
        kind = e.kind
        if kind == "Pod":
            return self._pods.pod_changed(e.namespace, e.name)
        if kind == "Service":
            self._pods.service_changed(e.namespace, e.name)
            return [(e.namespace, e.name)]
        if kind == "EndpointSlice":
            touched = self._slices.observe(kind, e.namespace, e.name)
            return [] if e.actor == ACTOR else touched
        if kind == "Node":
            record = self._projection.model.get("Node", "", e.name)
            zone = _zone(record) if record is not None else ""
            if zone == self._zones.get(e.name, ""):
                return []
            self._zones[e.name] = zone
            return self._pods.services()
        return []

    # -- one reconcile ---------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> int | None:
        namespace, name = key
        model = self._projection.model
        service = model.get("Service", namespace, name)
        if service is None:
            self.loop.forget(key)  # its slices name it as their owner: collected with it
            return None
        managed = [
            s
            for s in self._slices.of(namespace, name)
            if is_managed(s.manifest, name) and _owned_by(s, service.uid)
        ]
        spec = service.manifest.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            plan = SlicePlan(delete=[s.name for s in managed])
        else:
            members = (model.get("Pod", namespace, p) for p in self._pods.members.get(key, ()))
            pods = [PodState(p.namespace, p.name, p.uid, p.manifest) for p in members if p]
            plan = plan_slices(
                service.manifest,
                uid=service.uid,
                desired=desired_endpoints(service.manifest, pods, self._zones),
                existing=[s.manifest for s in managed],
                new_name=lambda: generated_name(name),
            )
        if plan:
            await self._write(service, plan, {s.name: s for s in managed})
        return None

    async def _write(
        self, service: ObjectRecord, plan: SlicePlan, managed: dict[str, ObjectRecord]
    ) -> None:
        cause = self.loop.cause((service.namespace, service.name), service.last_seq)
        sends = [self._create(service, manifest, cause) for manifest in plan.create]
        sends += [self._update(managed[m["metadata"]["name"]], m, cause) for m in plan.update]
        sends += [self._delete(managed[name], cause) for name in plan.delete]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        seqs = [seq for o in outcomes if isinstance(o, list) for seq in o]
        if seqs:
            # Expectations: the next decision on this service sees what this one wrote.
            await self._projection.wait_for(max(seqs))
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]

    async def _create(
        self, service: ObjectRecord, manifest: dict[str, Any], cause: Cause
    ) -> list[int]:
        name = manifest["metadata"]["name"]
        outcome = await self._commands.send(
            "EndpointSlice",
            "create",
            {"manifest": manifest},
            idempotency_key=f"{ROLE}.create.{service.uid}.{name}",
            **cause.kwargs(),
        )
        self.writes += 1
        return outcome.seqs

    async def _update(
        self, record: ObjectRecord, manifest: dict[str, Any], cause: Cause
    ) -> list[int]:
        outcome = await self._commands.send(
            "EndpointSlice",
            "apply",
            {"manifest": manifest},
            idempotency_key=f"{ROLE}.update.{record.uid}.{record.version}.{digest_of(manifest)[:16]}",
            expected_version=record.version,
            **cause.kwargs(),
        )
        self.writes += 1
        return outcome.seqs

    async def _delete(self, record: ObjectRecord, cause: Cause) -> list[int]:
        try:
            outcome = await self._commands.send(
                "EndpointSlice",
                "delete",
                {
                    "name": record.name,
                    "namespace": record.namespace,
                    "reason": "no endpoints of its service left in it",
                },
                idempotency_key=f"{ROLE}.delete.{record.uid}.{record.version}",
                expected_version=record.version,
                **cause.kwargs(),
            )
        except FleetError as exc:
            if exc.code == "not_found":
                return []
            raise
        self.writes += 1
        return outcome.seqs


def _selector(record: ObjectRecord) -> dict[str, str] | None:
    """The selector of a service that gets slices (None: no selector, or ExternalName)."""
    spec = record.manifest.get("spec") or {}
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return None
    return dict(selector)


def _zone(record: ObjectRecord) -> str:
    labels = (record.manifest.get("metadata") or {}).get("labels") or {}
    return str(labels.get(ZONE_LABEL, ""))


def _owned_by(record: ObjectRecord, uid: str) -> bool:
    refs = (record.manifest.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid for ref in refs)
