"""The endpoint-slice controller against a real nats-server: slices follow pods becoming ready,
not ready and deleted (within a second), a named target port no container declares leaves the
pod out of that port, the slices go with their service, and the endpoints query and watch
subjects answer from them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
import yaml
from nats.aio.client import Client
from nats.aio.msg import Msg

from core.pods.aggregate import Pod
from handlers.endpointslice_controller import ACTOR, EndpointSliceController
from handlers.garbage_collector import GarbageCollector
from handlers.gateway import Gateway
from projections.cluster import ClusterModel, ObjectRecord
from projections.endpoints import EndpointsService, query_subject, watch_subject
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.decide import Append, Attempt, decide_and_append
from streams.eventstore import EventStore
from streams.repository import AggregateRepository, Provenance
from streams.subjects import AggregateRef
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration

FAST = {"period_seconds": 0.1, "retry_seconds": 0.2}


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            **spec,
        },
    }


def pod(
    name: str,
    ip: str,
    *,
    ready: bool = True,
    app: str = "web",
    port_name: str = "http",
    node: str | None = None,
) -> dict[str, Any]:
    """A pod whose status already carries its address and readiness (as the node agent
    records them)."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "web",
                "ports": [{"name": port_name, "containerPort": 8080}],
            }
        ]
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.fixture
async def controller(
    nc: Client, store: EventStore, gateway: Gateway, projection: Projection[ClusterModel]
) -> AsyncIterator[EndpointSliceController]:
    """The endpoint-slice controller, the garbage collector and the endpoints service on the
    test's projection."""
    slices = await EndpointSliceController.create(nc, projection, **FAST)
    collector = await GarbageCollector.create(nc, store, projection, **FAST)
    endpoints = EndpointsService(nc, projection)
    tasks = []
    for role in (slices.run, collector.run, endpoints.run):
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(role(ready)))
        await asyncio.wait_for(ready.wait(), 10)
    try:
        yield slices
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def slices_of(projection: Projection[ClusterModel], service: str = "web") -> list[ObjectRecord]:
    return [
        s
        for s in projection.model.list("EndpointSlice", "default")
        if (s.manifest["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == service
    ]


def endpoints(projection: Projection[ClusterModel], service: str = "web") -> dict[str, dict]:
    """Every endpoint of the service's slices by pod name."""
    return {
        e["targetRef"]["name"]: e
        for s in slices_of(projection, service)
        for e in s.manifest.get("endpoints") or ()
    }


async def ask(nc: Client, service: str = "web", **request: Any) -> dict[str, Any]:
    reply = await nc.request(
        query_subject("default", service), msgpack.packb(request) if request else b"", timeout=5
    )
    return msgpack.unpackb(reply.data, raw=False)


async def test_slices_follow_pods_becoming_ready_not_ready_and_deleted(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
) -> None:
    await client.send("Service", "create", {"manifest": service()})
    # No pods yet: one empty placeholder slice, as Kubernetes keeps one.
    await eventually(lambda: _true(len(slices_of(projection)) == 1), timeout=5)
    (placeholder,) = slices_of(projection)
    assert placeholder.manifest["endpoints"] == [] and placeholder.last_actor == ACTOR
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.11", ready=False)})
    await client.send("Pod", "apply", {"manifest": pod("web-2", "100.96.0.12")})
    await eventually(lambda: _true(set(endpoints(projection)) == {"web-1", "web-2"}), timeout=5)
    (only,) = slices_of(projection)
    assert only.name == placeholder.name  # the placeholder was filled, not replaced
    assert only.manifest["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert endpoints(projection)["web-1"]["conditions"]["ready"] is False
    assert endpoints(projection)["web-2"]["conditions"]["ready"] is True

    answer = await ask(nc)
    assert answer["ok"] and [e["address"] for e in answer["endpoints"]] == ["100.96.0.12"]
    assert answer["service"]["clusterIP"].startswith("100.64.")
    everything = await ask(nc, all=True)
    assert [(e["address"], e["ready"]) for e in everything["endpoints"]] == [
        ("100.96.0.11", False),
        ("100.96.0.12", True),
    ]

    # Ready -> not ready is seen in the slice (how fast: ops.bench_agent's endpoint figures).
    await client.send("Pod", "apply", {"manifest": pod("web-2", "100.96.0.12", ready=False)})
    await eventually(
        lambda: _true(endpoints(projection)["web-2"]["conditions"]["ready"] is False), timeout=5
    )
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.11")})
    await eventually(
        lambda: _true(endpoints(projection)["web-1"]["conditions"]["ready"] is True), timeout=5
    )
    await client.send("Pod", "delete", {"name": "web-1"})
    await eventually(lambda: _true(set(endpoints(projection)) == {"web-2"}), timeout=5)
    assert (await ask(nc))["endpoints"] == []


async def test_labels_and_selectors_that_change_move_pods_in_and_out(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.81")})
    await client.send("Pod", "apply", {"manifest": pod("api-1", "100.96.0.82", app="api")})
    await client.send("Service", "create", {"manifest": service()})
    await eventually(lambda: _true(set(endpoints(projection)) == {"web-1"}), timeout=5)
    # The pod's label changes: it leaves the service.
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.81", app="old")})
    await eventually(lambda: _true(set(endpoints(projection)) == set()), timeout=5)
    # The service's selector changes: the pods it matches now come in.
    await client.send("Service", "apply", {"manifest": service(selector={"app": "api"})})
    await eventually(lambda: _true(set(endpoints(projection)) == {"api-1"}), timeout=5)
    # Without a selector, its slices go (fleetlog's choice; Kubernetes leaves them stale).
    await client.send("Service", "apply", {"manifest": service(selector=None)})
    await eventually(lambda: _true(slices_of(projection) == []), timeout=5)


async def test_a_pod_without_the_named_target_port_is_no_endpoint_of_that_port(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    # Accepted as Kubernetes accepts it: the service is not checked against pods.
    await client.send("Service", "create", {"manifest": service()})
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.21")})
    await client.send("Pod", "apply", {"manifest": pod("web-2", "100.96.0.22", port_name="web")})
    await eventually(lambda: _true(set(endpoints(projection)) == {"web-1", "web-2"}), timeout=5)
    by_ports = {
        tuple(p["port"] for p in s.manifest.get("ports") or ()): [
            e["targetRef"]["name"] for e in s.manifest["endpoints"]
        ]
        for s in slices_of(projection)
    }
    assert by_ports == {(8080,): ["web-1"], (): ["web-2"]}


async def test_endpoints_carry_the_node_and_its_zone(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-1"}},
    }
    await client.send("Node", "apply", {"manifest": node})
    await client.send("Service", "create", {"manifest": service()})
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.31", node="node-a")})
    await eventually(lambda: _true("web-1" in endpoints(projection)), timeout=5)
    endpoint = endpoints(projection)["web-1"]
    assert (endpoint["nodeName"], endpoint["zone"]) == ("node-a", "zone-1")
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "zone-2"
    await client.send("Node", "apply", {"manifest": node})
    await eventually(lambda: _true(endpoints(projection)["web-1"].get("zone") == "zone-2"))


async def test_the_slices_go_with_their_service_and_a_deleted_one_comes_back(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
) -> None:
    await client.send("Service", "create", {"manifest": service()})
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.41")})
    await eventually(lambda: _true("web-1" in endpoints(projection)), timeout=5)
    (first,) = slices_of(projection)
    await client.send("EndpointSlice", "delete", {"name": first.name})
    await eventually(lambda: _true("web-1" in endpoints(projection)), timeout=5)
    await client.send("Service", "delete", {"name": "web"})
    await eventually(lambda: _true(slices_of(projection) == []), timeout=10)
    missing = await ask(nc)
    assert missing == {
        "ok": False,
        "error": {"code": "not_found", "message": 'service "web" not found in namespace "default"'},
        "position": missing["position"],
        "caught_up": True,
    }


async def test_the_watch_subject_publishes_each_change_of_the_ready_set(
    controller: EndpointSliceController,
    client: CommandClient,
    nc: Client,
) -> None:
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        await seen.put(msgpack.unpackb(msg.data, raw=False))

    subscription = await nc.subscribe(watch_subject("default", "web"), cb=on_message)
    try:
        await client.send("Service", "create", {"manifest": service()})
        await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.51")})

        async def until(check: Any) -> dict[str, Any]:
            while True:
                message = await asyncio.wait_for(seen.get(), 5)
                if check(message):
                    return message

        up = await until(
            lambda m: [e["address"] for e in m.get("endpoints", ())] == ["100.96.0.51"]
        )
        await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.51", ready=False)})
        down = await until(lambda m: m.get("endpoints") == [])
        assert down["position"] > up["position"]
        await client.send("Service", "delete", {"name": "web"})
        gone = await until(lambda m: m.get("deleted"))
        assert gone["service"] == {"namespace": "default", "name": "web"}
    finally:
        await subscription.unsubscribe()


async def test_readiness_recorded_by_the_node_moves_the_endpoint(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nc: Client,
    store: EventStore,
) -> None:
    """The pod is scheduled onto a simulated node, which records ``ContainerStarted`` and
    ``PodReady``; a readiness probe failing is a ``PodNotReady`` on the pod, as the node
    agent records it."""
    async with workload_roles(nc, store, projection, nodes=1, collect=False):
        await client.send("Service", "create", {"manifest": service()})
        manifest = pod("web-1", "100.96.0.61")
        manifest["status"] = {"podIP": "100.96.0.61", "podIPs": [{"ip": "100.96.0.61"}]}
        await client.send("Pod", "create", {"manifest": manifest})
        await eventually(
            lambda: _true(
                endpoints(projection).get("web-1", {}).get("conditions", {}).get("ready") is True
            ),
            timeout=10,
        )
        assert endpoints(projection)["web-1"]["nodeName"].startswith("sim-")
        repository = AggregateRepository(store)
        ref = AggregateRef("Pod", "default", "web-1")

        async def probe_failed(attempt: Attempt) -> Append:
            loaded = attempt[ref]
            assert isinstance(loaded.aggregate, Pod)
            loaded.aggregate.mark_not_ready(reason="readiness probe failed", at=datetime.now(UTC))
            provenance = Provenance(
                actor="system:node/test",
                correlation_id="probe",
                causation_id="probe",
                token="probe-failed-1",
                now_ns=time.time_ns(),
            )
            return Append(changes=[loaded], provenance=provenance)

        await decide_and_append(repository, [ref], probe_failed, attempts=3)
        await eventually(
            lambda: _true(endpoints(projection)["web-1"]["conditions"]["ready"] is False),
            timeout=5,
        )


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


async def test_get_and_describe_show_services_and_their_endpoints_as_kubectl_does(
    controller: EndpointSliceController,
    client: CommandClient,
    projection: Projection[ClusterModel],
    nats_server: Any,
    queries: None,
) -> None:
    url = nats_server.url
    web = service(
        "web",
        type="NodePort",
        ports=[
            {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
            {"name": "metrics", "port": 9090},
        ],
    )
    await client.send("Service", "create", {"manifest": web})
    external = {"type": "ExternalName", "externalName": "db.example.com"}
    await client.send("Service", "create", {"manifest": {**service("ext"), "spec": external}})
    await client.send("Service", "create", {"manifest": service("lb", type="LoadBalancer")})
    await client.send("Pod", "apply", {"manifest": pod("web-1", "100.96.0.71")})
    await client.send("Pod", "apply", {"manifest": pod("web-2", "100.96.0.72", ready=False)})
    await eventually(lambda: _true(set(endpoints(projection)) == {"web-1", "web-2"}), timeout=5)

    result = await cli(url, "get", "svc")
    table = rows(result.stdout)
    assert table[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    by_name = {row[0]: row for row in table[1:]}
    assert by_name["ext"][1:5] == ["ExternalName", "<none>", "db.example.com", "<none>"]
    assert by_name["lb"][3] == "<pending>" and by_name["lb"][4].startswith("80:")
    assert by_name["web"][1] == "NodePort" and by_name["web"][2].startswith("100.64.")
    assert by_name["web"][4].startswith("80:30080/TCP,9090:")

    result = await cli(url, "get", "svc", "web", "-o", "wide")
    header, row = rows(result.stdout)
    assert header[-4:] == ["SELECTOR", "ENDPOINTS", "DNS", "NATS"]
    assert row[-4:] == [
        "app=web", "100.96.0.71:8080,100.96.0.71:9090", "web.default.svc.cluster.local",
        "fleet.qry.endpoints.default.web",
    ]  # fmt: skip

    result = await cli(url, "get", "endpointslices")
    header, *slice_rows = rows(result.stdout)
    assert header == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    web_rows = [r for r in slice_rows if r[0].startswith("web-")]
    assert [r[1:4] for r in web_rows] == [["IPv4", "8080,9090", "100.96.0.71,100.96.0.72"]]

    result = await cli(url, "get", "endpoints")
    table = rows(result.stdout)
    assert table[0] == ["NAME", "ENDPOINTS", "AGE"]
    assert {r[0]: r[1] for r in table[1:]} == {
        "lb": "<none>",  # no pod is labelled app=lb: only its empty placeholder slice
        "web": "100.96.0.71:8080,100.96.0.71:9090",
    }
    result = await cli(url, "get", "ep", "web", "-o", "yaml")
    shown = yaml.safe_load(result.stdout)
    assert shown["kind"] == "Endpoints" and shown["subsets"][0]["addresses"][0]["ip"] == (
        "100.96.0.71"
    )
    assert shown["subsets"][0]["notReadyAddresses"][0]["ip"] == "100.96.0.72"

    result = await cli(url, "describe", "svc", "web")
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["Port:", "http", "80/TCP"] in lines and ["NodePort:", "http", "30080/TCP"] in lines
    assert ["Endpoints:", "100.96.0.71:8080"] in lines
    assert ["Endpoints:", "100.96.0.71:9090"] in lines
    assert ["Session", "Affinity:", "None"] in lines


async def _true(value: bool) -> bool:
    return value
