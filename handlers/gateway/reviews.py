"""``fleetlog auth whoami`` and ``fleetlog auth can-i``: kube's SelfSubjectReview and
SelfSubjectAccessReview, answered by the gateway with the caller's verified identity.

Why this exists: a user needs to learn who the cluster takes them for and what it would let
them do, asked of the same authentication and the same RBAC policy that decide their commands
(so the answer cannot drift from the decision). Both are requests on command subjects
(``fleet.cmd.selfsubjectreview.create``, ``fleet.cmd.selfsubjectaccessreview.create``), signed
like commands, answered before the command pipeline, appending nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgpack

from core.access.commandauth import impersonation, request_for
from core.errors import FleetError
from handlers.gateway.context import CommandContext
from handlers.gateway.identity import Authenticate
from projections.access import AccessModel, authorize
from streams.commandbus import ACCESS_REVIEW_SUBJECT, WHOAMI_SUBJECT

REVIEW_SUBJECTS = frozenset({WHOAMI_SUBJECT, ACCESS_REVIEW_SUBJECT})


async def review(
    *,
    subject: str,
    data: bytes,
    headers: Mapping[str, str] | None,
    authenticate: Authenticate,
    access: AccessModel,
) -> dict[str, Any]:
    """The answer to a review request (``ok: false`` with the error when it is refused)."""
    ctx = CommandContext(subject=subject, data=data, received_ns=time.time_ns(), headers=headers)
    try:
        request = msgpack.unpackb(data, raw=False)
        if not isinstance(request, dict) or not isinstance(request.get("actor"), str):
            raise FleetError("a review is a map with actor and body", code="invalid")
        stated = request["actor"]
        await authenticate.verify(ctx, stated=stated)
        if ctx.signature is not None and ctx.nonce_key:
            # A review appends nothing: its nonce is claimed for every gateway, unawaited
            # (its replay would only be answered again).
            authenticate.nonces.claim_later(ctx.signature)
        if ctx.impersonator is not None and ctx.identity is not None:
            # As kube's impersonation filter: refused before anything is answered.
            decision = await authorize(
                access, ctx.impersonator, impersonation(ctx.identity.user.name)
            )
            if not decision.allowed:
                raise FleetError(decision.reason, code="forbidden")
        if subject == WHOAMI_SUBJECT:
            return whoami(ctx, stated)
        body = request.get("body") if isinstance(request.get("body"), dict) else {}
        return await can_i(ctx, body, access)
    except FleetError as exc:
        return {"ok": False, "error": exc.as_dict()}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": {"code": "invalid", "message": f"bad review: {exc}"}}


def whoami(ctx: CommandContext, stated: str) -> dict[str, Any]:
    if ctx.identity is None:
        # Unsigned, on an open server: nothing is verified.
        return {"ok": True, "user": stated, "groups": [], "verified": False}
    answer: dict[str, Any] = {
        "ok": True,
        "user": ctx.identity.user.name,
        "groups": list(ctx.identity.user.groups),
        "verified": True,
    }
    if ctx.impersonator is not None:
        answer["impersonator"] = ctx.impersonator.user.name
    return answer


async def can_i(
    ctx: CommandContext, body: Mapping[str, Any], access: AccessModel
) -> dict[str, Any]:
    verb, kind = str(body.get("verb") or ""), str(body.get("resource") or "")
    if not verb or not kind:
        raise FleetError("can-i needs a verb and a resource", code="invalid")
    if ctx.identity is None:
        return {
            "ok": True,
            "allowed": True,
            "reason": "unsigned request on a server without authorization: nothing is checked",
        }
    if ctx.impersonator is not None:
        decision = await authorize(access, ctx.impersonator, impersonation(ctx.identity.user.name))
        if not decision.allowed:
            raise FleetError(decision.reason, code="forbidden")
    request = request_for(
        verb=verb,
        kind=kind,
        namespace=str(body.get("namespace") or ""),
        name=str(body.get("name") or ""),
    )
    decision = await authorize(access, ctx.identity, request)
    return {"ok": True, "allowed": decision.allowed, "reason": decision.reason}
