"""HorizontalPodAutoscalers through the HTTP door, against a real nats-server: kubectl's
``autoscaling/v2`` path takes one (stored with Kubernetes' defaults), a bad one is refused
with kube's field path and nothing is appended.

Why this exists: issue 19 registers the kind; this pins that the door routes its plural and
that validation answers as the API server does before any controller exists.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)

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
