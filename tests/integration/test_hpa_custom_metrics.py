"""HPAs on workload-published metrics, on a real server: a Pods metric published by hand
(``fleetlog metrics publish``), an Object metric and a label-selected External metric each
drive a scale with its why; a sample of another deployment's pod counts for nothing; a
malformed sample is refused and counted, never a crash; an evaluation that scales nothing is
recorded with its why only when its reason changes (issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from handlers.autoscaler.horizontal import HorizontalController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams import jsapi
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import event_subject
from streams.telemetry import (
    custom_object_metric_subject,
    custom_pod_metric_subject,
    external_metric_subject,
    metric_sample_body,
)
from tests.integration.support import cli, eventually
from tests.integration.test_hpa_controller import autoscaling, deployment, scaled

pytestmark = pytest.mark.integration


def hpa_on(metric: dict[str, Any], *, max_replicas: int = 6) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [metric],
        },
    }


def ready_pods(projection: Projection[ClusterModel], app: str) -> list[str]:
    return [
        p.name
        for p in projection.model.list("Pod", "default")
        if p.last_event == "PodReady"
        and (p.manifest.get("metadata") or {}).get("labels", {}).get("app") == app
    ]


@contextlib.asynccontextmanager
async def web_with(
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    client: CommandClient,
    metric: dict[str, Any],
) -> AsyncIterator[HorizontalController]:
    async with autoscaling(nc, store, projection) as controller:
        await client.send("Deployment", "create", {"manifest": deployment("web")})
        await client.send("HorizontalPodAutoscaler", "create", {"manifest": hpa_on(metric)})
        await eventually(lambda: asyncio.sleep(0, len(ready_pods(projection, "web")) == 1), 30)
        yield controller


async def publish(nc: Client, subject: str, body: bytes) -> None:
    await jsapi.jetstream(nc).publish(subject, body, timeout=5)


async def scaled_to(store: EventStore, replicas: int) -> dict[str, Any]:
    async def done() -> bool:
        return any(e.envelope.payload["replicas"] == replicas for e in await scaled(store))

    await eventually(done, timeout=30)
    event = next(e for e in await scaled(store) if e.envelope.payload["replicas"] == replicas)
    why: dict[str, Any] = event.envelope.payload["why"]
    return why


@pytest.mark.usefixtures("queries")
async def test_a_pods_metric_published_by_hand_scales_up_and_another_deployments_pod_counts_not(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "10"},
        },
    }
    async with web_with(nc, store, projection, client, metric) as controller:
        await client.send("Deployment", "create", {"manifest": deployment("other")})
        await eventually(lambda: asyncio.sleep(0, len(ready_pods(projection, "other")) == 1), 30)
        [web] = ready_pods(projection, "web")
        [other] = ready_pods(projection, "other")
        # Another deployment's pod, however busy, is not one of the target's pods.
        await publish(
            nc,
            custom_pod_metric_subject("default", other, "requests_per_second"),
            metric_sample_body(value="900"),
        )
        await eventually(lambda: asyncio.sleep(0, controller.metrics.metrics_received >= 1))
        result = await cli(
            nats_server.url, "metrics", "publish", f"pod/{web}", "requests_per_second", "35"
        )
        assert result.exit_code == 0, result.output
        assert "fleet.metrics.custom.default.pods." in result.output

        why = await scaled_to(store, 4)  # 35 / 10 per pod -> ceil(3.5) = 4
        [figures] = why["metrics"]
        assert figures["name"] == "pods metric requests_per_second"
        assert figures["perPod"] == {web: 35000}  # milli-units, the other pod absent
        assert figures["usage"] == 35000 and figures["readyPods"] == 1
        assert why["recommendation"] == 4


@pytest.mark.usefixtures("gateway")
async def test_an_object_metric_scales_to_value_over_target(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    metric = {
        "type": "Object",
        "object": {
            "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
            "metric": {"name": "requests"},
            "target": {"type": "Value", "value": "100"},
        },
    }
    async with web_with(nc, store, projection, client, metric):
        # Another object's series of the same metric is not the one described.
        await publish(
            nc,
            custom_object_metric_subject("default", "Service", "api", "requests"),
            metric_sample_body(value="5000"),
        )
        await publish(
            nc,
            custom_object_metric_subject("default", "Service", "web", "requests"),
            metric_sample_body(value="300"),
        )
        why = await scaled_to(store, 3)  # 300 / 100 x 1 ready pod
        [figures] = why["metrics"]
        assert figures["name"] == "Service metric requests"
        assert figures["usage"] == 300000
        assert [e.envelope.payload["replicas"] for e in await scaled(store)] == [3]


@pytest.mark.usefixtures("gateway")
async def test_an_external_metric_sums_the_series_its_selector_matches(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    metric = {
        "type": "External",
        "external": {
            "metric": {"name": "queue_depth", "selector": {"matchLabels": {"queue": "jobs"}}},
            "target": {"type": "AverageValue", "averageValue": "5"},
        },
    }
    async with web_with(nc, store, projection, client, metric):
        subject = external_metric_subject("default", "queue_depth")
        await publish(nc, subject, metric_sample_body(value="1000", labels={"queue": "mail"}))
        await publish(nc, subject, metric_sample_body(value="12", labels={"queue": "jobs"}))
        await publish(
            nc, subject, metric_sample_body(value="13", labels={"queue": "jobs", "shard": "2"})
        )
        why = await scaled_to(store, 5)  # (12 + 13) / 5 per pod; the mail queue not selected
        [figures] = why["metrics"]
        assert figures["name"].startswith("external metric queue_depth(")
        assert figures["usage"] == 25000  # per pod observed when it decided: 25 / 1
        assert why["recommendation"] == 5


@pytest.mark.usefixtures("gateway")
async def test_malformed_samples_are_refused_counted_and_the_controller_carries_on(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    metric = {
        "type": "External",
        "external": {
            "metric": {"name": "queue_depth"},
            "target": {"type": "Value", "value": "10"},
        },
    }
    async with web_with(nc, store, projection, client, metric) as controller:
        subject = external_metric_subject("default", "queue_depth")
        bad = [
            (subject, b"not json nor msgpack \xff"),
            (subject, b'{"value": "lots"}'),
            (subject, b'{"value": "-5"}'),
            (subject, b'{"value": "5", "labels": {"a": 1}}'),
            (subject, b'{"value": "5", "timestamp": "2999-01-01T00:00:00Z"}'),
            (subject, b'{"value": "5", "pad": "' + b"x" * 5000 + b'"}'),
            ("fleet.metrics.custom.default.pods.only-a-pod", b'{"value": "5"}'),
            ("fleet.metrics.external.default.queue_depth.extra", b'{"value": "5"}'),
        ]
        for where, body in bad:
            await publish(nc, where, body)
        await eventually(lambda: asyncio.sleep(0, controller.metrics.refused == len(bad)))
        assert controller.metrics.metrics_received == 0
        await publish(nc, subject, metric_sample_body(value="20"))
        why = await scaled_to(store, 2)  # 20 / 10 x 1 pod
        assert why["metrics"][0]["usage"] == 20000
        assert controller.metrics.refused == len(bad)


async def hpa_events(store: EventStore) -> list[Any]:
    events = await store.read_subject(event_subject("HorizontalPodAutoscaler", "default", "web"))
    return [e for e in events if e.envelope.type == "HorizontalPodAutoscalerStatusUpdated"]


@pytest.mark.usefixtures("queries")
async def test_no_change_is_recorded_with_its_why_only_when_the_reason_changes(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "10"},
        },
    }
    manifest = hpa_on(metric, max_replicas=1)
    async with autoscaling(nc, store, projection) as controller:
        await client.send("Deployment", "create", {"manifest": deployment("web")})
        await eventually(lambda: asyncio.sleep(0, len(ready_pods(projection, "web")) == 1), 30)
        await client.send("HorizontalPodAutoscaler", "create", {"manifest": manifest})
        [web] = ready_pods(projection, "web")
        subject = custom_pod_metric_subject("default", web, "requests_per_second")

        # No sample yet: the metric cannot be read, recorded once with its why.
        async def recorded(n: int) -> bool:
            return len([e for e in await hpa_events(store) if "why" in e.envelope.payload]) >= n

        await eventually(lambda: recorded(1), timeout=30)
        [first] = [e for e in await hpa_events(store) if "why" in e.envelope.payload]
        assert first.envelope.payload["why"]["conditions"]["ScalingActive"] == (
            "False/FailedGetPodsMetric"
        )
        # 35 per pod wants 4 pods; the maximum of 1 holds it: a new reason, recorded.
        await publish(nc, subject, metric_sample_body(value="35"))
        await eventually(lambda: recorded(2), timeout=30)
        second = [e for e in await hpa_events(store) if "why" in e.envelope.payload][-1]
        why = second.envelope.payload["why"]
        assert why["conditions"]["ScalingLimited"] == "True/TooManyReplicas"
        assert why["recommendation"] == 4 and why["desiredReplicas"] == 1
        assert why["metrics"][0]["perPod"] == {web: 35000}
        # Another value, the same reasons: the status changes, no second "no change".
        evaluated = controller.evaluations
        await publish(nc, subject, metric_sample_body(value="45"))

        async def written() -> bool:
            last = (await hpa_events(store))[-1].envelope.payload["status"]
            return last["currentMetrics"][0]["pods"]["current"]["averageValue"] == "45"

        await eventually(written, timeout=30)
        assert controller.evaluations > evaluated
        assert "why" not in (await hpa_events(store))[-1].envelope.payload
        assert len([e for e in await hpa_events(store) if "why" in e.envelope.payload]) == 2
        assert await scaled(store) == []

        described = (await cli(nats_server.url, "describe", "hpa", "web")).output
        assert f"Last decision:  HorizontalPodAutoscalerStatusUpdated #{second.seq}" in described
        assert "ScalingLimited True/TooManyReplicas" in described
        assert "horizontal pod autoscaler web: 1 -> 1 replicas (recommended 4" in described
        explained = (await cli(nats_server.url, "why", "hpa/web")).output
        assert "Why it did not scale (HorizontalPodAutoscalerStatusUpdated #" in explained
        assert "ScalingLimited True/TooManyReplicas" in explained
