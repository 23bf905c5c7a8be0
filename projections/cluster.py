"""The cluster read model: every live object with its manifest, version and timestamps.

This is what ``fleetlog get`` and ``describe`` read, and what replay rebuilds "as of" any point.
The fold works on the envelope's plain data (no pydantic on this path: it runs at replay speed),
keyed by (kind, namespace, name). A delete removes the object; a later create of the same name
starts a new object with a new uid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.aggregates import (
    timestamp_from_ns,
    with_container_exited,
    with_container_restarted,
    with_container_started,
    with_generation,
    with_nomination,
    with_pod_readiness,
    with_pod_scheduled,
    with_pod_terminated,
    with_quota_used,
    with_ready_condition,
    with_status_update,
    with_unschedulable,
)
from projections.runtime import digest_of
from streams.envelope import StoredEvent

Key = tuple[str, str, str]


@dataclass(slots=True)
class ObjectRecord:
    """One object as the cluster sees it now."""

    kind: str
    namespace: str
    name: str
    uid: str
    manifest: dict[str, Any]
    version: int
    last_seq: int
    created_ns: int
    updated_ns: int
    last_event: str
    last_actor: str
    last_hash: str = ""
    """The hash of the last event (hex), which the object's next event chains to; "" when
    unknown (that event predates hashes, or the record was restored from an older snapshot)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "manifest": self.manifest,
            "version": self.version,
            "last_seq": self.last_seq,
            "created_ns": self.created_ns,
            "updated_ns": self.updated_ns,
            "last_event": self.last_event,
            "last_actor": self.last_actor,
            "last_hash": self.last_hash,
        }


class ClusterModel:
    """Objects by (kind, namespace, name), folded from the whole log."""

    name = "cluster"

    def __init__(self) -> None:
        self.objects: dict[Key, ObjectRecord] = {}
        # (kind, namespace) -> names: listing one kind (in one namespace) must not walk, let
        # alone sort, every object of the cluster (controllers list per event).
        self._names: dict[tuple[str, str], set[str]] = {}
        self.events_applied = 0
        self._fold: dict[str, Callable[[StoredEvent], None]] = {}

    def apply(self, event: StoredEvent) -> None:
        self.events_applied += 1
        envelope = event.envelope
        fold = self._fold.get(envelope.type)
        if fold is None:
            fold = self._fold[envelope.type] = self._fold_for(envelope.type)
        fold(event)

    def _fold_for(self, event_type: str) -> Callable[[StoredEvent], None]:
        if event_type == "ScaledTo":
            return self._scaled
        if event_type in ("PodBound", "PodUnschedulable"):
            return self._scheduling_decided
        if event_type == "PodNominated":
            return self._nominated
        if event_type in ("NodeReady", "NodeNotReady"):
            return self._ready_changed
        if event_type == "ContainerStarted":
            return self._container_started
        if event_type == "ContainerExited":
            return self._container_exited
        if event_type == "ContainerRestarted":
            return self._container_restarted
        if event_type in ("PodSucceeded", "PodFailed"):
            return self._pod_terminated
        if event_type in ("PodReady", "PodNotReady"):
            return self._pod_ready if event_type == "PodReady" else self._pod_not_ready
        if event_type in ("NodeCordoned", "NodeUncordoned"):
            return self._cordoned if event_type == "NodeCordoned" else self._uncordoned
        if event_type in ("QuotaCharged", "QuotaReleased"):
            return self._quota_used
        if event_type == "ResourceQuotaCreated":
            return self._quota_created
        if event_type.endswith("StatusUpdated"):
            return self._status_updated
        if event_type.endswith("Created"):
            return self._created
        if event_type.endswith("Updated"):
            return self._updated
        if event_type.endswith("Deleted"):
            return self._deleted
        return self._touched

    def _created(self, event: StoredEvent) -> None:
        e = event.envelope
        self._names.setdefault((e.kind, e.namespace), set()).add(e.name)
        self.objects[(e.kind, e.namespace, e.name)] = ObjectRecord(
            e.kind, e.namespace, e.name, e.payload["uid"], e.payload["manifest"],
            e.version, event.seq, e.timestamp_ns, e.timestamp_ns, e.type, e.actor,
            e.chain_hash.hex(),
        )  # fmt: skip

    def _quota_created(self, event: StoredEvent) -> None:
        self._created(event)
        e = event.envelope
        record = self.objects[(e.kind, e.namespace, e.name)]
        record.manifest = with_quota_used(record.manifest, {})

    def _quota_used(self, event: StoredEvent) -> None:
        """``status.used`` of a quota: the ledger's totals the charge or release recorded."""
        record = self._touched(event)
        if record is not None:
            record.manifest = with_quota_used(record.manifest, event.envelope.payload["used"])

    def _updated(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            record.manifest = event.envelope.payload["manifest"]

    def _scaled(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            manifest = copy.copy(record.manifest)
            manifest["spec"] = {
                **manifest.get("spec", {}),
                "replicas": event.envelope.payload["replicas"],
            }
            generation = (manifest.get("metadata") or {}).get("generation")
            if generation is not None:
                manifest = with_generation(manifest, generation + 1)
            record.manifest = manifest

    def _status_updated(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_status_update(
                record.manifest, payload["status"], payload.get("annotations") or {}
            )

    def _scheduling_decided(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_pod_scheduled(
                record.manifest,
                node=payload.get("node"),
                reason="Unschedulable",
                message=payload.get("message", ""),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _nominated(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            record.manifest = with_nomination(record.manifest, event.envelope.payload["node"])

    def _ready_changed(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_ready_condition(
                record.manifest,
                status=payload["status"],
                reason=payload["reason"],
                message=payload.get("message", ""),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _container_started(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_container_started(
                record.manifest,
                container=payload["container"],
                restart_count=payload.get("restart_count", 0),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _container_exited(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_container_exited(
                record.manifest,
                container=payload["container"],
                exit_code=payload["exit_code"],
                signal=payload.get("signal"),
                reason=payload["reason"],
                message=payload.get("message", ""),
                restart_count=payload.get("restart_count", 0),
                started_at_ns=payload.get("started_at_ns"),
                finished_at_ns=payload.get("finished_at_ns"),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _container_restarted(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_container_restarted(
                record.manifest,
                container=payload["container"],
                restart_count=payload["restart_count"],
                backoff_seconds=payload.get("backoff_seconds", 0.0),
                namespace=record.namespace,
                name=record.name,
                uid=record.uid,
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _pod_terminated(self, event: StoredEvent) -> None:
        record = self._touched(event)
        if record is not None:
            payload = event.envelope.payload
            record.manifest = with_pod_terminated(
                record.manifest,
                phase="Succeeded" if event.envelope.type == "PodSucceeded" else "Failed",
                reason=payload.get("reason", ""),
                message=payload.get("message", ""),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _pod_ready(self, event: StoredEvent) -> None:
        self._set_pod_readiness(event, True)

    def _pod_not_ready(self, event: StoredEvent) -> None:
        self._set_pod_readiness(event, False)

    def _set_pod_readiness(self, event: StoredEvent, ready: bool) -> None:
        record = self._touched(event)
        if record is not None:
            record.manifest = with_pod_readiness(
                record.manifest,
                ready=ready,
                reason=event.envelope.payload.get("reason", ""),
                at=timestamp_from_ns(event.envelope.timestamp_ns),
            )

    def _cordoned(self, event: StoredEvent) -> None:
        self._set_unschedulable(event, True)

    def _uncordoned(self, event: StoredEvent) -> None:
        self._set_unschedulable(event, False)

    def _set_unschedulable(self, event: StoredEvent, unschedulable: bool) -> None:
        record = self._touched(event)
        if record is not None:
            record.manifest = with_unschedulable(record.manifest, unschedulable)

    def _deleted(self, event: StoredEvent) -> None:
        e = event.envelope
        if self.objects.pop((e.kind, e.namespace, e.name), None) is not None:
            names = self._names[(e.kind, e.namespace)]
            names.discard(e.name)
            if not names:
                del self._names[(e.kind, e.namespace)]

    def _touched(self, event: StoredEvent) -> ObjectRecord | None:
        e = event.envelope
        record = self.objects.get((e.kind, e.namespace, e.name))
        if record is not None:
            record.version = e.version
            record.last_seq = event.seq
            record.updated_ns = e.timestamp_ns
            record.last_event = e.type
            record.last_actor = e.actor
            record.last_hash = e.chain_hash.hex()
        return record

    # -- queries -------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> ObjectRecord | None:
        return self.objects.get((kind, namespace, name))

    def list(self, kind: str, namespace: str | None = None) -> Iterator[ObjectRecord]:
        """Objects of a kind, in one namespace or all (``None``), sorted by namespace and name."""
        if namespace is not None:
            scopes = [namespace] if (kind, namespace) in self._names else []
        else:
            scopes = sorted(ns for k, ns in self._names if k == kind)
        for scope in scopes:
            for name in sorted(self._names[(kind, scope)]):
                yield self.objects[(kind, scope, name)]

    # -- snapshots and digests --------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.objects[key].as_dict() for key in sorted(self.objects)]

    def restore(self, data: list[dict[str, Any]]) -> None:
        self.objects = {}
        self._names = {}
        for item in data:
            record = ObjectRecord(**item)
            self.objects[(record.kind, record.namespace, record.name)] = record
            self._names.setdefault((record.kind, record.namespace), set()).add(record.name)

    def digest(self) -> str:
        return digest_of(self.snapshot())
