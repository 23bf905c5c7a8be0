"""Secret values in an immutable log: sealed with a key of their own, forgotten by destroying it.

Why this exists: the log keeps every event forever, and a Secret's value must not sit in it in
clear (issue 17). So the gateway seals each value before the event is appended: AES-256-GCM
with a data key of that secret's own, bound (as associated data) to the secret's namespace,
name, uid and key, so a sealed value copied into another secret does not open. The data key
is stored outside the log, wrapped (AES key wrap, RFC 3394) by the cluster's key, which lives
in a file only the control plane reads. Deleting the secret destroys its data key: the events
stay, and what they hold can no longer be opened by anyone (crypto-shredding). Readers of the
log (``replay``, ``history``, ``--at``, ``audit``) see that a value changed and how long it
is, never what it is.

Pure: keys and nonces are passed in (the handler draws them from ``os.urandom``). The
``cryptography`` package is imported by the functions that seal and open, so a reader that only
shows sealed values (``history``, ``replay``) does not load it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

PREFIX: Final = "fleetlog-sealed:v1:"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


class SecretUnreadable(Exception):
    """A sealed value that cannot be opened: its data key is gone (the secret was deleted),
    wrong, or the value was altered or moved."""


def _binding(*, namespace: str, name: str, uid: str, key: str) -> bytes:
    return f"{namespace}/{name}/{uid}/{key}".encode()


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(
    values: Mapping[str, bytes],
    *,
    data_key: bytes,
    namespace: str,
    name: str,
    uid: str,
    nonce: Callable[[], bytes],
) -> dict[str, str]:
    """Each value sealed under the secret's data key; the keys stay readable (Kubernetes shows
    a secret's keys to anyone who may read it, as ``describe`` does)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(data_key)
    sealed = {}
    for key, plaintext in values.items():
        iv = nonce()
        if len(iv) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
        binding = _binding(namespace=namespace, name=name, uid=uid, key=key)
        body = iv + cipher.encrypt(iv, plaintext, binding)
        sealed[key] = PREFIX + base64.b64encode(body).decode()
    return sealed


def open_sealed(
    sealed: Mapping[str, str], *, data_key: bytes, namespace: str, name: str, uid: str
) -> dict[str, bytes]:
    """The values in clear; :class:`SecretUnreadable` if any does not open."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(data_key)
    values = {}
    for key, text in sealed.items():
        if not is_sealed(text):
            raise SecretUnreadable(f"data[{key}] is not a sealed value")
        try:
            body = base64.b64decode(text[len(PREFIX) :], validate=True)
            iv, ciphertext = body[:NONCE_BYTES], body[NONCE_BYTES:]
            binding = _binding(namespace=namespace, name=name, uid=uid, key=key)
            values[key] = cipher.decrypt(iv, ciphertext, binding)
        except (InvalidTag, binascii.Error, ValueError) as error:
            raise SecretUnreadable(
                f"data[{key}] of secret {namespace}/{name} does not open with its key "
                "(altered, moved from another secret, or sealed under another key)"
            ) from error
    return values


def sealed_length(text: str) -> int:
    """How many bytes the value had in clear (what ``describe`` shows for a secret)."""
    body = base64.b64decode(text[len(PREFIX) :])
    return max(0, len(body) - NONCE_BYTES - 16)


def redacted(sealed: Mapping[str, str]) -> dict[str, str]:
    """What readers of the log are shown instead of the values."""
    return {
        key: f"<sealed, {sealed_length(text)} bytes>" if is_sealed(text) else "<not sealed>"
        for key, text in sealed.items()
    }


def keyed_fingerprint(cluster_key: bytes, request_hash: str) -> str:
    """A command's fingerprint as a Secret's events may carry it (in their write token): the
    plain hash of a request holding a value would let a reader of the log test guesses of the
    value against it, so it is keyed (HMAC-SHA256 under a key derived from the cluster key,
    the same in every gateway, so a retry reaching another gateway finds its events)."""
    import hashlib
    import hmac

    derived = hmac.new(cluster_key, b"fleetlog-request-fingerprint-v1", hashlib.sha256).digest()
    return hmac.new(derived, request_hash.encode(), hashlib.sha256).hexdigest()


def wrap_data_key(cluster_key: bytes, data_key: bytes) -> bytes:
    """The data key as stored outside the log (RFC 3394 AES key wrap under the cluster key)."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    return aes_key_wrap(cluster_key, data_key)


def unwrap_data_key(cluster_key: bytes, wrapped: bytes) -> bytes:
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

    try:
        return aes_key_unwrap(cluster_key, wrapped)
    except InvalidUnwrap as error:
        raise SecretUnreadable(
            "a secret's data key does not unwrap with this cluster's key (the key file was "
            "replaced, or the stored key altered)"
        ) from error


# -- a Secret's manifest -------------------------------------------------------------------------

LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
"""kubectl's client-side apply keeps the whole applied object in this annotation, values
included: in a Secret it is sealed like a value (under a key no data key can be named)."""
_LAST_APPLIED_KEY: Final = "metadata.annotations/" + LAST_APPLIED


def _plain_values(manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """The values to seal: ``data`` (base64 in the manifest) and kubectl's last-applied note."""
    values = {key: base64.b64decode(text) for key, text in (manifest.get("data") or {}).items()}
    note = ((manifest.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if note is not None:
        values[_LAST_APPLIED_KEY] = note.encode()
    return values


def _sealed_values(manifest: Mapping[str, Any]) -> dict[str, str]:
    sealed = dict(manifest.get("data") or {})
    note = ((manifest.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if note is not None:
        sealed[_LAST_APPLIED_KEY] = note
    return sealed


def _with_values(manifest: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    out = dict(manifest)
    data = {k: v for k, v in values.items() if k != _LAST_APPLIED_KEY}
    if data or "data" in manifest:
        out["data"] = data
    if _LAST_APPLIED_KEY in values:
        metadata = dict(out.get("metadata") or {})
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            LAST_APPLIED: values[_LAST_APPLIED_KEY],
        }
        out["metadata"] = metadata
    return out


def seal_manifest(
    manifest: Mapping[str, Any],
    *,
    stored: Mapping[str, Any] | None,
    data_key: bytes,
    namespace: str,
    name: str,
    uid: str,
    nonce: Callable[[], bytes],
) -> dict[str, Any]:
    """The Secret as the log keeps it: each value sealed. A value equal to what ``stored`` (the
    same secret's manifest in the log, same uid) holds keeps its sealed text, so re-applying a
    secret changes nothing and an immutable secret compares equal to itself."""
    previous = _sealed_values(stored) if stored is not None else {}
    sealed: dict[str, str] = {}
    fresh: dict[str, bytes] = {}
    for key, plaintext in _plain_values(manifest).items():
        kept = previous.get(key)
        if kept is not None and is_sealed(kept):
            try:
                same = (
                    open_sealed(
                        {key: kept}, data_key=data_key, namespace=namespace, name=name, uid=uid
                    )[key]
                    == plaintext
                )
            except SecretUnreadable:
                same = False
            if same:
                sealed[key] = kept
                continue
        fresh[key] = plaintext
    sealed.update(
        seal(fresh, data_key=data_key, namespace=namespace, name=name, uid=uid, nonce=nonce)
    )
    return _with_values(manifest, sealed)


def open_manifest(
    stored: Mapping[str, Any], *, data_key: bytes, namespace: str, name: str, uid: str
) -> dict[str, Any]:
    """The Secret as its reader is shown it: ``data`` base64 in clear, as kube answers a get."""
    opened = open_sealed(
        _sealed_values(stored), data_key=data_key, namespace=namespace, name=name, uid=uid
    )
    shown = {
        key: value.decode(errors="replace") if key == _LAST_APPLIED_KEY
        else base64.b64encode(value).decode()
        for key, value in opened.items()
    }  # fmt: skip
    return _with_values(stored, shown)


def redacted_manifest(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The Secret as readers of the log are shown it: each value ``<sealed, N bytes>``."""
    return _with_values(stored, redacted(_sealed_values(stored)))


def plain_sizes(stored: Mapping[str, Any]) -> dict[str, int]:
    """Each data key's size in clear (``describe secret``'s ``password: 6 bytes``)."""
    return {
        key: sealed_length(text) if is_sealed(text) else len(text)
        for key, text in (stored.get("data") or {}).items()
    }
