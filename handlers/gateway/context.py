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
from typing import TYPE_CHECKING, Any, Protocol

from core.access.commandauth import Identity
from core.access.signing import Signature
from core.api.commands import Command
from core.errors import FleetError
from projections.policies import NamespacePolicies, Policies
from streams.commandbus import DEADLINE_HEADER
from streams.subjects import AggregateRef

if TYPE_CHECKING:
    from handlers.fairgate import Seat


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
    admission: list[str] = field(default_factory=list)
    """What each admission stage changed, refused, warned about or recorded
    (``mutated by LimitRanger: defaulted ...``), in the chain's order, for the audit record."""
    warnings: list[str] = field(default_factory=list)
    """Warnings for the client (Pod Security's ``warn`` level), sent with the answer."""
    audit_annotations: dict[str, str] = field(default_factory=dict)
    """Annotations for the audit record (Pod Security's ``audit`` level), as Kubernetes'."""
    seat: Seat | None = None
    """The command's seat of its priority level (API Priority and Fairness), held until it is
    answered."""
    headers: Mapping[str, str] | None = None
    """The request's NATS headers (its deadline, its signature)."""
    signature: Signature | None = None
    """What the command's signer signed (kept in the audit record, to verify later)."""
    nonce_key: str = ""
    """The verified signature's nonce key (``core.access.signing.nonce_key``; empty when
    unsigned or not verified): what the gateways' nonce memory knows it by."""
    delivery: str = ""
    """This delivery's id, stamped with the nonce on the first event appended
    (``handlers.gateway.nonces``): tells this delivery's own earlier attempt from a replay."""
    appended: bool = False
    """Whether this delivery appended events (else its nonce is claimed before the answer)."""
    identity: Identity | None = None
    """The verified identity the command acts as (None: unsigned, on an open server, where
    the actor is the stated one)."""
    impersonator: Identity | None = None
    """The verified caller when it acts as someone else (``--as``)."""
    authorization: list[str] = field(default_factory=list)
    """The rule (or privilege) that allowed or denied each authorization check."""
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


def check_deadline(ctx: CommandContext, *, margin_ns: int = 0) -> None:
    """Refuse the command if its client has stopped waiting for it, or will have before the
    work still to do (``margin_ns``: what an append has been taking) is done.

    The margin is at most three quarters of what the client gave the command when it arrived:
    when appends are slow but steady, a command that has not queued still gets its chance (it
    would be answered in time), and only one that waited here is refused early."""
    if not ctx.deadline_ns:
        return
    margin_ns = min(margin_ns, max(0, ctx.deadline_ns - ctx.received_ns) * 3 // 4)
    now = time.time_ns()
    if now + margin_ns <= ctx.deadline_ns:
        return
    if now > ctx.deadline_ns:
        when = f"passed {(now - ctx.deadline_ns) / 1e6:.0f} ms before the gateway could apply it"
    else:
        when = (
            f"was {(ctx.deadline_ns - now) / 1e6:.0f} ms away, less than an append takes "
            f"now ({margin_ns / 1e6:.0f} ms)"
        )
    raise DeadlineExceeded(
        f"the client's deadline {when}; the command was not applied "
        "(retry with the same idempotency key)"
    )


class AppendLatency:
    """How long the last step (append, acknowledgement) has been taking lately: a moving
    average, so that under a burst a command is refused when its client would have given up
    before its append is acknowledged (otherwise it would land unseen, and only a retry would
    tell the client).

    The average fades while nothing is appended (it halves every :attr:`HALF_LIFE_NS`): were
    every command refused after a few slow appends (a NATS outage), no append would ever
    teach it that appends are fast again."""

    WEIGHT = 0.2
    SAFETY = 2.0
    """The margin is this many times the average: under a growing burst the average trails
    the append at hand, and the answer still has to reach the client after the
    acknowledgement."""
    HALF_LIFE_NS = 1_000_000_000

    def __init__(self) -> None:
        self.average_ns = 0.0
        self._observed_ns = 0
        """When (monotonic ns) the average was last updated."""

    def margin_ns(self, now_ns: int) -> int:
        """The margin to keep before a deadline at ``now_ns`` (monotonic)."""
        if not self.average_ns:
            return 0
        faded = 0.5 ** (max(0, now_ns - self._observed_ns) / self.HALF_LIFE_NS)
        return int(self.SAFETY * self.average_ns * faded)

    def observe(self, elapsed_ns: int, *, now_ns: int) -> None:
        """An append took ``elapsed_ns``, acknowledged at ``now_ns`` (monotonic)."""
        current = self.margin_ns(now_ns) / self.SAFETY
        self.average_ns = current + self.WEIGHT * (elapsed_ns - current)
        self._observed_ns = now_ns


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
