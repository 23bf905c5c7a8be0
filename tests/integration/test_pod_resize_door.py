"""The ``pods/resize`` subresource over HTTPS (kubectl and raw requests) and the ``resize``
command on the NATS door, against a real nats-server and gateway: a resize changes only the
containers' resources, is recorded as ``PodResized`` with before and after, is charged to the
namespace's quota by the new requests, and every refusal (QoS change, another field, a quota)
is kube's Status with nothing appended. No node agent runs here; the agent's side is in
``tests/integration/agent/test_resize.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import FleetError
from streams.commandbus import CommandClient
from streams.subjects import event_subject
from tests.integration.test_apiserver import API, api
from tests.integration.test_apiserver_auth import kubectl

__all__ = ["api"]  # the fixture, imported for these tests

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
JSON = {"Content-Type": "application/json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}
QOS = "Pod QOS Class may not change as a result of resizing"


def burstable(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "128Mi"},
        }}]},
    }  # fmt: skip


async def send(api: API, method: str, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    return await api.request(method, path, json.dumps(body).encode(), **(headers or JSON))


async def pod_events(api: API, name: str) -> list[Any]:
    return await api.store.read_subject(event_subject("Pod", "default", name))


async def test_kubectl_patch_subresource_resize_changes_resources_and_records_before_after(
    api: API,
) -> None:
    status, _ = await send(api, "POST", PODS, burstable("web"))
    assert status == 201
    patch = {"spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "256Mi"}}}]}}
    done = await kubectl(
        api.kubeconfig, "patch", "pod", "web", "--subresource", "resize", "-p", json.dumps(patch)
    )
    assert done.returncode == 0, done.stderr
    assert "pod/web patched" in done.stdout
    _, stored = await api.request("GET", f"{PODS}/web/resize")
    assert stored["kind"] == "Pod"
    assert stored["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"},
    }
    resized = [e for e in await pod_events(api, "web") if e.envelope.type == "PodResized"]
    assert len(resized) == 1
    assert resized[0].envelope.payload["before"]["c"]["limits"]["memory"] == "128Mi"
    assert resized[0].envelope.payload["after"]["c"]["limits"]["memory"] == "256Mi"

    # A QoS change is refused in kube's words, and nothing is appended.
    last = await api.store.stream_last_seq()
    guaranteed = {"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"}}}]}}  # fmt: skip
    refused = await kubectl(
        api.kubeconfig, "patch", "pod", "web", "--subresource", "resize",
        "-p", json.dumps(guaranteed),
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'The Pod "web" is invalid: spec: Invalid value "Burstable": ' + QOS in refused.stderr
    assert await api.store.stream_last_seq() == last


async def test_only_resources_change_through_the_door_and_an_ordinary_update_still_cannot(
    api: API,
) -> None:
    status, created = await send(api, "POST", PODS, burstable("api"))
    assert status == 201
    last = await api.store.stream_last_seq()
    other = json.loads(json.dumps(created))
    other["spec"]["containers"][0]["image"] = "nginx"
    status, answer = await send(api, "PUT", f"{PODS}/api/resize", other)
    assert (status, answer["reason"]) == (422, "Invalid"), answer
    assert "only cpu and memory resources are mutable" in answer["message"]
    ordinary = json.loads(json.dumps(created))
    ordinary["spec"]["containers"][0]["resources"]["limits"]["memory"] = "256Mi"
    status, answer = await send(api, "PUT", f"{PODS}/api", ordinary)
    assert status == 422, answer  # resources change only through pods/resize
    assert await api.store.stream_last_seq() == last

    raised = json.loads(json.dumps(created))
    raised["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "300m"
    status, answer = await send(api, "PUT", f"{PODS}/api/resize", raised)
    assert status == 200, answer
    assert answer["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "300m"
    status, same = await send(api, "PUT", f"{PODS}/api/resize", answer)
    assert (
        status == 200
        and same["metadata"]["resourceVersion"] == (answer["metadata"]["resourceVersion"])
    )  # nothing to resize: nothing appended


async def test_a_resize_is_charged_to_the_quota_by_its_new_requests(
    api: API, client: CommandClient
) -> None:
    quota = {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "mem"},
        "spec": {"hard": {"requests.memory": "100Mi"}},
    }  # fmt: skip
    status, _ = await send(api, "POST", "/api/v1/namespaces/default/resourcequotas", quota)
    assert status == 201
    status, _ = await send(api, "POST", PODS, burstable("db"))
    assert status == 201
    last = await api.store.stream_last_seq()
    too_much = {"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"memory": "128Mi"}}}]}}  # fmt: skip
    status, answer = await send(api, "PATCH", f"{PODS}/db/resize", too_much, **STRATEGIC)
    assert (status, answer["reason"]) == (403, "Forbidden"), answer
    assert "exceeded quota: mem" in answer["message"]
    assert await api.store.stream_last_seq() == last

    # The same command on the NATS door (what the VPA's updater sends).
    reply = await client.send("Pod", "resize", {
        "name": "db", "namespace": "default",
        "containers": [{"name": "c", "resources": {
            "requests": {"cpu": "100m", "memory": "96Mi"},
            "limits": {"cpu": "200m", "memory": "128Mi"}}}],
    })  # fmt: skip
    assert reply.events == ["PodResized", "QuotaCharged"], reply
    _, charged = await api.request("GET", "/api/v1/namespaces/default/resourcequotas/mem")
    assert charged["status"]["used"]["requests.memory"] == "96Mi"
    with pytest.raises(FleetError, match="only pods can be resized in place"):
        await client.send("Deployment", "resize", {"name": "db", "containers": [{"name": "c"}]})
