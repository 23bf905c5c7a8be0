"""The User kind: who may connect to the cluster's NATS server, with which key, in which groups.

Why this exists: identities live in the log like every other object (issue 17): ``fleetlog
user create|revoke|rotate`` are commands through the gateway, each change is an event with its
author, and ``fleetlog up`` admits to the embedded server exactly the users the log holds
unrevoked (``streams.natsauth``). A user is ``auth.fleetlog.dev/v1`` ``User``, cluster-scoped,
named as a DNS subdomain (it names files and contexts too); ``spec.publicKey`` is the public
half of the user's nkey (the seed never reaches the log), ``spec.groups`` its groups (kube's
group names: ``system:masters`` is the administrators'), ``spec.revoked`` whether the server
still admits it. Revoking keeps the object (the audit trail names the user); rotating is a new
``publicKey``.

The Kubernetes door (``handlers.apiserver``) admits the same users with a bearer token:
``spec.tokenHash`` is ``sha256:<hex>`` of a token ``fleetlog user create`` mints on the
caller's machine (the token itself, like the seed, never reaches the log), and
``spec.tokenExpiresAt`` an optional end of its validity. A plain SHA-256 suffices: the token is
256 random bits, so its hash can be shown to any reader without letting anyone find the token
(no salt or slow hash is needed, unlike for a chosen password).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Final, Literal, Self

from pydantic import model_validator

from core.access.signing import SignatureRefused, public_key_bytes
from core.meta.model import K8sModel, field_error
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import ResourceBase

API_GROUP = "auth.fleetlog.dev"
API_VERSION = f"{API_GROUP}/v1"
TOKEN_HASH_PREFIX: Final = "sha256:"
_TOKEN_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def token_hash(token: str) -> str:
    """What ``spec.tokenHash`` holds for ``token``."""
    return TOKEN_HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


class UserSpec(K8sModel):
    public_key: str
    groups: list[str] = []
    revoked: bool = False
    token_hash: str | None = None
    token_expires_at: datetime | None = None


class User(ResourceBase):
    """One person or program that may connect to the cluster with its nkey."""

    NAME_RULE = staticmethod(dns1123_subdomain_errors)
    NAMESPACED = False

    api_version: Literal["auth.fleetlog.dev/v1"] = API_VERSION
    kind: Literal["User"] = "User"
    spec: UserSpec

    @model_validator(mode="after")
    def _a_user_nkey(self) -> Self:
        try:
            public_key_bytes(self.spec.public_key)
        except SignatureRefused as exc:
            message = str(exc).replace("signer", "publicKey")
            raise field_error(
                f"Invalid value: {message}: a user's publicKey is its nkey's public key (U…)",
                "spec",
                "publicKey",
            ) from None
        if self.spec.token_hash is not None and not _TOKEN_HASH.fullmatch(self.spec.token_hash):
            raise field_error(
                f"Invalid value: {self.spec.token_hash!r}: must be sha256: and 64 lowercase hex "
                "digits (the hash of the token, never the token)",
                "spec",
                "tokenHash",
            )
        if self.spec.token_expires_at is not None and self.spec.token_expires_at.tzinfo is None:
            raise field_error(
                "Invalid value: must be an RFC 3339 time with a zone", "spec", "tokenExpiresAt"
            )
        for index, group in enumerate(self.spec.groups):
            if not group.strip() or group != group.strip():
                raise field_error(
                    f"Invalid value: {group!r}: a group name must not be empty or padded",
                    "spec",
                    "groups",
                    index,
                )
        return self
