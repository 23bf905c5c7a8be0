"""How a gateway tells a replay from a retry when a signed command's write is already in the
log (``handlers.gateway.nonces.NonceMemory.landed``): by the nonce and delivery its first
event carries."""

from __future__ import annotations

import pytest

from handlers.gateway.context import CommandContext
from handlers.gateway.nonces import NONCE_HEADER, NonceMemory, Replayed, nonce_header


def delivered(memory: NonceMemory, key: str) -> CommandContext:
    ctx = CommandContext(subject="fleet.cmd.pod.create", data=b"", received_ns=0)
    ctx.nonce_key, ctx.delivery = key, memory.delivery()
    return ctx


def test_the_same_nonce_from_another_delivery_is_a_replay() -> None:
    memory = NonceMemory(None)
    first = delivered(memory, "Usigner.abc")
    stored = nonce_header(first.nonce_key, first.delivery)[NONCE_HEADER]
    with pytest.raises(Replayed, match="replay"):
        memory.landed(delivered(memory, "Usigner.abc"), stored)
    assert memory.replays == 1


def test_this_deliverys_own_earlier_attempt_and_a_clients_retry_are_not() -> None:
    memory = NonceMemory(None)
    ctx = delivered(memory, "Usigner.abc")
    # An ack lost, the same delivery's append found stored: its own write.
    memory.landed(ctx, nonce_header(ctx.nonce_key, ctx.delivery)[NONCE_HEADER])
    # The client's retry carries a fresh nonce: "already done", not a replay.
    retry = delivered(memory, "Usigner.def")
    memory.landed(retry, nonce_header(ctx.nonce_key, ctx.delivery)[NONCE_HEADER])
    # A write stored without a nonce (unsigned, or before the header existed).
    memory.landed(retry, None)
    assert memory.replays == 0


def test_deliveries_are_told_apart_within_and_across_gateways() -> None:
    one, other = NonceMemory(None), NonceMemory(None)
    ids = {one.delivery(), one.delivery(), other.delivery()}
    assert len(ids) == 3
