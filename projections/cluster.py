"""The cluster read model: every live object with its manifest, version and timestamps.

This is what ``fleetlog get`` and ``describe`` read, and what replay rebuilds "as of" any point.
The fold works on the envelope's plain data (no pydantic on this path: it runs at replay speed),
keyed by (kind, namespace, name). A delete removes the object; a later create of the same name
starts a new object with a new uid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.api.evolve import EVOLVE
from core.meta.evolve import Evolve, replaced
from core.meta.timestamps import format_stamp
from core.workloads.status import status_updated
from projections.runtime import digest_of
from streams.envelope import StoredEvent
from streams.subjects import AggregateRef

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


# How each event changes the object it touched is its kind's evolve (``core.api.evolve``), the
# functions the aggregates fold the same events with. Stamps come from ``format_stamp`` (whole
# seconds, remembered per second), not datetimes.

_Fold = tuple[Callable[[StoredEvent], None] | None, Evolve | None]


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
                record.manifest = change(record, e.payload, format_stamp(e.timestamp_ns))

    def _fold_for(self, event_type: str) -> _Fold:
        """(fold of the whole event, or None; else the evolve of the touched record)."""
        change = EVOLVE.get(event_type)
        if event_type.endswith("Created"):
            if change is None:
                return self._created, None
            return functools.partial(self._created_and_evolved, change), None
        if change is not None:
            return None, change
        if event_type.endswith("Deleted"):
            return self._deleted, None
        # Kinds the catalog does not know (yet): as the suffix says.
        if event_type.endswith("StatusUpdated"):
            return None, status_updated
        if event_type.endswith("Updated"):
            return None, replaced
        return None, None

    def _created(self, event: StoredEvent) -> ObjectRecord:
        e = event.envelope
        # The record first: a payload it cannot be made of leaves the model as it was.
        record = self.objects[(e.kind, e.namespace, e.name)] = ObjectRecord(
            e.kind, e.namespace, e.name, e.payload["uid"], e.payload["manifest"],
            e.version, event.seq, e.timestamp_ns, e.timestamp_ns, e.type, e.actor,
            e.chain_hash,
        )  # fmt: skip
        self._names.setdefault((e.kind, e.namespace), set()).add(e.name)
        return record

    def _created_and_evolved(self, evolve: Evolve, event: StoredEvent) -> None:
        """A kind that shows more than the created manifest (a quota: its usage)."""
        record = self._created(event)
        e = event.envelope
        record.manifest = evolve(record, e.payload, format_stamp(e.timestamp_ns))

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

    def last_seq_of(self, ref: AggregateRef) -> int:
        """The sequence of the last event this model folded for ``ref`` (0 if it holds no such
        object): what a repository paired with the model never loads older than."""
        record = self.objects.get((ref.kind, ref.namespace, ref.name))
        return record.last_seq if record is not None else 0

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

    def snapshot_capture(self) -> list[tuple[Any, ...]]:
        """The records' fields now, in :meth:`snapshot`'s order: a tuple each (no copy of a
        manifest: an evolve never changes the one it was given, ``core.meta.evolve``), for
        :meth:`snapshot_items` to turn into :meth:`snapshot`'s dicts in a worker thread."""
        objects = self.objects
        return [
            (r.kind, r.namespace, r.name, r.uid, r.manifest, r.version, r.last_seq,
             r.created_ns, r.updated_ns, r.last_event, r.last_actor, r.last_hash)
            for r in (objects[key] for key in sorted(objects))
        ]  # fmt: skip

    def snapshot_items(self, captured: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
        """:meth:`snapshot`'s items from a :meth:`snapshot_capture`."""
        for fields in captured:
            yield ObjectRecord(*fields).as_dict()

    def restore(self, data: list[dict[str, Any]]) -> None:
        self.objects = {}
        self._names = {}
        for item in data:
            record = ObjectRecord(**{**item, "last_hash": bytes.fromhex(item.get("last_hash", ""))})
            self.objects[(record.kind, record.namespace, record.name)] = record
            self._names.setdefault((record.kind, record.namespace), set()).add(record.name)

    def digest(self) -> str:
        return digest_of(self.snapshot())
