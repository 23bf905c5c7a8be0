"""Time travel: the cluster as it was at a point of the log (``get``/``describe --at``,
``replay --to``, ``diff --from --to``).

The log is the truth, so any past state is a fold of a prefix of it. Every point the user
names is first turned into that prefix — the last stream sequence included — and every read
then folds exactly the events up to it into a fresh :class:`ClusterModel`. So a list, a single
object, a whole-cluster replay and a diff at "the same point" are the same state, and the
state at a sequence is, by construction, what a projection replayed to that sequence holds
(tests compare digests).

**Points.** ``123`` or ``seq:123`` is a stream sequence (``0``: before the first event);
``2026-11-26T03:12:00Z`` (any ISO 8601 instant, nanoseconds kept; no offset means UTC) or
``-2h`` / ``-30m`` / ``-1d2h`` (a time ago) is an instant; ``now`` is the log's end.

**Which time.** An instant means "every event the log had stored by then": the point is the
last event whose JetStream *stored* time is at or before it. That is the time
``Projection.catch_up(until_ns=…)``/``EventStore.replay`` compare and ``events --since``
starts from; it is assigned by the server in stream order, so "events up to T" is a prefix
of the log. The envelope's ``timestamp_ns`` (the TIME column of ``history``/``events``) is
when the handler decided the event, a moment before it was stored, on the handler's clock:
it is not monotonic across writers, so it cannot define a prefix. The two differ by the
append latency (well under a millisecond on one machine). The instant is resolved with one
direct get by start time, so a single-object read at a time costs no replay either.

**Costs.** A single object at a point reads only its own subject (one batched direct get) and
folds it: the fold of an object depends only on its own events. A listing replays only the
kind's subjects (a server-side filter) up to the point, for the same reason. ``replay`` and
``diff`` replay the whole log, ``diff`` once: up to A, a snapshot, then on to B.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from nats.aio.client import Client

from core.access.secretdata import redacted_manifest
from core.errors import ValidationFailed
from core.meta.diff import changed_paths
from core.meta.durations import is_duration, parse_duration
from core.meta.timestamps import parse_stamp
from ops import render
from ops.cliargs import POINT_HELP
from projections.cluster import ClusterModel, Key
from projections.history_service import read_history
from projections.runtime import Projection, collector_paused
from projections.streamreads import ServedLog, served_log
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.jsapi import direct_get_position, stream_end
from streams.subjects import event_filter, event_subject

_SEQ = re.compile(r"(?:seq:)?(\d+)", re.IGNORECASE)


# -- points -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """A point as the user named it: a sequence, an instant (ns since the epoch), or neither
    (``now``: the end of the log)."""

    text: str
    seq: int | None = None
    at_ns: int | None = None


def parse_point(text: str, now_ns: int, *, option: str = "--at") -> Point:
    """Read a point (see the module docstring); ``now_ns`` anchors relative times."""
    raw = text.strip()
    if raw.lower() == "now":
        return Point(text)
    if match := _SEQ.fullmatch(raw):
        return Point(text, seq=int(match.group(1)))
    if raw.startswith("-") and is_duration(raw[1:]):
        return Point(text, at_ns=now_ns - int(parse_duration(raw[1:]) * 1_000_000_000))
    at_ns = parse_stamp(raw)
    if at_ns is None:
        raise ValidationFailed(f"{option} {text!r} is not a point in the log: use {POINT_HELP}")
    return Point(text, at_ns=at_ns)


def format_ns(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds (``2026-11-26T03:12:00.123456789Z``): exact, and
    accepted back as a point."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


@dataclass(frozen=True, slots=True)
class Position:
    """A resolved point: every event up to and including ``seq`` (0: none), and the instant it
    stands for (the one asked, or when event ``seq`` was stored; None before the first)."""

    seq: int
    time_ns: int | None

    def label(self) -> str:
        when = f" ({format_ns(self.time_ns)})" if self.time_ns is not None else ""
        return f"sequence {self.seq}{when}"

    def as_dict(self) -> dict[str, Any]:
        time = format_ns(self.time_ns) if self.time_ns is not None else None
        return {"position": self.seq, "time": time}


Log = EventStore | ServedLog
"""What a fold reads: the log itself, or the log as the stream read service shows a signed
reader (``projections.streamreads.ServedLog``: only what RBAC lets it list)."""


async def _direct_get(nc: Client, store: Log, request: dict[str, Any]) -> tuple[int, int] | None:
    """(sequence, stored ns) of the message a direct get finds, or None."""
    if isinstance(store, ServedLog):
        return await store.position(request)
    return await direct_get_position(nc, store.subjects, request)


async def _log_end(nc: Client, store: Log) -> tuple[int, int | None]:
    """(last sequence, its stored ns) of the stream; (0, None) while it is empty."""
    if isinstance(store, ServedLog):
        return await store.end()
    return await stream_end(nc, store.subjects)


def _as_store(log: Log) -> EventStore:
    """A fold's catch-up asks only ``replay`` and ``stream_last_seq``, which a ServedLog
    answers as the store does."""
    return cast(EventStore, log)


async def log_of(session: Any) -> Log:
    """The log a CLI session folds: through ``up``'s stream read service when the session
    signs its reads and a service answers, else the event store itself."""
    acting = session.commands.actor if session.commands.impersonate else None
    served = await served_log(session.nc, session.store, impersonate=acting)
    return served if served is not None else session.store


async def resolve(
    nc: Client, store: Log, point: Point, *, now_ns: int, option: str = "--at"
) -> Position:
    """The position a point names; a point after the log's end (a sequence it does not have
    yet, an instant in the future) is refused with where the log ends."""
    last_seq, last_ns = await _log_end(nc, store)
    end = f"the log ends at sequence {last_seq}" + (
        f", stored {format_ns(last_ns)}" if last_ns is not None else ""
    )
    if point.seq is not None:
        if point.seq > last_seq:
            raise ValidationFailed(f"{option} {point.text}: beyond the end of the log: {end}")
        if point.seq == 0:
            return Position(0, None)
        found = await _direct_get(nc, store, {"seq": point.seq})
        return Position(point.seq, found[1] if found else None)
    if point.at_ns is None:
        return Position(last_seq, now_ns)
    if point.at_ns > now_ns:
        raise ValidationFailed(
            f"{option} {point.text}: {format_ns(point.at_ns)} is in the future "
            f"(now is {format_ns(now_ns)}); {end}"
        )
    if last_ns is None or point.at_ns >= last_ns:
        return Position(last_seq, point.at_ns)
    # The first event stored after the instant; the point is the one before it.
    after = await _direct_get(nc, store, {"start_time": format_ns(point.at_ns + 1)})
    return Position(after[0] - 1 if after else last_seq, point.at_ns)


async def position_of(
    nc: Client, store: Log, text: str, *, now_ns: int, option: str = "--at"
) -> Position:
    """Parse and resolve in one step."""
    return await resolve(
        nc, store, parse_point(text, now_ns, option=option), now_ns=now_ns, option=option
    )


# -- reads at a position ------------------------------------------------------------------


def as_in_the_log(item: dict[str, Any]) -> dict[str, Any]:
    """An object of the past as a reader of the log is shown it: a Secret's values as
    ``<sealed, N bytes>`` (that they changed shows, never what they were)."""
    if item.get("kind") != "Secret":
        return item
    return {**item, "manifest": redacted_manifest(item["manifest"])}


async def object_at(
    store: Log,
    kind: str,
    namespace: str,
    name: str,
    seq: int,
    *,
    nc: Client | None = None,
) -> tuple[dict[str, Any] | None, list[StoredEvent]]:
    """One object at ``seq`` (as the query service answers: ``ObjectRecord.as_dict``, None if
    it did not exist then) and its subject's events up to ``seq``; reads only that subject
    (with ``nc``, from ``up``'s history index when it answers)."""
    subject = event_subject(kind, namespace, name)
    if nc is not None:
        history = await read_history(nc, _as_store(store), subject)
    else:
        history = await store.read_subject(subject)
    events = [ev for ev in history if ev.seq <= seq]
    model = ClusterModel()
    for event in events:
        model.apply(event)
    record = model.get(kind, namespace, name)
    return (as_in_the_log(record.as_dict()) if record is not None else None), events


async def list_at(store: Log, seq: int, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    """Every object of a kind (in one namespace, or all with None) at ``seq``, sorted as the
    query service lists them; replays only that kind's subjects."""
    projection = Projection(
        ClusterModel(), _as_store(store), filter_subject=event_filter(kind, namespace)
    )
    await projection.catch_up(until_seq=seq)
    return [as_in_the_log(record.as_dict()) for record in projection.model.list(kind, namespace)]


async def model_at(store: Log, seq: int) -> Projection[ClusterModel]:
    """The whole cluster replayed up to ``seq`` (can be continued with ``catch_up``)."""
    projection = Projection(ClusterModel(), _as_store(store))
    await projection.catch_up(until_seq=seq)
    return projection


def records(model: ClusterModel) -> dict[Key, dict[str, Any]]:
    """Every object of a model as plain records. The fold replaces a record's manifest on
    every change (never edits it in place), so this stays valid while the model moves on."""
    return {key: record.as_dict() for key, record in model.objects.items()}


# -- replay --------------------------------------------------------------------------------


@dataclass(slots=True)
class ClusterState:
    """The whole cluster at a position: manifests sorted by kind, namespace, name."""

    position: Position
    items: list[dict[str, Any]]
    digest: str
    events: int

    def summary(self) -> str:
        return (
            f"replayed {self.events} events to {self.position.label()}: "
            f"{len(self.items)} objects, digest {self.digest}"
        )


def cluster_state(position: Position, model: ClusterModel) -> ClusterState:
    with collector_paused():
        manifests = [
            render.full_manifest(as_in_the_log(model.objects[key].as_dict()))
            for key in sorted(model.objects)
        ]
        return ClusterState(position, manifests, model.digest(), model.events_applied)


def render_state(state: ClusterState, output: str) -> str:
    """JSON ``{"position", "time", "items"}``, or a YAML stream with one document per object
    (headed by a comment saying where it is from)."""
    if output == "json":
        return render.to_json({**state.position.as_dict(), "items": state.items}) + "\n"
    head = f"# fleetlog replay: {state.position.label()}, digest {state.digest}\n"
    return head + (render.to_yaml(state.items) if state.items else "")


# -- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One object that differs between two positions."""

    change: str  # created, deleted, changed, recreated (deleted and created again: a new uid)
    kind: str
    namespace: str
    name: str
    fields: list[str] = field(default_factory=list)
    uid: str = ""
    from_version: int | None = None
    to_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "fields": self.fields,
            "from_version": self.from_version,
            "to_version": self.to_version,
        }


def diff_records(
    before: Mapping[Key, Mapping[str, Any]], after: Mapping[Key, Mapping[str, Any]]
) -> list[Change]:
    """What changed from ``before`` to ``after`` (records keyed by kind, namespace, name),
    sorted by kind, namespace, name. An object counts as changed when its manifest did (with
    the paths that did); events that left the manifest as it was are not a change of state."""
    out: list[Change] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None and new is not None:
            out.append(Change("created", *key, uid=new["uid"], to_version=new["version"]))
        elif new is None and old is not None:
            out.append(Change("deleted", *key, uid=old["uid"], from_version=old["version"]))
        elif old is not None and new is not None:
            # Field managers are bookkeeping of who wrote what, not a change of the object
            # (kubectl diff leaves them out too).
            paths = [
                path
                for path in changed_paths(old["manifest"], new["manifest"])
                if not path.startswith("metadata.managedFields")
            ]
            change = "recreated" if old["uid"] != new["uid"] else "changed"
            if paths or change == "recreated":
                versions = {"from_version": old["version"], "to_version": new["version"]}
                out.append(Change(change, *key, fields=paths, uid=new["uid"], **versions))
    return out


DIFF_HEADERS = ["CHANGE", "KIND", "NAMESPACE", "NAME", "FIELDS"]


def diff_table(changes: Sequence[Change]) -> str:
    rows = [
        [c.change, c.kind, c.namespace or "-", c.name, ",".join(c.fields) or "-"] for c in changes
    ]
    return render.table(DIFF_HEADERS, rows)


def diff_summary(start: Position, end: Position, changes: Sequence[Change]) -> str:
    counts = {kind: 0 for kind in ("created", "deleted", "changed", "recreated")}
    for change in changes:
        counts[change.change] += 1
    return f"{start.label()} → {end.label()}: " + ", ".join(f"{n} {k}" for k, n in counts.items())


def diff_document(start: Position, end: Position, changes: Sequence[Change]) -> dict[str, Any]:
    return {
        "from": start.as_dict(),
        "to": end.as_dict(),
        "changes": [c.as_dict() for c in changes],
    }


async def diff_between(store: Log, start: Position, end: Position) -> list[Change]:
    """Replay once: up to ``start``, keep its records, continue to ``end``, compare."""
    if end.seq < start.seq:
        raise ValidationFailed(
            f"--to is {end.label()}, before --from at {start.label()}: diff goes forward in time"
        )
    projection = await model_at(store, start.seq)
    with collector_paused():
        before = records(projection.model)
    await projection.catch_up(until_seq=end.seq)
    with collector_paused():
        return diff_records(before, records(projection.model))
