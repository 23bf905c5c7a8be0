"""API Priority and Fairness at the gateway (issue 17): a flooding user is throttled in its own
queues while another user's commands keep completing and the controllers are never refused;
the limits are objects in the log; the client retries politely after Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.access.fairness import hand
from handlers.gateway import Gateway, admission
from streams.commandbus import THROTTLED_RETRIES, CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.subjects import command_subject, event_subject

pytestmark = pytest.mark.asyncio


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
    }


def small_global_default() -> dict[str, Any]:
    """``global-default`` tuned down, as an administrator would: few seats, 8 queues of 2, a
    hand of one queue per flow."""
    queuing = {"queues": 8, "handSize": 1, "queueLengthLimit": 2}
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "global-default"},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 5,
                "limitResponse": {"type": "Queue", "queuing": queuing},
            },
        },
    }


async def raw_apply(nc: Client, actor: str, name: str) -> dict[str, Any]:
    """One try, no polite retry: what the gateway answered."""
    message = {"id": f"{actor}-{name}", "actor": actor, "body": {"manifest": pod(name)}}
    reply = await nc.request(
        command_subject("Pod", "apply"), msgpack.packb(message, use_bin_type=True), timeout=30
    )
    return msgpack.unpackb(reply.data, raw=False)


async def test_a_flood_is_throttled_while_others_and_the_controllers_keep_going(
    gateway: Gateway, nc: Client, store: EventStore
) -> None:
    flood, quiet = "user:flood", "user:calm"
    # The two flows sit in different queues (shuffle sharding with a hand of one of 8).
    assert hand(f"global-default/{flood}", queues=8, hand_size=1) != hand(
        f"global-default/{quiet}", queues=8, hand_size=1
    )
    admin = CommandClient(nc, actor="test:admin")
    applied = await admin.send(
        "PriorityLevelConfiguration", "apply", {"manifest": small_global_default()}
    )

    assert await gateway.priority_levels.wait_for(max(applied.seqs), timeout=30)

    flooding = [asyncio.create_task(raw_apply(nc, flood, f"f{i}")) for i in range(200)]
    quiet_done = 0
    controller_answers: list[dict[str, Any]] = []
    while not all(task.done() for task in flooding) or quiet_done < 10:
        if quiet_done < 10:
            answer = await raw_apply(nc, quiet, f"q{quiet_done}")
            assert answer["ok"], answer
            quiet_done += 1
        controller_answers += await asyncio.gather(
            *(raw_apply(nc, "system:replicaset-controller", f"c{len(controller_answers)}-{i}")
              for i in range(5))
        )  # fmt: skip
        await asyncio.sleep(0)
    answers = [task.result() for task in flooding]
    refused = [a for a in answers if not a["ok"]]
    assert refused, "the flood was never throttled"
    assert all(a["error"]["code"] == "too_many_requests" for a in refused), refused[:3]
    assert {a["error"]["message"] for a in refused} == {
        "Too many requests, please try again later."
    }
    assert all(a["error"]["retry_after"] >= 1 for a in refused)
    assert any(a["ok"] for a in answers)
    assert quiet_done == 10
    assert controller_answers and all(a["ok"] for a in controller_answers)
    # A refused command appended nothing.
    refused_names = [f"f{i}" for i, a in enumerate(answers) if not a["ok"]]
    assert await store.read_subject(event_subject("Pod", "default", refused_names[0])) == []


async def test_a_command_refused_by_fairness_never_has_its_manifest_parsed(
    gateway: Gateway, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Priority and fairness come before the manifest's parse (kube's order): the refused
    commands of a flood cost no parse, and every served one is parsed."""
    parsed: list[str] = []
    parse = admission.parse_manifest

    def counting_parse(doc: object, **kwargs: Any) -> Any:
        if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
            parsed.append(str(doc["metadata"].get("name")))
        return parse(doc, **kwargs)

    monkeypatch.setattr(admission, "parse_manifest", counting_parse)
    admin = CommandClient(nc, actor="test:admin")
    applied = await admin.send(
        "PriorityLevelConfiguration", "apply", {"manifest": small_global_default()}
    )
    assert await gateway.priority_levels.wait_for(max(applied.seqs), timeout=30)

    answers = await asyncio.gather(*(raw_apply(nc, "user:flood", f"f{i}") for i in range(200)))
    refused = {f"f{i}" for i, a in enumerate(answers) if not a["ok"]}
    served = {f"f{i}" for i, a in enumerate(answers) if a["ok"]}
    assert refused and served
    assert all(a["error"]["code"] == "too_many_requests" for a in answers if not a["ok"])
    assert refused.isdisjoint(parsed), sorted(refused & set(parsed))[:5]
    assert served <= set(parsed)


async def stub_gateway(nc: Client, refusals: int) -> list[int]:
    """A responder on the command subject that refuses as "too many requests" ``refusals``
    times, then accepts: what the client does with Retry-After."""
    seen: list[int] = []

    async def answer(msg: Msg) -> None:
        seen.append(1)
        if len(seen) <= refusals:
            error = {"code": "too_many_requests", "retry_after": 0,
                     "message": "Too many requests, please try again later."}  # fmt: skip
            reply: dict[str, Any] = {"ok": False, "error": error}
        else:
            reply = {"ok": True, "seqs": [1], "events": ["PodCreated"], "version": 1}
        await nc.publish(msg.reply, msgpack.packb(reply, use_bin_type=True))

    await nc.subscribe(command_subject("Pod", "apply"), cb=answer)
    await nc.flush()
    return seen


async def test_the_client_retries_politely_then_succeeds(nc: Client) -> None:
    seen = await stub_gateway(nc, refusals=2)
    outcome = await CommandClient(nc, actor="user:a").send("Pod", "apply", {"manifest": pod("p")})
    assert outcome.events == ["PodCreated"] and len(seen) == 3


async def test_the_client_gives_up_with_the_message_after_a_few_tries(nc: Client) -> None:
    seen = await stub_gateway(nc, refusals=100)
    with pytest.raises(CommandFailed) as caught:
        await CommandClient(nc, actor="user:a").send("Pod", "apply", {"manifest": pod("p")})
    assert caught.value.code == "too_many_requests"
    assert caught.value.message == "Too many requests, please try again later."
    assert len(seen) == THROTTLED_RETRIES + 1
