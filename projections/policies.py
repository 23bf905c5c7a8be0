"""Per-namespace policy objects (LimitRanges, ResourceQuotas, PodDisruptionBudgets) as
admission and evictions need them.

Why this exists: admission must see a policy created a moment before the pod it applies to, yet
reading the log for every pod would cost a full read per command. Two read models follow the
two kinds' events (projections filtered to each kind), and before answering about a namespace
:class:`NamespacePolicies` waits until each has applied that namespace's latest event of its
kind: read-your-writes without reading the objects themselves.

What the latest event is must be asked of the server, once per question, and cannot be learned
for free. The projections do follow the log live, but a policy written through *another*
gateway reaches this one's projection on its own schedule: the client that was told
"accepted" may send its pod here before the push of the policy's event has arrived (or been
processed: each subscription has its own queue). Knowing only what this gateway wrote or has
seen therefore proves nothing about what another one wrote, and JetStream offers no cheaper
signal that a filtered part of the stream changed (stream info counts messages per subject,
not per filter; an expectation header guards one subject per message, and the pod's own
message already carries the pod's). So the question stays, but it is made as cheap as it can
be:

* **One round trip for every kind.** A batched direct get with ``multi_last`` on the kinds'
  filters (``fleet.evt.limitrange.<ns>.*`` and ``fleet.evt.resourcequota.<ns>.*``) answers
  with the last message of every matching subject, or one "404 No Results" when the namespace
  has neither kind (the common case: one reply). A single ``last_by_subj`` takes one filter,
  and the one wildcard covering both kinds, ``fleet.evt.*.<ns>.*``, matches every pod too.
  Before, the gateway asked ``last_by_subj`` twice per pod command, once per kind.
* **Shared by the questions that arrive while one is out (group commit).** A question only
  proves something to a command that arrived *before* it was sent (the server answers with the
  log as of the question). So at most one question per namespace is in flight; commands that
  arrive meanwhile wait for the next one, which is sent as soon as the previous is answered and
  answers them all. An idle gateway asks at once, as before; a busy one asks at most once per
  round trip per namespace instead of once per command.

A namespace with more than 1,024 policy objects makes the server refuse ``multi_last`` ("413
Too Many Results"); the question then falls back to one ``last_by_subj`` per kind. As before,
the answer is as fresh as the server answering it: on a replicated stream a direct get may be
served by a follower, which can trail the leader by the last few writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from core.errors import FleetError
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.eventstore import EventStore
from streams.subjects import EVENT_PREFIX, event_filter

POLICY_KINDS = ("LimitRange", "ResourceQuota", "PodDisruptionBudget")
QUESTION_TIMEOUT = 5.0
MULTI_LAST_LIMIT = 1024
"""The most subjects nats-server answers a ``multi_last`` question with."""
_KIND_BY_TOKEN = {kind.lower(): kind for kind in POLICY_KINDS}


@dataclass(frozen=True)
class Policies:
    """The policy objects of one namespace (their manifests), as admission sees them."""

    limit_ranges: list[dict[str, Any]]
    quotas: list[dict[str, Any]]
    disruption_budgets: list[dict[str, Any]] = field(default_factory=list)
    """The namespace's PodDisruptionBudgets: an eviction locks and reads them in its append."""


@dataclass
class _Question:
    """A question about one namespace: open to joiners until it is sent."""

    answer: asyncio.Future[dict[str, int]]
    task: asyncio.Task[None] | None = None


@dataclass
class _Reply:
    """What has come back for one ``multi_last`` question so far."""

    done: asyncio.Future[None]
    latest: dict[str, int] = field(default_factory=dict)
    status: str = ""
    pending: int = 0


class NamespacePolicies:
    """The LimitRanges and ResourceQuotas of a namespace, read-your-writes: before answering it
    waits until the projection of each kind has applied the namespace's latest event of that
    kind, so an object created (or a quota charged) just before, through any gateway, is seen.
    One direct-get round trip per question, shared by the questions that arrive while the
    previous one is out."""

    def __init__(self, nc: Client, store: EventStore) -> None:
        self._nc = nc
        self._store = store
        self.projections: dict[str, Projection[ClusterModel]] = {
            kind: Projection(ClusterModel(), store, filter_subject=event_filter(kind))
            for kind in POLICY_KINDS
        }
        self._open: dict[str, _Question] = {}
        """Per namespace, the question that commands may still join (not sent yet)."""
        self._out: dict[str, _Question] = {}
        """Per namespace, the question sent and not yet answered."""
        self._inbox = f"_FLPOL.{NUID().next().decode()}"
        self._counter = itertools.count()
        self._replies: dict[str, _Reply] = {}
        self._subscription: Subscription | None = None
        self._subscribing = asyncio.Lock()
        self._requests: dict[str, bytes] = {}
        """Per namespace, the question's bytes (the same every time)."""
        self.questions = 0
        """Questions sent to the server (for tests and benchmarks)."""

    @property
    def limit_ranges(self) -> Projection[ClusterModel]:
        return self.projections["LimitRange"]

    @property
    def quotas(self) -> Projection[ClusterModel]:
        return self.projections["ResourceQuota"]

    async def start(self) -> None:
        """Catch up with the log and follow it (answers wait for events not applied yet)."""
        for projection in self.projections.values():
            await projection.catch_up()
            await projection.follow()

    async def stop(self) -> None:
        for projection in self.projections.values():
            await projection.stop()
        for question in (*self._open.values(), *self._out.values()):
            if question.task is not None:
                question.task.cancel()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def in_namespace(self, namespace: str) -> Policies:
        """Every kind's objects in ``namespace``, as of (at least) the moment of the call."""
        latest = await self._latest(namespace)
        for kind, projection in self.projections.items():
            if not await projection.wait_for(latest.get(kind, 0)):
                raise FleetError(
                    f"the gateway's view of {kind}s lags the log; try again", code="unavailable"
                )
        return Policies(
            limit_ranges=[
                r.manifest for r in self.limit_ranges.model.list("LimitRange", namespace)
            ],
            quotas=[r.manifest for r in self.quotas.model.list("ResourceQuota", namespace)],
            disruption_budgets=[
                r.manifest
                for r in self.projections["PodDisruptionBudget"].model.list(
                    "PodDisruptionBudget", namespace
                )
            ],
        )

    # -- the question, shared ----------------------------------------------------------------

    async def _latest(self, namespace: str) -> dict[str, int]:
        """kind -> the sequence of the namespace's latest event of that kind (absent: none),
        from a question sent after this call began."""
        question = self._open.get(namespace)
        if question is None:
            loop = asyncio.get_running_loop()
            question = self._open[namespace] = _Question(loop.create_future())
            # Owned by this object, not by the command that opened the question: the commands
            # that joined it must get their answer even if that one is cancelled.
            question.task = loop.create_task(self._ask(namespace, question))
        # shield: a command cancelled while it waits must not cancel the others' answer.
        return await asyncio.shield(question.answer)

    async def _ask(self, namespace: str, question: _Question) -> None:
        try:
            previous = self._out.get(namespace)
            if previous is not None:
                # Wait for the question in flight (sent before some of our joiners arrived, so
                # it proves nothing to them), whatever its outcome.
                await asyncio.wait([previous.answer])
        finally:
            # Closed from here on: a command arriving later opens the next question, because
            # this one is sent after a command's arrival only if it joined before this point.
            if self._open.get(namespace) is question:
                del self._open[namespace]
        self._out[namespace] = question
        try:
            question.answer.set_result(await self._ask_server(namespace))
        except Exception as exc:
            question.answer.set_exception(exc)
        finally:
            if self._out.get(namespace) is question:
                del self._out[namespace]
            if not question.answer.done():  # cancelled (the gateway is stopping)
                question.answer.cancel()

    async def _ask_server(self, namespace: str) -> dict[str, int]:
        self.questions += 1
        request = self._requests.get(namespace)
        if request is None:
            filters = [event_filter(kind, namespace) for kind in POLICY_KINDS]
            question = {"multi_last": filters, "batch": MULTI_LAST_LIMIT}
            request = json.dumps(question).encode()
            if len(self._requests) < 10_000:
                self._requests[namespace] = request
        reply = await self._multi_last(request)
        if reply.status == "404":
            return {}
        if reply.status == "204" and reply.pending == 0:
            return reply.latest
        # Refused (too many subjects) or cut short: one question per kind instead.
        return {
            kind: await self._store.last_seq(event_filter(kind, namespace)) for kind in POLICY_KINDS
        }

    async def _multi_last(self, request: bytes) -> _Reply:
        if self._subscription is None:
            async with self._subscribing:
                if self._subscription is None:
                    self._subscription = await self._nc.subscribe(
                        f"{self._inbox}.*", cb=self._on_reply
                    )
        loop = asyncio.get_running_loop()
        inbox = f"{self._inbox}.{next(self._counter)}"
        reply = self._replies[inbox] = _Reply(loop.create_future())
        # A timer handle, not asyncio.wait_for (which wraps the wait in a task).
        timer = loop.call_later(QUESTION_TIMEOUT, _time_out, reply.done)
        try:
            await self._nc.publish(self._store.subjects.direct_get, request, reply=inbox)
            try:
                await reply.done
            except TimeoutError:
                raise FleetError(
                    "no answer from the server about the namespace's policies; try again",
                    code="unavailable",
                ) from None
        finally:
            timer.cancel()
            self._replies.pop(inbox, None)
        return reply

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._replies.get(msg.subject)
        if reply is None or reply.done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status:
            # The end of the batch (204), no message at all (404), or a refusal (413, …).
            reply.status = status
            reply.pending = int(headers.get("Nats-Num-Pending") or 0)
            reply.done.set_result(None)
            return
        # fleet.evt.<kind>.<namespace>.<name>: the kind is the third token.
        subject = headers.get("Nats-Subject", "")
        kind = _KIND_BY_TOKEN.get(subject[len(EVENT_PREFIX) + 1 :].split(".", 1)[0])
        if kind is not None:
            seq = int(headers["Nats-Sequence"])
            if seq > reply.latest.get(kind, 0):
                reply.latest[kind] = seq


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
