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

from core.meta.timestamps import format_stamp
from core.nodes.status import with_ready_condition_stamped, with_unschedulable
from core.pods.status import (
    with_container_exited_stamped,
    with_container_restarted_stamped,
    with_container_started_stamped,
    with_nomination,
    with_pod_readiness_stamped,
    with_pod_scheduled_stamped,
    with_pod_terminated_stamped,
)
from core.policy.quota import with_quota_used
from core.workloads.status import with_generation, with_status_update
from projections.runtime import digest_of
from streams.envelope import Envelope, StoredEvent

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
    last_hash: bytes = b""
    """The hash of the last event, which the object's next event chains to; empty when
    unknown (that event predates hashes, or the record was restored from an older snapshot).
    Snapshots spell it in hex."""

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
            "last_hash": self.last_hash.hex(),
        }


# How each event type changes the manifest of the object it touched (see ClusterModel.apply).
# Stamps come from ``format_stamp`` (whole seconds, remembered per second), not datetimes.

_Change = Callable[[ObjectRecord, Envelope], None]
_Fold = tuple[Callable[[StoredEvent], None] | None, _Change | None]


def _quota_used(record: ObjectRecord, e: Envelope) -> None:
    """``status.used`` of a quota: the ledger's totals the charge or release recorded."""
    record.manifest = with_quota_used(record.manifest, e.payload["used"])


def _updated(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = e.payload["manifest"]


def _scaled(record: ObjectRecord, e: Envelope) -> None:
    manifest = copy.copy(record.manifest)
    manifest["spec"] = {**manifest.get("spec", {}), "replicas": e.payload["replicas"]}
    generation = (manifest.get("metadata") or {}).get("generation")
    if generation is not None:
        manifest = with_generation(manifest, generation + 1)
    record.manifest = manifest


def _status_updated(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_status_update(
        record.manifest, payload["status"], payload.get("annotations") or {}
    )


def _scheduling_decided(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_pod_scheduled_stamped(
        record.manifest,
        node=payload.get("node"),
        reason="Unschedulable",
        message=payload.get("message", ""),
        stamp=format_stamp(e.timestamp_ns),
    )


def _nominated(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = with_nomination(record.manifest, e.payload["node"])


def _ready_changed(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_ready_condition_stamped(
        record.manifest,
        status=payload["status"],
        reason=payload["reason"],
        message=payload.get("message", ""),
        stamp=format_stamp(e.timestamp_ns),
    )


def _container_started(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_container_started_stamped(
        record.manifest,
        container=payload["container"],
        restart_count=payload.get("restart_count", 0),
        stamp=format_stamp(e.timestamp_ns),
    )


def _container_exited(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_container_exited_stamped(
        record.manifest,
        container=payload["container"],
        exit_code=payload["exit_code"],
        signal=payload.get("signal"),
        reason=payload["reason"],
        message=payload.get("message", ""),
        restart_count=payload.get("restart_count", 0),
        started_at_ns=payload.get("started_at_ns"),
        finished_at_ns=payload.get("finished_at_ns"),
        stamp=format_stamp(e.timestamp_ns),
    )


def _container_restarted(record: ObjectRecord, e: Envelope) -> None:
    payload = e.payload
    record.manifest = with_container_restarted_stamped(
        record.manifest,
        container=payload["container"],
        restart_count=payload["restart_count"],
        backoff_seconds=payload.get("backoff_seconds", 0.0),
        namespace=record.namespace,
        name=record.name,
        uid=record.uid,
        stamp=format_stamp(e.timestamp_ns),
    )


def _pod_succeeded(record: ObjectRecord, e: Envelope) -> None:
    _set_pod_terminated(record, e, "Succeeded")


def _pod_failed(record: ObjectRecord, e: Envelope) -> None:
    _set_pod_terminated(record, e, "Failed")


def _set_pod_terminated(record: ObjectRecord, e: Envelope, phase: str) -> None:
    payload = e.payload
    record.manifest = with_pod_terminated_stamped(
        record.manifest,
        phase=phase,
        reason=payload.get("reason", ""),
        message=payload.get("message", ""),
        stamp=format_stamp(e.timestamp_ns),
    )


def _pod_ready(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = with_pod_readiness_stamped(
        record.manifest,
        ready=True,
        reason=e.payload.get("reason", ""),
        stamp=format_stamp(e.timestamp_ns),
    )


def _pod_not_ready(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = with_pod_readiness_stamped(
        record.manifest,
        ready=False,
        reason=e.payload.get("reason", ""),
        stamp=format_stamp(e.timestamp_ns),
    )


def _cordoned(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = with_unschedulable(record.manifest, True)


def _uncordoned(record: ObjectRecord, e: Envelope) -> None:
    record.manifest = with_unschedulable(record.manifest, False)


_CHANGES: dict[str, _Change] = {
    "ScaledTo": _scaled,
    "PodBound": _scheduling_decided,
    "PodUnschedulable": _scheduling_decided,
    "PodNominated": _nominated,
    "NodeReady": _ready_changed,
    "NodeNotReady": _ready_changed,
    "ContainerStarted": _container_started,
    "ContainerExited": _container_exited,
    "ContainerRestarted": _container_restarted,
    "PodSucceeded": _pod_succeeded,
    "PodFailed": _pod_failed,
    "PodReady": _pod_ready,
    "PodNotReady": _pod_not_ready,
    "NodeCordoned": _cordoned,
    "NodeUncordoned": _uncordoned,
    "QuotaCharged": _quota_used,
    "QuotaReleased": _quota_used,
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
        self._fold: dict[str, _Fold] = {}

    def apply(self, event: StoredEvent) -> None:
        self.events_applied += 1
        e = event.envelope
        fold = self._fold.get(e.type)
        if fold is None:
            fold = self._fold[e.type] = self._fold_for(e.type)
        whole, change = fold
        if whole is not None:
            whole(event)
            return
        # Every other event touches the object it is about (when it exists), then changes
        # its manifest (or not: ``change`` is None). Inline: this runs for most events.
        record = self.objects.get((e.kind, e.namespace, e.name))
        if record is not None:
            record.version = e.version
            record.last_seq = event.seq
            record.updated_ns = e.timestamp_ns
            record.last_event = e.type
            record.last_actor = e.actor
            record.last_hash = e.chain_hash
            if change is not None:
                change(record, e)

    def _fold_for(self, event_type: str) -> _Fold:
        """(fold of the whole event, or None; else the change to the touched record)."""
        if event_type == "ResourceQuotaCreated":
            return self._quota_created, None
        change = _CHANGES.get(event_type)
        if change is not None:
            return None, change
        if event_type.endswith("StatusUpdated"):
            return None, _status_updated
        if event_type.endswith("Created"):
            return self._created, None
        if event_type.endswith("Updated"):
            return None, _updated
        if event_type.endswith("Deleted"):
            return self._deleted, None
        return None, None

    def _created(self, event: StoredEvent) -> None:
        e = event.envelope
        self._names.setdefault((e.kind, e.namespace), set()).add(e.name)
        self.objects[(e.kind, e.namespace, e.name)] = ObjectRecord(
            e.kind, e.namespace, e.name, e.payload["uid"], e.payload["manifest"],
            e.version, event.seq, e.timestamp_ns, e.timestamp_ns, e.type, e.actor,
            e.chain_hash,
        )  # fmt: skip

    def _quota_created(self, event: StoredEvent) -> None:
        self._created(event)
        e = event.envelope
        record = self.objects[(e.kind, e.namespace, e.name)]
        record.manifest = with_quota_used(record.manifest, {})

    def _deleted(self, event: StoredEvent) -> None:
        e = event.envelope
        if self.objects.pop((e.kind, e.namespace, e.name), None) is not None:
            names = self._names[(e.kind, e.namespace)]
            names.discard(e.name)
            if not names:
                del self._names[(e.kind, e.namespace)]

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
            record = ObjectRecord(**{**item, "last_hash": bytes.fromhex(item.get("last_hash", ""))})
            self.objects[(record.kind, record.namespace, record.name)] = record
            self._names.setdefault((record.kind, record.namespace), set()).add(record.name)

    def digest(self) -> str:
        return digest_of(self.snapshot())
