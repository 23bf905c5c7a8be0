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

Pure: keys and nonces are passed in (the handler draws them from ``os.urandom``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

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


def wrap_data_key(cluster_key: bytes, data_key: bytes) -> bytes:
    """The data key as stored outside the log (RFC 3394 AES key wrap under the cluster key)."""
    return aes_key_wrap(cluster_key, data_key)


def unwrap_data_key(cluster_key: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(cluster_key, wrapped)
    except InvalidUnwrap as error:
        raise SecretUnreadable(
            "a secret's data key does not unwrap with this cluster's key (the key file was "
            "replaced, or the stored key altered)"
        ) from error
