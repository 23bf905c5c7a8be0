"""Helpers the unit tests share."""

from __future__ import annotations

from core.meta.aggregate import RecordedEvent, Resource


def recorded(aggregate: Resource) -> list[RecordedEvent]:
    """The aggregate's pending events as the log would return them."""
    return [
        RecordedEvent(
            type=type(aggregate).event_type(e),
            version=e.originator_version,
            timestamp=e.timestamp,
            payload=type(aggregate).event_payload(e),
        )
        for e in aggregate.collect_events()
    ]
