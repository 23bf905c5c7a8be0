"""When the log backs a snapshot: the stream it was folded from, and the positions it holds."""

from __future__ import annotations

from typing import Any

from projections.runtime import SnapshotOrigin

CREATED = "2026-12-05T10:00:00.123456789Z"


def info(first: int, last: int, created: str = CREATED) -> dict[str, Any]:
    return {"created": created, "state": {"first_seq": first, "last_seq": last}}


def test_a_snapshot_of_this_stream_within_its_log_is_backed() -> None:
    taken = SnapshotOrigin(stream="FLEET", created=CREATED, first_seq=1, position=50)
    assert taken.unbacked_by(info(1, 50)) is None
    assert taken.unbacked_by(info(1, 90)) is None
    assert SnapshotOrigin.read(taken.describe(), 0) == taken


def test_another_incarnation_a_shorter_log_or_removed_events_are_not() -> None:
    taken = SnapshotOrigin(stream="FLEET", created=CREATED, first_seq=1, position=50)
    assert "created again" in (taken.unbacked_by(info(1, 90, "2026-12-06T00:00:00Z")) or "")
    assert taken.unbacked_by(info(1, 49)) == (
        "the log ends at sequence 49, before the snapshot's position 50"
    )
    assert "events 51..59 after the snapshot are gone" in (taken.unbacked_by(info(60, 90)) or "")
    assert "events 1..40 the snapshot folded" in (taken.unbacked_by(info(41, 90)) or "")


def test_a_snapshot_from_before_origins_is_checked_by_its_position_alone() -> None:
    old = SnapshotOrigin.read(None, 50)
    assert old == SnapshotOrigin(position=50)
    assert old.unbacked_by(info(1, 50, "anything")) is None
    assert old.unbacked_by(info(41, 90)) is None  # nothing says what it folded
    assert old.unbacked_by(info(1, 10)) is not None
    assert SnapshotOrigin.read("not json", 7) == SnapshotOrigin(position=7)
