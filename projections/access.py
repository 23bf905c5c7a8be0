"""Who a signed request comes from and what RBAC lets them do, for both sides of the NATS
door: the gateway (commands) and the query services (reads) share this one model.

Why this exists: a signed request names its signer by public key; the receiver must say which
user that is (an unrevoked ``User`` of the log, the bootstrap admin, a control-plane
component) and what RBAC lets that user do (the stored Role, ClusterRole, RoleBinding and
ClusterRoleBinding over ``core.access.bootstrap``'s built-ins). Each kind is folded by a
projection of its own (a handful of objects, never the whole log); the derived lookups are
rebuilt only when one of them changed. A miss (an unknown signer, a denial) first catches the
projections up with the log, so a user or binding written just before the request is seen
(read-your-writes for grants; a revocation takes effect as the projection follows, as kube's
informer caches do). :func:`verify_signed` and :func:`authorize` are the two questions every
receiver asks of it, so a command and a read are judged by the same rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.access import bootstrap, rbac
from core.access.bootstrap import SYSTEM_MASTERS
from core.access.commandauth import (
    Identity,
    acting_as,
    node_actor_problem,
    user_identity,
    users_by_key,
)
from core.access.signing import (
    SIGNATURE_HEADER,
    SIGNER_HEADER,
    ReplayGuard,
    Signature,
    SignatureRefused,
    check_signature,
    check_time,
    public_key_bytes,
)
from core.errors import FleetError
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import IMPERSONATE_HEADER
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_filter

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


class AccessModel:
    """Users by key and name, and the RBAC policy, from the log (see the module docstring)."""

    def __init__(self, store: EventStore, *, builtin: Mapping[str, Identity]) -> None:
        """``builtin``: public key -> identity of the keys every cluster admits (the control
        plane's, the bootstrap admin's), which are not User objects."""
        self.builtin = dict(builtin)
        self._users = Projection(ClusterModel(), store, filter_subject=event_filter("User"))
        self._rbac = {
            kind: Projection(ClusterModel(), store, filter_subject=event_filter(kind))
            for kind in RBAC_KINDS
        }
        self._users.listeners.append(self._users_changed)
        for projection in self._rbac.values():
            projection.listeners.append(self._rbac_changed)
        self._by_key: dict[str, Identity] | None = None
        self._policy: rbac.Policy | None = None
        self._refreshing: asyncio.Lock = asyncio.Lock()

    @property
    def _projections(self) -> list[Projection[ClusterModel]]:
        return [self._users, *self._rbac.values()]

    async def start(self) -> None:
        for projection in self._projections:
            await projection.catch_up()
            await projection.follow()

    async def stop(self) -> None:
        for projection in self._projections:
            await projection.stop()

    async def refresh(self) -> None:
        """Catch every projection up with the log (one refresh at a time: concurrent misses
        share it)."""
        async with self._refreshing:
            for projection in self._projections:
                await projection.catch_up()

    def _users_changed(self, event: StoredEvent) -> None:
        self._by_key = None

    def _rbac_changed(self, event: StoredEvent) -> None:
        self._policy = None

    def identity_of(self, public_key: str) -> Identity | None:
        """Who holds ``public_key`` (None: nobody this cluster admits)."""
        found = self.builtin.get(public_key)
        if found is not None:
            return found
        if self._by_key is None:
            self._by_key = users_by_key(r.manifest for r in self._users.model.list("User"))
        return self._by_key.get(public_key)

    def users(self) -> list[dict[str, Any]]:
        """The User manifests of the log (the Kubernetes door matches tokens and revoked
        certificates against them)."""
        return [r.manifest for r in self._users.model.list("User")]

    def named(self, name: str) -> Identity:
        """The identity an impersonator asks for: the User of that name with its groups (a
        revoked one keeps none), else a user of that name in no group."""
        record = self._users.model.get("User", "", name)
        spec = (record.manifest.get("spec") or {}) if record is not None else {}
        groups = [] if spec.get("revoked") else [str(g) for g in spec.get("groups") or ()]
        return user_identity(name, groups)

    @property
    def policy(self) -> rbac.Policy:
        """The RBAC policy: the stored roles and bindings over the built-in ones."""
        if self._policy is None:

            def stored(kind: str) -> list[dict[str, object]]:
                return [r.manifest for r in self._rbac[kind].model.list(kind)]

            self._policy = rbac.Policy.build(
                roles=stored("Role"),
                cluster_roles=bootstrap.with_bootstrap(
                    stored("ClusterRole"), bootstrap.CLUSTER_ROLES
                ),
                role_bindings=stored("RoleBinding"),
                cluster_role_bindings=bootstrap.with_bootstrap(
                    stored("ClusterRoleBinding"), bootstrap.CLUSTER_ROLE_BINDINGS
                ),
            )
        return self._policy


class Unauthorized(FleetError):
    """The request does not prove who sent it (kube's 401); nothing was done."""

    code = "unauthorized"


class Forbidden(FleetError):
    """The sender may not do this (kube's 403); nothing was done or shown."""

    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Verified:
    """What a valid signature proves: who the request acts as, and who asked for that when it
    is someone else (``--as``; the impersonation is still to be authorized)."""

    identity: Identity
    impersonator: Identity | None = None


def is_signed(headers: Mapping[str, str] | None) -> bool:
    """Whether a request carries a signature (perhaps a broken one)."""
    return bool(headers) and (SIGNATURE_HEADER in headers or SIGNER_HEADER in headers)


async def verify_signed(
    access: AccessModel | None,
    signature: Signature,
    *,
    subject: str,
    payload: bytes,
    headers: Mapping[str, str],
    stated: str,
    stated_groups: object = None,
    now_ns: int,
    guard: ReplayGuard | None,
    receiver: str = "gateway",
) -> Verified:
    """Who sent a signed request (``stated``: the actor its payload names, an impersonation
    target with ``Fleet-Impersonate``; ``stated_groups``: that actor's groups as the payload
    names them, honoured only from a control-plane signer, the Kubernetes door). ``guard``:
    the nonces already seen (None: only the signing time is checked, for requests whose
    replay is harmless). Raises :class:`SignatureRefused` saying what is wrong."""
    public_key_bytes(signature.signer)  # malformed is told apart from unknown
    caller = await identity_of_signer(access, signature.signer)
    check_signature(signature, subject=subject, payload=payload)
    if guard is not None:
        guard.admit(signature, now_ns=now_ns)
    else:
        check_time(signature, now_ns=now_ns, what="request", receiver=receiver)
    target = headers.get(IMPERSONATE_HEADER)
    if caller.control_plane:
        # A node agents' key commands only as a node (its reads may name no one).
        problem = node_actor_problem(caller, stated) if receiver == "gateway" else None
        if problem is not None:
            raise SignatureRefused(problem)
        if target is None:
            return Verified(acting_as(caller, stated))
        return Verified(_door_caller(access, target, stated, stated_groups), impersonator=caller)
    if target is None or target == caller.user.name:
        return Verified(caller)
    if target != stated:
        # The header is outside the signature; the actor is inside it.
        raise SignatureRefused(
            f"{IMPERSONATE_HEADER} names {target!r} but the signed request's actor is {stated!r}"
        )
    assert access is not None
    return Verified(access.named(target), impersonator=caller)


def _door_caller(access: AccessModel | None, target: str, stated: str, groups: object) -> Identity:
    """A control-plane key impersonating (the Kubernetes door sending for a caller it
    authenticated): the caller, with the groups the signed payload names (kube's
    ``Impersonate-Group``; else its User's), so RBAC decides as for that caller."""
    if target != stated:
        raise SignatureRefused(
            f"{IMPERSONATE_HEADER} names {target!r} but the signed request's actor is {stated!r}"
        )
    if isinstance(groups, list) and all(isinstance(g, str) for g in groups):
        return user_identity(stated, groups)
    if access is not None:
        return access.named(stated)
    return user_identity(stated, ())


async def identity_of_signer(access: AccessModel | None, signer: str) -> Identity:
    """The identity holding ``signer``'s key, after catching up with the log on a miss."""
    if access is None:
        raise SignatureRefused("this service verifies no signatures (it knows no users)")
    found = access.identity_of(signer)
    if found is None:
        await access.refresh()  # created just now?
        found = access.identity_of(signer)
    if found is None:
        raise SignatureRefused(
            f"signer {signer[:12]}… is not a user of this cluster (revoked, or never "
            "created: fleetlog user list)"
        )
    return found


def privileged(identity: Identity) -> str:
    """Why ``identity`` needs no RBAC rule ('' when it does): kube's privileged group
    (``system:masters``, allowed before RBAC is asked) and the control plane's components."""
    if identity.control_plane:
        return f'allowed as control-plane component "{identity.user.name}"'
    if SYSTEM_MASTERS in identity.user.groups:
        return f'allowed by group "{SYSTEM_MASTERS}"'
    return ""


async def authorize(
    access: AccessModel, identity: Identity, request: rbac.Request
) -> rbac.Decision:
    """RBAC's answer for ``identity``; a denial is asked again once the roles and bindings
    have caught up with the log (a grant written just before is seen)."""
    reason = privileged(identity)
    if reason:
        return rbac.Decision(True, reason)
    decision = access.policy.authorize(identity.user, request)
    if not decision.allowed:
        await access.refresh()
        decision = access.policy.authorize(identity.user, request)
    return decision
