"""Istio's objects go through the command gateway like every stored kind: applied (an older
apiVersion stored as v1), re-applied unchanged, and refused with Istio's reason at the field's
path, appending nothing."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.gateway import Gateway
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.subjects import event_subject

pytestmark = pytest.mark.integration


def virtual_service(weight: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "hosts": ["web"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "web", "subset": "v1"}, "weight": weight},
                        {"destination": {"host": "web", "subset": "v2"}, "weight": 20},
                    ]
                }
            ],
        },
    }


async def test_apply_a_virtual_service_and_refuse_a_negative_weight(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    created = await client.send("VirtualService", "apply", {"manifest": virtual_service(80)})
    assert created.events == ["VirtualServiceCreated"]
    same = await client.send("VirtualService", "apply", {"manifest": virtual_service(80)})
    assert same.unchanged
    events = await store.read_subject(event_subject("VirtualService", "default", "web"))
    assert events[0].envelope.payload["manifest"]["apiVersion"] == "networking.istio.io/v1"

    before = await store.stream_last_seq()
    with pytest.raises(CommandFailed) as refused:
        await client.send("VirtualService", "apply", {"manifest": virtual_service(-5)})
    assert refused.value.field == "spec.http[0].route[0].weight"
    assert refused.value.message == "weight -5 < 0"
    assert await store.stream_last_seq() == before
