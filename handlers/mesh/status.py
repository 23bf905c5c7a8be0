"""Each proxy's ACKs and NACKs, kept in the ``fleet_mesh_status`` bucket, and read back for
``fleetlog mesh status``.

Why this exists: what Envoy runs is not the log's truth (the log says what *should* run) but
operators need it: which proxy is behind, which refused a config and why. It is the handler's
report, so it goes to a non-authoritative key-value bucket (one key per proxy, the latest report
only), never to the log. Writes are coalesced: a proxy changed many times between two writes is
written once, as of the latest, so a burst of ACKs never queues a burst of puts.

Handler replicas share the proxies: each proxy's stream is served by whichever handler it
connected to, and its key is **owned by that handler**. A handler that lost a proxy's stream
reports it disconnected only if the key is still its own (or says disconnected): written with
the key's revision, so a proxy that moved to another replica is never marked disconnected by
the one it left, whichever write comes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from nats.aio.client import Client
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from core.mesh.push import ProxyStatus
from streams import jsapi
from streams.definitions import MESH_STATUS_BUCKET, mesh_status_bucket, open_key_value
from streams.subjects import encode_token

log = structlog.get_logger(__name__)


def status_key(proxy_id: str) -> str:
    """A KV key for a node id (``~`` is not a key character)."""
    return encode_token(proxy_id)


class StatusWriter:
    """Writes the latest :class:`ProxyStatus` of every proxy marked changed."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._dirty: dict[str, ProxyStatus] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self.writes = 0

    @classmethod
    async def open(cls, nc: Client) -> StatusWriter:
        return cls(await open_key_value(nc, mesh_status_bucket()))

    def changed(self, status: ProxyStatus) -> None:
        self._dirty[status.id] = status
        self._wake.set()

    async def run(self) -> None:
        """Write until :meth:`close` (then what is left is written once more)."""
        while not self._closed:
            await self._wake.wait()
            await self.flush()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)

    def close(self) -> None:
        """End :meth:`run`. Ended this way, not by cancelling: a cancel that lands in a put
        can be turned into an error by the NATS client and lost, leaving the loop waiting."""
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        self._wake.clear()
        dirty, self._dirty = self._dirty, {}
        for status in dirty.values():
            try:
                if status.connected:
                    await self._kv.put(status_key(status.id), _encoded(status))
                    self.writes += 1
                elif await self._release(status):
                    self.writes += 1
            except Exception as exc:  # the report is best effort; serving goes on
                log.warning("mesh.status_write_failed", proxy=status.id, error=str(exc))

    async def _release(self, status: ProxyStatus) -> bool:
        """Write a proxy disconnected unless another handler holds its stream now; with the
        revision read, so an owner's write in between wins (retried once it is read again)."""
        key = status_key(status.id)
        for _ in range(3):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                await self._kv.create(key, _encoded(status))
                return True
            stored = ProxyStatus.from_dict(json.loads(entry.value)) if entry.value else None
            if stored is not None and stored.connected and stored.handler != status.handler:
                return False  # the proxy is another replica's now
            try:
                await self._kv.update(key, _encoded(status), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                continue
        return False


def _encoded(status: ProxyStatus) -> bytes:
    return json.dumps(status.as_dict()).encode()


async def read_statuses(nc: Client) -> list[ProxyStatus]:
    """Every proxy's latest report (none when the bucket was never made), by name.

    The keys are the subjects the bucket's stream holds (its stream info), not nats-py's
    ``keys()``: that one watches the bucket and stops at its first "nothing pending" marker,
    which it can put before a report already on its way is counted, so under load it said
    "no keys" of a bucket that had them (``mesh status`` then said "No proxies found.")."""
    js = jsapi.jetstream(nc)
    try:
        kv = await js.key_value(MESH_STATUS_BUCKET)
    except BucketNotFoundError:
        return []
    prefix = f"$KV.{MESH_STATUS_BUCKET}."
    info = await js.stream_info(f"KV_{MESH_STATUS_BUCKET}", subjects_filter=f"{prefix}>")
    out: list[ProxyStatus] = []
    for subject in sorted(info.state.subjects or {}):
        try:
            entry = await kv.get(subject.removeprefix(prefix))
        except NotFoundError:  # deleted or purged: its marker is the subject's last message
            continue
        if entry.value:
            out.append(ProxyStatus.from_dict(json.loads(entry.value)))
    return sorted(out, key=lambda s: (s.name, s.id))
