"""The VPA end to end on a real server: simulated pods whose synthetic memory and CPU a test
sets, the recommender's status and its why, Initial mode at admission, Recreate evicting,
InPlaceOrRecreate resizing in place and falling back to eviction when the node cannot take it
(issue 19)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from core.meta.quantity import cpu_millis, memory_bytes
from handlers.agent.pods import PodRecorder
from handlers.autoscaler.vertical import ACTOR, UPDATER_ACTOR, UpdaterOptions, VerticalController
from handlers.simusage import LOAD_SUBJECT, SimulatedUsage
from projections.cluster import ClusterModel, ObjectRecord
from projections.metrics import PodMetrics
from projections.runtime import Projection
from streams.audit import read_audit
from streams.commandbus import CommandClient
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.repository import AggregateRepository
from streams.subjects import event_subject
from tests.integration.support import cli, eventually, workload_roles

pytestmark = pytest.mark.integration

MI = 1024 * 1024


def deployment(replicas: int = 1) -> dict[str, Any]:
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}]},
            },
        },
    }


def vpa(mode: str, **policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling.k8s.io/v1",
        "kind": "VerticalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "updatePolicy": {"updateMode": mode, **policy},
        },
    }


@contextlib.asynccontextmanager
async def vertical(
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    *,
    nodes: int = 2,
    deferred_timeout: float = 300.0,
) -> AsyncIterator[VerticalController]:
    async with workload_roles(nc, store, projection, nodes=nodes, collect=False) as simulated:
        metrics = PodMetrics(nc, replay=True)
        updater = UpdaterOptions(
            period_seconds=0.5, bounds_interval_seconds=3600,
            deferred_resize_timeout_seconds=deferred_timeout,
        )  # fmt: skip
        controller = await VerticalController.create(
            nc, projection, metrics, period_seconds=0.2, retry_seconds=0.2, updater=updater
        )
        usage = SimulatedUsage(nc, projection, simulated.names.__contains__, period=0.5)
        tasks = []
        for role in (metrics.run, controller.run, usage.run):
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(role(ready)))
            await asyncio.wait_for(ready.wait(), 10)
        try:
            yield controller
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def set_load(nc: Client, *, cpu: str, memory: str) -> None:
    body = {"namespace": "default", "selector": {"app": "web"}, "cpu": cpu, "memory": memory}
    reply = await nc.request(LOAD_SUBJECT, json.dumps(body).encode(), timeout=10)
    assert "error" not in json.loads(reply.data)


def the_vpa(projection: Projection[ClusterModel]) -> dict[str, Any]:
    """The VPA's manifest; empty until the projection folded its creation (under load it may
    lag the command's reply): the polled checks reading it then wait instead of failing."""
    record = projection.model.get("VerticalPodAutoscaler", "default", "web")
    return record.manifest if record is not None else {}


def target(projection: Projection[ClusterModel]) -> dict[str, str]:
    status = the_vpa(projection).get("status") or {}
    recs = (status.get("recommendation") or {}).get("containerRecommendations") or []
    return dict(recs[0]["target"]) if recs else {}


async def recorded(store: EventStore) -> list[StoredEvent]:
    events = await store.read_subject(event_subject("VerticalPodAutoscaler", "default", "web"))
    return [e for e in events if e.envelope.type == "VerticalPodAutoscalerStatusUpdated"]


def pods(projection: Projection[ClusterModel]) -> list[ObjectRecord]:
    return [p for p in projection.model.list("Pod", "default") if p.last_event == "PodReady"]


async def raised(projection: Projection[ClusterModel]) -> bool:
    return memory_bytes(target(projection).get("memory", "0")) > 600 * MI


def printed(result: Any) -> list[str]:
    return [line for line in result.output.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]


@pytest.mark.usefixtures("queries")
async def test_a_memory_hungry_pod_gets_a_raised_recommendation_with_its_why(
    nats_server: Any,
    nc: Client,
    store: EventStore,
    projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:
    async with vertical(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment()})
        await client.send("VerticalPodAutoscaler", "create", {"manifest": vpa("Off")})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)

        status = the_vpa(projection)["status"]
        [rec] = status["recommendation"]["containerRecommendations"]
        assert rec["containerName"] == "app"
        # P90 of the peaks is the end of 600Mi's bucket, plus the 15 % margin
        assert 600 * MI * 1.15 < memory_bytes(rec["target"]["memory"]) < 600 * MI * 1.15 * 1.06
        assert 300 * 1.15 <= cpu_millis(rec["target"]["cpu"]) <= 300 * 1.15 * 1.06
        assert rec["uncappedTarget"] == rec["target"]
        assert memory_bytes(rec["upperBound"]["memory"]) >= memory_bytes(rec["target"]["memory"])
        [provided] = status["conditions"]
        assert (provided["type"], provided["status"]) == ("RecommendationProvided", "True")

        event = next(e for e in reversed(await recorded(store))
                     if "recommendation" in e.envelope.payload["status"])  # fmt: skip
        assert event.envelope.actor == ACTOR
        why = event.envelope.payload["why"]["containers"]["app"]
        assert why["cpuSamples"] >= 1 and why["memorySamples"] >= 1
        assert why["memoryPeakBytes"]["p90"] >= 600 * MI
        assert why["safetyMargin"] == 0.15 and why["caps"] == []
        assert "confidence" in why and why["podMinimum"]["memoryBytes"] == 250 * MI

        # The same load again and again is not a new recommendation (bounds alone wait).
        writes = len(await recorded(store))
        await asyncio.sleep(3)  # six more samples of the same usage
        assert len(await recorded(store)) == writes

        got = printed(await cli(nats_server.url, "get", "vpa"))
        assert got[0].split() == ["NAME", "MODE", "CPU", "MEM", "PROVIDED", "AGE"]
        row = got[1].split()
        assert row[:2] == ["web", "Off"] and row[2] == rec["target"]["cpu"] and row[4] == "True"
        described = await cli(nats_server.url, "describe", "vpa", "web")
        assert described.exit_code == 0
        assert "containerRecommendations" in described.output
        assert "RecommendationProvided" in described.output
        # Off: the pod was never touched
        [pod] = pods(projection)
        requests = pod.manifest["spec"]["containers"][0]["resources"]["requests"]
        assert requests["memory"] == "64Mi"


@pytest.mark.usefixtures("gateway")
async def test_initial_mode_sets_the_requests_of_a_new_pod_and_the_audit_names_the_stage(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment()})
        await client.send("VerticalPodAutoscaler", "create", {"manifest": vpa("Initial")})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)
        wanted = target(projection)
        await asyncio.sleep(1)  # the gateway's VPA model follows the status (live)

        await client.send(
            "Deployment", "scale", {"name": "web", "namespace": "default", "replicas": 2}
        )
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 2), timeout=30)
        [new] = [p for p in pods(projection) if p.name != first.name]
        resources = new.manifest["spec"]["containers"][0]["resources"]
        assert memory_bytes(resources["requests"]["memory"]) == memory_bytes(wanted["memory"])
        assert cpu_millis(resources["requests"]["cpu"]) == cpu_millis(wanted["cpu"])
        # RequestsAndLimits: the 2:1 cpu limit:request ratio is kept
        assert cpu_millis(resources["limits"]["cpu"]) == 2 * cpu_millis(wanted["cpu"])
        annotations = new.manifest["metadata"]["annotations"]
        assert annotations["vpaUpdates"] == (
            "Pod resources updated by web: container 0: cpu request, cpu limit, memory request"
        )
        # Initial never touches a running pod
        still = projection.model.get("Pod", "default", first.name)
        assert still is not None
        assert still.manifest["spec"]["containers"][0]["resources"]["requests"]["memory"] == "64Mi"

        audit = [r for r in await read_audit(nc) if r.name == new.name and r.verb == "create"]
        assert audit, "the pod's create was audited"
        [stage] = [n for n in audit[-1].admission if "VerticalPodAutoscaler" in n]
        assert stage.startswith("mutated by VerticalPodAutoscaler: web (Initial) set app: ")
        assert f"memory request {resources['requests']['memory']}" in stage


@pytest.mark.usefixtures("gateway")
async def test_recreate_evicts_a_pod_outside_its_bounds_and_the_new_one_gets_the_target(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection) as controller:
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        await client.send(
            "VerticalPodAutoscaler", "create", {"manifest": vpa("Recreate", minReplicas=1)}
        )
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)

        async def replaced() -> bool:
            return any(p.name != first.name for p in pods(projection))

        await eventually(replaced, timeout=30)
        events = await store.read_subject(event_subject("Pod", "default", first.name))
        deleted = [e for e in events if e.envelope.type == "PodDeleted"]
        assert deleted and deleted[0].envelope.actor == UPDATER_ACTOR
        assert "outside the recommended range" in deleted[0].envelope.payload["reason"]
        assert controller.evicted >= 1
        [new] = [p for p in pods(projection) if p.name != first.name]
        requests = new.manifest["spec"]["containers"][0]["resources"]["requests"]
        assert memory_bytes(requests["memory"]) > 600 * MI  # admitted with the target


async def updater_passes(store: EventStore) -> list[dict[str, Any]]:
    """What the updater recorded doing, pass by pass (``why.updater`` of the VPA's events)."""
    return [
        action
        for e in await recorded(store)
        for action in (e.envelope.payload.get("why") or {}).get("updater") or ()
    ]


@pytest.mark.usefixtures("gateway")
async def test_in_place_or_recreate_resizes_a_simulated_pod_without_evicting_it(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection) as controller:
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        await client.send(
            "VerticalPodAutoscaler", "create",
            {"manifest": vpa("InPlaceOrRecreate", minReplicas=1)},
        )  # fmt: skip
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)

        def running_with() -> dict[str, Any]:
            record = projection.model.get("Pod", "default", first.name)
            assert record is not None and record.uid == first.uid  # the same pod throughout
            [status] = record.manifest["status"].get("containerStatuses") or [{}]
            return dict(status.get("resources") or {})

        async def actuated() -> bool:
            return memory_bytes(running_with().get("requests", {}).get("memory", "0")) > 600 * MI

        await eventually(actuated, timeout=30)
        events = await store.read_subject(event_subject("Pod", "default", first.name))
        types = [e.envelope.type for e in events]
        assert "PodDeleted" not in types
        resized = [e for e in events if e.envelope.type == "PodResized"]
        assert resized[0].envelope.actor == UPDATER_ACTOR
        assert types.index("PodResized") < types.index("PodResizeActuated")
        record = projection.model.get("Pod", "default", first.name)
        assert record is not None
        spec = record.manifest["spec"]["containers"][0]["resources"]
        # what admission would give a new pod: the target, the cpu limit kept at 2x
        wanted = target(projection)
        assert cpu_millis(spec["requests"]["cpu"]) == cpu_millis(wanted["cpu"])
        assert cpu_millis(spec["limits"]["cpu"]) == 2 * cpu_millis(wanted["cpu"])
        assert memory_bytes(spec["requests"]["memory"]) == memory_bytes(wanted["memory"])
        assert not any(
            c["type"].startswith("PodResize") for c in record.manifest["status"]["conditions"]
        )
        assert controller.resized >= 1 and controller.evicted == 0
        [action, *_] = await updater_passes(store)
        assert action["pod"] == first.name and action["path"] == "resized in place"
        assert "outside the recommended range" in action["reason"]
        assert [p.name for p in projection.model.list("Pod", "default")] == [first.name]


@pytest.mark.usefixtures("gateway")
async def test_an_infeasible_resize_falls_back_to_eviction(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection) as controller:
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        # more memory than a simulated node has (32Gi): the node finds the resize Infeasible
        manifest = vpa("InPlaceOrRecreate", minReplicas=1)
        manifest["spec"]["resourcePolicy"] = {
            "containerPolicies": [{"containerName": "*", "minAllowed": {"memory": "40Gi"}}]
        }
        await client.send("VerticalPodAutoscaler", "create", {"manifest": manifest})
        await set_load(nc, cpu="300m", memory="600Mi")

        async def gone() -> bool:
            return projection.model.get("Pod", "default", first.name) is None

        await eventually(gone, timeout=30)
        events = await store.read_subject(event_subject("Pod", "default", first.name))
        types = [e.envelope.type for e in events]
        [pending] = [e for e in events if e.envelope.type == "PodResizePending"]
        assert pending.envelope.payload["reason"] == "Infeasible"
        assert types.index("PodResizePending") < types.index("PodDeleted")
        [deleted] = [e for e in events if e.envelope.type == "PodDeleted"]
        assert deleted.envelope.actor == UPDATER_ACTOR
        reason = deleted.envelope.payload["reason"]
        assert "; in-place resize infeasible: Node didn't have enough capacity: memory" in reason
        assert controller.evicted == 1
        paths = [(a["pod"], a["path"]) for a in await updater_passes(store)]
        assert paths == [
            (first.name, "resized in place"),
            (first.name, "evicted after in-place resize failed"),
        ]


@pytest.mark.usefixtures("gateway")
async def test_a_deferred_resize_is_waited_for_then_the_pod_is_evicted(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    """One simulated node (32Gi) where another pod holds 30Gi: a 4Gi resize fits the node but
    not beside it, so the node defers it; the updater waits (here 3 s, 5 minutes by
    default), then evicts."""
    async with vertical(nc, store, projection, nodes=1, deferred_timeout=3.0) as controller:
        holder = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
                  "spec": {"containers": [{"name": "app", "image": "x",
                           "resources": {"requests": {"memory": "30Gi"}}}]}}  # fmt: skip
        await client.send("Pod", "create", {"manifest": holder})
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 2), timeout=30)
        [first] = [p for p in pods(projection) if p.name != "holder"]
        manifest = vpa("InPlaceOrRecreate", minReplicas=1)
        manifest["spec"]["resourcePolicy"] = {
            "containerPolicies": [{"containerName": "*", "minAllowed": {"memory": "4Gi"}}]
        }
        await client.send("VerticalPodAutoscaler", "create", {"manifest": manifest})
        await set_load(nc, cpu="300m", memory="600Mi")

        async def gone() -> bool:
            return projection.model.get("Pod", "default", first.name) is None

        await eventually(gone, timeout=60)
        events = await store.read_subject(event_subject("Pod", "default", first.name))
        [pending] = [e for e in events if e.envelope.type == "PodResizePending"]
        assert pending.envelope.payload["reason"] == "Deferred"
        [deleted] = [e for e in events if e.envelope.type == "PodDeleted"]
        # not evicted before the timeout had passed since the deferral was first seen
        assert deleted.envelope.timestamp_ns - pending.envelope.timestamp_ns >= 3e9
        assert "; in-place resize deferred for more than 3s: " in deleted.envelope.payload["reason"]
        assert controller.resized == 1 and controller.evicted == 1


@pytest.mark.usefixtures("gateway")
async def test_a_refused_resize_falls_back_to_eviction(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection) as controller:
        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "mem"},
                 "spec": {"hard": {"requests.memory": "1Gi"}}}  # fmt: skip
        await client.send("ResourceQuota", "create", {"manifest": quota})
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        # a target beyond the namespace's quota: the gateway refuses the resize
        manifest = vpa("InPlaceOrRecreate", minReplicas=1)
        manifest["spec"]["resourcePolicy"] = {
            "containerPolicies": [{"containerName": "*", "minAllowed": {"memory": "2Gi"}}]
        }
        await client.send("VerticalPodAutoscaler", "create", {"manifest": manifest})
        await set_load(nc, cpu="300m", memory="600Mi")

        async def gone() -> bool:
            return projection.model.get("Pod", "default", first.name) is None

        await eventually(gone, timeout=30)
        events = await store.read_subject(event_subject("Pod", "default", first.name))
        assert "PodResized" not in [e.envelope.type for e in events]
        [deleted] = [e for e in events if e.envelope.type == "PodDeleted"]
        reason = deleted.envelope.payload["reason"]
        assert "; in-place resize refused: " in reason and "exceeded quota" in reason
        assert controller.evicted == 1 and controller.resized == 0
        [action] = await updater_passes(store)
        assert action["path"] == "evicted after in-place resize failed"


@pytest.mark.usefixtures("gateway")
async def test_a_vpa_on_a_missing_target_says_so(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection):
        outcome = await client.send("VerticalPodAutoscaler", "create", {"manifest": vpa("Auto")})
        # Auto is accepted as the deprecated name of Recreate, with the VPA's warning
        [warning] = outcome.warnings
        assert warning.startswith('spec.updatePolicy: "Auto" mode is deprecated')
        assert "[Off Initial Recreate InPlaceOrRecreate InPlace]" in warning

        async def unsupported() -> bool:
            conditions = (the_vpa(projection).get("status") or {}).get("conditions") or []
            return any(c["type"] == "ConfigUnsupported" for c in conditions)

        await eventually(unsupported, timeout=30)
        conditions = {c["type"]: c for c in the_vpa(projection)["status"]["conditions"]}
        assert conditions["ConfigUnsupported"]["message"] == (
            'Cannot read targetRef: deployments.apps "web" not found'
        )
        assert conditions["RecommendationProvided"]["status"] == "False"


@pytest.mark.usefixtures("gateway")
async def test_an_oom_kill_bumps_the_memory_recommendation(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment()})
        await client.send("VerticalPodAutoscaler", "create", {"manifest": vpa("Off")})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [pod] = pods(projection)
        await set_load(nc, cpu="100m", memory="300Mi")

        async def recommended() -> bool:
            return memory_bytes(target(projection).get("memory", "0")) > 300 * MI

        await eventually(recommended, timeout=30)
        before = memory_bytes(target(projection)["memory"])
        assert before < 400 * MI
        # The node agent records the kill as it records any exit (here for the simulated node).
        node = pod.manifest["spec"]["nodeName"]
        recorder = PodRecorder(AggregateRepository(store), actor=f"system:node:{node}", node=node)
        now = time.time_ns()
        await recorder.record(
            "default", pod.name, step="oom",
            decide=lambda p, at: p.exit_container(
                container="app", exit_code=137, reason="OOMKilled", node=node,
                started_at_ns=now - 10**9, finished_at_ns=now, at=at,
            ),
        )  # fmt: skip

        async def bumped() -> bool:
            return memory_bytes(target(projection).get("memory", "0")) >= 400 * MI * 1.15

        # used = max(request 64Mi, peak 300Mi); needed = max(300Mi + 100Mi, 300Mi * 1.2) = 400Mi
        await eventually(bumped, timeout=30)
        last = (await recorded(store))[-1].envelope.payload["why"]["containers"]["app"]
        assert last["ooms"] == 1
        assert last["memoryPeakBytes"]["p90"] >= 400 * MI


@pytest.mark.usefixtures("gateway")
async def test_recreate_evictions_honour_a_disruption_budget(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    async with vertical(nc, store, projection) as controller:
        budget = {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        }  # fmt: skip
        await client.send("PodDisruptionBudget", "create", {"manifest": budget})
        await client.send("Deployment", "create", {"manifest": deployment()})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        await client.send(
            "VerticalPodAutoscaler", "create", {"manifest": vpa("Recreate", minReplicas=1)}
        )
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)
        # The updater wants the pod out (below its lower bound) and asks again each look;
        # the budget (one pod that must stay available) refuses every time.
        await eventually(lambda: asyncio.sleep(0, controller.refused >= 2), timeout=30)
        assert controller.evicted == 0
        assert [p.name for p in pods(projection)] == [first.name]


@pytest.mark.usefixtures("gateway")
async def test_initial_mode_keeps_the_limit_within_the_limit_range_max(
    nc: Client, store: EventStore, projection: Projection[ClusterModel], client: CommandClient
) -> None:
    limits = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "caps"},
              "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m"}}]}}  # fmt: skip
    await client.send("LimitRange", "create", {"manifest": limits})
    async with vertical(nc, store, projection):
        await client.send("Deployment", "create", {"manifest": deployment()})
        await client.send("VerticalPodAutoscaler", "create", {"manifest": vpa("Initial")})
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 1), timeout=30)
        [first] = pods(projection)
        await set_load(nc, cpu="300m", memory="600Mi")
        await eventually(lambda: raised(projection), timeout=30)
        # the target (~345m) with the 2:1 limit would ask 690m, past the 500m max
        assert cpu_millis(target(projection)["cpu"]) * 2 > 500
        await asyncio.sleep(1)  # the gateway's VPA model follows the status (live)
        await client.send(
            "Deployment", "scale", {"name": "web", "namespace": "default", "replicas": 2}
        )
        await eventually(lambda: asyncio.sleep(0, len(pods(projection)) == 2), timeout=30)
        [new] = [p for p in pods(projection) if p.name != first.name]
        resources = new.manifest["spec"]["containers"][0]["resources"]
        # the request whose limit is the max: 100m * 500m / 200m
        assert resources["requests"]["cpu"] == "250m" and resources["limits"]["cpu"] == "500m"
        assert memory_bytes(resources["requests"]["memory"]) > 600 * MI
        audit = [r for r in await read_audit(nc) if r.name == new.name and r.verb == "create"]
        [stage] = [n for n in audit[-1].admission if "VerticalPodAutoscaler" in n]
        assert "(cpu capped to fit Max in container LimitRange)" in stage
