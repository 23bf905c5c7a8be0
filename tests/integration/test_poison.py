"""Poison events never stop a reader: garbage, truncated envelopes, unknown event types, future
schema versions and payloads a fold cannot take, published raw on every kind's event subjects
(and on the audit trail), are quarantined — skipped, counted, listed by ``audit verify`` — while
every role started after them catches up, serves and writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from core.api.events import RESOURCE_KINDS
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.query import QueryService
from projections.runtime import Projection
from streams.audit import read_audit
from streams.commandbus import CommandClient
from streams.envelope import Envelope, StoredEvent
from streams.eventstore import EventStore
from streams.integrity import verify_log
from streams.quarantine import (
    FOLD_FAILED,
    INVALID_PAYLOAD,
    UNDECODABLE,
    UNKNOWN_TYPE,
    UNKNOWN_VERSION,
)
from streams.subjects import event_subject
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration


def envelope(
    kind: str, name: str, event_type: str, payload: dict[str, Any], **fields: Any
) -> bytes:
    return Envelope(
        event_id=f"poison-{kind}-{name}-{event_type}",
        type=event_type,
        schema_version=fields.pop("schema_version", 1),
        kind=kind,
        namespace="default",
        name=name,
        version=fields.pop("version", 1),
        timestamp_ns=1_800_000_000_000_000_000,
        actor="mallory",
        correlation_id="c",
        causation_id="c",
        payload=payload,
    ).encode()


def poisons(kind: str, name: str) -> Iterator[tuple[str, bytes]]:
    """(reason, bytes) of each kind of poison for an object of ``kind``."""
    whole = envelope(kind, name, f"{kind}Updated", {"manifest": {}})
    yield UNDECODABLE, b"\xc1 not msgpack at all"
    yield UNDECODABLE, whole[: len(whole) // 2]
    yield UNDECODABLE, msgpack.packb({"t": f"{kind}Created", "d": {}})
    yield UNKNOWN_TYPE, envelope(kind, name, f"{kind}Exploded", {"manifest": {}, "uid": "u"})
    yield (
        UNKNOWN_VERSION,
        envelope(kind, name, f"{kind}Updated", {"manifest": {}}, schema_version=9),
    )
    yield INVALID_PAYLOAD, envelope(kind, name, f"{kind}Created", {"uid": 7, "manifest": {}})


async def publish_poison(nc: Client, subject: str, kind: str, name: str) -> dict[int, str]:
    """Every poison on ``subject``: the reason each stored sequence must be quarantined for."""
    js = nc.jetstream()
    expected = {}
    for reason, data in poisons(kind, name):
        expected[(await js.publish(subject, data)).seq] = reason
    return expected


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1"}]},
            },
        },
    }


async def test_every_role_started_after_poison_on_every_kind_catches_up_serves_and_writes(
    nc: Client, gateway: Gateway, client: CommandClient, nats_server: Any
) -> None:
    expected: dict[int, str] = {}
    for kind in RESOURCE_KINDS:
        subject = event_subject(kind, "default", "victim")
        expected |= await publish_poison(nc, subject, kind, "victim")
    # Last on the subject of an object that exists: its next write must still land.
    expected |= await publish_poison(
        nc, event_subject("Namespace", "", "default"), "Namespace", "default"
    )

    async with EventStore(nc) as store:  # a process started after the poison
        projection = Projection(ClusterModel(), store)
        await projection.catch_up()
        await projection.follow()
        ready = asyncio.Event()
        serving = asyncio.create_task(QueryService(nc, projection).run(ready))
        await ready.wait()
        try:
            assert {q.seq: q.reason for q in store.quarantine} == expected
            assert projection.model.get("Namespace", "", "default") is not None
            assert projection.model.get("Pod", "default", "victim") is None
            async with workload_roles(nc, store, projection):
                await client.send("Deployment", "apply", {"manifest": deployment("web", 2)})

                async def running() -> bool:
                    pods = list(projection.model.list("Pod", "default"))
                    return len(pods) == 2 and all(
                        p.manifest.get("status", {}).get("phase") == "Running" for p in pods
                    )

                await eventually(running, timeout=30)
                labelled = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "default", "labels": {"after": "poison"}},
                }
                await client.send("Namespace", "apply", {"manifest": labelled})

                # Poison arriving live: read-your-writes still answers at once.
                live = await publish_poison(
                    nc, event_subject("Pod", "default", "web-x"), "Pod", "web-x"
                )
                expected |= live
                assert await projection.wait_for_log_end(timeout=10)
                assert projection.position == max(live)
                assert {q.seq for q in store.quarantine} == set(expected)

            got = await cli(nats_server.url, "get", "namespace", "default", "-o", "json")
            assert got.exit_code == 0 and '"after": "poison"' in got.output
            events = await cli(nats_server.url, "events", "-o", "json")
            assert events.exit_code == 0 and "DeploymentCreated" in events.output
            history = await cli(nats_server.url, "history", "namespace/default")
            assert history.exit_code == 0 and "NamespaceUpdated" in history.output
            assert store.quarantine.summary().startswith(f"{len(expected)} event(s) of FLEET")
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await projection.stop()

        report = await verify_log(store)
        assert {q.seq: q.reason for q in report.quarantined} == expected
        assert report.breaks == [] and not report.ok
    verified = await cli(nats_server.url, "audit", "verify")
    assert verified.exit_code == 1
    lines = verified.output.splitlines()
    assert sum(line.startswith("QUARANTINED  seq ") for line in lines) == len(expected)
    assert f"{len(expected)} quarantined event(s)" in lines[-2]


class Fragile:
    """A read model whose fold breaks on one kind of event (a shape no check foresaw)."""

    name = "fragile"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def apply(self, event: StoredEvent) -> None:
        if event.envelope.name == "boom":
            raise KeyError("spec")
        self.seen.append(event.envelope.name)

    def snapshot(self) -> Any:
        return self.seen

    def restore(self, data: Any) -> None:
        self.seen = list(data)


async def test_an_event_a_fold_raises_on_is_quarantined_and_the_fold_goes_on(
    nc: Client, store: EventStore
) -> None:
    js = nc.jetstream()
    names = ["a", "boom", "b"]
    for name in names:
        await js.publish(
            event_subject("Pod", "default", name),
            envelope("Pod", name, "PodCreated", {"uid": name, "manifest": {}}),
        )
    projection = Projection(Fragile(), store)
    await projection.catch_up()
    assert projection.model.seen == ["a", "b"] and projection.position == 3
    assert [(q.seq, q.reason) for q in store.quarantine] == [(2, FOLD_FAILED)]
    assert "fragile: KeyError" in next(iter(store.quarantine)).detail
    await projection.follow()
    try:
        await js.publish(
            event_subject("Pod", "default", "boom"),
            envelope("Pod", "boom", "PodCreated", {"uid": "boom", "manifest": {}}),
        )
        assert await projection.wait_for_log_end(timeout=10)
        assert projection.position == 4 and len(store.quarantine) == 2
    finally:
        await projection.stop()


async def test_unreadable_audit_records_are_skipped(nc: Client, gateway: Gateway) -> None:
    js = nc.jetstream()
    await js.publish("fleet.audit.accepted.pod.apply.mallory", b"\xc1")
    await js.publish("fleet.audit.accepted.pod.apply.mallory", msgpack.packb([1, 2]))
    await js.publish("fleet.audit.accepted.pod.apply.mallory", msgpack.packb({"time_ns": "x"}))
    records = await read_audit(nc)
    assert [r.verb for r in records] == ["apply"]  # the gateway's fixture namespace
