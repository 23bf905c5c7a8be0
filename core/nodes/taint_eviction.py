"""Deciding when a pod must leave a node with NoExecute taints (Kubernetes' taint-eviction
controller, ``pkg/controller/tainteviction``).

A ``NoExecute`` taint on a node evicts the pods bound there that do not tolerate it. A pod that
does tolerate it may stay for a while: ``tolerationSeconds`` on the toleration bounds how long
after the taint was added (``timeAdded``, stamped by whoever set the taint) the pod may remain.
:func:`decide` gives one of three answers for one pod on one node:

* evict **now**: some NoExecute taint is not tolerated, or a matching toleration's seconds are
  ``<= 0``, or its deadline has passed;
* evict **at** an instant: every taint is tolerated and at least one toleration is bounded; the
  instant is the earliest ``timeAdded + tolerationSeconds`` over the taints;
* **never**: every taint is tolerated forever (``tolerationSeconds`` left out).

As in Kubernetes (``v1helper.GetMatchingTolerations`` and ``getMinTolerationTime``), the
toleration that counts for a taint is the *first* of the pod's tolerations that matches it, and
the minimum is taken over those. Matching itself is the scheduler's too
(``core.meta.taints.PodToleration.tolerates``).

Pure: the current instant is passed in, and a taint's add time comes from the manifest (or a
fallback the caller supplies, such as the time of the event that first showed the taint).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.meta.taints import NO_EXECUTE, NodeTaint, PodToleration
from core.meta.timestamps import parse_stamp

NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one pod: ``now``, ``at`` ``evict_at_ns``, or ``never``."""

    action: Literal["now", "at", "never"]
    evict_at_ns: int | None = None
    reason: str = ""
    taint: str = ""

    def due(self, now_ns: int) -> bool:
        return self.action == "now" or (
            self.action == "at" and self.evict_at_ns is not None and self.evict_at_ns <= now_ns
        )


NEVER = Verdict("never")


def noexecute_taints(
    node_manifest: Mapping[str, Any], *, fallback_added_ns: int
) -> tuple[NodeTaint, ...]:
    """The NoExecute taints of a node manifest, in order; a taint without a readable
    ``timeAdded`` is taken to have been added at ``fallback_added_ns``."""
    out: list[NodeTaint] = []
    for raw in (node_manifest.get("spec") or {}).get("taints") or ():
        if raw.get("effect") != NO_EXECUTE or not raw.get("key"):
            continue
        added = parse_stamp(raw.get("timeAdded"))
        out.append(
            NodeTaint(
                str(raw["key"]),
                str(raw.get("value") or ""),
                NO_EXECUTE,
                fallback_added_ns if added is None else added,
            )
        )
    return tuple(out)


def decide(
    taints: Sequence[NodeTaint], tolerations: Iterable[PodToleration], *, now_ns: int
) -> Verdict:
    """Whether, and when, a pod with ``tolerations`` is evicted from a node with ``taints``."""
    if not taints:
        return NEVER
    tolerations = tuple(tolerations)
    earliest: Verdict | None = None
    for taint in taints:
        used = next((t for t in tolerations if t.tolerates(taint)), None)
        if used is None:
            return Verdict(
                "now", now_ns, f"evicted: {taint.describe()} not tolerated", taint.describe()
            )
        if used.seconds is None:
            continue  # tolerated forever
        seconds = int(used.seconds)
        reason = f"evicted: {taint.describe()} tolerated for {seconds}s, elapsed"
        if seconds <= 0:
            return Verdict("now", now_ns, reason, taint.describe())
        added_ns = now_ns if taint.added_ns is None else taint.added_ns
        deadline = added_ns + seconds * NS_PER_SECOND
        if earliest is None or deadline < (earliest.evict_at_ns or 0):
            earliest = Verdict("at", deadline, reason, taint.describe())
    if earliest is None:
        return NEVER
    assert earliest.evict_at_ns is not None
    if earliest.evict_at_ns <= now_ns:
        return Verdict("now", now_ns, earliest.reason, earliest.taint)
    return earliest
