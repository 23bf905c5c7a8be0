"""The client side of the command path: send a command, get the outcome.

A command is a NATS request on ``fleet.cmd.<kind>.<verb>`` carrying a msgpack map; the answer is
a msgpack map with ``ok`` and either the event sequences or a structured error. The client picks
an idempotency key once per logical command and reuses it on every retry, so a retry after a
timeout is applied at most once however many gateways see it.

Every try carries its deadline (``Fleet-Deadline``: when this client stops waiting), so a
gateway that only reaches the command later refuses it unapplied instead of applying it for
nobody; a refusal for that reason that still reaches the client is retried like a timeout. A
retry of a command that did land is answered with the first outcome (``replayed``: "already
done"), so a client that timed out learns what became of its command.

Every try of a command sent through a connection with credentials is signed with that
connection's nkey (``core.access.signing``: subject, payload digest, time, a fresh nonce per
try, so a retry is not mistaken for a replay), and the gateway records the verified signer as
the actor. The stated ``actor`` is then only a request to act as someone else (``--as``:
impersonation, marked by ``Fleet-Impersonate``), which the gateway allows only to callers with
the ``impersonate`` permission.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.access.signing import sign
from core.errors import FieldError, FleetError
from streams.connection import refusal_for
from streams.identity import credentials_of
from streams.subjects import command_subject

DEADLINE_HEADER = "Fleet-Deadline"
"""Unix time in nanoseconds after which the client no longer waits for the answer. Clocks of
clients and gateways are assumed synchronised to well under a client's timeout (as Kubernetes
assumes for leases)."""
IMPERSONATE_HEADER = "Fleet-Impersonate"
"""Set (to the command's stated actor) when the sender asks to act as that identity; without
it a signed command's actor is its signer."""
ACTOR_GROUPS = "actor_groups"
"""The command's key (inside the signed payload) naming the impersonated actor's groups (kube's
``Impersonate-Group``): honoured only from a control-plane signer, the Kubernetes door, which
authenticated its caller's groups itself (a client certificate's O entries)."""
WHOAMI_SUBJECT = command_subject("SelfSubjectReview", "create")
"""``fleetlog auth whoami``: who the gateway verifies the caller to be."""
ACCESS_REVIEW_SUBJECT = command_subject("SelfSubjectAccessReview", "create")
"""``fleetlog auth can-i``: would RBAC allow the caller this verb on this resource."""


THROTTLED_RETRIES = 3
"""How many times a command refused as "too many requests" is sent again, each after the
``Retry-After`` the gateway gave, before the refusal reaches the caller (client-go retries a 429
up to 10 times; a CLI user waits less patiently)."""
MAX_RETRY_AFTER_S = 10.0


class CommandFailed(FleetError):
    """The gateway rejected the command; ``code``/``field`` say why and where."""

    warnings: tuple[str, ...] = ()
    """Warnings admission gave before it refused (shown as kubectl shows them)."""
    details: Mapping[str, Any] = MappingProxyType({})
    """What else the refusal said (an eviction's ``causes`` and ``retry_after``)."""


class NoGateway(FleetError):
    """Nobody serves commands: the server is up but no gateway runs."""

    code = "unavailable"


@dataclass(frozen=True)
class Outcome:
    """What the gateway answered for an accepted command."""

    seqs: list[int]
    events: list[str]
    version: int
    uid: str = ""
    unchanged: bool = False
    replayed: bool = False
    warnings: list[str] = field(default_factory=list)
    """What admission warned about (Pod Security's ``warn`` level): the command was applied;
    a client shows each as ``Warning: ...``, as kubectl does."""
    extra: dict[str, Any] = field(default_factory=dict)


def default_source() -> str:
    """``host/pid``: where this process's commands come from, for the audit trail."""
    return f"{socket.gethostname()}/{os.getpid()}"


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class CommandClient:
    """Sends commands through one NATS connection on behalf of one actor."""

    def __init__(
        self,
        nc: Client,
        *,
        actor: str,
        source: str | None = None,
        impersonate: bool = False,
        groups: Sequence[str] | None = None,
    ) -> None:
        """``impersonate``: ``actor`` is someone the caller asks to act as (``--as``), not
        merely a name for itself (a signed command's actor is otherwise its signer);
        ``groups``: the impersonated actor's groups (:data:`ACTOR_GROUPS`)."""
        self._nc = nc
        self.actor = actor
        self.groups = list(groups) if groups is not None else None
        self.source = source if source is not None else default_source()
        self.impersonate = impersonate
        credentials = credentials_of(nc)
        self._seed = credentials.seed.encode() if credentials is not None else None

    async def send(
        self,
        kind: str,
        verb: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        dry_run: bool = False,
        throttled_retries: int = THROTTLED_RETRIES,
    ) -> Outcome:
        """Send a command (``dry_run``: decided and answered with the object it would make,
        appending nothing; the object is the outcome's ``extra["object"]``).
        ``throttled_retries``: how many "too many requests" refusals are waited out and sent
        again before the refusal is raised (0: at once, for a caller that asks again later
        on its own, as the VPA updater does with an eviction a budget refuses)."""
        # Imported here, not at the top: the command models are pydantic, and a read-only CLI
        # command holds a CommandClient in its session without ever sending, so it should not
        # pay for loading them.
        from core.api.commands import command_message

        key = idempotency_key or new_idempotency_key()
        message = command_message(
            idempotency_key=key,
            actor=self.actor,
            body=body,
            expected_version=expected_version,
            correlation_id=correlation_id,
            causation_id=causation_id,
            source=self.source,
            dry_run=dry_run,
        )
        if self.impersonate and self.groups is not None:
            message[ACTOR_GROUPS] = self.groups
        payload = msgpack.packb(message, use_bin_type=True)
        return await self.send_raw(
            command_subject(kind, verb), payload, timeout, attempts,
            throttled_retries=throttled_retries,
        )  # fmt: skip

    async def review(self, subject: str, body: dict[str, Any], timeout: float = 5.0) -> Outcome:
        """Ask the gateway a review (:data:`WHOAMI_SUBJECT`, :data:`ACCESS_REVIEW_SUBJECT`),
        signed as a command is; the answer's fields are in ``extra``."""
        payload = msgpack.packb({"actor": self.actor, "body": body}, use_bin_type=True)
        return await self.send_raw(subject, payload, timeout, attempts=1)

    async def send_raw(
        self,
        subject: str,
        payload: bytes,
        timeout: float = 5.0,
        attempts: int = 3,
        *,
        throttled_retries: int = THROTTLED_RETRIES,
    ) -> Outcome:
        """Send pre-encoded bytes (retrying on timeout, and politely after a "too many
        requests" refusal) and decode the answer."""
        throttled = 0
        while True:
            data = await self._request(subject, payload, timeout, attempts)
            retry_after = _retry_after(data)
            if retry_after is None or throttled >= throttled_retries:
                return decode_reply(data)
            throttled += 1
            await asyncio.sleep(min(retry_after, MAX_RETRY_AFTER_S))

    async def _request(self, subject: str, payload: bytes, timeout: float, attempts: int) -> bytes:
        for attempt in range(attempts):
            headers = self.headers(subject, payload, timeout=timeout)
            try:
                reply = await self._nc.request(subject, payload, timeout=timeout, headers=headers)
                if attempt < attempts - 1 and b"timeout" in reply.data and _late(reply.data):
                    continue
                break
            except NoRespondersError as exc:
                raise NoGateway(
                    "no gateway is serving commands: is `fleetlog up` running?"
                ) from exc
            except MaxPayloadError as exc:
                raise CommandFailed(
                    f"the command is {len(payload)} bytes, over the server's message limit",
                    code="payload_too_large",
                ) from exc
            except NatsTimeout:
                refusal = refusal_for(subject)
                if refusal is not None:
                    raise CommandFailed(
                        f"the server refused this command to your identity ({refusal}): "
                        "ask an admin (group system:masters) to send it",
                        code="forbidden",
                    ) from None
                if attempt == attempts - 1:
                    raise CommandFailed(
                        f"no answer from the gateway after {attempts} tries of {timeout:.0f}s",
                        code="timeout",
                    ) from None
        return reply.data

    def headers(self, subject: str, payload: bytes, *, timeout: float) -> dict[str, str]:
        """One try's headers: its deadline and, with credentials, its signature."""
        now = time.time_ns()
        headers = {DEADLINE_HEADER: str(now + int(timeout * 1e9))}
        headers.update(signature_headers(self._seed, subject=subject, payload=payload, now_ns=now))
        if self.impersonate:
            headers[IMPERSONATE_HEADER] = self.actor
        return headers


def signature_headers(
    seed: bytes | None, *, subject: str, payload: bytes, now_ns: int
) -> dict[str, str]:
    """The signature headers of one request (a command's try, a query) signed with ``seed``
    and a fresh nonce; none without a seed (a connection without credentials)."""
    if seed is None:
        return {}
    signature = sign(
        seed, subject=subject, payload=payload, signed_at_ns=now_ns,
        nonce=secrets.token_urlsafe(16),
    )  # fmt: skip
    return signature.headers()


def _retry_after(data: bytes) -> float | None:
    """The seconds to wait before sending again when the gateway refused the command as "too
    many requests" (nothing was done); None for any other answer."""
    answer = msgpack.unpackb(data, raw=False)
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or error.get("code") != "too_many_requests":
        return None
    value = error.get("retry_after", 1)
    return float(value) if isinstance(value, int | float) and value >= 0 else 1.0


def _late(data: bytes) -> bool:
    """The gateway refused the command because this try's deadline had passed (nothing was
    applied): worth another try, as a timeout is."""
    answer = msgpack.unpackb(data, raw=False)
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and error.get("code") == "timeout"


def decode_reply(data: bytes) -> Outcome:
    answer = msgpack.unpackb(data, raw=False)
    if not answer.get("ok"):
        error = answer.get("error", {})
        errors = [
            FieldError(item.get("field"), str(item.get("message", "")))
            for item in error.get("errors") or ()
            if isinstance(item, dict)
        ]
        if error.get("errors_omitted"):
            errors.append(FieldError(None, f"... and {error['errors_omitted']} more errors"))
        failed = CommandFailed(
            error.get("message", "rejected"),
            field=error.get("field"),
            code=error.get("code"),
            errors=errors,
        )
        failed.warnings = tuple(str(w) for w in answer.get("warnings") or ())
        plain = {"code", "message", "field", "errors", "errors_omitted"}
        failed.details = {k: v for k, v in error.items() if k not in plain}
        raise failed
    known = {"ok", "seqs", "events", "version", "uid", "unchanged", "replayed", "warnings"}
    return Outcome(
        seqs=answer.get("seqs", []),
        events=answer.get("events", []),
        version=answer.get("version", 0),
        uid=answer.get("uid", ""),
        unchanged=answer.get("unchanged", False),
        replayed=answer.get("replayed", False),
        warnings=[str(w) for w in answer.get("warnings") or ()],
        extra={k: v for k, v in answer.items() if k not in known},
    )
