"""The stages that read what arrived: its size, its encoding, whether its client still waits
for it (``in_time``), its kind and verb (``route`` parses the command against its schema), and
finally its fingerprint.

Why this exists: a command is refused as early and as cheaply as possible: an oversized or
undecodable request never reaches the schema, and an unknown kind never reaches a policy.
A command whose client has
stopped waiting (its deadline, sent in the ``Fleet-Deadline`` header, has passed while it queued
behind a burst) is refused unapplied: work done for nobody would only land after the client gave
up, and the client, not knowing, could not tell a lost command from a late one. Its retry (same
idempotency key) is then decided afresh, or answered "already done" if an earlier try landed.
``fingerprint`` runs later (after authentication: who asked is part of what was asked), but it
too only looks at the request: it is what tells a retry from a reused idempotency key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from core.api.catalog import KINDS
from core.api.commands import parse_command
from core.errors import FleetError, UnknownKind, ValidationFailed
from core.meta.model import show
from handlers.gateway.context import CommandContext, check_deadline
from streams.subjects import parse_command_subject

MAX_COMMAND_BYTES = 256 * 1024
KIND_BY_TOKEN = {kind.lower(): kind for kind in KINDS}


async def limit_size(ctx: CommandContext) -> None:
    if len(ctx.data) > MAX_COMMAND_BYTES:
        raise ValidationFailed(
            f"command is {len(ctx.data)} bytes; the limit is {MAX_COMMAND_BYTES} bytes",
            code="payload_too_large",
        )


async def decode(ctx: CommandContext) -> None:
    try:
        raw = msgpack.unpackb(ctx.data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ValidationFailed(
            f"command is not valid msgpack ({type(exc).__name__})", code="malformed"
        ) from exc
    if not isinstance(raw, dict):
        raise ValidationFailed("command must be a msgpack map", code="malformed")
    ctx.raw = raw


async def in_time(ctx: CommandContext) -> None:
    """Refuse a command whose client has already given up on it. ``execute`` checks again
    just before the append; an append that lands after the deadline all the same is what the
    client's retry learns of ("already done")."""
    check_deadline(ctx)


def unknown_kind(kind_token: str, raw: dict[str, Any]) -> FleetError:
    """The refusal of a command for a kind fleetlog does not serve, in kubectl's words: a
    manifest's kind and apiVersion as written (``no matches for kind "Gizmo" in version
    "example.com/v1"``), else the kind the subject names. Clients send such commands rather
    than refusing them themselves, so that the refusal is audited like any other."""
    body = raw.get("body")
    manifest = body.get("manifest") if isinstance(body, dict) else None
    if isinstance(manifest, dict):
        written, version = manifest.get("kind"), manifest.get("apiVersion", "")
        if isinstance(written, str) and written and written.lower() == kind_token:
            return UnknownKind(
                f"no matches for kind {show(written)} in version {show(version)}; "
                f"known kinds: {', '.join(sorted(KINDS))}",
                field="kind",
            )
    if not kind_token:
        return ValidationFailed('missing required field "kind"', field="kind")
    return UnknownKind(
        f"the server doesn't have a resource type {show(kind_token)}; known: "
        f"{', '.join(sorted(KIND_BY_TOKEN))}"
    )


async def route(ctx: CommandContext) -> None:
    kind_token, verb = parse_command_subject(ctx.subject)
    kind = KIND_BY_TOKEN.get(kind_token)
    if kind is None:
        raise unknown_kind(kind_token, ctx.raw)
    ctx.kind = kind
    ctx.command = parse_command(kind, verb, ctx.raw)
    ctx.verb = ctx.command.verb


async def fingerprint(ctx: CommandContext) -> None:
    """A hash of what was asked, so a retry can be told apart from a reused idempotency key."""
    ctx.request_hash = hashlib.sha256(
        msgpack.packb(
            [ctx.subject, ctx.actor, ctx.raw.get("body"), ctx.raw.get("expected_version")],
            use_bin_type=True,
        )
    ).hexdigest()
