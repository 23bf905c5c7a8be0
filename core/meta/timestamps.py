"""Kubernetes' condition timestamps: RFC 3339 in whole seconds, UTC (``2026-11-26T03:12:00Z``).

Why this exists: conditions, heartbeat causes and controller statuses all write and read the
same stamp; one spelling keeps them comparable (and pure: the time is always passed in).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_NS_PER_SECOND = 1_000_000_000
_SURE_FROM = 10_000
_SURE_BELOW = _NS_PER_SECOND - 10_000
"""Within a second, the ns from which and below which the stamp is certainly that second's:
``ns / 1e9`` is a float (off by well under a microsecond at today's magnitudes) that
``datetime`` rounds to microseconds, so only an instant within 10 µs of a second's edge can
come out in the neighbouring second. Those are formatted one by one, never from the cache."""
_STAMPS: dict[int, str] = {}
_STAMPS_KEPT = 4096


def _format(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime(STAMP_FORMAT)


def format_stamp(ns: int) -> str:
    """``ns`` since the epoch as a whole-second stamp (truncated, as Kubernetes writes it).

    The stamps of recent seconds are remembered (a replay formats one or more per event, and
    events come many to a second): the same text as formatting each time, at a dict lookup.
    """
    if _SURE_FROM <= ns % _NS_PER_SECOND < _SURE_BELOW:
        second = ns // _NS_PER_SECOND
        stamp = _STAMPS.get(second)
        if stamp is None:
            if len(_STAMPS) >= _STAMPS_KEPT:
                _STAMPS.clear()
            stamp = _STAMPS[second] = _format(ns)
        return stamp
    return _format(ns)


def parse_stamp(text: Any) -> int | None:
    """A stamp (or any RFC 3339 time) in ns since the epoch; None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000_000)


def stamp_of(at: datetime) -> str:
    """The condition stamp of an instant (whole seconds; ``format_stamp`` for ns since the
    epoch). The pod and node status helpers take either the instant or its stamp."""
    return at.strftime(STAMP_FORMAT)
