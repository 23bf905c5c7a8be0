"""Kubernetes' timestamps: written as RFC 3339 in whole seconds, UTC (``2026-11-26T03:12:00Z``),
read back from any RFC 3339 / ISO 8601 instant.

Why this exists: conditions, taints' ``timeAdded``, heartbeat causes, controller statuses and
the command line's ``--at`` all write and read instants; one spelling and one reader keep them
comparable (and pure: the time is always passed in).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Any, Final

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


_FRACTION: Final = re.compile(r"(?<=[T ]\d\d:\d\d:\d\d)\.(\d+)")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def parse_stamp(text: Any) -> int | None:
    """An RFC 3339 / ISO 8601 instant in ns since the epoch, exactly (all nine digits of a
    fraction are kept, so a stored time copied from the output names exactly that event);
    UTC when it states no offset; None when absent or unreadable."""
    if not text or not isinstance(text, str):
        return None
    return _parse_text(text)


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> int | None:
    # Remembered: the scheduler and the controllers read the same few stamps (pods created in
    # the same second) over and over.
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    fraction_ns = 0
    match = _FRACTION.search(text)
    if match:
        digits = match.group(1)
        if len(digits) > 9:
            return None
        fraction_ns = int(digits.ljust(9, "0"))
        text = text[: match.start()] + text[match.end() :]
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_SECOND + fraction_ns


def stamp_of(at: datetime) -> str:
    """The condition stamp of an instant (whole seconds; ``format_stamp`` for ns since the
    epoch). The pod and node status helpers take either the instant or its stamp.

    The stamps of recent seconds are remembered, keyed by the fields the format reads (so
    an instant in another zone is its own key): a pod's create stamps its conditions and
    ``strftime`` cost more than the rest of that step."""
    key = (at.year, at.month, at.day, at.hour, at.minute, at.second)
    stamp = _DATETIME_STAMPS.get(key)
    if stamp is None:
        if len(_DATETIME_STAMPS) >= _STAMPS_KEPT:
            _DATETIME_STAMPS.clear()
        stamp = _DATETIME_STAMPS[key] = at.strftime(STAMP_FORMAT)
    return stamp


_DATETIME_STAMPS: dict[tuple[int, int, int, int, int, int], str] = {}
