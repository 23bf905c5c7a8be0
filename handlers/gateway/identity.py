"""Who is asking, and may they: the authenticate and authorize stages.

Why this exists: the actor of every event must be the identity that really sent the command
(issue 17). :class:`Authenticate` verifies a signed command (``core.access.signing``) against
the keys the cluster admits (:class:`projections.access.AccessModel`, whose
:func:`~projections.access.verify_signed` the query services share): the verified user
becomes the actor, the signature is kept for the audit record, and ``--as`` (the
``Fleet-Impersonate`` header) is an impersonation request :class:`Authorize` checks. A
control-plane key that impersonates is the Kubernetes door sending for the caller it
authenticated: that caller (with the groups the signed payload names) is then the actor and
RBAC's subject, the door the recorded impersonator. Forged,
tampered, stale, replayed and unknown signatures are refused (``unauthorized``), nothing is
appended. :class:`Authorize` then asks Kubernetes' RBAC (``core.access.rbac``) whether the
user may do what the command maps to (``core.access.commandauth``); a denial is kube's
Forbidden message (``forbidden``), and the audit record names the rule that decided. A
Role, ClusterRole, RoleBinding or ClusterRoleBinding written is then held to kube's escalation
checks (``core.access.escalation``): it may grant only what its writer holds, unless RBAC
allows the writer ``escalate`` or ``bind``.

An unsigned command is refused where signatures are required (``fleetlog up``'s embedded
server, behind the NATS wall). On an open server (``--nats-url`` without authorization, the
tests' fixtures) it is accepted as its *stated* identity and not authorized by RBAC: anyone
who reaches such a server may act as anyone (insecure; documented). The older
:class:`Policy` seam (``allows(actor, verb, kind, namespace)``) still applies to every command
before RBAC.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from core.access import escalation, rbac
from core.access.commandauth import Identity, command_request, impersonation
from core.access.signing import ReplayGuard, SignatureRefused, nonce_key, signature_from_headers
from core.errors import NotFound
from handlers.gateway.context import CommandContext
from handlers.gateway.nonces import NonceMemory
from projections.access import (
    AccessModel,
    Forbidden,
    Unauthorized,
    authorize,
    is_signed,
    privileged,
    verify_signed,
)
from streams.commandbus import ACTOR_GROUPS
from streams.repository import AggregateRepository


class IdentityProvider(Protocol):
    def __call__(self, ctx: CommandContext) -> str: ...


def stated_identity(ctx: CommandContext) -> str:
    """An unsigned command on an open server: the caller is who the command says it is
    (empty when it says nothing usable: the command is then refused for that)."""
    actor = ctx.raw.get("actor")
    return actor if isinstance(actor, str) else ""


class Authenticate:
    """Verifies a signed command's signer and sets the actor (see the module docstring)."""

    def __init__(
        self,
        identify: IdentityProvider = stated_identity,
        *,
        access: AccessModel | None = None,
        require_signatures: bool = False,
        guard: ReplayGuard | None = None,
        nonces: NonceMemory | None = None,
    ) -> None:
        """``access``: the keys the cluster admits (None: no signature can be verified, so a
        signed command is refused too); ``require_signatures``: refuse unsigned commands;
        ``nonces``: the nonce memory shared by the gateways (None: this gateway's alone,
        ``guard``)."""
        self._identify = identify
        self._access = access
        self._require = require_signatures
        self.nonces = nonces or NonceMemory(None, guard=guard)

    async def __call__(self, ctx: CommandContext) -> None:
        # Runs right after the command is decoded (kube authenticates before anything else),
        # so even a command refused later for its kind or body is audited as its signer's.
        stated = ctx.raw.get("actor")
        stated = stated if isinstance(stated, str) else ""
        if not is_signed(ctx.headers):
            if self._require:
                raise Unauthorized(
                    "the command is not signed: this cluster accepts only commands signed "
                    "with a user's credentials (fleetlog config get-contexts; --credentials)"
                )
            ctx.actor = self._identify(ctx)
            return
        await self.verify(ctx, stated=stated)

    async def verify(self, ctx: CommandContext, *, stated: str) -> None:
        """Set ``ctx``'s identity from its signature (``stated``: the actor it names, an
        impersonation target with ``Fleet-Impersonate``); :class:`Unauthorized` otherwise."""
        headers = ctx.headers or {}
        if not is_signed(headers):
            if self._require:
                raise Unauthorized("the request is not signed")
            return
        try:
            signature = signature_from_headers(headers)
            ctx.signature = signature
            verified = await verify_signed(
                self._access, signature, subject=ctx.subject, payload=ctx.data,
                headers=headers, stated=stated, stated_groups=ctx.raw.get(ACTOR_GROUPS),
                now_ns=time.time_ns(), guard=self.nonces.guard,
            )  # fmt: skip
        except SignatureRefused as exc:
            raise Unauthorized(str(exc)) from None
        # Known to every gateway through the log (it appends) or a claim (it does not):
        # ``handlers.gateway.nonces``.
        ctx.nonce_key = nonce_key(signature)
        ctx.delivery = self.nonces.delivery()
        ctx.identity, ctx.impersonator = verified.identity, verified.impersonator
        ctx.actor = ctx.identity.user.name


class Policy(Protocol):
    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool: ...


class AllowAll:
    """The policy of the older seam when none is given: every caller may do everything."""

    def allows(self, actor: str, verb: str, kind: str, namespace: str) -> bool:
        return True


class Authorize:
    """The older :class:`Policy`, then RBAC for a verified caller (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        *,
        access: AccessModel | None = None,
        repository: AggregateRepository | None = None,
    ) -> None:
        """``repository``: where ``apply`` learns whether its target exists (create or
        patch)."""
        self._policy = policy
        self._access = access
        self._repository = repository

    async def __call__(self, ctx: CommandContext) -> None:
        assert ctx.ref is not None
        namespace = ctx.ref.namespace
        if not self._policy.allows(ctx.actor, ctx.verb, ctx.kind, namespace):
            where = namespace or "the cluster"
            ctx.denied = True
            raise Forbidden(f"{ctx.actor} may not {ctx.verb} {ctx.kind.lower()}s in {where}")
        if ctx.identity is None or self._access is None:
            return  # unsigned, on an open server: the stated identity, unchecked
        if ctx.impersonator is not None:
            decision = await authorize(
                self._access, ctx.impersonator, impersonation(ctx.identity.user.name)
            )
            self._decided(ctx, decision, f"impersonate {ctx.identity.user.name}")
        old: dict[str, Any] | None = None
        if ctx.verb == "apply" and self._repository is not None:
            loaded = await self._repository.load(ctx.ref)
            if loaded.aggregate is not None and loaded.aggregate.exists:
                old = loaded.aggregate.manifest
        request = command_request(
            kind=ctx.kind,
            verb=ctx.verb,
            namespace=namespace,
            name=ctx.ref.name,
            exists=old is not None,
        )
        self._decided(ctx, await authorize(self._access, ctx.identity, request))
        if ctx.verb in ("create", "apply"):
            await self._no_escalation(ctx, self._access, ctx.identity, old=old)

    async def _no_escalation(
        self,
        ctx: CommandContext,
        access: AccessModel,
        identity: Identity,
        *,
        old: dict[str, Any] | None,
    ) -> None:
        """kube's RBAC storage: a role or binding written may grant only what its writer
        holds, unless RBAC allows it ``escalate`` (roles) or ``bind`` (the bound role);
        ``system:masters`` and the control plane are exempt (kube's ``EscalationAllowed``;
        RBAC's own decision already named why). See ``core.access.escalation``."""
        manifest = ctx.manifest
        if manifest is None or privileged(identity):
            return
        verdict = escalation.check_write(access.policy, identity.user, manifest=manifest, old=old)
        if verdict is not None and not verdict.allowed:
            await access.refresh()  # a grant (or the role) written just before is seen
            verdict = escalation.check_write(
                access.policy, identity.user, manifest=manifest, old=old
            )
        if verdict is None:
            return
        if verdict.allowed:
            ctx.authorization.append(verdict.reason)  # it names the check that allowed it
            return
        if verdict.role_missing:
            raise NotFound(verdict.reason)
        ctx.authorization.append(f"escalation check: {verdict.reason}")
        ctx.denied = True
        raise Forbidden(verdict.reason)

    @staticmethod
    def _decided(ctx: CommandContext, decision: rbac.Decision, what: str = "") -> None:
        reason = f"{what}: {decision.reason}" if what else decision.reason
        ctx.authorization.append(reason)
        if not decision.allowed:
            ctx.denied = True
            raise Forbidden(decision.reason)
