"""Who is calling the Kubernetes API: the client certificate's subject, as kube-apiserver reads it.

Why this exists: every write through this door becomes a command whose actor is the caller, so
the audit trail says who did it. Kubernetes' x509 authenticator takes the certificate's CN as
the user name and its O entries as groups; fleetlog does the same, and names the actor
``user:<CN>`` like a person on the NATS door (``--as``). :class:`Authenticator` is the seam the
front-door issue plugs bearer tokens and service accounts into (the identities that issue adds
are shared by both doors; RBAC will read ``groups``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        """The actor recorded on the commands this identity sends."""
        return f"user:{self.user}"


class Authenticator(Protocol):
    def __call__(self, peer_certificate: dict[str, Any] | None) -> Identity | None:
        """The caller's identity from what the connection presented; None: anonymous."""
        ...


def client_certificate(peer_certificate: dict[str, Any] | None) -> Identity | None:
    """kube's x509 request authenticator: CN -> user, every O -> a group. The TLS layer has
    already checked the certificate was signed by the cluster CA for client authentication."""
    if not peer_certificate:
        return None
    user, groups = "", []
    for rdn in peer_certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    if not user:
        return None
    return Identity(user=user, groups=tuple(groups))
