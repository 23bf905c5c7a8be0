"""API Priority and Fairness: which priority level a request belongs to, and whether it runs
now, waits in its flow's queue, or is refused with "too many requests".

Why this exists: one noisy client must not starve the others, and users must never starve the
control plane (issue 17). Kubernetes answers with API Priority and Fairness
(``flowcontrol.apiserver.k8s.io/v1``): FlowSchemas classify each request (by who asks and what
for) into a PriorityLevelConfiguration; each level owns a share of the server's concurrency
("seats"); within a level, requests of one *flow* (the schema plus the user or namespace) are
queued apart from other flows', each flow shuffle-sharded onto a hand of queues, so a flood
fills its own queues and is refused there while other flows keep their turn. fleetlog's gateway
and HTTP door use this module the same way; the objects are the same YAML users already write.

Pure: classification reads manifests; :class:`Dispatcher` is a state machine driven by
``arrive``/``finish``/``expire`` with the time passed in. Simplifications, said plainly: seats
are not lent between levels (kube 1.26+ borrowing); every request takes one seat; queues are
served round-robin (kube's fair queuing orders by virtual finish time, which for requests of
equal width and unknown duration serves queues in turn as this does).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from core.access.rbac import Request, User

RETRY_AFTER_S: Final = 1
"""What kube-apiserver's Retry-After says when APF refuses a request."""
TOO_MANY: Final = "Too many requests, please try again later."

# --------------------------------------------------------------------------------------------
# Classification: FlowSchemas
# --------------------------------------------------------------------------------------------


def _any(patterns: Iterable[str], value: str) -> bool:
    return any(p in ("*", value) for p in patterns)


def subject_matches(subject: Mapping[str, Any], user: User) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return (subject.get("user") or {}).get("name") in ("*", user.name)
    if kind == "Group":
        name = (subject.get("group") or {}).get("name")
        return name == "*" or name in user.groups
    if kind == "ServiceAccount":
        account = subject.get("serviceAccount") or {}
        prefix = f"system:serviceaccount:{account.get('namespace', '')}:"
        if not user.name.startswith(prefix):
            return False
        return account.get("name") in ("*", user.name[len(prefix) :])
    return False


def resource_rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    if not request.is_resource_request:
        return False
    if not (
        _any(rule.get("verbs") or (), request.verb)
        and _any(rule.get("apiGroups") or (), request.api_group)
        and _any(rule.get("resources") or (), request.combined_resource)
    ):
        return False
    if not request.namespace:
        return bool(rule.get("clusterScope"))
    return _any(rule.get("namespaces") or (), request.namespace)


def non_resource_rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    if request.is_resource_request or not _any(rule.get("verbs") or (), request.verb):
        return False
    for url in rule.get("nonResourceURLs") or ():
        if url in ("*", request.path):
            return True
        if url.endswith("/*") and (request.path + "/").startswith(url[:-1]):
            return True
    return False


def schema_matches(schema: Mapping[str, Any], user: User, request: Request) -> bool:
    """A schema matches when one of its rules names the user (a subject) and the request (a
    resource or non-resource rule)."""
    for rule in (schema.get("spec") or {}).get("rules") or ():
        if not any(subject_matches(s, user) for s in rule.get("subjects") or ()):
            continue
        if any(resource_rule_matches(r, request) for r in rule.get("resourceRules") or ()):
            return True
        if any(non_resource_rule_matches(r, request) for r in rule.get("nonResourceRules") or ()):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Classification:
    schema: str
    level: str
    flow: str
    """The flow's key: the schema and its distinguisher (the user or the namespace)."""


def classify(
    schemas: Iterable[Mapping[str, Any]], user: User, request: Request
) -> Classification | None:
    """The first matching schema by ``matchingPrecedence`` (lower first), then name; None when
    nothing matches (kube's mandatory ``catch-all`` schema makes that impossible in practice)."""

    def order(schema: Mapping[str, Any]) -> tuple[int, str]:
        precedence = (schema.get("spec") or {}).get("matchingPrecedence", 1000)
        return precedence, (schema.get("metadata") or {}).get("name", "")

    for schema in sorted(schemas, key=order):
        if not schema_matches(schema, user, request):
            continue
        spec = schema.get("spec") or {}
        name = (schema.get("metadata") or {}).get("name", "")
        method = (spec.get("distinguisherMethod") or {}).get("type")
        distinguisher = (
            user.name
            if method == "ByUser"
            else request.namespace
            if method == "ByNamespace"
            else ""
        )
        level = (spec.get("priorityLevelConfiguration") or {}).get("name", "")
        return Classification(schema=name, level=level, flow=f"{name}/{distinguisher}")
    return None


# --------------------------------------------------------------------------------------------
# Priority levels and their queues
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Level:
    """A PriorityLevelConfiguration as the dispatcher uses it."""

    name: str
    exempt: bool = False
    shares: int = 30
    """``nominalConcurrencyShares``."""
    queues: int = 64
    hand_size: int = 6
    queue_length_limit: int = 50
    reject_when_full: bool = False
    """``limitResponse.type: Reject``: no queues, refuse when no seat is free."""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Level:
        spec = manifest.get("spec") or {}
        name = (manifest.get("metadata") or {}).get("name", "")
        if spec.get("type") == "Exempt":
            return cls(name=name, exempt=True, shares=0)
        limited = spec.get("limited") or {}
        response = limited.get("limitResponse") or {}
        queuing = response.get("queuing") or {}
        return cls(
            name=name,
            shares=int(limited.get("nominalConcurrencyShares", 30)),
            queues=int(queuing.get("queues", 64)),
            hand_size=int(queuing.get("handSize", 8)),
            queue_length_limit=int(queuing.get("queueLengthLimit", 50)),
            reject_when_full=response.get("type") == "Reject",
        )


def nominal_seats(levels: Iterable[Level], total: int) -> dict[str, int]:
    """Each limited level's seats: ``ceil(total * shares / sum(shares))`` (kube's
    NominalConcurrencyLimit), at least one."""
    limited = [level for level in levels if not level.exempt]
    shares = sum(level.shares for level in limited) or 1
    return {level.name: max(1, math.ceil(total * level.shares / shares)) for level in limited}


def hand(flow: str, *, queues: int, hand_size: int) -> list[int]:
    """The queues a flow may use: ``hand_size`` distinct queues dealt from ``queues`` by the
    flow's hash (shuffle sharding: two flows rarely share their whole hand, so a flood that
    fills its own queues leaves most other flows at least one short queue)."""
    value = int.from_bytes(hashlib.blake2b(flow.encode(), digest_size=8).digest(), "big")
    deck = list(range(queues))
    dealt = []
    for _ in range(min(hand_size, queues)):
        value, index = divmod(value, len(deck))
        dealt.append(deck.pop(index))
    return dealt


Outcome = Literal["dispatched", "queued", "rejected"]


@dataclass(slots=True)
class _Waiting:
    request_id: str
    queue: int
    arrived: float


@dataclass(slots=True)
class _LevelState:
    level: Level
    seats: int
    executing: int = 0
    queues: list[deque[_Waiting]] = field(default_factory=list)
    cursor: int = 0
    queued: int = 0
    """Requests in all of ``queues``: kept as they come and go rather than summed over every
    queue (64 by default) on each arrival and each freed seat."""

    def waiting(self) -> int:
        return self.queued


@dataclass(slots=True)
class Dispatcher:
    """Seats per level, queues per flow. ``arrive`` answers at once; a queued request is
    dispatched later by ``finish`` (a seat came free) or refused by ``expire`` (it waited too
    long). Exempt levels never wait."""

    levels: Mapping[str, Level]
    total_seats: int
    queue_wait_s: float = 15.0
    """How long a request may wait in a queue (kube: a quarter of the request timeout)."""
    _state: dict[str, _LevelState] = field(default_factory=dict)
    _where: dict[str, str] = field(default_factory=dict)
    """request id -> its level, while queued or executing."""

    def __post_init__(self) -> None:
        seats = nominal_seats(self.levels.values(), self.total_seats)
        for name, level in self.levels.items():
            state = _LevelState(level=level, seats=seats.get(name, 0))
            state.queues = [deque() for _ in range(0 if level.exempt else level.queues)]
            self._state[name] = state

    def arrive(self, request_id: str, *, level: str, flow: str, now: float) -> Outcome:
        state = self._state[level]
        if state.level.exempt:
            state.executing += 1
            self._where[request_id] = level
            return "dispatched"
        if state.executing < state.seats and state.waiting() == 0:
            state.executing += 1
            self._where[request_id] = level
            return "dispatched"
        if state.level.reject_when_full or not state.queues:
            return "rejected"
        dealt = hand(flow, queues=len(state.queues), hand_size=state.level.hand_size)
        shortest = min(dealt, key=lambda q: len(state.queues[q]))
        if len(state.queues[shortest]) >= state.level.queue_length_limit:
            return "rejected"
        state.queues[shortest].append(_Waiting(request_id, shortest, now))
        state.queued += 1
        self._where[request_id] = level
        return "queued"

    def finish(self, request_id: str) -> list[str]:
        """A dispatched request finished: its seat goes to the next queued request(s)."""
        level = self._where.pop(request_id, None)
        if level is None:
            return []
        state = self._state[level]
        state.executing -= 1
        return self._dispatch(state)

    def expire(self, now: float) -> list[str]:
        """Queued requests that waited longer than ``queue_wait_s``: refused (429)."""
        expired = []
        for state in self._state.values():
            for queue in state.queues:
                while queue and now - queue[0].arrived > self.queue_wait_s:
                    waiting = queue.popleft()
                    state.queued -= 1
                    self._where.pop(waiting.request_id, None)
                    expired.append(waiting.request_id)
        return expired

    def cancel(self, request_id: str) -> bool:
        """A queued request gave up (its waiter timed out or its client went away): out of
        its queue, so no seat is ever handed to nobody. False when it is not queued (it was
        dispatched meanwhile, or never queued)."""
        level = self._where.get(request_id)
        if level is None:
            return False
        state = self._state[level]
        for queue in state.queues:
            for waiting in queue:
                if waiting.request_id == request_id:
                    queue.remove(waiting)
                    state.queued -= 1
                    del self._where[request_id]
                    return True
        return False

    def _dispatch(self, state: _LevelState) -> list[str]:
        started = []
        count = len(state.queues)
        while state.executing < state.seats and state.waiting():
            for step in range(count):
                index = (state.cursor + step) % count
                if state.queues[index]:
                    waiting = state.queues[index].popleft()
                    state.queued -= 1
                    state.cursor = (index + 1) % count
                    state.executing += 1
                    started.append(waiting.request_id)
                    break
        return started

    def executing(self, level: str) -> int:
        return self._state[level].executing

    def seats(self, level: str) -> int:
        return self._state[level].seats
