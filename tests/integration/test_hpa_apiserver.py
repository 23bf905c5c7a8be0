"""HorizontalPodAutoscalers through the HTTP door, against a real nats-server: kubectl's
``autoscaling/v2`` path takes one (stored with Kubernetes' defaults), a bad one is refused
with kube's field path and nothing is appended.

Why this exists: issue 19 registers the kind; this pins that the door routes its plural and
that validation answers as the API server does before any controller exists.
"""

from __future__ import annotations

import json

import pytest

from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)
from tests.integration.test_apiserver_secrets import Kubectl, kubectl  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

URL = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
JSON = {"Content-Type": "application/json"}


def hpa(max_replicas: int) -> bytes:
    return json.dumps({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": max_replicas,
        },
    }).encode()  # fmt: skip


async def test_the_door_stores_an_hpa_with_defaults_and_refuses_min_above_max(
    api: API,  # noqa: F811
) -> None:
    last = await api.store.stream_last_seq()
    status, refused = await api.request("POST", URL, hpa(1), **JSON)
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    assert "spec.maxReplicas" in refused["message"]
    assert "must be greater than or equal to `minReplicas`" in refused["message"]
    assert await api.store.stream_last_seq() == last
    status, created = await api.request("POST", URL, hpa(5), **JSON)
    assert status == 201, created
    assert created["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu",
         "target": {"type": "Utilization", "averageUtilization": 80}}}
    ]  # fmt: skip
    status, got = await api.request("GET", URL + "/web")
    assert status == 200 and got["spec"]["maxReplicas"] == 5


STATUS = {
    "currentReplicas": 2,
    "desiredReplicas": 3,
    "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu",
         "current": {"averageUtilization": 85, "averageValue": "85m"}}}
    ],
    "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale",
         "message": "the HPA controller was able to update the target scale to 3",
         "lastTransitionTime": "2026-12-06T07:00:00Z"}
    ],
}  # fmt: skip


async def test_kubectl_reads_and_patches_an_hpas_status_subresource(
    kubectl: Kubectl,  # noqa: F811
    store: EventStore,
) -> None:
    """``horizontalpodautoscalers/status`` as for deployments: GET answers the object, a PATCH
    records the status through the gateway's ``status`` command (the spec in it ignored), and
    ``kubectl get hpa`` prints TARGETS from that status, ``describe`` its metrics."""
    await kubectl("apply", "-f", "-", stdin=hpa(5).decode())
    got = json.loads(await kubectl("get", "--raw", f"{URL}/web/status"))
    assert got["kind"] == "HorizontalPodAutoscaler" and got["spec"]["maxReplicas"] == 5
    patch = json.dumps({"status": STATUS, "spec": {"maxReplicas": 50}})
    await kubectl(
        "patch", "hpa", "web", "--subresource=status", "--type=merge", "-p", patch
    )  # fmt: skip
    events = await store.read_subject(event_subject("HorizontalPodAutoscaler", "default", "web"))
    assert events[-1].envelope.type == "HorizontalPodAutoscalerStatusUpdated"
    after = json.loads(await kubectl("get", "hpa", "web", "--subresource=status", "-o", "json"))
    assert after["status"]["desiredReplicas"] == 3
    assert after["spec"]["maxReplicas"] == 5  # a status write leaves the spec alone
    table = (await kubectl("get", "hpa", "web")).splitlines()
    assert table[0].split()[:4] == ["NAME", "REFERENCE", "TARGETS", "MINPODS"]
    assert "cpu: 85%/80%" in table[1] and "Deployment/web" in table[1]
    described = await kubectl("describe", "hpa", "web")
    assert "85% (85m) / 80%" in described, described
    assert "SucceededRescale" in described


async def test_a_put_of_an_invalid_hpa_status_is_refused_and_appends_nothing(
    api: API,  # noqa: F811
) -> None:
    status, created = await api.request("POST", URL, hpa(5), **JSON)
    assert status == 201, created
    last = await api.store.stream_last_seq()
    body = {**created, "status": {"currentReplicas": "many"}}
    status, refused = await api.request("PUT", f"{URL}/web/status", json.dumps(body).encode(),
                                        **JSON)  # fmt: skip
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    assert "currentReplicas" in refused["message"]
    assert await api.store.stream_last_seq() == last
    body["status"] = STATUS
    status, written = await api.request("PUT", f"{URL}/web/status", json.dumps(body).encode(),
                                        **JSON)  # fmt: skip
    assert status == 200 and written["status"]["desiredReplicas"] == 3, written
