"""``fleetlog why`` and ``fleetlog audit``: causes and the audit trail, from the command line.

Why this exists: these are the questions only an event-sourced orchestrator can answer —
*why* is this object in this state (each event names its cause: ``core.api.causation``), and *who
asked for what, from where, with what result* (every command the gateway answered is in
``FLEET_AUDIT``: ``streams/audit.py``), including commands that were refused and so never
touched the log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from core.api.causation import parse_cause
from core.api.summaries import summarize
from core.errors import FleetError, NotFound, ValidationFailed
from ops import render
from ops.cliargs import command_kind, is_namespaced, parse_since, split_ref
from ops.clitools import open_session, run

if TYPE_CHECKING:
    from streams.audit import AuditRecord
    from streams.envelope import StoredEvent
    from streams.eventstore import EventStore
    from streams.integrity import VerifyReport

MAX_LINKS = 200
OUTCOMES = ("accepted", "rejected", "denied")
"""``streams.audit.OUTCOMES``, spelt out: ``--outcome`` is defined when the CLI starts, and that
module loads the NATS client (a unit test keeps the two equal)."""


# -- why ---------------------------------------------------------------------------------------


@dataclass
class Link:
    """One step of a causal chain: an event, or the root outside the log."""

    event: StoredEvent | None
    root: str = ""
    command: str = ""
    """The command at the root (its idempotency key), when the chain starts with one."""
    admission: list[str] = field(default_factory=list)
    """What admission did to that command (its audit record's stages)."""

    def as_dict(self) -> dict[str, Any]:
        if self.event is None:
            out: dict[str, Any] = {"root": self.root}
            if self.admission:
                out["admission"] = self.admission
            return out
        return render.event_dict(self.event)


async def causal_chain(store: EventStore, start: StoredEvent) -> list[Link]:
    """From ``start`` back along each event's ``causation_id`` to the command (or the outside
    cause) at the root; one direct read per link."""
    chain = [Link(start)]
    seen = {start.seq}
    current = start
    while len(chain) < MAX_LINKS:
        cause = parse_cause(current.envelope.causation_id)
        if cause.kind == "event":
            if cause.seq in seen:
                chain.append(Link(None, f"a cycle at sequence {cause.seq} (a recording bug)"))
                break
            found = await store.get_event(cause.seq)
            if found is None:
                why_not = "quarantined" if cause.seq in store.quarantine else "not in the log"
                chain.append(Link(None, f"event at sequence {cause.seq} ({why_not})"))
                break
            seen.add(found.seq)
            chain.append(Link(found))
            current = found
            continue
        actor = current.envelope.actor
        if cause.kind == "command":
            root = f"command {cause.command} issued by {actor}"
            chain.append(Link(None, root, command=cause.command))
        elif cause.kind == "other":
            chain.append(Link(None, f"{cause.text} (observed by {actor})"))
        else:
            chain.append(Link(None, f"no recorded cause (written by {actor})"))
        break
    return chain


ADMISSION_WINDOW_NS = 60 * 1_000_000_000
"""How long before its first event a command's audit record is looked for (the record is
stamped when the gateway received the command)."""


async def _with_admission(nc: Any, chain: list[Link]) -> None:
    """The admission stages of the command at the chain's root, from its audit record (read
    from shortly before the command's event only: the audit stream is as long as the log)."""
    root = chain[-1]
    caused = chain[-2].event if len(chain) > 1 else None
    if not root.command or caused is None:
        return
    from streams.audit import audit_filter, read_audit

    envelope = caused.envelope
    since = datetime.fromtimestamp((envelope.timestamp_ns - ADMISSION_WINDOW_NS) / 1e9, tz=UTC)
    subject = audit_filter("accepted", None, None, envelope.actor)
    for record in await read_audit(nc, subject=subject, since=since):
        if record.command_id == root.command:
            root.admission = list(record.admission)
            return


def _decided(event: StoredEvent) -> bool:
    """A ``ScaledTo`` or an HPA's recorded "no change" (a status event) with a why record."""
    e = event.envelope
    return (e.type == "ScaledTo" or e.type.endswith("StatusUpdated")) and bool(e.payload.get("why"))


def decision_lines(chain: list[Link], history: list[StoredEvent]) -> list[str]:
    """An autoscaler's reasons: each ``ScaledTo`` (or an HPA's recorded "no change") of the
    chain that carries a why record, or else the object's last one (so ``why deployment/web``
    explains its replica count even when a status record came after the scale, and ``why
    hpa/web`` why it did not scale)."""
    from ops.render.autoscaling import why_lines

    scaled = [link.event for link in chain if link.event is not None and _decided(link.event)]
    title = "Why it scaled"
    if not scaled:
        last = next(
            (ev for ev in reversed(history) if ev.envelope.type == "ScaledTo" or _decided(ev)),
            None,
        )
        if last is None or not _decided(last):
            return []
        scaled, title = [last], "Last autoscaling decision"
    lines = []
    for ev in scaled:
        kind = ev.envelope.type
        heading = title if kind == "ScaledTo" else "Why it did not scale"
        lines.append(f"{heading} ({kind} #{ev.seq} at {render.iso(ev.envelope.timestamp_ns)}):")
        lines += [f"  {line}" for line in why_lines(ev.envelope.payload["why"])]
    return lines


def chain_lines(chain: list[Link]) -> list[str]:
    lines = []
    for depth, link in enumerate(chain):
        arrow = "" if depth == 0 else "← "
        pad = "  " * min(depth, 12)
        if link.event is None:
            lines.append(f"{pad}{arrow}{link.root}")
            lines += [f"{pad}  admission: {note}" for note in link.admission]
            continue
        e = link.event.envelope
        where = render.object_name(e.kind, e.namespace, e.name)
        lines.append(
            f"{pad}{arrow}{e.type} #{link.event.seq} {where} by {e.actor} at "
            f"{render.iso(e.timestamp_ns)}: {summarize(e.type, e.payload)}"
        )
    return lines


@click.command()
@click.argument("ref")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--event", "event_seq", type=int, default=None, help="Explain this event (SEQ).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def why(
    ctx: click.Context, ref: str, namespace: str, event_seq: int | None, output: str
) -> None:
    """The causal chain behind an object's current state (its last event), or behind one of
    its events, back to the command that started it and who issued it."""
    kind, name = split_ref(ref)
    scope = namespace if is_namespaced(kind) else ""
    async with open_session(ctx) as s:
        history = await s.history(kind, scope, name)
        if not history:
            raise NotFound(f"no events for {render.object_name(kind, scope, name)}")
        if event_seq is None:
            start = history[-1]
        else:
            start = next((event for event in history if event.seq == event_seq), None)
            if start is None:
                raise NotFound(
                    f"event {event_seq} is not an event of {render.object_name(kind, scope, name)}"
                    f" (its events: {', '.join(str(e.seq) for e in history[-10:])}…)"
                )
        chain = await causal_chain(s.store, start)
        await _with_admission(s.nc, chain)
    if output == "json":
        click.echo(json.dumps([link.as_dict() for link in chain], default=str))
        return
    click.echo("\n".join(chain_lines(chain) + decision_lines(chain, history)))


# -- audit -------------------------------------------------------------------------------------

AUDIT_HEADERS = ["TIME", "OUTCOME", "ACTOR", "VERB", "OBJECT", "RESULT", "SOURCE"]


def _parse_time(text: str | None, now: datetime, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text.lstrip("-"), now)
    except ValidationFailed as exc:
        raise ValidationFailed(f"{option} {text!r}: {exc.message.split(': ', 1)[-1]}") from None


def matches(
    record: AuditRecord,
    *,
    actor: str | None,
    name: str | None,
    namespace: str | None,
    event_type: str | None,
    until_ns: int | None,
) -> bool:
    """The filters the subject cannot express."""
    if actor is not None and record.actor != actor:
        return False
    if name is not None and record.name != name:
        return False
    if namespace is not None and record.namespace != namespace:
        return False
    if event_type is not None and event_type not in record.events:
        return False
    return until_ns is None or record.time_ns <= until_ns


def audit_row(record: AuditRecord) -> list[str]:
    if record.outcome == "accepted":
        result = ", ".join(record.events) or "unchanged"
    else:
        result = f"{record.code}: {record.message}"
        if len(result) > 100:
            result = result[:97] + "..."
    return [
        render.iso(record.time_ns),
        record.outcome,
        record.actor,
        record.verb,
        record.object_ref(),
        result,
        record.source or "-",
    ]


@click.group(invoke_without_command=True)
@click.option("--actor", default=None, help="Only commands by this actor (user:alice, system:…).")
@click.option("--kind", default=None, help="Only commands on this kind.")
@click.option("--name", default=None, help="Only commands on objects with this name.")
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option("--type", "event_type", default=None, help="Only commands that wrote this event.")
@click.option("--verb", default=None, help="create, apply, delete, scale, cordon, status …")
@click.option("--since", default=None, help="From a duration ago (10m, 2h) or a time.")
@click.option("--until", default=None, help="Up to a duration ago or a time.")
@click.option("--outcome", type=click.Choice(OUTCOMES), default=None)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "wide", "json"]),
    default="table",
    help="wide: also what each admission stage did to the command.",
)
@click.pass_context
def audit(ctx: click.Context, **options: Any) -> None:
    """Who asked for what, on what, from where, with what result: every command the gateway
    answered, refused ones included (they never touch the log). A gateway that crashed between
    a command's events and its audit record loses that record; the events remain the truth."""
    if ctx.invoked_subcommand is None:
        _query(ctx, **options)


@run
async def _query(
    ctx: click.Context,
    actor: str | None,
    kind: str | None,
    name: str | None,
    namespace: str | None,
    event_type: str | None,
    verb: str | None,
    since: str | None,
    until: str | None,
    outcome: str | None,
    output: str,
) -> None:
    now = datetime.now(tz=UTC)
    start = _parse_time(since, now, "--since")
    end = _parse_time(until, now, "--until")
    from streams.audit import audit_filter, read_audit

    # Any kind: the gateway audits commands for kinds it refused as unknown, too.
    resolved = command_kind(kind) if kind else None
    subject = audit_filter(outcome, resolved, verb, actor)
    async with open_session(ctx) as s:
        await _may_read_audit(s)
        records = await read_audit(s.nc, subject=subject, since=start)
    until_ns = int(end.timestamp() * 1e9) if end is not None else None
    chosen = [
        r
        for r in records
        if matches(
            r,
            actor=actor,
            name=name,
            namespace=namespace,
            event_type=event_type,
            until_ns=until_ns,
        )
    ]
    if output == "json":
        for record in chosen:
            click.echo(json.dumps(asdict(record)))
        return
    if not chosen:
        click.echo("No audit records found.", err=True)
        return
    if output == "wide":
        rows = [[*audit_row(r), "; ".join(r.admission) or "-"] for r in chosen]
        click.echo(render.table([*AUDIT_HEADERS, "ADMISSION"], rows))
        return
    click.echo(render.table(AUDIT_HEADERS, [audit_row(r) for r in chosen]))


async def _may_read_audit(s: Any) -> None:
    """Ask ``up``'s stream read service whether the caller may read the audit trail (``get``
    on ``/fleetlog/audit``, which only ``cluster-admin`` holds among the built-in roles) and
    stop with kube's Forbidden if not. Only signed sessions ask: an unsigned one reads an open
    server's streams as before, and with no service answering the streams' own permissions
    decide (behind the wall: admins only)."""
    from projections.streamreads import may_read_audit, serves_signed_reads

    if serves_signed_reads(s.nc):
        acting = s.commands.actor if s.commands.impersonate else None
        await may_read_audit(s.nc, impersonate=acting)


def verify_lines(report: VerifyReport, snapshot_problem: str | None = None) -> list[str]:
    """One line per break, per quarantined event and per gap, then what was checked and the
    head digest, then the verdict."""
    lines = [f"BREAK  seq {b.seq}  {b.aggregate}  {b.problem}: {b.detail}" for b in report.breaks]
    lines += [
        f"QUARANTINED  seq {q.seq}  {q.subject}  {q.reason}: {q.detail}" for q in report.quarantined
    ]
    if report.missing_before:
        lines.append(
            f"MISSING  events {report.from_seq}..{report.missing_before - 1} are not in the log "
            f"(removed by a limit or a purge): checked from {report.missing_before}"
        )
    if snapshot_problem:
        lines.append(
            f"SNAPSHOT  the cluster snapshot is not backed by the log: {snapshot_problem} "
            "(fleetlog up discards it and rebuilds from the log)"
        )
    lines.append(
        f"checked {report.events} events of {report.aggregates} aggregates up to sequence "
        f"{report.last_seq}: {report.sealed} sealed, {report.unchained} written before hashes"
        + (f" ({report.late_unchained} of them late)" if report.late_unchained else "")
        + (f", {report.unanchored} unanchored" if report.unanchored else "")
    )
    lines.append(f"head digest {report.head_digest}")
    problems = _problems(report, snapshot_problem)
    lines.append(", ".join(problems) if problems else "no breaks")
    return lines


def _problems(report: VerifyReport, snapshot_problem: str | None) -> list[str]:
    problems = [f"{len(report.breaks)} break(s)"] if report.breaks else []
    if report.quarantined:
        problems.append(f"{len(report.quarantined)} quarantined event(s)")
    if report.missing_before:
        problems.append(f"events missing before sequence {report.missing_before}")
    if snapshot_problem:
        problems.append("a snapshot the log does not back")
    return problems


@audit.command()
@click.option("--from-seq", type=int, default=1, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def verify(ctx: click.Context, from_seq: int, output: str) -> None:
    """Walk the log and check every aggregate's hash chain; exit 1 at any break (altered,
    inserted or removed events), naming the sequence where it shows, and at anything else
    readers cannot trust: quarantined events (poison that every role skips), events missing
    from the start of the log, a snapshot of another incarnation of the stream, a signed
    command whose signature, kept in the audit trail, does not prove its sender."""
    from nats.js.errors import NotFoundError

    from projections.runtime import snapshot_origin
    from streams.audit import read_audit
    from streams.definitions import open_snapshots
    from streams.integrity import verify_log

    async with open_session(ctx) as s:
        await _may_read_audit(s)
        report = await verify_log(s.store, from_seq=from_seq)
        signatures = signature_problems(await read_audit(s.nc))
        try:
            origin = await snapshot_origin(await open_snapshots(s.nc), "cluster")
        except NotFoundError:  # no snapshot store: no `fleetlog up` ever ran here
            origin = None
        snapshot_problem = (
            origin.unbacked_by(await s.store.stream_info()) if origin is not None else None
        )
    checked, failures = signatures
    if output == "json":
        click.echo(
            json.dumps(
                {
                    **asdict(report),
                    "snapshot_problem": snapshot_problem,
                    "signatures": {
                        "checked": checked,
                        "failures": [
                            {"audit_seq": seq, "actor": actor, "problem": problem}
                            for seq, actor, problem in failures
                        ],
                    },
                    "ok": report.ok and not snapshot_problem and not failures,
                },
                default=str,
            )
        )
    else:
        lines = verify_lines(report, snapshot_problem)
        lines[-1:-1] = [
            *(
                f"SIGNATURE  audit seq {seq}  {actor}  {problem}"
                for seq, actor, problem in failures
            ),
            f"checked the signatures of {checked} signed commands in the audit trail"
            + (f": {len(failures)} do not verify" if failures else ", each proves its sender"),
        ]
        if failures:
            unproven = f"{len(failures)} command signature(s) that do not verify"
            lines[-1] = unproven if lines[-1] == "no breaks" else f"{lines[-1]}, {unproven}"
        click.echo("\n".join(lines))
    if report.breaks:
        raise FleetError(f"the log has {len(report.breaks)} break(s)", code="tampered")
    if not report.ok or snapshot_problem or failures:
        problems = _problems(report, snapshot_problem)
        if failures:
            problems.append(f"{len(failures)} command signature(s) that do not verify")
        raise FleetError(f"the log has {', '.join(problems)}", code="untrusted")


def signature_problems(records: Sequence[AuditRecord]) -> tuple[int, list[tuple[int, str, str]]]:
    """(how many signed commands the audit trail records, (audit sequence, actor, problem) of
    each whose kept signature does not prove its sender): a signature is kept with the payload's
    digest, so the record alone is the proof (``core.access.signing.check_recorded``)."""
    from core.access.signing import SignatureRefused, check_recorded

    checked = 0
    failures: list[tuple[int, str, str]] = []
    for record in records:
        if not record.signature:
            continue  # unsigned: an open server's command, or one refused before it was read
        checked += 1
        try:
            check_recorded(record.signature)
        except SignatureRefused as refused:
            failures.append((record.stored_seq, record.actor, str(refused)))
    return checked, failures
