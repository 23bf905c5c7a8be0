"""UDP "connections" for the node's forwarding: flows keyed by the client's address and port,
kept while active, forgotten after an idle timeout or when their endpoint leaves.

Why this exists: UDP has no connection for a proxy to balance, so the unit a policy picks an
endpoint for is a *flow*, as in the kernel's connection tracking that kube-proxy relies on:
the datagrams one client socket (``ip:port``) sends to one frontend (``clusterIP:port``, a node
port, a host port). The first datagram of a flow is balanced; the rest of the flow follows it
to the same endpoint, and the endpoint's answers go back to the client from the address it
wrote to. The rules — when a flow ends, when it is dropped so that the next datagram picks
again — are kube-proxy's and conntrack's, kept here once, pure (every time is passed in):

* **Idle timeouts, conntrack's defaults.** A flow that has only ever carried datagrams one way,
  or a single answer, ends after :data:`UDP_TIMEOUT_S` (30 s, ``nf_conntrack_udp_timeout``)
  without a datagram; once the client has written again after an answer (a *stream*: DNS over
  one socket, QUIC, a game), after :data:`UDP_STREAM_TIMEOUT_S` (120 s,
  ``nf_conntrack_udp_timeout_stream``, the value kube-proxy's ``conntrack.udpStreamTimeout``
  leaves in place). A datagram after the timeout starts a new flow, balanced again.
* **An endpoint that leaves takes its flows.** When an endpoint is no longer among those new
  flows may go to (not ready, deleted), its flows are dropped at once — kube-proxy clears the
  conntrack entries of a UDP endpoint that goes away, or a client that keeps writing would be
  stuck on it for ever — so the client's next datagram, on the same socket, is balanced onto
  an endpoint that is there.
* **An endpoint that refuses** (the kernel reports "port unreachable" for a datagram it was
  sent) ends its flow too: the next datagram picks again.
* **A bounded table.** Each flow costs the relay a socket, so a table holds at most
  :data:`MAX_FLOWS`; a new flow past that makes room as conntrack's ``early_drop`` does when
  its table is full: flows that ran out go first, then the oldest that is not a stream, then
  the oldest. (DNS clients that use a fresh port for every query make a flow per query.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from core.services.balancing import Endpoint

UDP_TIMEOUT_S: Final = 30.0
"""Idle time after which a flow that is not a stream ends (conntrack's ``udp_timeout``)."""
UDP_STREAM_TIMEOUT_S: Final = 120.0
"""Idle time after which a stream ends (conntrack's ``udp_timeout_stream``)."""
MAX_FLOWS: Final = 4096
"""Flows one frontend keeps at most (each holds a socket: the agent's file descriptors)."""

K = TypeVar("K", bound=Hashable)


@dataclass(kw_only=True, slots=True)
class Flow(Generic[K]):
    """One client's datagrams to one frontend, and the endpoint they go to."""

    key: K
    endpoint: Endpoint
    last: float
    """When the flow last carried a datagram (either way)."""
    answered: bool = False
    stream: bool = False
    datagrams: int = 0
    """Datagrams from the client relayed on this flow (what a test or an operator looks at)."""
    handle: object = field(default=None, repr=False)
    """Whatever the relay keeps for the flow (its socket to the endpoint)."""

    def timeout(self, *, plain: float, stream: float) -> float:
        return stream if self.stream else plain


class FlowTable(Generic[K]):
    """The live flows of one frontend (or a few frontends sharing endpoints), by key.

    The relay calls :meth:`from_client` and :meth:`from_endpoint` for every datagram;
    :meth:`expired` and :meth:`leaving` hand back the flows that just ended, so the relay can
    close what it holds for them.
    """

    def __init__(
        self,
        *,
        timeout: float = UDP_TIMEOUT_S,
        stream_timeout: float = UDP_STREAM_TIMEOUT_S,
        limit: int = MAX_FLOWS,
    ) -> None:
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.limit = limit
        self._flows: dict[K, Flow[K]] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[Flow[K]]:
        return iter(list(self._flows.values()))

    def get(self, key: K) -> Flow[K] | None:
        return self._flows.get(key)

    def ran_out(self, flow: Flow[K], *, now: float) -> bool:
        """Whether ``flow`` has been idle past its timeout (its next datagram starts a new
        flow, balanced again)."""
        return now - flow.last > flow.timeout(plain=self.timeout, stream=self.stream_timeout)

    def add(self, key: K, endpoint: Endpoint, *, now: float, handle: object = None) -> Flow[K]:
        """A new flow for ``key`` to ``endpoint`` (replacing any flow ``key`` had)."""
        flow: Flow[K] = Flow(key=key, endpoint=endpoint, last=now, handle=handle)
        self._flows[key] = flow
        return flow

    @staticmethod
    def from_client(flow: Flow[K], *, now: float) -> None:
        """The client wrote: after an answer, the flow is a stream."""
        flow.last = now
        flow.datagrams += 1
        if flow.answered:
            flow.stream = True

    @staticmethod
    def from_endpoint(flow: Flow[K], *, now: float) -> None:
        flow.last = now
        flow.answered = True

    def make_room(self, *, now: float) -> list[Flow[K]]:
        """Before a new flow: when the table is full, remove and return what must go (see the
        module docstring); nothing otherwise."""
        if len(self._flows) < self.limit:
            return []
        gone = self.expired(now=now)
        if gone:
            return gone
        # Insertion order is age: the first found is the oldest.
        victim = next((f for f in self._flows.values() if not f.stream), None)
        if victim is None:
            victim = next(iter(self._flows.values()))
        del self._flows[victim.key]
        return [victim]

    def remove(self, key: K) -> Flow[K] | None:
        return self._flows.pop(key, None)

    def expired(self, *, now: float) -> list[Flow[K]]:
        """Remove and return the flows idle past their timeout."""
        return self._drop(lambda flow: self.ran_out(flow, now=now))

    def leaving(self, endpoints: Iterable[Endpoint]) -> list[Flow[K]]:
        """Remove and return the flows whose endpoint is not in ``endpoints`` (those new flows
        may go to now)."""
        kept = set(endpoints)
        return self._drop(lambda flow: flow.endpoint not in kept)

    def clear(self) -> list[Flow[K]]:
        return self._drop(lambda flow: True)

    def _drop(self, ended: Callable[[Flow[K]], bool]) -> list[Flow[K]]:
        gone = [flow for flow in self._flows.values() if ended(flow)]
        for flow in gone:
            del self._flows[flow.key]
        return gone
