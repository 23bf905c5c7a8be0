"""Node heartbeats and leader leases, in JetStream key-value buckets (never in ``FLEET``).

Heartbeats are high-frequency and only their latest value matters, so each node renews one key
in ``fleet_node_leases``; the node lifecycle controller keeps an in-memory map of the latest
renewal of every node from an ordered consumer (last value per key, then live), so checking
5,000 nodes costs no round trip.

Singleton roles (the node lifecycle controller) elect a leader with a key in ``fleet_leaders``:
created only if absent, renewed with an expected revision, expiring with the bucket's TTL when
its holder stops renewing. A holder that cannot renew (the server is away) stops counting
itself leader once its renew deadline passes, before the key can expire and another process
take it (Kubernetes' leader election: a renew deadline shorter than the lease), and takes the
lease again (or yields it to whoever took it) when the server answers.

The buckets are defined, and set up when first opened, in :mod:`streams.definitions`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)
from nats.js.kv import KeyValue

from streams import jsapi
from streams.connection import in_outage, resubscribe, when_reconnected
from streams.definitions import (
    LEADER_TTL_SECONDS,
    MEMBER_TTL_SECONDS,
    StreamSpec,
    leader_bucket,
    members_bucket,
    node_lease_bucket,
    open_key_value,
)
from streams.subjects import decode_token, encode_token

log = structlog.get_logger(__name__)

WRONG_LAST_SEQUENCE = 10071  # JetStream: the expected last sequence did not match
RENEW_DEADLINE_SECONDS = LEADER_TTL_SECONDS * 2 / 3
"""How long after the last renewal it sent a leader still acts as one (the key lives for the
bucket's TTL after it was stored, which is later)."""


class _Renewals:
    """Follows the latest renewal time under every key of a KV bucket (last value per key,
    then live); a deleted key is forgotten.

    A bucket in memory (the members') is gone after its server restarts: a renewal that finds
    no bucket sets it up again, and one stored at a sequence below what was followed (the
    bucket is a new one) follows it again from its start (:meth:`_put`), since the ordered
    consumer nats-py recreates would wait for sequences the new bucket will not reach soon."""

    def __init__(self, nc: Client, kv: KeyValue, spec: StreamSpec) -> None:
        assert spec.key_value is not None
        self._nc = nc
        self._kv = kv
        self._spec = spec
        self._bucket = spec.key_value.bucket
        self.renewed_ns: dict[str, int] = {}
        self._subscription: Any = None
        self._keys: str | None = None
        self._last_seq = 0  # the bucket's sequence of the latest renewal followed
        self._forget_reconnect: Callable[[], None] | None = None

    def _membership_changed(self) -> None:
        """Called when a key appears or is deleted (not on a renewal)."""

    async def _put(self, key: str, value: bytes) -> None:
        try:
            revision = await self._kv.put(key, value)
        except NoStreamResponseError:
            log.warning("renewal.bucket_missing", bucket=self._bucket, effect="set up again")
            self._kv = await open_key_value(self._nc, self._spec)
            revision = await self._kv.put(key, value)
        if revision <= self._last_seq and self._keys is not None:
            # A renewal older than one already seen: the bucket is a new one (set up again
            # by this process or another): follow it from its start.
            await self._refollow()

    async def _refollow(self) -> None:
        """After a reconnection: the latest value of every key again, then live."""
        if self._keys is None:
            return
        keys = self._keys
        await self._unsubscribe()
        await resubscribe(lambda: self._follow(keys), what=f"bucket {self._bucket}")

    async def _follow(self, keys: str) -> None:
        self._keys = keys
        if self._forget_reconnect is None:
            self._forget_reconnect = when_reconnected(self._nc, self._refollow)

        self._last_seq = 0

        async def on_message(msg: Msg) -> None:
            self._last_seq = max(self._last_seq, msg.metadata.sequence.stream)
            token = msg.subject.rsplit(".", 1)[-1]
            try:
                name = decode_token(token)
                if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    changed = self.renewed_ns.pop(name, None) is not None
                else:
                    changed = name not in self.renewed_ns
                    self.renewed_ns[name] = int(msgpack.unpackb(msg.data)["renewed_ns"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("renewal.unreadable", bucket=self._bucket, key=token, error=str(exc))
                return
            if changed:
                self._membership_changed()

        self._subscription = await jsapi.jetstream(self._nc).subscribe(
            f"$KV.{self._bucket}.{keys}",
            stream=f"KV_{self._bucket}",
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )

    async def stop(self) -> None:
        if self._forget_reconnect is not None:
            self._forget_reconnect()
            self._forget_reconnect = None
        self._keys = None
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None


class NodeLeases(_Renewals):
    """Renew a node's heartbeat; follow every node's latest heartbeat."""

    def __init__(self, nc: Client, kv: KeyValue) -> None:
        super().__init__(nc, kv, node_lease_bucket())

    @classmethod
    async def open(cls, nc: Client) -> NodeLeases:
        return cls(nc, await open_key_value(nc, node_lease_bucket()))

    async def renew(self, node: str, now_ns: int) -> None:
        await self._put(encode_token(node), msgpack.packb({"renewed_ns": now_ns}))

    async def follow(self) -> None:
        """Keep :attr:`renewed_ns` up to date (latest value of every key, then live)."""
        await self._follow(">")


class LeaderLease:
    """Leadership of one singleton role, held by renewing a key before the bucket TTL."""

    def __init__(
        self,
        kv: KeyValue,
        role: str,
        holder: str,
        *,
        renew_deadline: float = RENEW_DEADLINE_SECONDS,
        nc: Client | None = None,
    ) -> None:
        self._kv = kv
        self._nc = nc
        self._key = encode_token(role)
        self.holder = holder
        self.renew_deadline = renew_deadline
        self._revision: int | None = None
        self._valid_until = 0.0  # monotonic: the renew deadline of the last renewal stored
        self._failing = False
        self._standing = False  # is_leader as the last renew() saw it

    @classmethod
    async def open(cls, nc: Client, role: str, holder: str | None = None) -> LeaderLease:
        """The lease of ``role``, held as ``holder`` (default: the role and a random suffix,
        unique to this process)."""
        holder = holder or f"{role}-{uuid.uuid4().hex[:8]}"
        return cls(await open_key_value(nc, leader_bucket()), role, holder, nc=nc)

    @property
    def is_leader(self) -> bool:
        """Holding the key, renewed within the renew deadline."""
        return self._revision is not None and time.monotonic() < self._valid_until

    async def try_lead(self) -> bool:
        """Acquire or renew leadership; False if someone else holds it. A round trip that
        fails (the server is away) raises, and leaves the standing as it was: a lease whose
        renew deadline passes meanwhile stops counting (:attr:`is_leader`), and is renewed
        with its revision when the server answers again, if nobody took it."""
        value = self.holder.encode()
        sent = time.monotonic()
        try:
            if self._revision is None:
                self._revision = await self._kv.create(self._key, value)
                log.info("leader.acquired", key=self._key, holder=self.holder)
            else:
                self._revision = await self._kv.update(self._key, value, last=self._revision)
        except KeyWrongLastSequenceError:
            own = await self._own_revision(value)
            if own is not None:
                # A renewal sent during an outage reached the server when the link came back
                # (nats-py sends what it buffered), after this holder had given up on it.
                self._revision = own
                self._valid_until = sent + self.renew_deadline
                return self.is_leader
            if self._revision is not None:
                # After a renew deadline passed the lease was already given up (and said so).
                (log.warning if self.is_leader else log.info)(
                    "leader.lost", key=self._key, holder=self.holder
                )
            self._revision = None
        if self._revision is not None:
            self._valid_until = sent + self.renew_deadline
        return self.is_leader

    async def _own_revision(self, value: bytes) -> int | None:
        """The key's revision if it names this holder (its own write landed), else None."""
        try:
            entry = await self._kv.get(self._key)
        except KeyNotFoundError:
            return None
        return entry.revision if entry.value == value else None

    async def renew(self) -> bool:
        """One renewal of a periodic loop: True when this call made the holder leader (it
        must catch up with what happened while it was not). A failed round trip (a KV timeout,
        the server away) never raises: the holder stays leader until its renew deadline, then
        yields, and tries again at the next period."""
        was_leader = self._standing
        try:
            await self.try_lead()
        except Exception as exc:
            quiet = self._failing or (self._nc is not None and in_outage(self._nc))
            (log.debug if quiet else log.warning)(
                "leader.renew_failed", key=self._key, holder=self.holder, error=str(exc)
            )
            self._failing = True
        else:
            self._failing = False
        leading = self._standing = self.is_leader
        if was_leader and not leading and self._revision is not None:
            log.warning(
                "leader.yielded",
                key=self._key,
                holder=self.holder,
                reason=f"not renewed for {self.renew_deadline:g}s",
            )
        return leading and not was_leader

    async def resign(self) -> None:
        """Give leadership up at once (a follower need not wait for the TTL).

        A renewal cancelled in flight may have landed without this holder learning its new
        revision: if the key still names this holder, it is deleted at its current revision.
        """
        if self._revision is None:
            return
        try:
            await self._kv.delete(self._key, last=self._revision)
        except BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                log.warning("leader.resign_failed", key=self._key, error=repr(exc))
                return
            with contextlib.suppress(Exception):
                entry = await self._kv.get(self._key)
                if entry.value == self.holder.encode():
                    await self._kv.delete(self._key, last=entry.revision)
        except Exception as exc:  # the lease then lapses with the bucket's TTL
            log.warning("leader.resign_failed", key=self._key, error=repr(exc))
        finally:
            self._revision = None


class Membership(_Renewals):
    """The live replicas of a role, so they can share out work (scheduler replicas split the
    queue of pending pods by it).

    Each member renews ``<role>.<member>`` with the time it renewed; a member whose last
    renewal is older than the TTL counts as gone (key-value TTLs expire silently, so the value
    carries the time, as node heartbeats do). A member always counts itself, so a replica
    alone, or one whose own key is not seen yet, takes everything rather than nothing.
    """

    def __init__(self, nc: Client, kv: KeyValue, role: str, member: str, ttl: float) -> None:
        super().__init__(nc, kv, members_bucket(ttl))
        self.role = role
        self.member = member
        self.ttl = ttl
        self.on_change: Callable[[], None] | None = None

    def _membership_changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @classmethod
    async def open(
        cls, nc: Client, role: str, member: str, ttl: float = MEMBER_TTL_SECONDS
    ) -> Membership:
        return cls(nc, await open_key_value(nc, members_bucket(ttl)), role, member, ttl)

    @property
    def _key(self) -> str:
        return f"{encode_token(self.role)}.{encode_token(self.member)}"

    async def renew(self, now_ns: int) -> None:
        await self._put(self._key, msgpack.packb({"renewed_ns": now_ns}))

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self._kv.delete(self._key)

    def members(self, now_ns: int) -> list[str]:
        """The live members, sorted (the same list on every member that sees the same keys)."""
        horizon = now_ns - int(self.ttl * 1e9)
        live = {member for member, at in self.renewed_ns.items() if at >= horizon}
        live.add(self.member)
        return sorted(live)

    async def follow(self) -> None:
        """Keep :attr:`renewed_ns` up to date with every member's latest renewal."""
        await self._follow(f"{encode_token(self.role)}.*")
