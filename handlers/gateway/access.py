"""What the gateway knows to authenticate and authorize: the log's users and its RBAC objects,
kept current from the log, beside the control plane's own identities.

Why this exists: a signed command names its signer by public key; the gateway must say which
user that is (an unrevoked ``User`` of the log, the bootstrap admin, a control-plane
component) and what RBAC lets that user do (the stored Role, ClusterRole, RoleBinding and
ClusterRoleBinding over ``core.access.bootstrap``'s built-ins). Each kind is folded by a
projection of its own (a handful of objects, never the whole log); the derived lookups are
rebuilt only when one of them changed. A miss (an unknown signer, a denial) first catches the
projections up with the log, so a user or binding written just before the command is seen
(read-your-writes for grants; a revocation takes effect as the projection follows, as kube's
informer caches do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from core.access import bootstrap, rbac
from core.access.commandauth import Identity, user_identity, users_by_key
from projections.cluster import ClusterModel
from projections.runtime import Projection
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
