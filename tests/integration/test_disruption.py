"""PodDisruptionBudgets against a real nats-server, gateway and HTTP door: the disruption
controller's status, evictions honouring it (kube's 429 with nothing appended), and bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from handlers.disruption_controller import ACTOR, DisruptionController
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient, CommandFailed
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.integration.support import cli, eventually
from tests.integration.test_apiserver import API, api

__all__ = ["api"]  # the fixture, imported for these tests

pytestmark = pytest.mark.integration

PODS = "/api/v1/namespaces/default/pods"
PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
JSON = {"Content-Type": "application/json"}
REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget."


def ready_pod(name: str, *, app: str = "web", node: str | None = None,
              ready: bool = True) -> dict[str, Any]:  # fmt: skip
    """A running pod whose status already says Ready (as the node agent records it)."""
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "web"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": spec,
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def pdb(name: str = "web-pdb", **spec: Any) -> dict[str, Any]:
    spec.setdefault("selector", {"matchLabels": {"app": "web"}})
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


def eviction(name: str) -> bytes:
    return json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                       "metadata": {"name": name, "namespace": "default"}}).encode()  # fmt: skip


@contextlib.asynccontextmanager
async def disruption(
    nc: Client, projection: Projection[ClusterModel]
) -> AsyncIterator[DisruptionController]:
    controller = await DisruptionController.create(
        nc, projection, period_seconds=0.2, retry_seconds=0.2
    )
    ready = asyncio.Event()
    task = asyncio.create_task(controller.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield controller
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def status_of(projection: Projection[ClusterModel], name: str = "web-pdb") -> dict[str, Any]:
    record = projection.model.get("PodDisruptionBudget", "default", name)
    return dict((record.manifest.get("status") or {}) if record is not None else {})


async def allowed(projection: Projection[ClusterModel], n: int, name: str = "web-pdb") -> bool:
    s = status_of(projection, name)
    return s.get("observedGeneration") is not None and s.get("disruptionsAllowed") == n


async def test_min_available_two_of_three_allows_one_eviction_and_refuses_the_next(
    nc: Client, store: EventStore, api: API, projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        for name in ("web-1", "web-2", "web-3"):
            await client.send("Pod", "apply", {"manifest": ready_pod(name)})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb(minAvailable=2)})
        await eventually(lambda: allowed(projection, 1), timeout=15)
        s = status_of(projection)
        assert (s["expectedPods"], s["desiredHealthy"], s["currentHealthy"]) == (3, 2, 3)
        assert [(c["type"], c["status"], c["reason"]) for c in s["conditions"]] == [
            ("DisruptionAllowed", "True", "SufficientPods")
        ]

        status, answer = await api.request(
            "POST", f"{PODS}/web-1/eviction", eviction("web-1"), **JSON
        )
        assert (status, answer["status"], answer["code"]) == (201, "Success", 201), answer
        # The pod's deletion and the budget's use are one append.
        pod_events = await store.read_subject(event_subject("Pod", "default", "web-1"))
        budget_events = await store.read_subject(
            event_subject("PodDisruptionBudget", "default", "web-pdb")
        )
        deleted = pod_events[-1]
        used = next(e for e in budget_events if e.seq == deleted.seq + 1)
        assert deleted.envelope.type == "PodDeleted"
        assert used.envelope.type == "PodDisruptionBudgetStatusUpdated"
        assert used.envelope.actor == deleted.envelope.actor != ACTOR
        assert used.envelope.payload["status"]["disruptionsAllowed"] == 0
        assert set(used.envelope.payload["status"]["disruptedPods"]) == {"web-1"}

        await eventually(lambda: allowed(projection, 0), timeout=15)
        last = await store.stream_last_seq()
        status, answer = await api.request(
            "POST", f"{PODS}/web-2/eviction", eviction("web-2"), **JSON
        )
        assert (status, answer["reason"], answer["message"]) == (429, "TooManyRequests", REFUSAL)
        assert answer["details"]["causes"] == [
            {"reason": "DisruptionBudget",
             "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}
        ]  # fmt: skip
        # The refusal appended nothing: web-2 untouched, and the budget changed by none but its
        # controller (which, under load, may still be taking in web-1's eviction).
        assert (await store.read_subject(event_subject("Pod", "default", "web-2")))[-1].seq <= last
        budget_events = await store.read_subject(
            event_subject("PodDisruptionBudget", "default", "web-pdb")
        )
        assert all(e.envelope.actor == ACTOR for e in budget_events if e.seq > last)
        assert projection.model.get("Pod", "default", "web-2") is not None

        # A new ready pod gives the budget room again.
        await client.send("Pod", "apply", {"manifest": ready_pod("web-4")})
        await eventually(lambda: allowed(projection, 1), timeout=15)
        status, _ = await api.request("POST", f"{PODS}/web-2/eviction", eviction("web-2"), **JSON)
        assert status == 201


async def test_unready_pods_and_budget_policies(
    nc: Client, api: API, projection: Projection[ClusterModel], client: CommandClient,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        await client.send("Pod", "apply", {"manifest": ready_pod("web-1")})
        await client.send("Pod", "apply", {"manifest": ready_pod("web-2", ready=False)})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb(minAvailable=2)})
        await eventually(lambda: allowed(projection, 0), timeout=15)
        # IfHealthyBudget (the default): the budget is not healthy, the unready pod stays.
        status, answer = await api.request(
            "POST", f"{PODS}/web-2/eviction", eviction("web-2"), **JSON
        )
        assert (status, answer["message"]) == (429, REFUSAL)
        # AlwaysAllow: an unready pod goes whatever the budget says; a ready one does not.
        await client.send("PodDisruptionBudget", "apply", {
            "manifest": pdb(minAvailable=2, unhealthyPodEvictionPolicy="AlwaysAllow")})  # fmt: skip
        await eventually(
            lambda: _true(status_of(projection).get("observedGeneration") == 2), timeout=15
        )
        status, _ = await api.request("POST", f"{PODS}/web-2/eviction", eviction("web-2"), **JSON)
        assert status == 201
        status, _ = await api.request("POST", f"{PODS}/web-1/eviction", eviction("web-1"), **JSON)
        assert status == 429


async def test_two_budgets_over_one_pod_is_kubes_500_and_others_are_untouched(
    nc: Client, store: EventStore, api: API, projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        await client.send("Pod", "apply", {"manifest": ready_pod("web-1")})
        await client.send("Pod", "apply", {"manifest": ready_pod("api-1", app="api")})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb("a", maxUnavailable=1)})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb("b", maxUnavailable=1)})
        # Both synced (the pod has no controller: maxUnavailable of an expected 0 allows none).
        for name in ("a", "b"):
            await eventually(lambda n=name: allowed(projection, 0, n), timeout=15)  # type: ignore[misc]
        last = await store.stream_last_seq()
        status, answer = await api.request(
            "POST", f"{PODS}/web-1/eviction", eviction("web-1"), **JSON
        )
        assert (status, answer["code"]) == (500, 500)
        assert answer["message"] == (
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support."
        )
        assert await store.stream_last_seq() == last
        # A pod no budget selects is evicted as a delete.
        status, _ = await api.request("POST", f"{PODS}/api-1/eviction", eviction("api-1"), **JSON)
        assert status == 201


async def test_a_budget_selecting_nothing_says_so_and_bad_budgets_are_refused(
    nc: Client, store: EventStore, api: API, projection: Projection[ClusterModel],
    client: CommandClient,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        await client.send("PodDisruptionBudget", "create", {
            "manifest": pdb("lonely", minAvailable=1, selector={"matchLabels": {"app": "none"}})})  # fmt: skip
        await eventually(
            lambda: _true(status_of(projection, "lonely").get("observedGeneration") == 1),
            timeout=15,
        )
        s = status_of(projection, "lonely")
        assert (s["expectedPods"], s["disruptionsAllowed"]) == (0, 0)
        [c] = s["conditions"]
        assert (c["status"], c["reason"], c["message"]) == (
            "False",
            "InsufficientPods",
            "No matching pods found",
        )
        last = await store.stream_last_seq()
        with pytest.raises(CommandFailed) as refused:
            await client.send("PodDisruptionBudget", "create", {
                "manifest": pdb("both", minAvailable=1, maxUnavailable=1)})  # fmt: skip
        assert "minAvailable and maxUnavailable cannot be both set" in str(refused.value)
        body = json.dumps(pdb("big", minAvailable="150%")).encode()
        status, answer = await api.request("POST", PDBS, body, **JSON)
        assert (status, answer["reason"]) == (422, "Invalid"), answer
        assert answer["details"]["causes"][0]["field"] == "spec.minAvailable"
        with pytest.raises(CommandFailed, match="only pods can be evicted") as refused:
            await client.send("Deployment", "evict", {"name": "web"})
        with pytest.raises(CommandFailed) as refused:
            await client.send("Pod", "evict", {"name": "nobody"})
        assert refused.value.code == "not_found"
        assert await store.stream_last_seq() == last


async def _true(value: bool) -> bool:
    return value


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"}}}  # fmt: skip


@pytest.mark.usefixtures("queries")
async def test_drain_evicts_through_the_budget_retrying_politely_until_it_has_room(
    nats_server: Any, nc: Client, projection: Projection[ClusterModel], client: CommandClient,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        await client.send("Node", "apply", {"manifest": NODE})
        for name, node in (("web-1", "n1"), ("web-2", "n1"), ("web-3", None)):
            await client.send("Pod", "apply", {"manifest": ready_pod(name, node=node)})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb(minAvailable=2)})
        await eventually(lambda: allowed(projection, 1), timeout=15)

        # One of the node's pods may go; the other is refused, asked again after 5 s, refused
        # again, and the drain gives up at its timeout in kubectl's words.
        waited = await cli(nats_server.url, "drain", "n1", "--force", "--timeout", "8s")
        assert waited.exit_code == 1
        on_node = {p.name for p in projection.model.list("Pod", "default")
                   if (p.manifest.get("spec") or {}).get("nodeName") == "n1"}  # fmt: skip
        assert len(on_node) == 1
        [left] = on_node
        assert (
            f'error when evicting pods/"{left}" -n "default" (will retry after 5s): {REFUSAL}'
            in waited.output
        )
        assert (
            f'error: error when evicting pods/"{left}" -n "default": global timeout reached: 8s'
            in (waited.output)
        )
        # Room again (a new ready pod elsewhere): the same drain completes.
        await client.send("Pod", "apply", {"manifest": ready_pod("web-4")})
        await eventually(lambda: allowed(projection, 1), timeout=15)
        drained = await cli(nats_server.url, "drain", "n1", "--force", "--timeout", "20s")
        assert drained.exit_code == 0, drained.output
        assert "node/n1 drained" in drained.output
        assert f"pod/{left} evicted" in drained.output


async def test_evictions_racing_for_the_last_disruption_let_exactly_one_through(
    nc: Client, projection: Projection[ClusterModel], client: CommandClient, gateway: Any,
) -> None:  # fmt: skip
    async with disruption(nc, projection):
        for i in range(4):
            await client.send("Pod", "apply", {"manifest": ready_pod(f"web-{i}")})
        await client.send("PodDisruptionBudget", "create", {"manifest": pdb(minAvailable=3)})
        await eventually(lambda: allowed(projection, 1), timeout=15)
        others = [CommandClient(nc, actor=f"user:u{i}") for i in range(3)]
        outcomes = await asyncio.gather(
            *(c.send("Pod", "evict", {"name": f"web-{i}"}) for i, c in enumerate(others)),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, CommandFailed)]
        assert len(refused) == 2, outcomes
        assert {r.code for r in refused} == {"too_many_requests"}
        assert {r.message for r in refused} == {REFUSAL}
        await eventually(
            lambda: _true(len(list(projection.model.list("Pod", "default"))) == 3), timeout=15
        )
