"""The NATS wall of ``fleetlog up``'s embedded server: its keys, the users it admits, and the
admin's context.

Why this exists: ``fleetlog up`` is secure by default (DESIGN.md, "Trust") and the README's two
commands must still work with no flag. So ``up`` makes what it needs on its first start and
reuses it after: one nkey per control-plane identity (``up``'s own roles and its gateway
processes; a separately started agent, scheduler and simulator each get their own) and a
bootstrap admin in ``system:masters``, all under ``<data dir>/pki/nkeys/`` (files 0600, the
directories 0700). The embedded server admits exactly these identities and the unrevoked
:class:`core.access.users.User` objects of the log (``streams.natsauth``); when a user is
created, revoked or rotated, :class:`Wall` rewrites the server's configuration and reloads it
(a revoked or rotated key's connections are closed by the server). The users last admitted are
kept beside the keys, so a restarted server admits them before ``up`` has read the log again.

:func:`write_context` puts the admin's credentials and the role identities into the fleetlog
config (``ops.fleetconfig``) as the context ``fleetlog``, where every command finds them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from core.access.commandauth import (
    Identity,
    admin_identity,
    control_plane_identity,
    node_agent_identity,
)
from ops.fleetconfig import ROLES, load, save, set_context
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.envelope import StoredEvent
from streams.identity import Credentials, ensure_seed_file, private_directory, write_private
from streams.natsauth import (
    MASTERS_GROUP,
    NatsUser,
    Profile,
    authorization_config,
    metrics_namespaces_of,
    profile_of,
)
from streams.server import EmbeddedServer

log = structlog.get_logger(__name__)

CONTEXT = "fleetlog"
"""The context (and cluster) name ``up`` writes into the fleetlog config."""
ADMIN_USER = "fleetlog-admin"
KEYS_DIRECTORY = Path("pki") / "nkeys"
ADMITTED_FILE = "admitted-users.json"
CONTROL_PLANE = "control-plane"
ROLE_KEYS = {"gateway": CONTROL_PLANE, "agent": "agent", "scheduler": "scheduler", "sim": "sim"}
"""Which key each role of the fleetlog config's ``roles`` uses."""


@dataclass(frozen=True)
class WallKeys:
    """The control plane's identities and the bootstrap admin's, kept in ``directory``."""

    directory: Path

    @classmethod
    def ensure(cls, data_dir: Path) -> WallKeys:
        private_directory(data_dir / KEYS_DIRECTORY.parent)
        keys = cls(private_directory(data_dir / KEYS_DIRECTORY))
        for name in (CONTROL_PLANE, *ROLE_KEYS.values(), "admin"):
            ensure_seed_file(keys.file(name))
        return keys

    def file(self, name: str) -> Path:
        return self.directory / f"{name}.nk"

    def credentials(self, name: str) -> Credentials:
        return ensure_seed_file(self.file(name))

    def builtin_users(self) -> list[NatsUser]:
        """The identities every cluster admits: the control plane's and the admin's."""
        agents = ROLE_KEYS["agent"]
        users = [
            NatsUser(
                self.credentials(name).public_key,
                Profile.NODE if name == agents else Profile.CONTROL_PLANE,
                name=name,
            )
            for name in sorted({CONTROL_PLANE, *ROLE_KEYS.values()})
        ]
        admin = self.credentials("admin")
        users.append(NatsUser(admin.public_key, Profile.ADMIN, name=ADMIN_USER))
        return users

    def identities(self) -> dict[str, Identity]:
        """Public key -> who signs with it, for the gateway: the control plane's components
        (``system:<key name>`` unless they name themselves; the agents' key only as a node,
        ``system:node/NAME``) and the bootstrap admin."""
        found = {
            self.credentials(name).public_key: (
                node_agent_identity(name)
                if name == ROLE_KEYS["agent"]
                else control_plane_identity(name)
            )
            for name in sorted({CONTROL_PLANE, *ROLE_KEYS.values()})
        }
        found[self.credentials("admin").public_key] = admin_identity(ADMIN_USER)
        return found


def gateway_identities(
    keys: WallKeys | None, credentials: Credentials | None
) -> dict[str, Identity]:
    """The keys a gateway knows besides the log's users: the wall's (embedded server), else
    only the key its own control plane connects with (an external server, whose operator
    owns its users; a role connecting there with another key signs as nobody the gateway
    knows, so it connects with ``up``'s key or with none)."""
    if keys is not None:
        return keys.identities()
    if credentials is not None:
        return {credentials.public_key: control_plane_identity(CONTROL_PLANE)}
    return {}


def stored_users(model: ClusterModel) -> list[NatsUser]:
    """The log's unrevoked users, as the server admits them."""
    users = []
    for record in model.list("User"):
        spec = record.manifest.get("spec") or {}
        if spec.get("revoked") or not spec.get("publicKey"):
            continue
        groups = spec.get("groups") or []
        users.append(
            NatsUser(
                str(spec["publicKey"]),
                profile_of(groups),
                name=record.name,
                metrics=metrics_namespaces_of(groups),
            )
        )
    return users


class Wall:
    """Keeps the embedded server's users those of the log (see the module docstring)."""

    def __init__(self, server: EmbeddedServer, keys: WallKeys) -> None:
        self._server = server
        self.keys = keys
        self._changed = asyncio.Event()
        self.admitted = self._cached()
        self.reloads = 0

    @property
    def _cache(self) -> Path:
        return self.keys.directory / ADMITTED_FILE

    def _cached(self) -> list[NatsUser]:
        try:
            entries = json.loads(self._cache.read_text())
            return [
                NatsUser(
                    e["public_key"],
                    Profile(e["profile"]),
                    e["name"],
                    metrics=tuple(e.get("metrics") or ()),
                )
                for e in entries
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def authorization(self) -> str:
        """The server's ``authorization`` block for the users admitted now."""
        return authorization_config([*self.keys.builtin_users(), *self.admitted])

    def on_event(self, event: StoredEvent) -> None:
        """A projection listener: a User changed, the server's users may have."""
        if event.envelope.kind == "User":
            self._changed.set()

    async def run(self, projection: Projection[ClusterModel]) -> None:
        """Reload the server whenever the log's users change, until cancelled."""
        projection.listeners.append(self.on_event)
        self._changed.set()  # the log may have changed while the server was down
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                self._admit(stored_users(projection.model))
        finally:
            if self.on_event in projection.listeners:
                projection.listeners.remove(self.on_event)

    def _admit(self, users: list[NatsUser]) -> None:
        key = sorted(users, key=lambda u: (u.name, u.public_key))
        if key == sorted(self.admitted, key=lambda u: (u.name, u.public_key)):
            return
        self.admitted = users
        entries: list[dict[str, Any]] = [
            {
                "public_key": u.public_key,
                "profile": str(u.profile),
                "name": u.name,
                "metrics": list(u.metrics),
            }
            for u in users
        ]
        write_private(self._cache, json.dumps(entries))
        self._server.reload(authorization=self.authorization())
        self.reloads += 1
        log.info("nats_server.users", admitted=sorted(u.name for u in users))


def write_context(
    config_path: Path,
    *,
    url: str,
    keys: WallKeys,
    seal_key: Path | None = None,
    certificate_authority: Path | None = None,
) -> None:
    """The admin's context ``fleetlog`` (seed inline, as k3s' kubeconfig holds its key) with
    the roles' identities (their seed files), made current unless another context is; with
    ``certificate_authority``, the CA of the server's TLS certificate (``ops.natstls``)."""
    config = load(config_path)
    admin = keys.credentials("admin")
    roles = {
        role: (f"{CONTEXT}-{role}", {"seed-file": str(keys.file(ROLE_KEYS[role]).resolve())})
        for role in ROLES
    }
    set_context(
        config, name=CONTEXT, server=url, user=ADMIN_USER, user_entry={"seed": admin.seed},
        roles=roles, make_current=config.current_context in (None, CONTEXT), seal_key=seal_key,
        certificate_authority=certificate_authority,
    )  # fmt: skip
    save(config_path, config)
    log.info("fleetlog.config", path=str(config_path), context=CONTEXT, groups=[MASTERS_GROUP])
