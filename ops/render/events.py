"""Events as ``history``, ``events`` and ``why`` print them: rows, JSON lines, a follower
that keeps its columns aligned, and kubectl's ``resource/name`` spelling of an object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.api.summaries import summarize
from ops.cliargs import API_GROUPS
from ops.render.text import iso

if TYPE_CHECKING:
    from streams.envelope import StoredEvent


# -- events ------------------------------------------------------------------------------------


def event_dict(event: StoredEvent) -> dict[str, Any]:
    e = event.envelope
    return {
        "seq": event.seq,
        "time": iso(e.timestamp_ns),
        "stored": iso(event.stored_ns) if event.stored_ns else None,
        "type": e.type,
        "schema_version": e.schema_version,
        "kind": e.kind,
        "namespace": e.namespace,
        "name": e.name,
        "version": e.version,
        "actor": e.actor,
        "event_id": e.event_id,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "summary": summarize(e.type, e.payload),
        "payload": as_in_the_log(e.kind, e.payload),
    }


def as_in_the_log(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An event's payload as readers of the log are shown it: a Secret's values as
    ``<sealed, N bytes>``, not their sealed text."""
    if kind != "Secret" or not isinstance(payload.get("manifest"), dict):
        return payload
    from core.access.secretdata import redacted_manifest

    return {**payload, "manifest": redacted_manifest(payload["manifest"])}


def resource_name(kind: str, name: str) -> str:
    """kubectl's ``-o name``: ``pod/web-x2x5k``, ``deployment.apps/web``,
    ``priorityclass.scheduling.k8s.io/high``."""
    group = API_GROUPS.get(kind)
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


def object_name(kind: str, namespace: str, name: str) -> str:
    return f"{kind.lower()}/{namespace + '/' if namespace else ''}{name}"


def event_row(event: StoredEvent) -> list[str]:
    e = event.envelope
    return [
        str(event.seq),
        iso(e.timestamp_ns),
        e.type,
        object_name(e.kind, e.namespace, e.name),
        e.actor,
        summarize(e.type, e.payload),
    ]


EVENT_HEADERS = ["SEQ", "TIME", "TYPE", "OBJECT", "ACTOR", "SUMMARY"]


class RowPrinter:
    """A table printed a row at a time (``events --follow``), where :func:`table` cannot
    measure the rows first: every column but the last starts at a fixed width, wide enough
    for the usual cell, and only widens (for the rows after) when a longer cell comes, so the
    columns of consecutive rows line up."""

    def __init__(self, headers: Sequence[str], widths: Sequence[int]) -> None:
        self._headers = list(headers)
        self._widths = [max(w, len(h)) for w, h in zip(widths, headers, strict=False)]

    def line(self, cells: Sequence[str]) -> str:
        for column, cell in enumerate(cells[:-1]):
            self._widths[column] = max(self._widths[column], len(cell))
        padded = [cell.ljust(width) for cell, width in zip(cells, self._widths, strict=False)]
        return "  ".join([*padded, *cells[len(padded) :]]).rstrip()

    def header(self) -> str:
        return self.line(self._headers)


def event_row_printer() -> RowPrinter:
    """``events --follow``'s columns: a sequence, an instant, the longest event type of the
    catalog, an object and an actor of the usual lengths, then the summary."""
    from core.api.events import CATALOG

    type_width = max(len(name) for name in CATALOG)
    return RowPrinter(EVENT_HEADERS, [7, len("2026-01-01T00:00:00Z"), type_width, 40, 32])


def history_rows(events: Sequence[StoredEvent]) -> list[list[str]]:
    return [
        [
            str(ev.seq),
            iso(ev.envelope.timestamp_ns),
            str(ev.envelope.version),
            ev.envelope.type,
            ev.envelope.actor,
            summarize(ev.envelope.type, ev.envelope.payload),
        ]
        for ev in events
    ]


HISTORY_HEADERS = ["SEQ", "TIME", "VERSION", "TYPE", "ACTOR", "SUMMARY"]
