"""The command gateway: the one door through which every change enters the log.

Commands arrive as NATS requests on ``fleet.cmd.<kind>.<verb>`` (queue group ``fleet-gateway``,
so any number of gateways share the load). Each request runs through a pipeline of stages, one
module per group of them, in the order a command meets them:

  size limit → decode → route & schema     ``intake``
  → target (manifest or name)              ``admission`` (``resolve_target``)
  → authenticate → authorize               ``identity``
  → fingerprint                            ``intake``
  → admission: mutating, then validating   ``admission`` (``Admit``: LimitRanger, Priority,
    stages, in kube-apiserver's order        DefaultTolerationSeconds; NamespaceLifecycle,
                                             LimitRanger, PodSecurity, Priority)
  → decide & append (ResourceQuota charged) ``execute``
  → reply (+ warnings), audit record        ``service``, ``audit`` (names the admission
                                             stages that changed or refused the command)

The stages share only ``context`` (:class:`CommandContext`, :class:`Stage`); ``service`` holds
:class:`Gateway`, which builds the pipeline and serves it.

A stage either lets the command through, answers early (an idempotent replay), or raises a
``FleetError`` that becomes a structured reply ``{"ok": false, "error": {code, message,
field, errors}}`` (``errors`` lists every field error of an invalid manifest); a rejected command
appends nothing. Authentication verifies a signed command's signer (the verified user is the
actor; ``--as`` is impersonation) and authorization asks RBAC (``identity``, ``access``); an
unsigned command is refused behind the NATS wall and acts as its stated identity, unchecked,
on an open server. ``reviews`` answers ``auth whoami`` and ``auth can-i`` beside the pipeline.

Decisions are taken on cached aggregates (``streams.repository``); the append's expectation
catches a stale cache, and the command is then decided again on fresh state (up to a few times),
unless the caller pinned an ``expected_version``, in which case it gets a conflict.

Idempotency costs no extra round trip. A command's write token is its idempotency key plus a
hash of the request, and its events get ids derived from that token. A retry whose original
landed finds those events on the aggregate (the repository keeps the ids of the latest events of
each one) and is answered with them; a resend that races the original is recognised by the event
store (its own write right after the expectation) or de-duplicated by JetStream's Msg-Id window.
A key reused for a *different* request is a different command: it is never mistaken for the
earlier one.
"""

from handlers.gateway.audit import audit_record
from handlers.gateway.context import CommandContext, Stage
from handlers.gateway.identity import AllowAll, IdentityProvider, Policy, stated_identity
from handlers.gateway.intake import MAX_COMMAND_BYTES
from handlers.gateway.service import QUEUE_GROUP, Gateway

__all__ = [
    "MAX_COMMAND_BYTES",
    "QUEUE_GROUP",
    "AllowAll",
    "CommandContext",
    "Gateway",
    "IdentityProvider",
    "Policy",
    "Stage",
    "audit_record",
    "stated_identity",
]
