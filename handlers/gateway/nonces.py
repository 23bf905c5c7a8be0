"""One nonce memory for every gateway of the queue group: a signed command is accepted once,
whichever gateway it reaches, without a round trip on the path of a command that appends.

Why this exists: NATS spreads ``fleet.cmd.>`` over every gateway process of the queue group
(``up --gateways N``, ``fleetlog gateway`` on other hosts). A memory of the nonces seen kept
by each gateway alone lets a replay sent a second time pass the check of whichever gateway
has not seen it. Claiming every nonce in a shared key-value bucket closes that, but costs a
JetStream write per command (a quarter of a millisecond of CPU, half the wall's cost). So the
memory is split by what the first delivery did:

* **A command that appends** needs no claim: the log is its memory. Its events carry the
  command's write token in their ``Nats-Msg-Id`` (a replay has the same token, so JetStream's
  duplicate window, or the aggregate's recent event ids, find the first delivery's events)
  and its first event carries :data:`NONCE_HEADER` (the signature's nonce key and this
  delivery's own id). Finding the token already written, the gateway reads that header
  (:meth:`NonceMemory.landed`): the same nonce from another delivery is a replay, refused
  (:class:`Replayed`, audited); another nonce is the client's retry, answered "already done".
  The duplicate window (``streams.definitions.DUPLICATE_WINDOW_NS``) is as long as a nonce
  must be remembered (:data:`core.access.signing.NONCE_TTL_NS`): after it, the signature's
  time is refused as stale.
* **A command that appends nothing** (a no-op, a denial, an invalid or dry-run command, a
  retry answered "already done") leaves no trace in the log, yet its replay might append
  once the state has changed. Its nonce is *claimed* in the ``fleet_nonces`` bucket
  (``streams.definitions.nonce_bucket``) with an atomic create before it is answered
  (:meth:`NonceMemory.claim`): of two gateways answering the same nonce that way, one is
  refused. Every gateway watches the bucket into :attr:`NonceMemory.claimed` (a set: the
  check before an append, :meth:`NonceMemory.check`, is a lookup, no round trip).

A local memory (``core.access.signing.ReplayGuard``) stays in front: the skew check and a
replay to the same gateway are refused at once. Limit: a replay that *appends* at one gateway
while its first delivery, appending nothing, is still being claimed at another (within the
claim's propagation to the watchers, about a millisecond) is not caught; each replay that
either appended or arrived after the claim was seen is. Only control-plane identities may
write the bucket (``streams.natsauth``: users and admins publish no ``$KV`` subject).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import uuid

import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue

from core.access.signing import (
    MAX_SKEW_NS,
    NONCE_MARGIN_NS,
    ReplayGuard,
    Signature,
    SignatureRefused,
    nonce_key,
)
from core.errors import FleetError
from handlers.gateway.context import CommandContext
from streams.connection import OUTAGE_ERRORS
from streams.definitions import NONCE_BUCKET, nonce_bucket, open_key_value
from streams.eventstore import WRONG_LAST_SEQUENCE, EventStore, parse_ack

log = structlog.get_logger(__name__)

_MUST_BE_NEW = {"Nats-Expected-Last-Subject-Sequence": "0"}
CLAIM_TIMEOUT_S = 5.0
"""How long a claim may take before the command is answered ``unavailable``."""
WATCH_START_S = 10.0
"""How long a gateway waits, starting, for the claims already in the bucket."""
NONCE_HEADER = "Fleet-Nonce"
"""On the first event of a signed command's append: ``<nonce key> <delivery id>``."""

REPLAYED = (
    "this command was already received by another gateway (its nonce was used): a replay is refused"
)


class Replayed(FleetError):
    """Another delivery of this signed command was accepted first (kube's 401); nothing
    appended."""

    code = "unauthorized"


class NonceUnavailable(FleetError):
    """The shared memory could not be asked: the command is not accepted unchecked."""

    code = "unavailable"


def nonce_header(key: str, delivery: str) -> dict[str, str]:
    """The header a signed command's first event carries (see the module docstring)."""
    return {NONCE_HEADER: f"{key} {delivery}"}


class NonceMemory:
    """The local fast path, the log's memory and the shared claims (see the module
    docstring). Without a connection (``nc`` None) only the local memory is kept."""

    def __init__(self, nc: Client | None, *, guard: ReplayGuard | None = None) -> None:
        self._nc = nc
        self.guard = guard or ReplayGuard()
        self._bucket: KeyValue | None = None
        self._opening: asyncio.Lock | None = None
        self._watching: asyncio.Task[None] | None = None
        self.claimed: set[str] = set()
        """Nonce keys claimed in the bucket by any gateway (answered without an append)."""
        self._expiry: list[tuple[int, str]] = []
        self._instance = uuid.uuid4().hex[:16]
        self._deliveries = itertools.count()
        self.claims = 0
        self.replays = 0
        """Replays refused beyond the local memory (by the log or the shared claims)."""

    def delivery(self) -> str:
        """An id of one delivery of a command to this gateway: tells its own earlier append
        attempt (a lost ack) from another delivery of the same nonce."""
        return f"{self._instance}-{next(self._deliveries)}"

    async def start(self) -> None:
        """Watch the bucket: the claims already made first (so a gateway starting now knows
        them before it serves), then each new one."""
        if self._nc is None or self._watching is not None:
            return
        bucket = await self._open()
        watcher = await bucket.watchall()
        ready = asyncio.get_running_loop().create_future()
        self._watching = asyncio.create_task(self._watch(watcher, ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), WATCH_START_S)
        except TimeoutError:
            log.warning("nonces.watch_slow", waited_s=WATCH_START_S)

    async def stop(self) -> None:
        task, self._watching = self._watching, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, watcher: KeyValue.KeyWatcher, ready: asyncio.Future[None]) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # the claims made before this gateway started are in
                    if not ready.done():
                        ready.set_result(None)
                    continue
                if entry.operation is not None:
                    continue  # a key expired: forgotten here by its own time
                self._remember(entry.key, entry.value or b"")
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _remember(self, key: str, value: bytes) -> None:
        now = time.time_ns()
        while self._expiry and self._expiry[0][0] < now:
            self.claimed.discard(heapq.heappop(self._expiry)[1])
        try:
            signed_at = int(value)
        except ValueError:
            signed_at = now
        # Past this, the signature's time is refused as stale by every gateway anyway.
        heapq.heappush(self._expiry, (signed_at + MAX_SKEW_NS + NONCE_MARGIN_NS, key))
        self.claimed.add(key)

    async def check(self, ctx: CommandContext) -> None:
        """The pipeline's stage before the append: a nonce another delivery's answer claimed
        (it appended nothing then) is not used again (:class:`Replayed`)."""
        if ctx.nonce_key and ctx.nonce_key in self.claimed:
            self.replays += 1
            raise Replayed(REPLAYED)

    def landed(self, ctx: CommandContext, stored: str | None) -> None:
        """This command's token was already written, its first event carrying ``stored``
        (its :data:`NONCE_HEADER`): the same nonce from another delivery is a replay
        (:class:`Replayed`); another nonce (or none) is a retry, answered "already done"."""
        if not ctx.nonce_key or not stored:
            return
        key, _, delivery = stored.partition(" ")
        if key == ctx.nonce_key and delivery != ctx.delivery:
            self.replays += 1
            raise Replayed(REPLAYED)

    async def claim(self, signature: Signature) -> None:
        """Claim the nonce for the whole queue group (a command answered without an append):
        :class:`Replayed` when another gateway claimed it first, :class:`NonceUnavailable`
        when the bucket did not answer."""
        if self._nc is None:
            return
        bucket_open = self._bucket is not None or await self._open()
        assert bucket_open
        self.claims += 1
        key = nonce_key(signature)
        # The key-value ``create``, as one publish expecting no earlier value: nats-py's
        # bucket API (and a wait_for around it) cost a quarter more CPU per command.
        try:
            answer = await self._nc.request(
                f"$KV.{NONCE_BUCKET}.{key}",
                str(signature.signed_at_ns).encode(),
                timeout=CLAIM_TIMEOUT_S,
                headers=_MUST_BE_NEW,
            )
        except OUTAGE_ERRORS as exc:
            raise NonceUnavailable(
                "the gateways' nonce memory did not answer, so the command's signature "
                f"cannot be checked for a replay: retry ({exc!r})"
            ) from None
        ack = parse_ack(answer.data)
        error = ack.get("error")
        if error is None:
            self._remember(key, str(signature.signed_at_ns).encode())
            return
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            self.replays += 1
            raise Replayed(REPLAYED)
        raise NonceUnavailable(
            f"the gateways' nonce memory refused the claim: {error.get('description', error)}"
        )

    async def admit(self, signature: Signature, *, now_ns: int) -> None:
        """This gateway's memory (a stale time, a nonce seen here), then the shared claim;
        :class:`SignatureRefused` for either."""
        self.guard.admit(signature, now_ns=now_ns)
        try:
            await self.claim(signature)
        except Replayed as exc:
            raise SignatureRefused(str(exc)) from None

    def claim_later(self, signature: Signature) -> None:
        """:meth:`claim` without waiting for it (requests that never append: reviews)."""
        if self._nc is None:
            return
        task = asyncio.ensure_future(self.claim(signature))
        task.add_done_callback(_retrieve)

    async def _open(self) -> KeyValue:
        assert self._nc is not None
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._bucket is None:
                self._bucket = await open_key_value(self._nc, nonce_bucket())
        return self._bucket


async def stored_nonce(store: EventStore, seq: int) -> str | None:
    """The :data:`NONCE_HEADER` of the event at ``seq`` (None: it has none)."""
    headers = await store.headers_at(seq)
    return headers.get(NONCE_HEADER) if headers is not None else None


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
