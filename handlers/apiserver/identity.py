"""Who is calling the Kubernetes door, and may they: kube-apiserver's authentication and RBAC
authorization, over the cluster's own users and policy.

Why this exists: both doors map onto the same identities, the same RBAC and the same audit
(issue 17). :class:`DoorAccess` authenticates a request as kube-apiserver does
(``core.kubeapi.authn``: the client certificate the door's CA signed, else an ``Authorization:
Bearer`` token matching an unrevoked User's hash, else ``system:anonymous``) and authorizes what
the door serves itself (reads, exec/attach/port-forward, ``deletecollection``) with
``core.access.rbac`` over the policy the gateway holds (:class:`AccessSource`: ``fleetlog up``
hands the door the gateway's own ``AccessModel``, so one policy decides at both doors). Writes
are commands: the door sends them signed with its control-plane key and impersonating the
caller, so the gateway's RBAC decides with the caller's identity and the audit names it.

Without an :class:`AccessSource` (a door whose commands are unsigned, on an open NATS server:
the tests' fixtures, ``--nats-url`` without authorization) there is no RBAC to ask: certificates
authenticate, tokens cannot, and every authenticated caller may read (as on that server's NATS
door, where anyone may act as anyone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from core.access import rbac
from core.access.bootstrap import SYSTEM_MASTERS
from core.kubeapi.authn import ANONYMOUS, Refused, bearer_token, from_certificate, from_token
from core.kubeapi.status import APIError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        """The actor an unsigned command names (the NATS door's convention for people on an
        open server); a signed door sends the bare user name, as its impersonation target."""
        return f"user:{self.user}"

    @property
    def anonymous(self) -> bool:
        return self.user == ANONYMOUS.name

    @property
    def as_user(self) -> rbac.User:
        return rbac.User(self.user, self.groups)


class AccessSource(Protocol):
    """The cluster's users and RBAC policy, kept current from the log (the gateway's
    ``AccessModel``)."""

    @property
    def policy(self) -> rbac.Policy: ...

    def users(self) -> Sequence[Mapping[str, Any]]: ...

    async def refresh(self) -> None: ...


def unauthorized() -> APIError:
    """kube's 401 (kubectl: "You must be logged in to the server (Unauthorized)")."""
    return APIError(401, "Unauthorized", "Unauthorized")


class DoorAccess:
    """Authentication and authorization at the door (see the module docstring)."""

    def __init__(
        self,
        access: AccessSource | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.access = access
        self._clock = clock

    def _users(self) -> Sequence[Mapping[str, Any]]:
        return self.access.users() if self.access is not None else ()

    async def authenticate(
        self, *, peer_certificate: Mapping[str, Any] | None, authorization: str | None
    ) -> Identity:
        """The caller; :func:`unauthorized` when it presented credentials that are not good
        (a revoked user's certificate, an unknown, expired or revoked user's token)."""
        if peer_certificate:
            found = await self._twice(
                lambda: from_certificate(peer_certificate.get("subject", ()), self._users())
            )
        else:
            token = bearer_token(authorization)
            if token is None:
                return Identity(ANONYMOUS.name, ANONYMOUS.groups)
            if self.access is None:
                found = Refused("this door knows no users: bearer tokens cannot be checked")
            else:
                found = await self._twice(
                    lambda: from_token(token, self._users(), now=self._clock())
                )
        if isinstance(found, Refused):
            log.info("apiserver.unauthenticated", why=found.why)
            raise unauthorized()
        return Identity(found.name, found.groups)

    async def _twice(self, attempt: Callable[[], rbac.User | Refused]) -> rbac.User | Refused:
        # A miss catches the users up with the log first: a user created (or a token rotated)
        # just before is seen; a revocation takes effect as the users follow the log.
        found = attempt()
        if isinstance(found, Refused) and self.access is not None:
            await self.access.refresh()
            found = attempt()
        return found

    @property
    def enforcing(self) -> bool:
        """Whether RBAC is asked (a door with the cluster's policy)."""
        return self.access is not None

    async def rules(self, identity: Identity, namespace: str) -> list[Mapping[str, Any]]:
        """Every rule RBAC grants the caller in ``namespace`` (``kubectl auth can-i --list``);
        everything for ``system:masters`` and on a door without the policy."""
        if self.access is None or SYSTEM_MASTERS in identity.groups:
            return [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
            ]
        await self.access.refresh()
        return self.access.policy.rules_for(identity.as_user, namespace)

    async def authorize(self, identity: Identity, request: rbac.Request) -> rbac.Decision:
        """RBAC's answer (``system:masters`` is allowed before RBAC is asked, as kube's
        privileged group); a denial is asked again once the policy caught up with the log."""
        if self.access is None:
            return rbac.Decision(True, "no RBAC: the door's commands are unsigned")
        if SYSTEM_MASTERS in identity.groups:
            return rbac.Decision(True, f'allowed by group "{SYSTEM_MASTERS}"')
        decision = self.access.policy.authorize(identity.as_user, request)
        if not decision.allowed:
            await self.access.refresh()
            decision = self.access.policy.authorize(identity.as_user, request)
        return decision
