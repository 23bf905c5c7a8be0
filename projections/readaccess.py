"""RBAC on every read of the NATS door: who asks a query service, and may they see this.

Why this exists: a user who may not see a namespace must not see its objects, their history or
their endpoints, events, logs or usage (issue 17). The query services (``projections.query``,
``projections.history_service``, ``projections.endpoints``, ``projections.streamreads``)
share this one gate, and it shares
everything with the gateway's: the signature check and the users and RBAC policy of
``projections.access``, the kube requests of ``core.access.readauth``.

* A signed query is verified as a command is (known, unrevoked signer; untampered subject and
  payload; signed within 60 s of now; ``Fleet-Impersonate`` allowed only with the
  ``impersonate`` permission, then the target's rights decide), refused ``unauthorized``
  otherwise.
* Queries keep no nonce memory: the answer to a signed query goes only to its signer's own
  inbox (a query asking for its answer elsewhere is refused), which the server lets no other
  connection read, and a query changes nothing. So a replayed query, within the minute its
  signature is fresh, shows its replayer nothing and does nothing.
* An unsigned query is refused behind the NATS wall (``require_signatures``); on an open server
  (``--nats-url`` without authorization, the tests' fixtures) it is answered as before, with
  everything visible: anyone who reaches such a server may read anything (insecure by design
  of that mode, as for commands).
* A refusal is kube-apiserver's Forbidden (``pods is forbidden: User "bob" cannot list resource
  "pods" in API group "" at the cluster scope``), code ``forbidden``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from core.access import rbac
from core.access.commandauth import Identity, impersonation
from core.access.readauth import read_forbidden
from core.access.signing import SignatureRefused, signature_from_headers
from core.errors import FleetError
from projections.access import (
    AccessModel,
    Forbidden,
    Unauthorized,
    authorize,
    is_signed,
    verify_signed,
)
from streams.commandbus import ACTOR_GROUPS
from streams.identity import inbox_prefix
from streams.serving import msgpack_message_answers

Reader = Identity | None
"""Who a query is answered for: a verified identity, or None for an unsigned query on an open
server (nothing is checked)."""

ReadAnswer = Callable[[dict[str, Any], Reader], Awaitable[dict[str, Any]]]


class ReadAccess:
    """Authenticates a query and authorizes what it reads (see the module docstring)."""

    def __init__(
        self, access: AccessModel | None = None, *, require_signatures: bool = False
    ) -> None:
        """``access``: the users and RBAC objects (the gateway's, in ``fleetlog up``; None: no
        signature can be verified, so a signed query is refused); ``require_signatures``:
        refuse unsigned queries (behind the NATS wall)."""
        self._access = access
        self._require = require_signatures

    async def reader(self, msg: Msg, request: Mapping[str, Any]) -> Reader:
        """Who sent ``msg`` (:class:`Unauthorized` when it does not prove it, or is not
        allowed to act as whom it asks to)."""
        headers = msg.headers or {}
        if not is_signed(headers):
            if self._require:
                raise Unauthorized(
                    "the query is not signed: this cluster answers only queries signed with a "
                    "user's credentials (fleetlog config get-contexts; --credentials)"
                )
            return None
        stated = request.get("actor")
        try:
            signature = signature_from_headers(headers)
            verified = await verify_signed(
                self._access, signature, subject=msg.subject, payload=msg.data,
                headers=headers, stated=stated if isinstance(stated, str) else "",
                stated_groups=request.get(ACTOR_GROUPS), now_ns=time.time_ns(), guard=None,
                receiver="query service",
            )  # fmt: skip
        except SignatureRefused as exc:
            raise Unauthorized(str(exc)) from None
        own_inbox = inbox_prefix(signature.signer) + "."
        if not (msg.reply or "").startswith(own_inbox):
            raise Unauthorized(
                f"a signed query is answered only to its signer's inbox ({own_inbox}…), "
                "not to another"
            )
        if verified.impersonator is not None:
            target = verified.identity.user.name
            await self.check(verified.impersonator, impersonation(target))
        return verified.identity

    async def check(self, reader: Reader, request: rbac.Request) -> None:
        """Raise :class:`Forbidden` unless ``reader`` may make ``request``."""
        if reader is None:
            return
        assert self._access is not None  # a verified reader was verified against it
        decision = await authorize(self._access, reader, request)
        if not decision.allowed:
            raise Forbidden(read_forbidden(reader.user, request))


def read_answers(
    nc: Client, access: ReadAccess, answer: ReadAnswer, *, failure_event: str
) -> Callable[[Msg], Awaitable[None]]:
    """A request handler that answers each query for its verified reader (see
    ``streams.serving.msgpack_answers`` for how refusals and failures are answered)."""

    async def for_reader(request: dict[str, Any], msg: Msg) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise FleetError("a query is a msgpack map", code="invalid")
        return await answer(request, await access.reader(msg, request))

    return msgpack_message_answers(nc, for_reader, failure_event=failure_event)
