"""Which key seals a cluster's log, said by the log itself: the ``FLEET`` stream's metadata
names the first sealed sequence and the key's fingerprint.

Why this exists: a writer started without the seal key would append events every reader that
holds the key skips, silently. So ``fleetlog up`` marks the stream when it starts sealing, and
every role that appends (agent, scheduler, sim, gateway, another ``up``) checks the mark
before it writes: the right key, or a refusal that says where the key is. The metadata is the
stream's own (``$JS.API.STREAM.UPDATE``), which only the control plane may change.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import structlog

from streams import jsapi
from streams.eventstore import EventStore, StoreError
from streams.seal import (
    SealKey,
    SealKeyError,
    configured,
    create_seal_key,
    given_path,
    load_seal_key,
    use,
)

log = structlog.get_logger(__name__)

SINCE_METADATA = "fleetlog.sealed_since"
KEY_ID_METADATA = "fleetlog.seal_key_id"
KEY_POLL_S = 0.5


def key_id(key: SealKey) -> str:
    """A fingerprint of the key that tells keys apart without revealing them."""
    return hashlib.sha256(b"fleetlog-seal-key-id\0" + key.key).hexdigest()[:16]


async def stream_mark(store: EventStore) -> tuple[int, str] | None:
    """(first sealed sequence, key fingerprint) the stream is marked with, or None."""
    metadata = (await store.stream_info())["config"].get("metadata") or {}
    if SINCE_METADATA not in metadata:
        return None
    return int(metadata[SINCE_METADATA]), str(metadata.get(KEY_ID_METADATA, ""))


async def _mark(store: EventStore, key: SealKey) -> None:
    config = (await store.stream_info())["config"]
    metadata = {
        **(config.get("metadata") or {}),
        SINCE_METADATA: str(key.since),
        KEY_ID_METADATA: key_id(key),
    }
    answer = await jsapi.of(store.connection).update_stream({**config, "metadata": metadata})
    if "error" in answer:
        raise StoreError(f"cannot mark stream {store.stream} as sealed: {answer['error']}")


async def open_seal_key(store: EventStore, path: Path) -> SealKey:
    """For ``fleetlog up``: the key at ``path``, created (sealing from the stream's next
    sequence) when neither it nor a mark on the stream exists; refused when the stream is
    sealed with another key or with one this machine does not have."""
    mark = await stream_mark(store)
    key = _existing_key(path)
    if key is not None:
        if mark is None:
            await _mark(store, key)
        elif mark[1] != key_id(key):
            raise SealKeyError(
                f"the log is sealed with another key than {path}: give the key of the "
                "`fleetlog up` that created the cluster (its data directory's pki/seal.key)"
            )
        return key
    if mark is not None:
        raise SealKeyError(
            f"the log is sealed from sequence {mark[0]} on, with a key that is not in {path}: "
            "copy pki/seal.key from the data directory of the `fleetlog up` that created the "
            "cluster, or pass it with --seal-key"
        )
    key = create_seal_key(path, since=await store.stream_last_seq())
    await _mark(store, key)
    return key


async def writer_seal_key() -> SealKey | None:
    """The key a role that appends writes with: the process's configured key; when a key file
    was named that does not exist yet (the role started before `fleetlog up` made it, as
    roles may start before the server they wait for), it waits for the file and uses it."""
    key, named = configured(), given_path()
    if key is None and named is not None:
        waited = False
        while not named.exists():
            if not waited:
                log.info("seal.waiting_for_key", path=str(named), reason="fleetlog up makes it")
                waited = True
            await asyncio.sleep(KEY_POLL_S)
        key = load_seal_key(named)
        use(key, given=named)
    return key


def _existing_key(path: Path) -> SealKey | None:
    """The key at ``path``; None when there is no file (a few bytes read, on start)."""
    if not path.exists():
        return None
    return load_seal_key(path)


async def check_seal_key(store: EventStore, key: SealKey | None) -> None:
    """For a role that appends: refused unless it holds the key the stream is sealed with
    (any key, or none, for a stream that is not sealed)."""
    mark = await stream_mark(store)
    if mark is None:
        return
    if key is None:
        named = given_path()
        raise SealKeyError(
            "this cluster's log is sealed: a writer without its key would append events "
            "every reader skips. Give the key with --seal-key (or FLEETLOG_SEAL_KEY): the "
            "file pki/seal.key in the data directory of `fleetlog up`"
            + (f" ({named} does not exist)" if named is not None else "")
        )
    if key_id(key) != mark[1]:
        raise SealKeyError(
            "the seal key given is not the one this cluster's log is sealed with: give "
            "pki/seal.key from the data directory of the `fleetlog up` that created it"
        )
