"""What the chaos test reads back from the log about pods, and how it explains a deployment
whose pods were created more often than it has replicas.

Why this exists: a duplicate pod in the chaos run (``tests/e2e/test_chaos.py``) is
intermittent and the run's cluster is gone when CI reports it, so the failure message itself
must carry what is needed to diagnose it: which replica sets the extra pods named as owner, who
created them and on behalf of what (causation and correlation, the cause resolved to the event
it names), in which waves and when relative to the chaos, and how the extra pods ended (deleted
by whom, why). Gathering it is one pass over the pods' events the test reads anyway.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.api.causation import parse_cause
from streams.envelope import StoredEvent


@dataclass(frozen=True)
class PodFact:
    """One ``PodCreated`` or ``PodDeleted`` as the log holds it."""

    seq: int
    type: str
    name: str
    app: str
    owner: str
    """``<replica set name>/<uid prefix>`` of the controller reference (creates only)."""
    actor: str
    causation: str
    correlation: str
    stored_ns: int
    reason: str


def pod_fact(event: StoredEvent) -> PodFact | None:
    """The fact an event of a pod's subject records, if it is a create or a delete."""
    e = event.envelope
    if e.type not in ("PodCreated", "PodDeleted"):
        return None
    metadata = (e.payload.get("manifest") or {}).get("metadata") or {}
    owners = [
        f"{ref.get('name')}/{str(ref.get('uid'))[:8]}"
        for ref in metadata.get("ownerReferences") or []
        if ref.get("controller")
    ]
    return PodFact(
        seq=event.seq,
        type=e.type,
        name=e.name,
        app=(metadata.get("labels") or {}).get("app", ""),
        owner=",".join(owners),
        actor=e.actor,
        causation=e.causation_id,
        correlation=e.correlation_id,
        stored_ns=event.stored_ns,
        reason=str(e.payload.get("reason") or ""),
    )


def created_by_app(facts: Iterable[PodFact]) -> dict[str, int]:
    counts: Counter[str] = Counter(f.app for f in facts if f.type == "PodCreated")
    return dict(counts)


async def explain_extra_pods(
    facts: list[PodFact],
    expected: dict[str, int],
    *,
    began_ns: int,
    timeline: list[tuple[int, str]],
    describe: Callable[[int], Awaitable[str]],
) -> str:
    """A report for every deployment with more ``PodCreated`` than ``expected``: empty when
    there is none. ``describe(seq)`` names the event at a sequence (a cause); times are
    seconds since ``began_ns`` (wall clock), as are the chaos ``timeline``'s."""

    def at(ns: int) -> str:
        return f"{(ns - began_ns) / 1e9:.1f}s"

    created = created_by_app(facts)
    over = sorted(app for app, n in created.items() if n > expected.get(app, 0))
    if not over:
        return ""
    deleted = {f.name: f for f in facts if f.type == "PodDeleted"}
    lines = ["chaos timeline: " + ", ".join(f"{at(ns)} {what}" for ns, what in timeline)]
    for app in over:
        mine = [f for f in facts if f.type == "PodCreated" and f.app == app]
        lines.append(f"{app}: {len(mine)} PodCreated for {expected.get(app, 0)} replicas")
        lines.append(f"  owners: {dict(Counter(f.owner for f in mine))}")
        lines.append(f"  creators: {dict(Counter(f.actor for f in mine))}")
        waves: dict[tuple[str, str], list[PodFact]] = defaultdict(list)
        for fact in mine:
            waves[(fact.causation, fact.correlation)].append(fact)
        lines.append(f"  {len(waves)} cause(s), in order of their first create:")
        for (causation, correlation), wave in sorted(waves.items(), key=lambda w: w[1][0].seq)[:12]:
            ref = parse_cause(causation)
            cause = await describe(ref.seq) if ref.kind == "event" else causation
            ended = Counter(
                f"{deleted[f.name].actor} ({deleted[f.name].reason[:60]})"
                if f.name in deleted
                else "alive"
                for f in wave
            )
            lines.append(
                f"   {len(wave)} pods, seq {wave[0].seq}..{wave[-1].seq}, "
                f"{at(wave[0].stored_ns)}..{at(wave[-1].stored_ns)}, causation {causation} "
                f"[{cause}], correlation {correlation[:40]}; ended: {dict(ended)}"
            )
    return "\n".join(lines)


def describe_event(event: StoredEvent | None, began_ns: int) -> str:
    if event is None:
        return "not in the log"
    e = event.envelope
    extra: dict[str, Any] = {
        k: e.payload[k] for k in ("replicas", "previous", "reason") if k in e.payload
    }
    return (
        f"{e.type} {e.kind} {e.namespace}/{e.name} v{e.version} by {e.actor} at "
        f"{(event.stored_ns - began_ns) / 1e9:.1f}s{' ' + str(extra) if extra else ''}"
    )
