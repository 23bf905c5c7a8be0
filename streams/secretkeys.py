"""Where Secrets' data keys live: wrapped by the cluster key, in a bucket that is not the log.

Why this exists: the log never forgets, so a Secret's values are sealed before they reach it
(``core.access.secretdata``) under a data key of that secret's own. The data key must outlive
nothing but the secret: it is kept (wrapped, RFC 3394, by the cluster key) in the
``fleet_secret_keys`` bucket under the secret's uid, and deleting the secret deletes that
message with JetStream's erase (its bytes overwritten on disk), after which the sealed values
the log still holds open for nobody (crypto-shredding). The cluster key itself never touches
NATS: it is a file of the control plane's (``<data dir>/pki/cluster.key``, 0600 in a 0700
directory) that ``fleetlog up`` creates once; a process given no key cannot read or write
secrets at all.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from core.access.secretdata import (
    KEY_BYTES,
    keyed_fingerprint,
    open_manifest,
    redacted_manifest,
    unwrap_data_key,
    wrap_data_key,
)
from streams import jsapi
from streams.definitions import SECRET_KEYS_BUCKET, ensure, secret_keys_bucket

CLUSTER_KEY_FILE = "cluster.key"


def load_cluster_key(path: Path, *, create: bool = True) -> bytes:
    """The cluster key kept at ``path`` (made, 32 random bytes readable by the owner only,
    when missing and ``create``)."""
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no cluster key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        # O_EXCL: two processes starting together keep the first key written.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(KEY_BYTES))
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} is not a cluster key ({KEY_BYTES} bytes expected)")
    return key


class SecretKeys:
    """Data keys by secret uid: made on a secret's first write, destroyed with the secret."""

    def __init__(self, nc: Client, cluster_key: bytes) -> None:
        self._nc = nc
        self._cluster_key = cluster_key
        self._kv: KeyValue | None = None

    def fingerprint(self, request_hash: str) -> str:
        """A Secret command's fingerprint, keyed (``secretdata.keyed_fingerprint``)."""
        return keyed_fingerprint(self._cluster_key, request_hash)

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            await ensure(self._nc, secret_keys_bucket())
            self._kv = await jsapi.jetstream(self._nc).key_value(SECRET_KEYS_BUCKET)
        return self._kv

    async def find(self, uid: str) -> bytes | None:
        """The data key of the secret ``uid``; None once it was destroyed (or never made)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(uid)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return unwrap_data_key(self._cluster_key, entry.value)

    async def data_key(self, uid: str) -> bytes:
        """The data key of the secret ``uid``, made now if it has none. Two gateways making
        one at once: the second's ``create`` fails and it takes the first's."""
        found = await self.find(uid)
        if found is not None:
            return found
        kv = await self._bucket()
        made = os.urandom(KEY_BYTES)
        try:
            await kv.create(uid, wrap_data_key(self._cluster_key, made))
        except Exception:
            found = await self.find(uid)
            if found is None:
                raise
            return found
        return made

    async def destroy(self, uid: str) -> None:
        """Erase the data key of the secret ``uid`` (nothing to do when it has none)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(uid)
        except KeyNotFoundError:
            return
        if entry.revision is not None:
            await jsapi.jetstream(self._nc).delete_msg(f"KV_{SECRET_KEYS_BUCKET}", entry.revision)

    async def opened(
        self, manifest: dict[str, Any], *, namespace: str, name: str, uid: str
    ) -> dict[str, Any]:
        """A stored Secret as its reader is shown it (``data`` base64 in clear, as a kube
        get); with its key gone, each value ``<sealed, N bytes>``."""
        data_key = await self.find(uid)
        if data_key is None:
            return redacted_manifest(manifest)
        return open_manifest(manifest, data_key=data_key, namespace=namespace, name=name, uid=uid)

    async def values(
        self, manifest: dict[str, Any], *, namespace: str, name: str, uid: str
    ) -> dict[str, bytes] | None:
        """A stored Secret's ``data`` values in clear, as bytes, for a component that uses
        them (a pod's volume, a gateway's certificate); None when its key is gone (its values
        open for nobody, as if it were deleted)."""
        data_key = await self.find(uid)
        if data_key is None:
            return None
        opened = open_manifest(manifest, data_key=data_key, namespace=namespace, name=name, uid=uid)
        return {k: base64.b64decode(v) for k, v in (opened.get("data") or {}).items()}
