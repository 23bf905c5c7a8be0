"""Which ready endpoint a new connection to a service goes to: the five balancing policies.

Why this exists: the node's service proxy (kube-proxy's job) and, later, the mesh's Envoy
configuration offer the same policies — ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM and
PASSTHROUGH, Envoy's and Istio's names — and a service chooses one with an annotation. What
each policy means is decided here, once, as pure functions of the endpoints, the connection
and a random source passed in:

* **ROUND_ROBIN**: the endpoints in turn (Envoy's round robin with equal weights);
* **LEAST_REQUEST**: the power of two choices, as Envoy does it with equal weights: two
  endpoints drawn at random, the one with fewer connections in flight wins (drawn without
  replacement, so with two endpoints the idle one always wins);
* **RING_HASH**: a consistent-hash ring keyed by the client's address, so the same client
  always reaches the same endpoint and removing an endpoint remaps only the keys it held.
  Each endpoint has a fixed number of points (ketama's 160) rather than Envoy's share of a
  1,024-point ring: with shares, the endpoints that stay gain points when one leaves and
  take keys from each other, which the promise above rules out;
* **RANDOM**: uniformly at random;
* **PASSTHROUGH**: no choice at all: the connection goes to the address it was sent to
  (Envoy's ORIGINAL_DST), for clients that address endpoints themselves.

``sessionAffinity: ClientIP`` (kube-proxy's) is applied on top by :class:`ClientAffinity`: a
client keeps the endpoint it was last given for ``timeoutSeconds`` after its last connection,
while that endpoint stays ready.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Final, NamedTuple

POLICY_ANNOTATION: Final = "fleetlog.dev/load-balancer"
"""The service annotation that names its policy (``RING_HASH`` …); ROUND_ROBIN when absent."""


class Policy(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RING_HASH = "RING_HASH"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"


DEFAULT_POLICY: Final = Policy.ROUND_ROBIN
POINTS_PER_ENDPOINT: Final = 160
"""Points each endpoint has on the ring (ketama's number: each endpoint's share of keys is
then within about ten per cent of the others')."""


def policy_problem(annotations: Mapping[str, str] | None) -> str | None:
    """Why the service's policy annotation is not one of the five (None when it is, or absent):
    admission refuses such a service rather than silently balancing another way."""
    value = (annotations or {}).get(POLICY_ANNOTATION)
    if value is None or value in Policy.__members__:
        return None
    supported = ", ".join(f'"{p.value}"' for p in Policy)
    return f'Unsupported value "{value}": supported values: {supported}'


def policy_of(annotations: Mapping[str, str] | None) -> Policy:
    """The policy a service asks for (its annotation was validated on admission)."""
    value = (annotations or {}).get(POLICY_ANNOTATION)
    return Policy(value) if value in Policy.__members__ else DEFAULT_POLICY


class Endpoint(NamedTuple):
    """One ready address of a service port."""

    address: str
    port: int


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring over endpoints: each endpoint owns ``POINTS_PER_ENDPOINT``
    points, and a key goes to the owner of the first point at or after its hash (wrapping
    around)."""

    __slots__ = ("_owners", "_points")

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        entries: list[tuple[int, Endpoint]] = []
        for endpoint in endpoints:
            name = f"{endpoint.address}:{endpoint.port}"
            entries += [(_point(f"{name}_{i}"), endpoint) for i in range(POINTS_PER_ENDPOINT)]
        entries.sort()
        self._points = [point for point, _ in entries]
        self._owners = [endpoint for _, endpoint in entries]

    def lookup(self, key: str) -> Endpoint | None:
        if not self._points:
            return None
        index = bisect.bisect_left(self._points, _point(key))
        return self._owners[index % len(self._owners)]


class Balancer:
    """Picks endpoints for one service port under one policy.

    The endpoints are replaced as the service's ready set changes (:meth:`update`); a picker's
    state (the round-robin position, connections in flight, the ring) follows. ``rng`` is the
    random source, passed in so that tests (and replays of a decision) are deterministic.
    """

    def __init__(self, policy: Policy, *, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self._endpoints: tuple[Endpoint, ...] = ()
        self._next = 0
        self._ring = HashRing(())
        self.in_flight: dict[Endpoint, int] = {}
        """Connections open per endpoint (LEAST_REQUEST), kept by :meth:`opened` /
        :meth:`closed`; an endpoint that left the ready set keeps its count until they close."""

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """The ready endpoints now (in a stable order: the round robin keeps its place)."""
        fresh = tuple(sorted(set(endpoints)))
        if fresh == self._endpoints:
            return
        self._endpoints = fresh
        if self.policy is Policy.RING_HASH:
            self._ring = HashRing(fresh)
        if fresh and self.policy is Policy.ROUND_ROBIN and self._next == 0:
            # Start each node's proxy at its own place, as Envoy's workers do, so that many
            # proxies do not all send their first connections to the same endpoint.
            self._next = self._rng.randrange(len(fresh))

    def pick(self, *, client: str, original: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for a new connection from ``client`` (its address: the RING_HASH key)
        that was sent to ``original``; None when there is nowhere to send it."""
        if self.policy is Policy.PASSTHROUGH:
            return original
        endpoints = self._endpoints
        if not endpoints:
            return None
        if self.policy is Policy.ROUND_ROBIN:
            chosen = endpoints[self._next % len(endpoints)]
            self._next = (self._next + 1) % len(endpoints)
            return chosen
        if self.policy is Policy.RANDOM:
            return endpoints[self._rng.randrange(len(endpoints))]
        if self.policy is Policy.RING_HASH:
            return self._ring.lookup(client)
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = self._rng.sample(endpoints, 2)
        if self.in_flight.get(second, 0) < self.in_flight.get(first, 0):
            return second
        return first

    def opened(self, endpoint: Endpoint) -> None:
        self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1

    def closed(self, endpoint: Endpoint) -> None:
        left = self.in_flight.get(endpoint, 0) - 1
        if left > 0:
            self.in_flight[endpoint] = left
        else:
            self.in_flight.pop(endpoint, None)


DEFAULT_AFFINITY_TIMEOUT_SECONDS: Final = 10800
"""``sessionAffinityConfig.clientIP.timeoutSeconds``' default (three hours)."""


class ClientAffinity:
    """``sessionAffinity: ClientIP``: a client keeps its endpoint while it stays ready and the
    client connects again within ``timeout_seconds`` of its last connection. Times are seconds
    on any monotonic clock, passed in."""

    def __init__(self, timeout_seconds: float = DEFAULT_AFFINITY_TIMEOUT_SECONDS) -> None:
        self.timeout_seconds = timeout_seconds
        self._sticky: dict[str, tuple[Endpoint, float]] = {}

    def remembered(self, client: str, *, ready: Iterable[Endpoint], now: float) -> Endpoint | None:
        """The endpoint ``client`` is held to, if any (and still ready and not timed out)."""
        held = self._sticky.get(client)
        if held is None:
            return None
        endpoint, last = held
        if now - last > self.timeout_seconds or endpoint not in set(ready):
            del self._sticky[client]
            return None
        return endpoint

    def remember(self, client: str, endpoint: Endpoint, *, now: float) -> None:
        self._sticky[client] = (endpoint, now)

    def expire(self, *, now: float) -> None:
        """Forget the clients whose time ran out (called now and then to bound the table)."""
        stale = [c for c, (_, last) in self._sticky.items() if now - last > self.timeout_seconds]
        for client in stale:
            del self._sticky[client]
