"""What the gateway's stages share: the context one command carries through the pipeline, the
shape of a stage, and the namespace policies a command asks for at most once.

It also holds the client's deadline (``Fleet-Deadline``), which two stages check: intake,
and execute right before the append.

Why this exists: every stage reads what earlier stages found and adds its own part (the kind and
verb, the target, the actor, the request's hash, the reply), so the context is the pipeline's
one contract; the stage modules import it and nothing of each other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.api.commands import Command
from core.errors import FleetError
from projections.policies import NamespacePolicies, Policies
from streams.commandbus import DEADLINE_HEADER
from streams.subjects import AggregateRef


@dataclass
class CommandContext:
    """Everything known about one command as it moves through the pipeline."""

    subject: str
    data: bytes
    received_ns: int
    kind: str = ""
    verb: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    command: Command | None = None
    status: dict[str, Any] | None = None
    actor: str = ""
    ref: AggregateRef | None = None
    manifest: dict[str, Any] | None = None
    request_hash: str = ""
    reply: dict[str, Any] | None = None
    denied: bool = False
    """Refused by authorization (audited as ``denied``, not ``rejected``)."""
    deadline_ns: int = 0
    """When the client stops waiting for the answer (unix ns, its ``Fleet-Deadline`` header;
    0: it did not say). Work past it is refused, not done for nobody (``intake.in_time``)."""
    policies: Policies | None = None
    """The namespace's LimitRanges and ResourceQuotas, asked once per command (admission and
    execution both need them; each question costs a round trip to the server)."""

    @property
    def correlation_id(self) -> str:
        if self.command is None:
            return ""
        return self.command.correlation_id or self.command.idempotency_key


def deadline_of(headers: Mapping[str, str] | None) -> int:
    """The deadline a request's headers carry (0: none, or not a number)."""
    if not headers:
        return 0
    value = headers.get(DEADLINE_HEADER)
    return int(value) if value and value.isdigit() else 0


class DeadlineExceeded(FleetError):
    """The client's deadline passed before the command was applied; nothing was written."""

    code = "timeout"


def check_deadline(ctx: CommandContext) -> None:
    """Refuse the command if its client has stopped waiting for it."""
    if ctx.deadline_ns and time.time_ns() > ctx.deadline_ns:
        late_ms = (time.time_ns() - ctx.deadline_ns) / 1e6
        raise DeadlineExceeded(
            f"the client's deadline passed {late_ms:.0f} ms before the gateway could apply "
            "this command; it was not applied (retry with the same idempotency key)"
        )


class Stage(Protocol):
    """One step of the pipeline; raises FleetError to reject, sets ``ctx.reply`` to answer."""

    async def __call__(self, ctx: CommandContext) -> None: ...


async def policies_of(ctx: CommandContext, policies: NamespacePolicies) -> Policies:
    """The LimitRanges and ResourceQuotas of the command's namespace, asked of ``policies``
    once per command (after it arrived, so a policy written before it was sent is seen)."""
    if ctx.policies is None:
        assert ctx.ref is not None
        ctx.policies = await policies.in_namespace(ctx.ref.namespace)
    return ctx.policies
