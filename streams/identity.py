"""Who a NATS connection is: an nkey (ed25519) seed, its public key, and where its replies go.

Why this exists: the NATS server is fleetlog's first wall (docs/architecture.md, "The front
door"): every connection to the embedded server authenticates by signing the server's nonce
with an nkey, and the server's per-user permissions keep each identity to its subjects. This
module is the one place that holds such a key on the client side: :func:`streams.connection.
connect` connects with it, the bulk log reader (:mod:`streams.logreader`) signs its own
connection's nonce with it, and ``fleetlog up`` makes and keeps the control plane's keys with
:func:`ensure_seed_file`.

Replies of a connection with credentials come to an inbox prefix of its own,
``_INBOX_<public key>``, and the server lets that identity subscribe under it and nowhere else
(:mod:`streams.natsauth`), so nobody reads another identity's replies. Seed files hold the seed
alone (as nats' ``nk`` tool writes them), readable by their owner only, in a directory only the
owner may enter.
"""

from __future__ import annotations

import base64
import os
import secrets
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nkeys
from nats.aio.client import Client

INBOX_PREFIX = "_INBOX_"
"""Followed by the identity's public key: the prefix of every reply subject it listens on."""


class CredentialsError(ValueError):
    """A seed or seed file that cannot be used (the message says which and what to do)."""


@dataclass(frozen=True)
class Credentials:
    """One identity's nkey seed (``SU…``), and where it came from (for error messages)."""

    seed: str
    source: str = ""
    """What the seed was read from: a file, a context of the fleetlog config."""

    def __post_init__(self) -> None:
        try:
            nkeys.from_seed(bytearray(self.seed.encode()))
        except (nkeys.NkeysError, ValueError, TypeError, IndexError) as exc:
            where = f" in {self.source}" if self.source else ""
            raise CredentialsError(
                f"the nkey seed{where} is not valid ({exc.__class__.__name__}): "
                "it must be a user seed (SU…) as `fleetlog user create` writes it"
            ) from None
        if not self.seed.startswith("SU"):
            raise CredentialsError(
                f"the nkey seed{f' in {self.source}' if self.source else ''} is not a user "
                "seed (it must start with SU)"
            )

    @cached_property
    def public_key(self) -> str:
        """The identity the server knows (``U…``)."""
        key: bytes = nkeys.from_seed(bytearray(self.seed.encode())).public_key
        return key.decode()

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.public_key)

    def sign(self, nonce: bytes) -> str:
        """The ``sig`` of a CONNECT: the server's nonce signed, base64url without padding."""
        signature: bytes = nkeys.from_seed(bytearray(self.seed.encode())).sign(nonce)
        return base64.urlsafe_b64encode(signature).decode().rstrip("=")


def inbox_prefix(public_key: str) -> str:
    """The reply subjects of the identity with ``public_key`` begin with this."""
    return f"{INBOX_PREFIX}{public_key}"


def generate_seed() -> str:
    """A new user nkey seed (``SU…``)."""
    encoded: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return encoded.decode()


def private_directory(path: Path) -> Path:
    """``path`` made (with missing parents) and kept 0700: keys and credentials live there."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (never, even briefly, by others:
    the file is created 0600 and replaced in one rename)."""
    private_directory(path.parent)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def read_seed_file(path: Path) -> Credentials:
    """The credentials in a seed file; :class:`CredentialsError` saying what is wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CredentialsError(f"the credentials file {path} does not exist") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read the credentials file {path}: {exc.strerror}") from None
    seed = next((line.strip() for line in text.splitlines() if line.strip().startswith("S")), "")
    if not seed:
        raise CredentialsError(f"the credentials file {path} holds no nkey seed (SU…)")
    return Credentials(seed, source=str(path))


def ensure_seed_file(path: Path) -> Credentials:
    """The identity kept in ``path``, made there (0600) the first time."""
    if not path.exists():
        write_private(path, generate_seed() + "\n")
    os.chmod(path, 0o600)
    return read_seed_file(path)


_connected_as: weakref.WeakKeyDictionary[Client, Credentials] = weakref.WeakKeyDictionary()


def remember(nc: Client, credentials: Credentials) -> None:
    """``nc`` was connected with ``credentials`` (so a second connection made for it, the bulk
    reader's, can join as the same identity)."""
    _connected_as[nc] = credentials


def credentials_of(nc: Client) -> Credentials | None:
    """The credentials ``nc`` was connected with by :func:`streams.connection.connect`."""
    return _connected_as.get(nc)
