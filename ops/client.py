"""A CLI session: one connection to the cluster's NATS, the event store for reads, the command
client for writes, and the cluster query. Also the small parsers the CLI shares (kinds and
their aliases, ``--since`` durations)."""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.errors import FleetError, UnknownKind, ValidationFailed
from core.resources import KINDS
from projections.history_service import read_history
from projections.query import CLUSTER_QUERY_SUBJECT
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.subjects import event_subject

DEFAULT_SERVER = "nats://127.0.0.1:4222"

KIND_ALIASES: dict[str, str] = {}
for _kind, _short in (
    ("Pod", ("po",)),
    ("Node", ("no",)),
    ("Deployment", ("deploy",)),
    ("ReplicaSet", ("rs",)),
    ("Service", ("svc",)),
    ("Namespace", ("ns",)),
    ("PriorityClass", ("pc",)),
    ("LimitRange", ("limits",)),
    ("ResourceQuota", ("quota",)),
):
    for _alias in (_kind.lower(), _kind.lower() + "s", *_short):
        KIND_ALIASES[_alias] = _kind
KIND_ALIASES["deployment.apps"] = "Deployment"
KIND_ALIASES["deployments.apps"] = "Deployment"
KIND_ALIASES["replicaset.apps"] = "ReplicaSet"
KIND_ALIASES["replicasets.apps"] = "ReplicaSet"


def resolve_kind(text: str) -> str:
    kind = KIND_ALIASES.get(text.lower())
    if kind is None:
        raise UnknownKind(
            f'the server doesn\'t have a resource type "{text}"; known: '
            + ", ".join(sorted({k.lower() for k in KIND_ALIASES.values()}))
        )
    return kind


def split_ref(text: str) -> tuple[str, str]:
    """``deployment/web`` → ("Deployment", "web")."""
    kind, sep, name = text.partition("/")
    if not sep or not name:
        raise ValidationFailed(f"expected KIND/NAME, got {text!r}")
    return resolve_kind(kind), name


def is_namespaced(kind: str) -> bool:
    return KINDS[kind].namespaced


def default_actor() -> str:
    explicit = os.environ.get("FLEETLOG_USER")
    if explicit:
        return explicit
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``1h30m`` (or plain seconds, ``45``) in seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not re.fullmatch(r"(\d+[smhd])+", text):
        raise ValidationFailed(f"{text!r} is not a duration: use e.g. 30s, 2m or 1h")
    return sum(
        timedelta(**{_UNITS[unit]: int(amount)}).total_seconds()
        for amount, unit in _DURATION.findall(text)
    )


def parse_since(text: str, now: datetime) -> datetime:
    """``10m``, ``2h30m``, ``1d`` before ``now``, or an ISO 8601 instant."""
    if re.fullmatch(r"(\d+[smhd])+", text):
        delta = timedelta()
        for amount, unit in _DURATION.findall(text):
            delta += timedelta(**{_UNITS[unit]: int(amount)})
        return now - delta
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed(
            f"--since {text!r}: use a duration like 10m, 2h, 1d or a time like 2026-01-31T03:12:00Z"
        ) from exc
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


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
            request = msgpack.packb(
                {"kind": kind, "namespace": namespace, "name": name, "continue": after}
            )
            try:
                reply = await self.nc.request(CLUSTER_QUERY_SUBJECT, request, timeout=10)
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
        return await read_history(self.nc, self.store, event_subject(kind, namespace, name))


def pick_container(item: dict[str, Any], container: str | None) -> tuple[str, int | None]:
    """The container ``fleetlog logs`` reads (the only one unless ``-c`` names one) and its
    restart count from the pod's status, if the status has one yet."""
    manifest = item["manifest"]
    names = [c["name"] for c in manifest.get("spec", {}).get("containers", [])]
    if container is None:
        if len(names) != 1:
            raise ValidationFailed(
                f"a container name must be specified for pod {item['name']}, "
                f"choose one of: [{' '.join(names)}]"
            )
        container = names[0]
    elif container not in names:
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
async def session(server: str, actor: str) -> AsyncIterator[Session]:
    nc = await connect(server, name="fleetlog-cli", reconnect=False)
    try:
        async with EventStore(nc) as store:
            yield Session(nc, store, CommandClient(nc, actor=actor))
    finally:
        await nc.close()
