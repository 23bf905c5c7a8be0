"""Who is asking, and may they: the authenticate and authorize stages and the two seams they
are built on, :class:`IdentityProvider` and :class:`Policy`.

Why this exists: fleetlog has no credentials yet, so the caller's *stated* identity is recorded
as the actor (:func:`stated_identity`) and every caller is allowed (:class:`AllowAll`). The
front door (a later issue) plugs real providers and policies into these seams; nothing else in
the gateway changes when it does.
"""

from __future__ import annotations

from typing import Protocol

from core.errors import FleetError
from handlers.gateway.context import CommandContext


class IdentityProvider(Protocol):
    def __call__(self, ctx: CommandContext) -> str: ...


def stated_identity(ctx: CommandContext) -> str:
    """Until fleetlog has credentials, the caller is who the command says it is."""
    assert ctx.command is not None
    return ctx.command.actor


class Authenticate:
    def __init__(self, identify: IdentityProvider = stated_identity) -> None:
        self._identify = identify

    async def __call__(self, ctx: CommandContext) -> None:
        ctx.actor = self._identify(ctx)


class Policy(Protocol):
    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool: ...


class AllowAll:
    """The policy until authorization arrives: every caller may do everything."""

    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool:
        return True


class Authorize:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        namespace = ctx.ref.namespace
        if not self._policy.allows(ctx.actor, ctx.verb, ctx.kind, namespace):
            where = namespace or "the cluster"
            ctx.denied = True
            raise FleetError(
                f"{ctx.actor} may not {ctx.verb} {ctx.kind.lower()}s in {where}",
                code="forbidden",
            )
