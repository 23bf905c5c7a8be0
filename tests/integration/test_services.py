"""Services through the gateway against a real nats-server: addresses and node ports allocated
atomically with the service (racing creates on two gateways never share one), requested values
honoured or refused in Kubernetes' words, kept on a re-apply, given back on a type change and
on delete; the records cannot be written by a client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.api.commands import command_message
from core.api.manifests import dump_manifest, parse_manifest
from core.services.allocation import plan_service, seed_of
from core.services.ranges import DEFAULT_RANGES
from handlers.gateway import Gateway, execute
from handlers.gateway.execute import UID_NAMESPACE
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.repository import uuid5_text
from streams.subjects import command_subject, event_subject
from tests.integration.support import captured_logs

pytestmark = pytest.mark.integration


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}], **spec},
    }


def node_port(name: str, port: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "http", "port": 80}
    if port is not None:
        entry["nodePort"] = port
    return service(name, type="NodePort", ports=[entry])


async def stored(store: EventStore, kind: str, name: str, namespace: str = "") -> dict | None:
    """The object's manifest as its last event left it (None: deleted or never created)."""
    events = await store.read_subject(event_subject(kind, namespace, name))
    if not events or events[-1].envelope.type.endswith("Deleted"):
        return None
    for event in reversed(events):
        if "manifest" in event.envelope.payload:
            return event.envelope.payload["manifest"]
    return None


@pytest.fixture
async def second_gateway(nc: Client, store: EventStore) -> AsyncIterator[Gateway]:
    """Another gateway in the same queue group, with its own cache and locks (as another
    process would have): races between the two are decided by the log alone."""
    other = await Gateway.create(nc, store)
    ready = asyncio.Event()
    task = asyncio.create_task(other.run(ready))
    await ready.wait()
    try:
        yield other
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


async def test_a_service_gets_an_address_from_the_range_with_its_record(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    created = await client.send("Service", "create", {"manifest": service()})
    assert created.events == ["ServiceCreated", "IPAddressCreated"]
    manifest = await stored(store, "Service", "web", "default")
    assert manifest is not None
    spec = manifest["spec"]
    ip = spec["clusterIP"]
    assert ip.startswith("100.64.") and spec["clusterIPs"] == [ip]
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    assert manifest["status"] == {"loadBalancer": {}}
    record = await stored(store, "IPAddress", ip)
    assert record is not None and record["spec"]["parentRef"] == {
        "group": "",
        "resource": "services",
        "namespace": "default",
        "name": "web",
    }
    again = await client.send("Service", "apply", {"manifest": service()})
    assert again.unchanged


def command(kind: str, verb: str, body: dict[str, Any], key: str) -> tuple[str, bytes]:
    """A command's subject and bytes, to hand to one gateway directly."""
    message = command_message(idempotency_key=key, actor="user:alice", body=body)
    return command_subject(kind, verb), msgpack.packb(message, use_bin_type=True)


async def test_racing_creates_asking_for_one_address_on_two_gateways_give_it_to_exactly_one(
    gateway: Gateway, second_gateway: Gateway, store: EventStore
) -> None:
    for round_ in range(5):
        ip = f"100.64.0.{100 + round_}"
        # Each gateway decides one of them, on its own cache and locks (as two processes
        # would): only the atomic append with "must be new" on the address decides.
        replies = await asyncio.gather(
            *(
                door.handle(
                    *command(
                        "Service",
                        "create",
                        {"manifest": service(f"s{round_}-{i}", clusterIP=ip)},
                        f"race-{round_}-{i}",
                    )
                )
                for i, door in enumerate((gateway, second_gateway))
            )
        )
        won = [r for r in replies if r["ok"]]
        lost = [r["error"] for r in replies if not r["ok"]]
        assert len(won) == 1 and len(lost) == 1, replies
        assert lost[0]["field"] == "spec.clusterIPs"
        assert "provided IP is already allocated" in lost[0]["message"]
        record = await stored(store, "IPAddress", ip)
        assert record is not None
        holders = [
            name
            for name in (f"s{round_}-0", f"s{round_}-1")
            if await stored(store, "Service", name, "default") is not None
        ]
        assert holders == [record["spec"]["parentRef"]["name"]]


async def test_a_picked_address_the_read_model_missed_is_avoided_on_the_next_attempt(
    gateway: Gateway, second_gateway: Gateway, store: EventStore
) -> None:
    key = "lagging-read-model-1"
    uid = uuid5_text(UID_NAMESPACE, f"{key}/Service/default/late")
    manifest = service("late")
    sent = dump_manifest(parse_manifest(manifest))
    wanted = plan_service(
        None, sent, ranges=DEFAULT_RANGES, taken_ips=set(), taken_ports=set(), seed=seed_of(uid)
    ).take_ips[0]
    # The second gateway stops following addresses, then another service takes the address
    # it will pick: its read model says the address is free when it is not.
    await second_gateway.services.addresses.stop()
    first = await gateway.handle(
        *command(
            "Service", "create", {"manifest": service("early", clusterIP=wanted)}, "early-key-1"
        )
    )
    assert first["ok"], first
    with captured_logs(execute) as logs:
        reply = await second_gateway.handle(
            *command("Service", "create", {"manifest": manifest}, key)
        )
    assert [entry["event"] for entry in logs] == ["command.retry_on_conflict"]
    assert reply["ok"] and reply["events"] == ["ServiceCreated", "IPAddressCreated"], reply
    late = await stored(store, "Service", "late", "default")
    assert late is not None and late["spec"]["clusterIP"] != wanted


async def test_racing_creates_without_a_request_all_get_distinct_addresses(
    gateway: Gateway, second_gateway: Gateway, nc: Client, store: EventStore
) -> None:
    client = CommandClient(nc, actor="user:alice")
    outcomes = await asyncio.gather(
        *(client.send("Service", "create", {"manifest": service(f"s{i}")}) for i in range(24))
    )
    assert all("IPAddressCreated" in o.events for o in outcomes)
    ips = [
        (await stored(store, "Service", f"s{i}", "default") or {})["spec"]["clusterIP"]
        for i in range(24)
    ]
    assert len(set(ips)) == 24


async def test_a_requested_address_outside_the_range_is_refused(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    with pytest.raises(CommandFailed) as caught:
        await client.send("Service", "create", {"manifest": service(clusterIP="10.96.0.20")})
    assert caught.value.code == "invalid" and caught.value.field == "spec.clusterIPs"
    assert caught.value.message == (
        'Invalid value: ["10.96.0.20"]: failed to allocate IP 10.96.0.20: provided IP is not in '
        "the valid range. The range of valid IPs is 100.64.0.0/16"
    )
    assert await store.read_subject(event_subject("Service", "default", "web")) == []


async def test_node_ports_are_allocated_a_taken_one_refused_and_given_back_on_delete(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    first = await client.send("Service", "create", {"manifest": node_port("a", 30080)})
    assert first.events == ["ServiceCreated", "IPAddressCreated", "NodePortAllocationCreated"]
    with pytest.raises(CommandFailed) as caught:
        await client.send("Service", "create", {"manifest": node_port("b", 30080)})
    assert caught.value.field == "spec.ports[0].nodePort"
    assert caught.value.message == "Invalid value: 30080: provided port is already allocated"
    assert await stored(store, "Service", "b", "default") is None
    picked = await client.send("Service", "create", {"manifest": node_port("c")})
    c_spec = (await stored(store, "Service", "c", "default") or {})["spec"]
    assert 30000 <= c_spec["ports"][0]["nodePort"] <= 32767 and "IPAddressCreated" in picked.events

    a_ip = (await stored(store, "Service", "a", "default") or {})["spec"]["clusterIP"]
    deleted = await client.send("Service", "delete", {"name": "a"})
    assert deleted.events == ["ServiceDeleted", "IPAddressDeleted", "NodePortAllocationDeleted"]
    assert await stored(store, "IPAddress", a_ip) is None
    assert await stored(store, "NodePortAllocation", "30080") is None
    # Given back: both may be asked for again, by another service.
    again = node_port("b", 30080)
    again["spec"]["clusterIP"] = a_ip
    taken_again = await client.send("Service", "create", {"manifest": again})
    assert taken_again.events == [
        "ServiceCreated",
        "IPAddressCreated",
        "NodePortAllocationCreated",
    ]
    record = await stored(store, "NodePortAllocation", "30080")
    assert record is not None and record["spec"]["parentRef"]["name"] == "b"


async def test_a_type_change_gives_back_what_the_new_type_does_not_need(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    await client.send("Service", "create", {"manifest": node_port("web", 30081)})
    ip = (await stored(store, "Service", "web", "default") or {})["spec"]["clusterIP"]
    to_cluster_ip = await client.send("Service", "apply", {"manifest": service("web")})
    assert to_cluster_ip.events == ["ServiceUpdated", "NodePortAllocationDeleted"]
    assert (await stored(store, "Service", "web", "default") or {})["spec"]["clusterIP"] == ip
    external = {"type": "ExternalName", "externalName": "db.example.com"}
    to_external = await client.send(
        "Service",
        "apply",
        {"manifest": {**service("web"), "spec": external}},
    )
    assert to_external.events == ["ServiceUpdated", "IPAddressDeleted"]
    back = await client.send("Service", "apply", {"manifest": service("web")})
    assert back.events == ["ServiceUpdated", "IPAddressCreated"]


async def test_an_allocated_address_may_not_change(gateway: Gateway, client: CommandClient) -> None:
    await client.send("Service", "create", {"manifest": service(clusterIP="100.64.0.50")})
    with pytest.raises(CommandFailed) as caught:
        await client.send("Service", "apply", {"manifest": service(clusterIP="100.64.0.51")})
    assert caught.value.code == "invalid_transition"
    assert caught.value.field == "spec.clusterIPs[0]"
    assert "may not change once set" in caught.value.message


async def test_headless_and_external_name_services_take_no_address(
    gateway: Gateway, client: CommandClient
) -> None:
    headless = await client.send("Service", "create", {"manifest": service("db", clusterIP="None")})
    assert headless.events == ["ServiceCreated"]
    external = {"type": "ExternalName", "externalName": "db.example.com"}
    named = await client.send(
        "Service", "create", {"manifest": {**service("ext"), "spec": external}}
    )
    assert named.events == ["ServiceCreated"]


async def test_clients_cannot_write_allocation_records(
    gateway: Gateway, client: CommandClient
) -> None:
    record = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {"name": "100.64.0.77"},
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "x"}},
    }
    with pytest.raises(CommandFailed) as caught:
        await client.send("IPAddress", "apply", {"manifest": record})
    assert caught.value.code == "forbidden"
    with pytest.raises(CommandFailed, match="allocated and released with their service"):
        await client.send("NodePortAllocation", "delete", {"name": "30080"})


async def test_an_unknown_load_balancing_policy_is_refused_with_the_five_named(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    manifest = service()
    manifest["metadata"]["annotations"] = {"fleetlog.dev/load-balancer": "LEAST_CONN"}
    with pytest.raises(CommandFailed) as caught:
        await client.send("Service", "create", {"manifest": manifest})
    assert caught.value.code == "invalid"
    assert caught.value.field == "metadata.annotations[fleetlog.dev/load-balancer]"
    assert caught.value.message == (
        'Unsupported value "LEAST_CONN": supported values: "ROUND_ROBIN", "LEAST_REQUEST", '
        '"RING_HASH", "RANDOM", "PASSTHROUGH"'
    )
    assert await store.read_subject(event_subject("Service", "default", "web")) == []
    manifest["metadata"]["annotations"] = {"fleetlog.dev/load-balancer": "LEAST_REQUEST"}
    await client.send("Service", "create", {"manifest": manifest})
    assert (await stored(store, "Service", "web", "default") or {})["metadata"]["annotations"] == {
        "fleetlog.dev/load-balancer": "LEAST_REQUEST"
    }
