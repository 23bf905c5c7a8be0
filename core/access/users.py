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
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from core.access.signing import SignatureRefused, public_key_bytes
from core.meta.model import K8sModel, field_error
from core.meta.names import dns1123_subdomain_errors
from core.meta.types import ResourceBase

API_GROUP = "auth.fleetlog.dev"
API_VERSION = f"{API_GROUP}/v1"


class UserSpec(K8sModel):
    public_key: str
    groups: list[str] = []
    revoked: bool = False


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
        for index, group in enumerate(self.spec.groups):
            if not group.strip() or group != group.strip():
                raise field_error(
                    f"Invalid value: {group!r}: a group name must not be empty or padded",
                    "spec",
                    "groups",
                    index,
                )
        return self
