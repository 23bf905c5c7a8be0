"""VerticalPodAutoscalers through the HTTP door, against a real nats-server: kubectl's
``autoscaling.k8s.io/v1`` path takes one as the VPA CRD would, a VPA with ``maxAllowed``
below ``minAllowed`` is refused with the VPA's field path and message and nothing is appended
(issue 19). The Table's columns are ``fleetlog get``'s (``tests/unit/test_vpa_model.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.subjects import event_subject
from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

URL = "/apis/autoscaling.k8s.io/v1/namespaces/default/verticalpodautoscalers"
JSON = {"Content-Type": "application/json"}


def vpa(policy: dict[str, Any]) -> bytes:
    return json.dumps({
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "updatePolicy": {"updateMode": "Off"},
            "resourcePolicy": {"containerPolicies": [{"containerName": "*", **policy}]},
        },
    }).encode()  # fmt: skip


async def test_the_door_stores_a_vpa_and_refuses_max_below_min(api: API) -> None:  # noqa: F811
    last = await api.store.stream_last_seq()
    bad = vpa({"minAllowed": {"memory": "1Gi"}, "maxAllowed": {"memory": "100Mi"}})
    status, refused = await api.request("POST", URL, bad, **JSON)
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    assert "spec.resourcePolicy.containerPolicies[0].maxAllowed" in refused["message"]
    assert 'max resource for memory is lower than min of "1Gi"' in refused["message"]
    assert await api.store.stream_last_seq() == last
    good = vpa({"minAllowed": {"memory": "100Mi"}, "maxAllowed": {"memory": "1Gi"}})
    status, created = await api.request("POST", URL, good, **JSON)
    assert status == 201, created
    status, got = await api.request("GET", URL + "/web")
    assert status == 200 and got["spec"]["updatePolicy"] == {"updateMode": "Off"}
    assert got["spec"]["resourcePolicy"]["containerPolicies"][0]["maxAllowed"] == {
        "memory": "1Gi"
    }  # fmt: skip


async def test_the_door_serves_a_vpas_status_subresource(api: API) -> None:  # noqa: F811
    """``verticalpodautoscalers/status`` as for HPAs (the VPA CRD declares the subresource):
    GET answers the object, a merge patch records the status through the gateway's ``status``
    command and leaves the spec alone."""
    status, _ = await api.request("POST", URL, vpa({}), **JSON)
    assert status == 201
    status, got = await api.request("GET", URL + "/web/status")
    assert status == 200 and got["kind"] == "VerticalPodAutoscaler"
    recommendation = {"containerRecommendations": [{
        "containerName": "app", "target": {"cpu": "250m", "memory": "262144k"},
        "lowerBound": {"cpu": "25m", "memory": "262144k"},
        "upperBound": {"cpu": "1", "memory": "1Gi"},
    }]}  # fmt: skip
    patch = {"status": {"recommendation": recommendation},
             "spec": {"updatePolicy": {"updateMode": "Recreate"}}}  # fmt: skip
    status, patched = await api.request(
        "PATCH", URL + "/web/status", json.dumps(patch).encode(),
        **{"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert status == 200, patched
    assert patched["status"]["recommendation"]["containerRecommendations"][0]["target"] == {
        "cpu": "250m", "memory": "262144k"
    }  # fmt: skip
    assert patched["spec"]["updatePolicy"] == {"updateMode": "Off"}  # the spec is not written
    events = await api.store.read_subject(event_subject("VerticalPodAutoscaler", "default", "web"))
    assert events[-1].envelope.type == "VerticalPodAutoscalerStatusUpdated"
