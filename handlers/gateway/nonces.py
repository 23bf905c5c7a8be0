"""One nonce memory for every gateway of the queue group: a signed command is accepted once,
whichever gateway it reaches.

Why this exists: NATS spreads ``fleet.cmd.>`` over every gateway process of the queue group
(``up --gateways N``, ``fleetlog gateway`` on other hosts). A memory of the nonces seen kept
by each gateway alone lets a replay sent a second time pass the check of whichever gateway
has not seen it. So the nonce is *claimed* in a JetStream key-value bucket shared by all of
them (``fleet_nonces``, ``streams.definitions.nonce_bucket``): ``create`` is atomic (it
fails when the key exists), so of two gateways receiving the same signed command only one
claims it, and the other refuses it as a replay (``unauthorized``, audited). Keys live for
longer than a signature's time may still pass the skew check (twice the window, and a margin
for gateways' clocks), so a nonce can never be used again while it would still be accepted.
Only control-plane identities may write the bucket (``streams.natsauth``: users and admins
publish no ``$KV`` subject).

A local memory (``core.access.signing.ReplayGuard``) stays in front: the skew check and a
replay to the same gateway are refused without a round trip. The claim is the one round trip
left per command; :meth:`NonceMemory.share` starts it as soon as the signature verifies and
the pipeline awaits it only before the command's events are appended (:func:`claimed`), so
it runs while the command is routed, authorized and admitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue

from core.access.signing import ReplayGuard, Signature, SignatureRefused, nonce_key
from core.errors import FleetError
from handlers.gateway.context import CommandContext
from streams.connection import OUTAGE_ERRORS
from streams.definitions import NONCE_BUCKET, nonce_bucket, open_key_value
from streams.eventstore import WRONG_LAST_SEQUENCE, parse_ack

log = structlog.get_logger(__name__)

_MUST_BE_NEW = {"Nats-Expected-Last-Subject-Sequence": "0"}
CLAIM_TIMEOUT_S = 5.0
"""How long a claim may take before the command is answered ``unavailable``."""

REPLAYED = (
    "this command was already received by another gateway (its nonce was used): a replay is refused"
)


class Replayed(FleetError):
    """Another gateway accepted this signed command first (kube's 401); nothing appended."""

    code = "unauthorized"


class NonceUnavailable(FleetError):
    """The shared memory could not be asked: the command is not accepted unchecked."""

    code = "unavailable"


class NonceMemory:
    """The local fast path, then the shared claim (see the module docstring). Without a
    connection (``nc`` None) only the local memory is kept."""

    def __init__(self, nc: Client | None, *, guard: ReplayGuard | None = None) -> None:
        self._nc = nc
        self.guard = guard or ReplayGuard()
        self._bucket: KeyValue | None = None
        self._opening: asyncio.Lock | None = None
        self.claims = 0
        self.replays = 0
        """Replays the shared memory refused (ones the local memory missed)."""

    def share(self, signature: Signature) -> Awaitable[None]:
        """Claim the nonce for the whole queue group, once the signature verified and
        :attr:`guard` (this gateway's memory) admitted it; the result (awaited before the
        command's events are appended) raises :class:`SignatureRefused` for a nonce another
        gateway claimed first."""
        if self._nc is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        task = asyncio.ensure_future(self._claim(signature))
        # A command refused before it awaits its claim (forbidden, invalid) still used the
        # nonce; its claim's outcome is then nobody's business.
        task.add_done_callback(_retrieve)
        return task

    async def admit(self, signature: Signature, *, now_ns: int) -> None:
        """This gateway's memory (a stale time, a nonce seen here), then the shared claim,
        awaited; :class:`SignatureRefused` for either."""
        self.guard.admit(signature, now_ns=now_ns)
        await self.share(signature)

    async def _claim(self, signature: Signature) -> None:
        if self._bucket is None:
            await self._open()  # made on the first claim if `up` has not yet
        assert self._nc is not None
        self.claims += 1
        # The key-value ``create``, as one publish expecting no earlier value: nats-py's
        # bucket API (and a wait_for around it) cost a quarter more CPU per command.
        try:
            answer = await self._nc.request(
                f"$KV.{NONCE_BUCKET}.{nonce_key(signature)}",
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
            return
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            self.replays += 1
            raise SignatureRefused(REPLAYED)
        raise NonceUnavailable(
            f"the gateways' nonce memory refused the claim: {error.get('description', error)}"
        )

    async def _open(self) -> KeyValue:
        assert self._nc is not None
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._bucket is None:
                self._bucket = await open_key_value(self._nc, nonce_bucket())
        return self._bucket


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def claimed(ctx: CommandContext) -> None:
    """The pipeline's stage before anything is appended: the command's nonce was claimed by
    this gateway (a replay another gateway accepted first is refused, ``unauthorized``)."""
    claim, ctx.nonce_claim = ctx.nonce_claim, None
    if claim is None:
        return
    try:
        await claim
    except SignatureRefused as exc:
        raise Replayed(str(exc)) from None
