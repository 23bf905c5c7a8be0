"""The streams fleetlog uses, named once, created idempotently.

``FLEET`` is the log of record: file storage, no deletes, no purges, no rollups, atomic batches
on, direct gets on (reading one aggregate is a single batched direct get), and a duplicate
window in which a resent Msg-Id is stored once. Projection snapshots live in the object store
``fleet_snapshots``; the audit trail of commands in ``FLEET_AUDIT`` (``streams/audit.py``).
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError

from streams.subjects import ALL_EVENTS

FLEET_STREAM = "FLEET"
FLEET_SUBJECTS = [ALL_EVENTS]
SNAPSHOT_BUCKET = "fleet_snapshots"
DUPLICATE_WINDOW_NS = 120 * 1_000_000_000
MAX_EVENT_BYTES = 1024 * 1024


class StreamSetupError(RuntimeError):
    """The FLEET stream exists with settings fleetlog cannot work with."""


def fleet_stream_config(replicas: int = 1) -> dict[str, Any]:
    return {
        "name": FLEET_STREAM,
        "subjects": FLEET_SUBJECTS,
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msg_size": MAX_EVENT_BYTES,
        "duplicate_window": DUPLICATE_WINDOW_NS,
        "deny_delete": True,
        "deny_purge": True,
        "allow_rollup_hdrs": False,
        "allow_direct": True,
        "allow_atomic": True,
    }


async def ensure_streams(nc: Client, *, replicas: int = 1) -> None:
    """Create FLEET and the buckets if missing; check an existing FLEET is fit for use. Also
    the audit trail (``streams/audit.py``) and the age-limited logs and metrics streams
    (``streams/telemetry.py``)."""
    # Imported here: every reader imports this module for ``FLEET_STREAM``, and only the
    # processes that set streams up need the audit and telemetry modules.
    from streams.audit import ensure_audit_stream
    from streams.telemetry import ensure_telemetry_streams

    await _ensure_fleet(nc, replicas)
    await ensure_audit_stream(nc, replicas=replicas)
    await ensure_telemetry_streams(nc, replicas=replicas)
    js = nc.jetstream()
    try:
        await js.object_store(SNAPSHOT_BUCKET)
    except BucketNotFoundError:
        await js.create_object_store(
            SNAPSHOT_BUCKET,
            ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas),
        )


async def _ensure_fleet(nc: Client, replicas: int) -> None:
    info = await _api(nc, f"$JS.API.STREAM.INFO.{FLEET_STREAM}", b"")
    if "error" in info:
        if info["error"].get("err_code") != 10059:  # stream not found
            raise StreamSetupError(f"cannot read stream {FLEET_STREAM}: {info['error']}")
        config = fleet_stream_config(replicas)
        created = await _api(
            nc, f"$JS.API.STREAM.CREATE.{FLEET_STREAM}", json.dumps(config).encode()
        )
        if "error" in created:
            raise StreamSetupError(f"cannot create stream {FLEET_STREAM}: {created['error']}")
        return
    config = info["config"]
    required = ("deny_delete", "deny_purge", "allow_atomic", "allow_direct")
    missing = [key for key in required if not config.get(key)]
    if missing or config.get("allow_rollup_hdrs"):
        problems = ", ".join(missing) or "rollups on"
        raise StreamSetupError(
            f"stream {FLEET_STREAM} exists with unsuitable settings ({problems})"
        )
    if sorted(config.get("subjects", [])) != sorted(FLEET_SUBJECTS):
        # Subjects are the one setting fleetlog may widen in place (nothing is rewritten).
        updated = await _api(
            nc,
            f"$JS.API.STREAM.UPDATE.{FLEET_STREAM}",
            json.dumps({**config, "subjects": FLEET_SUBJECTS}).encode(),
        )
        if "error" in updated:
            raise StreamSetupError(f"cannot update stream {FLEET_STREAM}: {updated['error']}")


async def _api(nc: Client, subject: str, payload: bytes) -> dict[str, Any]:
    reply = await nc.request(subject, payload, timeout=10)
    result: dict[str, Any] = json.loads(reply.data)
    return result
