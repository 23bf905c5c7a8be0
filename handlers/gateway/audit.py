"""The audit record of one answered command, whatever stage it reached.

Why this exists: every command the gateway answers is audited (``streams/audit.py``), including
those refused before they were even decoded, so the record is built from whatever the context
holds by then, falling back to the raw request for what the pipeline never got to read.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from handlers.gateway.context import CommandContext
from streams.audit import AuditRecord
from streams.subjects import parse_command_subject


def audit_record(ctx: CommandContext, reply: dict[str, Any]) -> AuditRecord:
    """What the audit trail keeps of one answered command (whatever stage it reached)."""
    command, ref = ctx.command, ctx.ref
    error = reply.get("error") or {}
    outcome = "accepted" if reply.get("ok") else "denied" if ctx.denied else "rejected"
    kind, verb = ctx.kind, ctx.verb
    if not kind:
        with contextlib.suppress(Exception):
            kind, verb = parse_command_subject(ctx.subject)
    raw = ctx.raw if isinstance(ctx.raw, dict) else {}
    body = raw.get("body") if isinstance(raw.get("body"), dict) else {}
    manifest_meta = ((body or {}).get("manifest") or {}).get("metadata") or {}
    if not isinstance(manifest_meta, dict):
        manifest_meta = {}
    name = ref.name if ref else str((body or {}).get("name") or manifest_meta.get("name") or "")
    namespace = (
        ref.namespace
        if ref
        else str((body or {}).get("namespace") or manifest_meta.get("namespace") or "")
    )
    return AuditRecord(
        time_ns=ctx.received_ns,
        outcome=outcome,
        actor=ctx.actor or (command.actor if command else str(raw.get("actor") or ""))[:256],
        verb=verb or "",
        kind=kind or "",
        namespace=namespace[:253],
        name=name[:253],
        command_id=command.idempotency_key if command else str(raw.get("id") or "")[:128],
        correlation_id=ctx.correlation_id,
        causation_id=(command.causation_id or "") if command else "",
        source=(command.source or "") if command else str(raw.get("source") or "")[:256],
        code=str(error.get("code") or ""),
        message=str(error.get("message") or "")[:1000],
        error_field=str(error.get("field") or ""),
        events=list(reply.get("events") or []),
        seqs=list(reply.get("seqs") or []),
        admission=list(ctx.admission),
        annotations=dict(ctx.audit_annotations),
        signature=signature_of(ctx),
        impersonator=ctx.impersonator.user.name if ctx.impersonator else "",
        authorization=list(ctx.authorization),
    )


def signature_of(ctx: CommandContext) -> dict[str, str]:
    """The command's signature with what it signs (the payload by its digest), to be checked
    again from the audit record alone."""
    signature = ctx.signature
    if signature is None:
        return {}
    return {
        "signer": signature.signer,
        "subject": ctx.subject,
        "digest": hashlib.sha256(ctx.data).hexdigest(),
        "signed_at": str(signature.signed_at_ns),
        "nonce": signature.nonce,
        "signature": signature.signature,
    }
