"""Kubernetes' condition timestamps: RFC 3339 in whole seconds, UTC (``2026-11-26T03:12:00Z``).

Why this exists: conditions, heartbeat causes and controller statuses all write and read the
same stamp; one spelling keeps them comparable (and pure: the time is always passed in).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_stamp(ns: int) -> str:
    """``ns`` since the epoch as a whole-second stamp (truncated, as Kubernetes writes it)."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime(STAMP_FORMAT)


def parse_stamp(text: Any) -> int | None:
    """A stamp (or any RFC 3339 time) in ns since the epoch; None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000_000)


__all__ = ["STAMP_FORMAT", "format_stamp", "parse_stamp"]
