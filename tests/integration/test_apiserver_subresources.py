"""The ``status``, ``scale``, ``binding`` and ``eviction`` subresources over HTTPS against a real
nats-server and gateway (no controllers run here, so what the log holds is only what these
requests wrote): each write goes through the gateway's command, each refusal is kube's Status
with nothing appended."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.commandbus import CommandClient
from tests.integration.test_apiserver import API, api, pod

__all__ = ["api"]  # the fixture, imported for these tests

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "small"},
    "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}},
}


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {"app": name},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
            },
            "template": {
                "metadata": {"labels": {"app": name, "tier": "a"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


async def send(api: API, method: str, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    return await api.request(method, path, json.dumps(body).encode(), **(headers or JSON))


async def test_scale_reads_and_writes_replicas_with_optimistic_concurrency(api: API) -> None:
    status, created = await send(api, "POST", DEPLOYMENTS, deployment("web"))
    assert status == 201
    status, scale = await api.request("GET", f"{DEPLOYMENTS}/web/scale")
    assert status == 200
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 0, "selector": "app=web,tier in (a,b)"}
    assert scale["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    scale["spec"]["replicas"] = 3
    status, updated = await send(api, "PUT", f"{DEPLOYMENTS}/web/scale", scale)
    assert (status, updated["spec"]["replicas"]) == (200, 3), updated
    _, stored = await api.request("GET", f"{DEPLOYMENTS}/web")
    assert stored["spec"]["replicas"] == 3
    assert stored["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]

    status, patched = await send(
        api, "PATCH", f"{DEPLOYMENTS}/web/scale", {"spec": {"replicas": 5}}, **MERGE
    )
    assert (status, patched["spec"]["replicas"]) == (200, 5), patched
    status, patched = await send(
        api, "PATCH", f"{DEPLOYMENTS}/web/scale", [{"op": "replace", "path": "/spec/replicas",
                                                    "value": 1}],
        **{"Content-Type": "application/json-patch+json"},
    )  # fmt: skip
    assert (status, patched["spec"]["replicas"]) == (200, 1), patched

    last = await api.store.stream_last_seq()
    refused = [
        # The Scale read before the patches: its resourceVersion is stale now.
        ("PUT", scale, JSON, 409, "Conflict",
         'Operation cannot be fulfilled on deployments.apps "web": the object has been modified'),
        ("PUT", {**scale, "spec": {"replicas": -1},
                 "metadata": {**scale["metadata"], "resourceVersion": None}},
         JSON, 422, "Invalid",
         'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: must be greater '
         "than or equal to 0"),
        ("PUT", {**scale, "metadata": {"name": "other"}}, JSON, 400, "BadRequest",
         "does not match the name on the URL"),
        ("PUT", {**scale, "kind": "Deployment"}, JSON, 400, "BadRequest", "is not an autoscaling"),
        ("PATCH", {"spec": {"replicas": "many"}}, MERGE, 422, "Invalid", "must be an integer"),
    ]  # fmt: skip
    for method, body, headers, code, reason, message in refused:
        status, answer = await send(api, method, f"{DEPLOYMENTS}/web/scale", body, **headers)
        assert (status, answer["reason"]) == (code, reason), answer
        assert message in answer["message"], answer
    status, answer = await api.request("GET", f"{DEPLOYMENTS}/nope/scale")
    assert (status, answer["message"]) == (404, 'deployments.apps "nope" not found')
    status, answer = await send(api, "PUT", f"{PODS}/x/scale", {})
    assert status == 404, answer  # pods have no scale
    assert await api.store.stream_last_seq() == last


async def test_status_writes_change_only_status_and_only_where_a_command_records_it(
    api: API, client: CommandClient
) -> None:
    status, created = await send(api, "POST", DEPLOYMENTS, deployment("web"))
    assert status == 201
    wanted = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 1}
    body = {**created, "spec": {**created["spec"], "replicas": 9}, "status": wanted}
    status, written = await send(api, "PUT", f"{DEPLOYMENTS}/web/status", body)
    assert status == 200, written
    assert written["status"]["readyReplicas"] == 1
    assert written["spec"]["replicas"] == 2  # the spec in a status write is ignored

    status, patched = await send(
        api, "PATCH", f"{DEPLOYMENTS}/web/status",
        {"status": {"readyReplicas": 2}, "metadata": {"labels": {"x": "y"}}}, **MERGE,
    )  # fmt: skip
    assert status == 200, patched
    assert patched["status"]["readyReplicas"] == 2 and "labels" not in patched["metadata"]
    status, read = await api.request("GET", f"{DEPLOYMENTS}/web/status")
    assert (status, read["status"]["readyReplicas"]) == (200, 2)
    # ... and the main resource ignores a status in its body.
    status, updated = await send(
        api, "PUT", f"{DEPLOYMENTS}/web", {**read, "status": {"readyReplicas": 7}}
    )
    assert (status, updated["status"]["readyReplicas"]) == (200, 2)

    status, _ = await send(api, "POST", PODS, pod("solo"))
    assert status == 201
    _, solo = await api.request("GET", f"{PODS}/solo/status")
    last = await api.store.stream_last_seq()
    status, same = await send(api, "PUT", f"{PODS}/solo/status", solo)
    assert (status, same["metadata"]["resourceVersion"]) == (
        200,
        solo["metadata"]["resourceVersion"],
    )
    status, refused = await send(
        api, "PATCH", f"{PODS}/solo/status", {"status": {"phase": "Failed"}}, **MERGE
    )
    assert (status, refused["reason"]) == (405, "MethodNotAllowed"), refused
    assert "the status of a Pod is recorded by" in refused["message"]
    status, invalid = await send(
        api, "PATCH", f"{DEPLOYMENTS}/web/status", {"status": {"replicas": "x"}}, **MERGE
    )
    assert (status, invalid["reason"]) == (422, "Invalid"), invalid
    stale = {**created, "status": {**read["status"], "readyReplicas": 0}}
    status, conflict = await send(api, "PUT", f"{DEPLOYMENTS}/web/status", stale)
    assert (status, conflict["reason"]) == (409, "Conflict"), conflict
    assert await api.store.stream_last_seq() == last


async def test_binding_puts_a_pending_pod_on_a_node_once(api: API, client: CommandClient) -> None:
    await client.send("Node", "apply", {"manifest": NODE})
    big = pod("big")
    big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    for manifest in (pod("a"), pod("b"), big):
        status, _ = await send(api, "POST", PODS, manifest)
        assert status == 201

    def binding(name: str, node: str = "small") -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"kind": "Node", "name": node}}  # fmt: skip

    status, answer = await send(api, "POST", f"{PODS}/a/binding", binding("a"))
    assert (status, answer["status"], answer["code"]) == (201, "Success", 201), answer
    _, bound = await api.request("GET", f"{PODS}/a")
    assert bound["spec"]["nodeName"] == "small"
    scheduled = {c["type"]: c["status"] for c in bound["status"]["conditions"]}
    assert scheduled["PodScheduled"] == "True"

    last = await api.store.stream_last_seq()
    refused = [
        ("a", binding("a"), 409, "Conflict",
         'Operation cannot be fulfilled on pods/binding "a": pod a is already assigned to node '
         '"small"'),
        ("b", binding("b", "nowhere"), 404, "NotFound", 'nodes "nowhere" not found'),
        ("nope", binding("nope"), 404, "NotFound", 'pods "nope" not found'),
        ("b", binding("a"), 400, "BadRequest", "name in URL does not match name in Binding"),
        ("b", {**binding("b"), "target": {}}, 422, "Invalid", "target.name: Required value"),
        # The node's ledger refuses what it cannot fit, as it refuses the scheduler.
        ("big", binding("big"), 409, "Conflict", "node small cannot fit default/big"),
    ]  # fmt: skip
    for name, body, code, reason, message in refused:
        status, answer = await send(api, "POST", f"{PODS}/{name}/binding", body)
        assert (status, answer["reason"]) == (code, reason), answer
        assert message in answer["message"], answer
    assert await api.store.stream_last_seq() == last


async def test_eviction_deletes_the_pod_with_the_options_it_carries(api: API) -> None:
    status, created = await send(api, "POST", PODS, pod("victim"))
    assert status == 201

    def eviction(name: str, **options: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": "default"}}  # fmt: skip
        if options:
            body["deleteOptions"] = options
        return body

    last = await api.store.stream_last_seq()
    refused = [
        ("victim", eviction("victim", preconditions={"uid": "other"}), 409, "Conflict",
         "Precondition failed: UID in precondition: other"),
        ("victim", eviction("other"), 400, "BadRequest",
         "name in URL does not match name in Eviction object"),
        ("victim", eviction("victim", propagationPolicy="Sometimes"), 422, "Invalid",
         'Unsupported value: "Sometimes"'),
        ("nope", eviction("nope"), 404, "NotFound", 'pods "nope" not found'),
    ]  # fmt: skip
    for name, body, code, reason, message in refused:
        status, answer = await send(api, "POST", f"{PODS}/{name}/eviction", body)
        assert (status, answer["reason"]) == (code, reason), answer
        assert message in answer["message"], answer
    assert await api.store.stream_last_seq() == last

    uid = created["metadata"]["uid"]
    status, answer = await send(
        api, "POST", f"{PODS}/victim/eviction", eviction("victim", preconditions={"uid": uid})
    )
    assert (status, answer["status"], answer["code"]) == (201, "Success", 201), answer
    status, _ = await api.request("GET", f"{PODS}/victim")
    assert status == 404
