"""A CLI session: one connection to the cluster's NATS, the event store for reads, the command
client for writes, and the cluster query. (The parsers of the command line, which need none of
this, are in ``ops.cliargs``.)

Queries are signed like commands (``streams.querybus``) and act as the same identity (``--as``
impersonates on reads too, as kubectl's does); a refused one (kube's Forbidden) fails the
command as a refused command does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.errors import FleetError, ValidationFailed
from projections.history_service import read_history
from projections.query import CLUSTER_QUERY_SUBJECT
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.identity import Credentials
from streams.querybus import request as signed_request
from streams.subjects import event_subject


@dataclass
class Session:
    nc: Client
    store: EventStore
    commands: CommandClient

    async def query(
        self, kind: str, *, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after = None
        while True:
            fields = {"kind": kind, "namespace": namespace, "name": name, "continue": after}
            if self.commands.impersonate:
                fields["actor"] = self.commands.actor
            request = msgpack.packb(fields)
            try:
                reply = await signed_request(
                    self.nc, CLUSTER_QUERY_SUBJECT, request, timeout=10,
                    impersonate=self._impersonated,
                )  # fmt: skip
            except (NoRespondersError, NatsTimeout) as exc:
                raise FleetError(
                    "no projection is answering queries: is `fleetlog up` running?",
                    code="unavailable",
                ) from exc
            answer = msgpack.unpackb(reply.data, raw=False)
            if not answer.get("ok"):
                error = answer.get("error", {})
                raise FleetError(error.get("message", "query failed"), code=error.get("code"))
            items += answer["items"]
            after = answer.get("continue")
            if not after:
                return items

    async def history(self, kind: str, namespace: str, name: str) -> list[StoredEvent]:
        """Every event of one object, oldest first (from ``up``'s history index when it
        answers, else from the log)."""
        return await read_history(
            self.nc, self.store, event_subject(kind, namespace, name),
            impersonate=self._impersonated,
        )  # fmt: skip

    @property
    def _impersonated(self) -> str | None:
        """Whom this session's requests act as when it is not its own identity (``--as``)."""
        return self.commands.actor if self.commands.impersonate else None


def pick_container(item: dict[str, Any], container: str | None) -> tuple[str, int | None]:
    """The container ``fleetlog logs`` reads (the only one unless ``-c`` names one) and its
    restart count from the pod's status, if the status has one yet."""
    from core.mesh.injection import SIDECAR_CONTAINER

    manifest = item["manifest"]
    names = [c["name"] for c in manifest.get("spec", {}).get("containers", [])]
    if container is None:
        if len(names) != 1:
            raise ValidationFailed(
                f"a container name must be specified for pod {item['name']}, "
                f"choose one of: [{' '.join(names)}]"
            )
        container = names[0]
    elif container not in names and container != SIDECAR_CONTAINER:
        # A meshed pod's sidecar is started by its node, not named in its spec.
        raise ValidationFailed(
            f"container {container} is not valid for pod {item['name']}: "
            f"choose one of: [{' '.join(names)}]"
        )
    statuses = (manifest.get("status") or {}).get("containerStatuses") or []
    restarts = next(
        (int(s.get("restartCount", 0)) for s in statuses if s.get("name") == container), None
    )
    return container, restarts


@asynccontextmanager
async def session(
    server: str,
    actor: str,
    *,
    credentials: Credentials | None = None,
    impersonate: bool = False,
) -> AsyncIterator[Session]:
    """``impersonate``: ``actor`` was asked for (``--as``), not merely a default name."""
    nc = await connect(server, name="fleetlog-cli", reconnect=False, credentials=credentials)
    try:
        async with EventStore(nc) as store:
            commands = CommandClient(nc, actor=actor, impersonate=impersonate)
            yield Session(nc, store, commands)
    finally:
        await nc.close()
