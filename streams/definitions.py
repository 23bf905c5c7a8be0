"""Every stream, key-value bucket and object store fleetlog uses: named once, set up here, by
one policy.

What there is (:func:`ensure_streams` sets up all of them, at the replica count it is given —
three on a cluster of NATS servers, ``fleetlog up --replicas 3``; a bucket is also set up by
whoever opens it first, :mod:`streams.leases`, at one replica unless it exists):

========================  =====================================================================
``FLEET``                 the log of record: file storage, no deletes, no purges, no rollups,
                          atomic batches on, direct gets on (reading one aggregate is a single
                          batched direct get), a duplicate window in which a resent Msg-Id is
                          stored once
``FLEET_AUDIT``           the audit trail of commands (:mod:`streams.audit`), kept as long as
                          the log: file storage, no deletes, no purges
``FLEET_LOGS``            container output (:mod:`streams.telemetry`): file, 24 h, capped per
                          container; *optional*
``FLEET_METRICS``         usage samples and workload-published custom and external metric
                          samples (:mod:`streams.telemetry`): memory, 1 h; *optional*
``fleet_snapshots``       object store of projection snapshots (file storage)
``fleet_node_leases``     KV: the latest heartbeat of every node (file, one value per key)
``fleet_leaders``         KV: leader leases of singleton roles (file, 15 s TTL)
``fleet_members``         KV: live replicas of a role (memory, TTL three member periods)
``fleet_mesh_status``     KV: each Envoy proxy's last ACK/NACK per xDS type (file, one value per
                          key; not authoritative: the mesh-push handler's report)
========================  =====================================================================

The policy, for every one of them (:func:`ensure`, :func:`plan`):

1. **Missing**: created with the settings above (buckets through nats-py, which knows their
   conventions). Another process creating it at the same moment is fine: the existing one is
   then checked like any other.
2. **A guarantee missing**: ``deny_delete`` or ``deny_purge`` off, or rollups on, where the spec
   wants them; or, for a stream whose data must survive (``FLEET``, ``FLEET_AUDIT``,
   ``fleet_snapshots``), another storage type or retention. :class:`StreamSetupError` names every
   such setting and what to do; *nothing is changed*. fleetlog never switches a guarantee on in
   place: it is one-way (JetStream never lets deny-delete or deny-purge be lifted again), and a
   stream that lacked it may already have lost messages, so whether it may serve is the
   operator's call. Storage and retention cannot change in place at all.
3. **Storage or retention differs on a stream whose data may be lost** (telemetry, buckets):
   kept as it is, with a warning: the stream works, it only stores elsewhere.
4. **Replicas** are never lowered: a process setting up with one replica joins a cluster's R3
   streams as they are. Fewer than wanted are raised.
5. **Everything else that differs** (subjects, limits, duplicate window, direct gets and
   atomic batches on): one ``STREAM.UPDATE`` with fleetlog's values over the current config;
   an update the server refuses is a :class:`StreamSetupError`.
6. **Optional streams** (telemetry): a :class:`StreamSetupError` is logged, not raised: the
   control plane works without logs and usage.

Every request goes through :mod:`streams.jsapi`, so it addresses the connection's JetStream
domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import APIError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from streams import jsapi
from streams.subjects import ALL_EVENTS

log = structlog.get_logger(__name__)

NS = 1_000_000_000

FLEET_STREAM = "FLEET"
FLEET_SUBJECTS = [ALL_EVENTS]
DUPLICATE_WINDOW_NS = 150 * NS
"""How long a resent Msg-Id is stored once: as long as a signed command's nonce must be
remembered (``NONCE_TTL_SECONDS``), since the log is what recognises a replayed command that
appended (``handlers.gateway.nonces``)."""
MAX_EVENT_BYTES = 1024 * 1024

AUDIT_STREAM = "FLEET_AUDIT"
AUDIT_PREFIX = "fleet.audit"
MAX_AUDIT_RECORD_BYTES = 64 * 1024

LOGS_STREAM = "FLEET_LOGS"
LOGS_PREFIX = "fleet.logs"
LOGS_MAX_AGE_S = 24 * 3600
# 4,096 chunks of at most 32 KiB: at most 128 MiB per container, usually far less.
LOGS_MAX_MSGS_PER_SUBJECT = 4096
LOGS_MAX_BYTES = 2 * 1024**3
# A resend after an agent restart is stored once if it comes within this window.
LOGS_DUPLICATE_WINDOW_S = 600
MAX_CHUNK_BYTES = 32 * 1024

METRICS_STREAM = "FLEET_METRICS"
METRICS_PREFIX = "fleet.metrics"
METRICS_MAX_AGE_S = 3600
METRICS_MAX_MSGS_PER_SUBJECT = 360  # an hour of samples every 10 s
METRICS_MAX_BYTES = 256 * 1024**2
CUSTOM_METRICS_PREFIX = f"{METRICS_PREFIX}.custom"
"""Workload-published Pods and Object metrics: ``fleet.metrics.custom.<ns>.pods.<pod>.<metric>``
and ``fleet.metrics.custom.<ns>.objects.<kind>.<name>.<metric>`` (:mod:`streams.telemetry`)."""
EXTERNAL_METRICS_PREFIX = f"{METRICS_PREFIX}.external"
"""External metrics, named per namespace: ``fleet.metrics.external.<ns>.<metric>``."""
CUSTOM_SAMPLE_MAX_BYTES = 4096
"""A published metric sample larger than this is refused by its readers (a sample is a name,
a value, a few labels and a time: a bigger one is a mistake or an attack on the model)."""

SNAPSHOT_BUCKET = "fleet_snapshots"
NODE_LEASE_BUCKET = "fleet_node_leases"
LEADER_BUCKET = "fleet_leaders"
LEADER_TTL_SECONDS = 15.0
MEMBERS_BUCKET = "fleet_members"
MEMBER_TTL_SECONDS = 10.0
SECRET_KEYS_BUCKET = "fleet_secret_keys"
NONCE_BUCKET = "fleet_nonces"
NONCE_TTL_SECONDS = 150.0
"""``core.access.signing.NONCE_TTL_NS``: twice the signatures' skew window and a margin
(kept a literal so this module loads no cryptography)."""
MESH_STATUS_BUCKET = "fleet_mesh_status"

STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058

GUARANTEES: Mapping[str, bool] = {
    "deny_delete": True,
    "deny_purge": True,
    "allow_rollup_hdrs": False,
}
"""Settings that protect what is stored, with the value that protects it."""
FIXED = ("storage", "retention")
"""Settings JetStream cannot change on an existing stream."""


class StreamSetupError(RuntimeError):
    """A stream fleetlog relies on cannot be created, or exists with settings fleetlog cannot
    work with (the message says which, and what to do)."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream as fleetlog wants it (see the module docstring for how it is applied)."""

    name: str
    """The JetStream stream (``KV_<bucket>`` / ``OBJ_<bucket>`` for a bucket)."""
    config: dict[str, Any]
    """The settings fleetlog sets (a plain stream is created with exactly these)."""
    durable: bool = True
    """Its data must survive: another storage type or retention is refused, not kept."""
    optional: bool = False
    """A refusal is logged and setup goes on."""
    key_value: KeyValueConfig | None = field(default=None, compare=False)
    object_store: ObjectStoreConfig | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`ensure` does to an existing stream."""

    update: dict[str, Any]
    """Settings to set by one update (empty: nothing)."""
    refused: list[str]
    """Why the stream cannot be used as it is (non-empty: refuse, change nothing)."""
    kept: list[str]
    """Settings left as they are, to be reported."""


# -- the specs -------------------------------------------------------------------------------


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


def audit_stream_config(replicas: int = 1) -> dict[str, Any]:
    return {
        "name": AUDIT_STREAM,
        "subjects": [f"{AUDIT_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "max_age": 0,
        "max_msg_size": MAX_AUDIT_RECORD_BYTES,
        "deny_delete": True,
        "deny_purge": True,
        "allow_direct": True,
    }


def logs_stream_config(replicas: int = 1) -> dict[str, Any]:
    return {
        "name": LOGS_STREAM,
        "subjects": [f"{LOGS_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "max_age": LOGS_MAX_AGE_S * NS,
        "max_msgs_per_subject": LOGS_MAX_MSGS_PER_SUBJECT,
        "max_bytes": LOGS_MAX_BYTES,
        "max_msg_size": MAX_CHUNK_BYTES + 4096,
        "duplicate_window": LOGS_DUPLICATE_WINDOW_S * NS,
        "allow_direct": True,
    }


def metrics_stream_config(replicas: int = 1) -> dict[str, Any]:
    return {
        "name": METRICS_STREAM,
        "subjects": [f"{METRICS_PREFIX}.>"],
        "retention": "limits",
        "storage": "memory",
        "num_replicas": replicas,
        "discard": "old",
        "max_age": METRICS_MAX_AGE_S * NS,
        "max_msgs_per_subject": METRICS_MAX_MSGS_PER_SUBJECT,
        "max_bytes": METRICS_MAX_BYTES,
        "max_msg_size": 1024 * 1024,
        "allow_direct": True,
    }


def fleet_stream(replicas: int = 1) -> StreamSpec:
    return StreamSpec(FLEET_STREAM, fleet_stream_config(replicas))


def audit_stream(replicas: int = 1) -> StreamSpec:
    return StreamSpec(AUDIT_STREAM, audit_stream_config(replicas))


def logs_stream(replicas: int = 1) -> StreamSpec:
    return StreamSpec(LOGS_STREAM, logs_stream_config(replicas), durable=False, optional=True)


def metrics_stream(replicas: int = 1) -> StreamSpec:
    return StreamSpec(METRICS_STREAM, metrics_stream_config(replicas), durable=False, optional=True)


def snapshot_store(replicas: int = 1) -> StreamSpec:
    return StreamSpec(
        f"OBJ_{SNAPSHOT_BUCKET}",
        {"storage": "file", "num_replicas": replicas},
        object_store=ObjectStoreConfig(
            bucket=SNAPSHOT_BUCKET, storage=StorageType.FILE, replicas=replicas
        ),
    )


def _bucket(
    bucket: str, *, storage: StorageType, ttl: float | None = None, replicas: int = 1
) -> StreamSpec:
    """A key-value bucket of one value per key; the settings checked are those nats-py derives
    from these (its duplicate window is at most the TTL)."""
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, storage=storage, replicas=replicas)
    duplicate_window_ns = int(min(120.0, ttl) * NS) if ttl else 120 * NS
    return StreamSpec(
        f"KV_{bucket}",
        {
            "storage": storage.value,
            "num_replicas": replicas,
            "max_msgs_per_subject": 1,
            "max_age": int(ttl * NS) if ttl else 0,
            "duplicate_window": duplicate_window_ns,
        },
        durable=False,
        key_value=config,
    )


def node_lease_bucket(replicas: int = 1) -> StreamSpec:
    return _bucket(NODE_LEASE_BUCKET, storage=StorageType.FILE, replicas=replicas)


def leader_bucket(replicas: int = 1) -> StreamSpec:
    return _bucket(
        LEADER_BUCKET, storage=StorageType.FILE, ttl=LEADER_TTL_SECONDS, replicas=replicas
    )


def members_bucket(member_ttl: float = MEMBER_TTL_SECONDS, replicas: int = 1) -> StreamSpec:
    # A member counts as gone after one TTL (the value carries its renewal time); its key is
    # kept a little longer so a late reader still sees why.
    return _bucket(
        MEMBERS_BUCKET, storage=StorageType.MEMORY, ttl=3 * member_ttl, replicas=replicas
    )


def nonce_bucket(replicas: int = 1) -> StreamSpec:
    """The signed commands' nonces the gateways have accepted, each claimed once by an
    atomic create (``handlers.gateway.nonces``) and forgotten after the TTL."""
    return _bucket(NONCE_BUCKET, storage=StorageType.FILE, ttl=NONCE_TTL_SECONDS, replicas=replicas)


def mesh_status_bucket(replicas: int = 1) -> StreamSpec:
    """What each proxy runs and refused, per xDS type: the latest report per proxy is all
    ``fleetlog mesh status`` reads (a bucket, not a stream: no history to keep), on file so
    the report outlives a restart of ``up``."""
    return _bucket(MESH_STATUS_BUCKET, storage=StorageType.FILE, replicas=replicas)


def secret_keys_bucket(replicas: int = 1) -> StreamSpec:
    """Each Secret's data key, wrapped by the cluster key, under the secret's uid: a bucket of
    its own, never the event stream, so deleting a secret can destroy its key. Created as a
    plain stream in the key-value layout (nats-py would deny deletes): a key is destroyed by
    deleting its message, which JetStream overwrites on disk (erase), not only forgets."""
    return StreamSpec(
        f"KV_{SECRET_KEYS_BUCKET}",
        {
            "name": f"KV_{SECRET_KEYS_BUCKET}",
            "subjects": [f"$KV.{SECRET_KEYS_BUCKET}.>"],
            "retention": "limits",
            "storage": "file",
            "num_replicas": replicas,
            "max_msgs_per_subject": 1,
            "allow_rollup_hdrs": True,
            "deny_delete": False,
            "allow_direct": True,
            "discard": "new",
        },
    )


# -- the policy ------------------------------------------------------------------------------


async def ensure_streams(nc: Client, *, replicas: int = 1) -> None:
    """Set up the log, the audit trail, the telemetry streams, the snapshot store and the
    buckets, each at ``replicas`` (never lowering a stream that has more)."""
    for spec in (
        fleet_stream(replicas),
        audit_stream(replicas),
        logs_stream(replicas),
        metrics_stream(replicas),
        snapshot_store(replicas),
        node_lease_bucket(replicas),
        leader_bucket(replicas),
        members_bucket(replicas=replicas),
        secret_keys_bucket(replicas),
        nonce_bucket(replicas),
        mesh_status_bucket(replicas),
    ):
        await ensure(nc, spec)


async def open_key_value(nc: Client, spec: StreamSpec) -> KeyValue:
    """The bucket of ``spec``, set up by the policy first."""
    assert spec.key_value is not None, f"{spec.name} is not a key-value bucket"
    await ensure(nc, spec)
    return await jsapi.jetstream(nc).key_value(spec.key_value.bucket)


async def open_snapshots(nc: Client) -> ObjectStore:
    """The snapshot store (set up by :func:`ensure_streams`)."""
    return await jsapi.jetstream(nc).object_store(SNAPSHOT_BUCKET)


async def ensure(nc: Client, spec: StreamSpec) -> None:
    """Create ``spec`` when missing; otherwise apply the policy (module docstring)."""
    try:
        await _ensure(jsapi.of(nc), spec)
    except StreamSetupError as exc:
        if not spec.optional:
            raise
        log.error("streams.optional_stream_unavailable", stream=spec.name, error=str(exc))


async def _ensure(api: jsapi.JetStreamApi, spec: StreamSpec) -> None:
    info = await _info(api, spec.name)
    if "error" in info:
        if info["error"].get("err_code") != STREAM_NOT_FOUND:
            raise StreamSetupError(f"cannot read stream {spec.name}: {_describe(info['error'])}")
        error = await _create(api, spec)
        if error is None:
            return
        if error.get("err_code") != STREAM_NAME_IN_USE:
            raise StreamSetupError(f"cannot create stream {spec.name}: {_describe(error)}")
        info = await _info(api, spec.name)  # created by another process meanwhile
        if "error" in info:
            raise StreamSetupError(f"cannot read stream {spec.name}: {_describe(info['error'])}")
    current: dict[str, Any] = info["config"]
    decided = plan(spec, current)
    if decided.refused:
        raise StreamSetupError(_refusal(spec.name, decided.refused))
    for note in decided.kept:
        log.warning("streams.setting_kept", stream=spec.name, setting=note)
    if decided.update:
        answer = await api.update_stream({**current, **decided.update})
        if "error" in answer:
            raise StreamSetupError(
                f"cannot update stream {spec.name} ({', '.join(sorted(decided.update))}): "
                f"{_describe(answer['error'])}"
            )
        log.info("streams.updated", stream=spec.name, settings=sorted(decided.update))


def plan(spec: StreamSpec, current: Mapping[str, Any]) -> Plan:
    """What the policy does to a stream stored with ``current`` (its config as JetStream
    reports it: settings at their zero value may be left out)."""
    update: dict[str, Any] = {}
    refused: list[str] = []
    kept: list[str] = []
    for key, wanted in spec.config.items():
        have = current.get(key, _zero(wanted))
        if _same(have, wanted):
            continue
        if key in GUARANTEES and wanted == GUARANTEES[key]:
            refused.append(f"{key} is {_on_off(have)} (fleetlog needs it {_on_off(wanted)})")
        elif key in FIXED:
            if spec.durable:
                refused.append(f"{key} is {have} (fleetlog needs {wanted})")
            else:
                kept.append(f"{key} is {have} (fleetlog would use {wanted})")
        elif key == "num_replicas" and have > wanted:
            continue
        else:
            update[key] = wanted
    return Plan(update, refused, kept)


def _refusal(name: str, reasons: list[str]) -> str:
    return (
        f"stream {name} exists with settings fleetlog cannot accept: {'; '.join(reasons)}. "
        "fleetlog does not change these in place: JetStream cannot change a stream's storage "
        "or retention, and a guarantee (deny_delete, deny_purge, no rollups) is yours to give, "
        "since it cannot be taken back and the stream may have lost messages without it. "
        f"To use this server, fix {name} yourself (`nats stream edit {name}` for a guarantee; "
        "for storage or retention, back the stream up and restore it with the settings "
        "above), or remove it if its data may go. Nothing was changed."
    )


async def _info(api: jsapi.JetStreamApi, name: str) -> dict[str, Any]:
    try:
        return await api.stream_info(name)
    except jsapi.NoJetStream as exc:
        raise StreamSetupError(str(exc)) from None


async def _create(api: jsapi.JetStreamApi, spec: StreamSpec) -> dict[str, Any] | None:
    """Create ``spec``; None when done, else JetStream's error."""
    if spec.key_value is None and spec.object_store is None:
        answer = await api.create_stream(spec.config)
        error: dict[str, Any] | None = answer.get("error")
        return error
    js = api.jetstream()
    try:
        if spec.key_value is not None:
            await js.create_key_value(spec.key_value)
        elif spec.object_store is not None:
            await js.create_object_store(spec.object_store.bucket, spec.object_store)
    except APIError as exc:
        return {"err_code": exc.err_code, "code": exc.code, "description": exc.description}
    return None


def _zero(wanted: Any) -> Any:
    return type(wanted)() if isinstance(wanted, bool | int | str | list) else None


def _same(have: Any, wanted: Any) -> bool:
    if isinstance(wanted, list) and isinstance(have, list):
        return sorted(have) == sorted(wanted)
    return bool(have == wanted)


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _describe(error: Mapping[str, Any]) -> str:
    description = error.get("description") or error
    return f"{description} [{error.get('err_code')}]"
