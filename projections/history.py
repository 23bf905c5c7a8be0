"""The history index: every event's stored bytes, kept together per object, in SQLite.

Why this exists: JetStream stores events in arrival order, and an object that lives long has
its events spread over the whole log. Reading them means loading one 8 MB message block per
block they touch (~15 ms each, and nats-server drops the block again soon after), so the
history of a pod with 1,000 events across a 1,000,000-event log took 1.3 s however it was asked
for (by subject, or message by message by sequence; see docs/benchmarks.md). This read model
keeps the same stored bytes with an index on (subject, sequence), so one object's events are
found together in a few milliseconds.

It is derived data like every read model: the log stays the truth. The index remembers which
log it was built from (the stream's creation time) and how far (the last sequence folded, in
the same transaction as the rows), so it resumes after a restart, and it is rebuilt from
scratch when the stream it was built from is gone or was replaced. What it stores is exactly
what the log stores (subject, sequence, stored time, bytes), so a history read from it decodes,
checks and renders like one read from the log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

StoredRow = tuple[int, str, int, bytes]
"""(stream sequence, subject, stored time in ns, stored bytes) of one event."""

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    stored_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_subject ON events (subject, seq);
"""


class HistoryIndex:
    """The SQLite file of one history index (one writer: the process that follows the log)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # Not a database, or a damaged one (the index is written without syncing): it is
            # derived data, so it is thrown away and built again from the log.
            log.warning("history_index.unreadable", path=str(path), error=str(exc))
            self._remove_files()
            self._db = self._open()
        self.position = int(self._meta("position") or 0)

    def _open(self) -> sqlite3.Connection:
        # Only ever used from the event loop's thread; autocommit off, so each add() is one
        # transaction together with the position it reaches.
        # Every event's payload is in it: readable by its owner only (SQLite gives its WAL and
        # shared-memory files the database file's mode).
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, isolation_level="DEFERRED")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # No fsync: a crash of the machine may lose recent commits or, rarely, damage the
            # file; both mean reading the log again (the position is committed with its rows,
            # and a damaged file is rebuilt), never a wrong answer. Syncing would halve the rate.
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-65536")
            db.executescript(_SCHEMA)
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def rebuild(self) -> None:
        """Throw the file away and start an empty index (after the file turned out damaged)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._remove_files()
        self._db = self._open()
        self.position = 0

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def bind(self, stream_identity: str, stream_last_seq: int) -> None:
        """Make sure the index belongs to this log: a different stream (``stream_identity`` is
        its name and creation time), an index ahead of the log, or an old schema mean the rows
        are not this log's history, and the index starts again from nothing."""
        known = self._meta("stream")
        schema = self._meta("schema")
        stale = (
            (known is not None and known != stream_identity)
            or (schema is not None and schema != str(SCHEMA_VERSION))
            or self.position > stream_last_seq
        )
        if stale:
            log.warning(
                "history_index.rebuild",
                path=str(self.path),
                was=known,
                now=stream_identity,
                position=self.position,
                log_end=stream_last_seq,
            )
            self._db.execute("DELETE FROM events")
            self.position = 0
        self._set_meta("stream", stream_identity)
        self._set_meta("schema", str(SCHEMA_VERSION))
        self._set_meta("position", str(self.position))
        self._db.commit()

    def add(self, rows: Iterable[StoredRow], position: int) -> None:
        """Store ``rows`` (in stream order, all after the current position) and move the
        position to ``position`` (the last sequence they cover), in one transaction."""
        self._db.executemany(
            "INSERT OR IGNORE INTO events (seq, subject, stored_ns, data) VALUES (?, ?, ?, ?)",
            rows,
        )
        if position > self.position:
            self._set_meta("position", str(position))
        self._db.commit()
        self.position = max(self.position, position)

    def read(self, subject: str, *, after_seq: int = 0, limit: int = 1000) -> list[StoredRow]:
        """Up to ``limit`` events of one subject after ``after_seq``, oldest first."""
        return [
            (seq, subject, stored_ns, bytes(data))
            for seq, stored_ns, data in self._db.execute(
                "SELECT seq, stored_ns, data FROM events WHERE subject = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (subject, after_seq, limit),
            )
        ]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
