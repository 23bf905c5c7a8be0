"""One door to JetStream: the JetStream domain of a connection, and every raw API subject.

Why this exists: fleetlog talks to JetStream two ways. Through nats-py's JetStream context
(publishing, ordered consumers, key-value buckets, the object store), and through raw API
requests where nats-py has no helper or costs too much: batched direct gets on the command
path, stream setup with the exact JSON configuration, and the bulk log reader's pull consumer.
Both must address the same JetStream *domain*. A server's JetStream answers ``$JS.API.…`` in
its own domain; a named domain is addressed as ``$JS.<domain>.API.…`` from anywhere the leaf
nodes reach, which is how federation will run one JetStream domain per cluster. So the domain
is chosen once per connection and every caller asks this module for it:

* :func:`streams.connection.connect` binds a client to its domain (its ``domain`` argument,
  else the ``FLEETLOG_JS_DOMAIN`` environment variable, else none: ``$JS.API``, as before);
* :func:`of` gives a client's :class:`JetStreamApi`: the API prefix, the subjects of a stream
  (:class:`StreamSubjects`) and the JSON API calls fleetlog makes itself;
* :func:`jetstream` gives nats-py's context for the same domain (KV and object store included).

Cost: subjects are built once, when a caller binds a stream (an event store does it when it is
created), and kept; a direct get on the command path publishes to a ready-made string exactly
as it did when the subject was a literal.
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext

from core.errors import FleetError
from core.meta.timestamps import parse_stamp

ENV_DOMAIN = "FLEETLOG_JS_DOMAIN"
DEFAULT_PREFIX = "$JS.API"
API_TIMEOUT = 10.0

_domains: weakref.WeakKeyDictionary[Client, str | None] = weakref.WeakKeyDictionary()
"""The domain each connection was bound to (a client never bound uses the configured one)."""


class NoJetStream(RuntimeError):
    """Nothing answered a JetStream API request: no JetStream in that domain."""


def configured_domain() -> str | None:
    """The domain named by ``FLEETLOG_JS_DOMAIN`` (None when unset or empty)."""
    return check_domain(os.environ.get(ENV_DOMAIN, "").strip() or None)


def check_domain(domain: str | None) -> str | None:
    """``domain`` if it can be one subject token (no ``.``, ``*``, ``>`` or whitespace)."""
    if domain is not None and (
        not domain or any(ch in domain for ch in ".*>") or domain.split() != [domain]
    ):
        raise ValueError(
            f"{domain!r} is not a JetStream domain: a domain is one subject token "
            "(no '.', '*', '>' or whitespace)"
        )
    return domain


def api_prefix(domain: str | None) -> str:
    """``$JS.API`` (the connection's own domain), or ``$JS.<domain>.API``."""
    return f"$JS.{domain}.API" if domain else DEFAULT_PREFIX


def bind(nc: Client, domain: str | None) -> None:
    """Every later :func:`of` and :func:`jetstream` of ``nc`` addresses ``domain``."""
    _domains[nc] = check_domain(domain)


def domain_of(nc: Client) -> str | None:
    try:
        return _domains[nc]
    except KeyError:
        return configured_domain()


def of(nc: Client) -> JetStreamApi:
    """The JetStream API of ``nc``'s domain."""
    return JetStreamApi(nc, domain_of(nc))


def jetstream(nc: Client, **options: Any) -> JetStreamContext:
    """nats-py's JetStream context of ``nc``'s domain (``options`` as for ``nc.jetstream``)."""
    return nc.jetstream(domain=domain_of(nc), **options)


@dataclass(frozen=True, slots=True)
class StreamSubjects:
    """The API subjects of one stream in one domain, built once."""

    prefix: str
    stream: str
    info: str
    create: str
    update: str
    direct_get: str
    msg_get: str
    consumer_create: str

    @classmethod
    def build(cls, prefix: str, stream: str) -> StreamSubjects:
        return cls(
            prefix=prefix,
            stream=stream,
            info=f"{prefix}.STREAM.INFO.{stream}",
            create=f"{prefix}.STREAM.CREATE.{stream}",
            update=f"{prefix}.STREAM.UPDATE.{stream}",
            direct_get=f"{prefix}.DIRECT.GET.{stream}",
            msg_get=f"{prefix}.STREAM.MSG.GET.{stream}",
            consumer_create=f"{prefix}.CONSUMER.CREATE.{stream}",
        )

    def consumer_next(self, consumer: str) -> str:
        return f"{self.prefix}.CONSUMER.MSG.NEXT.{self.stream}.{consumer}"

    def consumer_delete(self, consumer: str) -> str:
        return f"{self.prefix}.CONSUMER.DELETE.{self.stream}.{consumer}"


class JetStreamApi:
    """The raw JetStream API of one client in one domain."""

    __slots__ = ("domain", "nc", "prefix")

    def __init__(self, nc: Client, domain: str | None) -> None:
        self.nc = nc
        self.domain = domain
        self.prefix = api_prefix(domain)

    def stream(self, name: str) -> StreamSubjects:
        return StreamSubjects.build(self.prefix, name)

    def jetstream(self, **options: Any) -> JetStreamContext:
        return self.nc.jetstream(domain=self.domain, **options)

    async def call(
        self, subject: str, body: dict[str, Any] | None = None, *, timeout: float = API_TIMEOUT
    ) -> dict[str, Any]:
        """One JSON API request; the answer as JetStream gives it (an ``error`` included).

        Raises :class:`NoJetStream` when nothing answers (no JetStream in the domain)."""
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout)
        except NoRespondersError:
            where = f"domain {self.domain!r}" if self.domain else "this server's domain"
            raise NoJetStream(f"no JetStream answers {subject} ({where})") from None
        result: dict[str, Any] = json.loads(reply.data)
        return result

    async def stream_info(self, name: str) -> dict[str, Any]:
        return await self.call(self.stream(name).info)

    async def create_stream(self, config: dict[str, Any]) -> dict[str, Any]:
        return await self.call(self.stream(config["name"]).create, config)

    async def update_stream(self, config: dict[str, Any]) -> dict[str, Any]:
        return await self.call(self.stream(config["name"]).update, config)


async def direct_get_position(
    nc: Client, stream: StreamSubjects, request: dict[str, Any]
) -> tuple[int, int] | None:
    """(sequence, stored ns) of the message a direct get (``{"seq": …}``, ``{"start_time":
    …}``) finds, or None: where a point of the log is, without its bytes."""
    reply = await nc.request(stream.direct_get, json.dumps(request).encode(), timeout=5)
    headers = reply.headers or {}
    if headers.get("Status"):
        return None
    return int(headers["Nats-Sequence"]), (parse_stamp(headers.get("Nats-Time-Stamp")) or 0)


async def stream_end(nc: Client, stream: StreamSubjects) -> tuple[int, int | None]:
    """(last sequence, its stored ns) of the stream; (0, None) while it is empty."""
    reply = await nc.request(stream.info, b"", timeout=5)
    info = json.loads(reply.data)
    if "error" in info:
        raise FleetError(f"cannot read stream {stream.stream}: {info['error']}", code="unavailable")
    last = int(info["state"]["last_seq"])
    return last, (parse_stamp(info["state"]["last_ts"]) if last else None)
