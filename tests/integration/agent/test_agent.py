"""The node agent end to end: real nats-server, gateway, scheduler and processes.

A pod becomes Ready through its HTTP probe; a crashing container walks the back-off; a
failing exec liveness probe restarts its container; a process ignoring SIGTERM is killed after
its grace period; a memory hog is OOM-killed under its limit; an agent restarted mid-flight
adopts its running container instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from handlers.agent.agent import NodeAgent
from handlers.agent.network import NetworkOptions
from handlers.agent.node import NodeCapacity
from handlers.agent.pods import PodRecorder, PodStep, PodWorker, WorkerConfig
from handlers.gateway import Gateway
from handlers.scheduler import Scheduler
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.repository import AggregateRepository
from streams.server import free_port
from streams.subjects import AggregateRef, event_subject
from streams.telemetry import latest_usage, read_logs
from tests.integration.agent.runtime_support import TrackedRuntime, alive
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

PY = sys.executable
NODE = "agent-node"


class Cluster:
    def __init__(self, nc: Any, store: EventStore, client: CommandClient, root: Path) -> None:
        self.nc, self.store, self.client, self.root = nc, store, client, root
        self.runtime = TrackedRuntime(root)
        self.agent: NodeAgent | None = None
        self.agent_task: asyncio.Task[None] | None = None

    async def start_agent(
        self, *, recorder: Callable[[PodRecorder], PodRecorder] | None = None
    ) -> NodeAgent:
        self.agent = NodeAgent(
            self.nc, self.store, name=NODE, root=self.root,
            capacity=NodeCapacity("4", "8Gi"), heartbeat_seconds=1.0, usage_seconds=0.5,
            config=WorkerConfig(backoff_initial_seconds=0.3, backoff_cap_seconds=1.2),
            runtime=self.runtime,
            # These tests are about processes, probes and restarts on the node's network (their
            # servers bind 127.0.0.1); the pod network has its own tests (test_pod_network.py).
            network=NetworkOptions(enabled=False),
        )  # fmt: skip
        if recorder is not None:
            self.agent.recorder = recorder(self.agent.recorder)
        ready = asyncio.Event()
        self.agent_task = asyncio.create_task(self.agent.run(ready))
        await asyncio.wait_for(ready.wait(), 15)
        return self.agent

    async def stop_agent(self) -> None:
        if self.agent_task is not None:
            self.agent_task.cancel()
            await asyncio.gather(self.agent_task, return_exceptions=True)
            self.agent_task = None

    async def events(self, pod: str) -> list[Any]:
        return [
            e.envelope for e in await self.store.read_subject(event_subject("Pod", "default", pod))
        ]

    async def types(self, pod: str) -> list[str]:
        return [e.type for e in await self.events(pod)]


@pytest.fixture
async def cluster(
    nc: Any, store: EventStore, gateway: Gateway, client: CommandClient, tmp_path: Path
) -> AsyncIterator[Cluster]:
    scheduler = Scheduler(nc, store, share_work=False, initial_backoff=0.05, max_backoff=0.2)
    ready = asyncio.Event()
    scheduling = asyncio.create_task(scheduler.run(ready))
    await ready.wait()
    running = Cluster(nc, store, client, tmp_path / "agent")
    await running.start_agent()
    try:
        yield running
    finally:
        await running.stop_agent()
        scheduling.cancel()
        await asyncio.gather(scheduling, return_exceptions=True)
        running.runtime.cleanup()


class AddressesHeld(PodRecorder):
    """Holds the append of every pod's addresses until :attr:`release` is set."""

    def __init__(self, recorder: PodRecorder) -> None:
        super().__init__(
            recorder._repository, actor=recorder.actor, node=recorder.node, model=recorder._model
        )
        self.release = asyncio.Event()

    async def record(
        self, namespace: str, name: str, *, step: str, decide: PodStep,
        release_on: str | None = None,
    ) -> bool:  # fmt: skip
        if step == "ip":
            await self.release.wait()
        return await super().record(
            namespace, name, step=step, decide=decide, release_on=release_on
        )


def pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "process", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


async def test_an_http_server_becomes_ready_through_its_probe_and_stops_when_deleted(
    cluster: Cluster,
) -> None:
    port = free_port()
    manifest = pod(
        "web", [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        container={"readinessProbe": {"httpGet": {"path": "/", "port": port},
                                      "periodSeconds": 1}},
    )  # fmt: skip
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def ready() -> bool:
        return "PodReady" in await cluster.types("web")

    await eventually(ready, timeout=20)
    types = await cluster.types("web")
    assert types.index("ContainerStarted") < types.index("PodReady")
    started = next(e for e in await cluster.events("web") if e.type == "ContainerStarted")
    assert started.actor == f"system:node/{NODE}" and started.payload["node"] == NODE
    process = cluster.runtime.seen[0]
    assert alive(process.pid)

    async def usage_published() -> bool:
        pods = await latest_usage(cluster.nc, "pod", namespace="default")
        return any(p.name == "web" and p.containers["main"].memory_bytes > 0 for p in pods)

    await eventually(usage_published, timeout=10)
    node = [n for n in await latest_usage(cluster.nc, "node") if n.name == NODE]
    assert node and node[0].pods == 1 and node[0].memory_bytes > 0
    await cluster.client.send("Pod", "delete", {"name": "web"})

    async def stopped() -> bool:
        return not alive(process.pid)

    await eventually(stopped, timeout=15)


async def test_a_crashing_container_walks_the_back_off(cluster: Cluster) -> None:
    manifest = pod("crash", [PY, "-c", "import sys; print('boom'); sys.exit(3)"])
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def restarted_four_times() -> bool:
        return (await cluster.types("crash")).count("ContainerRestarted") >= 4

    await eventually(restarted_four_times, timeout=30)
    events = await cluster.events("crash")
    restarts = [e.payload for e in events if e.type == "ContainerRestarted"][:4]
    # First restart at once, then 0.3 s doubling to the 1.2 s cap (kubelet: 10 s to 300 s).
    assert [r["backoff_seconds"] for r in restarts] == [0, 0.3, 0.6, 1.2]
    assert [r["restart_count"] for r in restarts] == [1, 2, 3, 4]
    exits = [e.payload for e in events if e.type == "ContainerExited"]
    assert exits[0]["exit_code"] == 3 and exits[0]["reason"] == "Error"
    assert all(r["reason"] == "Error" for r in restarts)


async def test_a_failing_exec_liveness_probe_restarts_the_container(cluster: Cluster) -> None:
    manifest = pod(
        "sick", [PY, "-c", "import time; time.sleep(600)"],
        container={"livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                     "failureThreshold": 2}},
    )  # fmt: skip
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def restarted() -> bool:
        return "ContainerRestarted" in await cluster.types("sick")

    await eventually(restarted, timeout=20)
    events = await cluster.events("sick")
    restart = next(e.payload for e in events if e.type == "ContainerRestarted")
    assert restart["reason"] == "LivenessProbeFailed" and restart["backoff_seconds"] == 0
    first = cluster.runtime.seen[0]
    assert not alive(first.pid)  # the old instance was stopped, not left behind


async def test_a_process_ignoring_sigterm_is_killed_after_its_grace_period(
    cluster: Cluster,
) -> None:
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM', flush=True))\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    manifest = pod("stubborn", [PY, "-c", stubborn], terminationGracePeriodSeconds=1)
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def started() -> bool:
        return "ContainerStarted" in await cluster.types("stubborn")

    await eventually(started, timeout=20)
    process = cluster.runtime.seen[0]
    await asyncio.sleep(0.5)  # let it install its handler
    deleted_at = asyncio.get_running_loop().time()
    await cluster.client.send("Pod", "delete", {"name": "stubborn"})

    async def killed() -> bool:
        return not alive(process.pid)

    await eventually(killed, timeout=15)
    took = asyncio.get_running_loop().time() - deleted_at
    assert took >= 0.9, f"killed after {took:.2f}s, before its 1 s grace period"
    assert "ignoring SIGTERM" in (process.directory / "stdout").read_text()

    async def logs_shipped() -> bool:
        chunks = [c async for c in read_logs(cluster.nc, "default", "stubborn", "main")]
        return b"ignoring SIGTERM" in b"".join(chunks)

    await eventually(logs_shipped, timeout=10)  # `fleetlog logs` reads them from anywhere


async def test_a_memory_hog_is_oom_killed_under_its_limit(cluster: Cluster) -> None:
    enforced, reason, message = cluster.runtime.limits_condition()
    if not enforced:
        pytest.skip(f"cgroups are not writable here ({reason}: {message})")
    hog = "x = bytearray(300 * 1024 * 1024); import time; time.sleep(60)"
    manifest = pod(
        "hog", [PY, "-c", hog], restartPolicy="Never",
        container={"resources": {"limits": {"memory": "64Mi"}}},
    )  # fmt: skip
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def failed() -> bool:
        return "PodFailed" in await cluster.types("hog")

    await eventually(failed, timeout=20)
    exited = next(e.payload for e in await cluster.events("hog") if e.type == "ContainerExited")
    assert exited["reason"] == "OOMKilled" and exited["exit_code"] == 137


async def test_a_restarted_agent_adopts_its_running_container_without_a_duplicate(
    cluster: Cluster,
) -> None:
    manifest = pod("steady", [PY, "-c", "import time; time.sleep(600)"])
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def ready() -> bool:
        return "PodReady" in await cluster.types("steady")

    await eventually(ready, timeout=20)
    await cluster.stop_agent()
    process = cluster.runtime.seen[0]
    assert alive(process.pid)  # stopping the agent does not stop its pods
    before = await cluster.types("steady")
    cluster.runtime = TrackedRuntime(cluster.root)
    await cluster.start_agent()
    await asyncio.sleep(1.5)
    assert await cluster.types("steady") == before  # nothing started twice
    adopted = cluster.runtime.seen
    assert [c.pid for c in adopted] == [process.pid]
    await cluster.client.send("Pod", "delete", {"name": "steady"})

    async def stopped() -> bool:
        return not alive(process.pid)

    await eventually(stopped, timeout=15)


async def test_a_pod_deleted_while_the_agent_was_down_is_stopped_when_it_returns(
    cluster: Cluster,
) -> None:
    manifest = pod("gone", [PY, "-c", "import time; time.sleep(600)"])
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def ready() -> bool:
        return "PodReady" in await cluster.types("gone")

    await eventually(ready, timeout=20)
    process = cluster.runtime.seen[0]
    await cluster.stop_agent()
    await cluster.client.send("Pod", "delete", {"name": "gone"})
    assert alive(process.pid)  # nobody stopped it yet: its agent is down
    previous = cluster.runtime
    cluster.runtime = TrackedRuntime(cluster.root)
    await cluster.start_agent()

    async def stopped() -> bool:
        return not alive(process.pid)

    try:
        await eventually(stopped, timeout=15)
    finally:
        previous.cleanup()
    assert not list(cluster.root.glob("pods/*/*/*/container.json"))  # and forgotten


async def test_a_finished_pod_succeeds_and_gives_its_node_reservation_back(
    cluster: Cluster,
) -> None:
    manifest = pod("job", [PY, "-c", "print('done')"], restartPolicy="Never")
    await cluster.client.send("Pod", "apply", {"manifest": manifest})

    async def succeeded() -> bool:
        return "PodSucceeded" in await cluster.types("job")

    await eventually(succeeded, timeout=20)
    exited = next(e.payload for e in await cluster.events("job") if e.type == "ContainerExited")
    assert (exited["exit_code"], exited["reason"]) == (0, "Completed")
    node_events = await cluster.store.read_subject(event_subject("Node", "", NODE))
    released = [e.envelope for e in node_events if e.envelope.type == "PodReleased"]
    assert [(e.payload["pod"], e.actor) for e in released] == [
        ("default/job", f"system:node/{NODE}")
    ]
    # Deleting the finished pod later releases nothing twice.
    outcome = await cluster.client.send("Pod", "delete", {"name": "job"})
    assert outcome.events == ["PodDeleted"]


async def test_a_restarted_agent_keeps_the_cordon_taints_and_labels_others_gave_its_node(
    cluster: Cluster,
) -> None:
    client = cluster.client
    await client.send("Node", "cordon", {"name": NODE, "reason": "maintenance"})
    record = (await cluster.store.read_subject(event_subject("Node", "", NODE)))[-1]
    current = await client.send("Node", "apply", {"manifest": {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "team": "infra"}},
        "spec": {"unschedulable": True,
                 "taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]},
    }}, expected_version=record.envelope.version)  # fmt: skip
    before = await cluster.store.stream_last_seq()
    await cluster.stop_agent()
    await cluster.start_agent()

    node_events = [
        e for e in await cluster.store.read_subject(event_subject("Node", "", NODE))
        if e.seq > before
    ]  # fmt: skip
    for event in node_events:  # the agent restated its status, nothing of the spec
        assert event.envelope.type != "NodeUncordoned"
        changed = event.envelope.payload.get("changed") or []
        assert not [path for path in changed if path.startswith("spec")], event.envelope
    stored = await cluster.store.read_subject(event_subject("Node", "", NODE))
    assert stored[-1].envelope.version >= current.version
    node = (await AggregateRepository(cluster.store).load(
        AggregateRef("Node", "", NODE), fresh=True)).aggregate  # fmt: skip
    assert node is not None
    spec, labels = node.manifest["spec"], node.manifest["metadata"]["labels"]
    assert spec["unschedulable"] is True
    assert spec["taints"] == [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]
    assert labels["team"] == "infra"
    assert labels["node.fleetlog.dev/runtime"] == "process"  # the agent's own label is back


async def test_a_container_that_cannot_run_waits_in_back_off_and_its_replica_set_keeps_it(
    cluster: Cluster, projection: Any
) -> None:
    from ops.render.pods import pod_columns
    from tests.integration.support import workload_roles

    replica_set = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
        },
    }  # fmt: skip
    async with workload_roles(cluster.nc, cluster.store, projection, nodes=0):
        await cluster.client.send("ReplicaSet", "apply", {"manifest": replica_set})

        async def waiting() -> bool:
            pods = projection.model.list("Pod", "default")
            return any(
                "ImagePullBackOff" in str((p.manifest.get("status") or {}).get("containerStatuses"))
                for p in pods
            )

        await eventually(waiting, timeout=20)
        await asyncio.sleep(3)  # a replaced pod would have come and gone by now
        pods = list(projection.model.list("Pod", "default"))
        assert len(pods) == 1
        manifest = pods[0].manifest
        assert manifest["status"]["phase"] == "Pending"
        (status,) = manifest["status"]["containerStatuses"]
        assert status["state"]["waiting"]["reason"] == "ImagePullBackOff"
        assert "has no command" in status["state"]["waiting"]["message"]
        assert pod_columns(manifest, 0)[1] == "ImagePullBackOff"
        types = await cluster.types(pods[0].name)
        assert "PodFailed" not in types
        assert types.count("ContainerWaiting") == 1
        await cluster.client.send("Pod", "delete", {"name": pods[0].name})


async def test_a_container_starts_while_its_pods_address_is_recorded_and_the_log_keeps_the_order(
    cluster: Cluster,
) -> None:
    await cluster.stop_agent()
    held: list[AddressesHeld] = []

    def hold(recorder: PodRecorder) -> PodRecorder:
        held.append(AddressesHeld(recorder))
        return held[-1]

    await cluster.start_agent(recorder=hold)
    await cluster.client.send("Pod", "apply", {"manifest": pod("quick", ["sleep", "60"])})

    async def process_started() -> bool:
        return bool(cluster.runtime.seen)

    # The process runs while the append of the pod's address is still held back ...
    await eventually(process_started, timeout=15)
    assert "PodIPAssigned" not in await cluster.types("quick")
    held[0].release.set()

    async def recorded() -> bool:
        return "ContainerStarted" in await cluster.types("quick")

    await eventually(recorded, timeout=15)
    # ... and the log still tells the address first, then the start.
    types = await cluster.types("quick")
    assert types.index("PodIPAssigned") < types.index("ContainerStarted")


class ReadsCounted(EventStore):
    """The real store, counting the aggregate reads of each subject (what a writer's
    load costs: a round trip to the server and a fold of the history)."""

    def __init__(self, nc: Any) -> None:
        super().__init__(nc)
        self.reads: dict[str, int] = {}

    async def read_aggregate(
        self, subject: str, *, after_seq: int = 0, at_least: int = 0
    ) -> tuple[list[Any], int]:
        self.reads[subject] = self.reads.get(subject, 0) + 1
        return await super().read_aggregate(subject, after_seq=after_seq, at_least=at_least)


async def test_a_pods_steps_are_decided_on_the_agents_read_model_without_reading_the_log(
    cluster: Cluster,
) -> None:
    await cluster.stop_agent()
    async with ReadsCounted(cluster.nc) as counted:
        agent = NodeAgent(
            cluster.nc, counted, name=NODE, root=cluster.root, capacity=NodeCapacity("4", "8Gi"),
            runtime=cluster.runtime, network=NetworkOptions(enabled=False),
        )  # fmt: skip
        ready = asyncio.Event()
        running = asyncio.create_task(agent.run(ready))
        try:
            await asyncio.wait_for(ready.wait(), 15)
            await cluster.client.send("Pod", "apply", {"manifest": pod("quick", ["sleep", "60"])})

            async def recorded() -> bool:
                return "PodReady" in await cluster.types("quick")

            await eventually(recorded, timeout=15)
            types = await cluster.types("quick")
            # Its address, its start and its readiness, in that order, each once ...
            assert [t for t in types if t in ("PodIPAssigned", "ContainerStarted", "PodReady")] == [
                "PodIPAssigned", "ContainerStarted", "PodReady"
            ]  # fmt: skip
            # ... decided on the pod as the agent's read model held it: its history was never
            # read back from the log for them.
            assert counted.reads.get(event_subject("Pod", "default", "quick"), 0) == 0
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_a_pass_of_the_agent_looks_only_at_the_pods_whose_events_came(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    updated: list[str] = []
    update = PodWorker.update

    def counted(worker: PodWorker, record: Any) -> None:
        updated.append(worker.name)
        update(worker, record)

    monkeypatch.setattr(PodWorker, "update", counted)
    for name in ("one", "two", "three"):
        await cluster.client.send("Pod", "apply", {"manifest": pod(name, ["sleep", "60"])})

    async def all_ready() -> bool:
        return all(["PodReady" in await cluster.types(n) for n in ("one", "two", "three")])

    await eventually(all_ready, timeout=15)
    # Another pod's events come and go; these three have none.
    updated.clear()
    await cluster.client.send("Pod", "apply", {"manifest": pod("four", ["sleep", "60"])})

    async def four_ready() -> bool:
        return "PodReady" in await cluster.types("four")

    await eventually(four_ready, timeout=15)
    assert {"one", "two", "three"}.isdisjoint(updated)
    # A change of one of them reaches its worker (and the worker only).
    labelled = pod("two", ["sleep", "60"])
    labelled["metadata"]["labels"] = {"tier": "web"}
    labelled["spec"]["nodeName"] = NODE  # as bound: only the labels change
    await cluster.client.send("Pod", "apply", {"manifest": labelled})

    async def two_updated() -> bool:
        return "two" in updated

    await eventually(two_updated, timeout=15)
    assert {"one", "three"}.isdisjoint(updated)
    agent = cluster.agent
    assert agent is not None
    assert {w.name for w in agent.workers()} == {"one", "two", "three", "four"}


async def test_a_pod_without_volumes_starts_without_a_trip_through_a_worker_thread(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers.agent import pods

    sent: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(func, "__name__", repr(func)))
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(pods.asyncio, "to_thread", counted)
    await cluster.client.send("Pod", "apply", {"manifest": pod("plain", ["sleep", "60"])})

    async def started() -> bool:
        return "ContainerStarted" in await cluster.types("plain")

    await eventually(started, timeout=15)
    assert "write_volumes" not in sent
