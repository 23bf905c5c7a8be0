"""In-place pod resize on a real node agent with real processes (real nats-server, gateway,
scheduler): the agent admits a resize against its node, writes the new limits into the running
container's cgroup (read back from the kernel's files here) without restarting it, restarts it
where ``resizePolicy`` says ``RestartContainer``, reports what cannot be done now
(``PodResizePending`` Deferred, tried again) or ever (Infeasible), and records the resources in
status as Kubernetes' kubelet does. This machine's cgroups are v1 (hybrid); the v2 file
protocol is pinned against a fake hierarchy in ``test_cgroups.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import FleetError
from handlers.agent.cgroups import V1Driver, V2Driver, cpu_shares
from handlers.agent.runtime import RunningContainer
from tests.integration.agent.runtime_support import alive
from tests.integration.agent.test_agent import PY, Cluster, cluster, pod
from tests.integration.support import eventually

__all__ = ["cluster"]  # the fixture, imported for these tests

pytestmark = pytest.mark.integration

MI = 2**20
SLEEP = [PY, "-c", "import time; time.sleep(600)"]
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"cpu": "200m", "memory": "128Mi"},
}


def sleeper(name: str, *, memory_policy: str = "NotRequired", **resources: Any) -> dict[str, Any]:
    return pod(name, SLEEP, container={
        "resources": resources or RESOURCES,
        "resizePolicy": [
            {"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "memory", "restartPolicy": memory_policy},
        ],
    })  # fmt: skip


def manifest(cluster: Cluster, name: str) -> dict[str, Any]:
    assert cluster.agent is not None
    record = cluster.agent.projection.model.get("Pod", "default", name)
    assert record is not None
    return record.manifest


def container_status(cluster: Cluster, name: str) -> dict[str, Any]:
    statuses = (manifest(cluster, name).get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def conditions(cluster: Cluster, name: str) -> dict[str, dict[str, Any]]:
    status = manifest(cluster, name).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def running(cluster: Cluster, name: str, restart_count: int = 0) -> RunningContainer | None:
    for seen in cluster.runtime.seen:
        if (
            seen.spec.pod_name == name
            and seen.spec.restart_count == restart_count
            and alive(seen.pid)
        ):
            return seen
    return None


def cgroup_file(container: RunningContainer, controller: str, name: str) -> int:
    """A value from the container's cgroup, read from the kernel's file."""
    driver = cluster_driver(container)
    if isinstance(driver, V1Driver):
        directory = driver.mounts[controller] / container.cgroup.relative
    else:
        directory = Path(container.cgroup.paths[0])
    return int((directory / name).read_text().split()[0])


def cluster_driver(container: RunningContainer) -> V1Driver | V2Driver:
    from handlers.agent.cgroups import detect

    driver = detect()
    if not isinstance(driver, V1Driver | V2Driver) or container.cgroup.driver != driver.name:
        pytest.fail(f"this test needs writable cgroups, the agent has {driver.message!r}")
    return driver


def memory_limit(container: RunningContainer) -> int:
    driver = cluster_driver(container)
    if isinstance(driver, V1Driver):
        return cgroup_file(container, "memory", "memory.limit_in_bytes")
    return cgroup_file(container, "memory", "memory.max")


def cpu_quota(container: RunningContainer) -> int:
    driver = cluster_driver(container)
    if isinstance(driver, V1Driver):
        return cgroup_file(container, "cpu", "cpu.cfs_quota_us")
    return cgroup_file(container, "cpu", "cpu.max")


async def started(cluster: Cluster, name: str, restart_count: int = 0) -> RunningContainer:
    async def up() -> bool:
        return running(cluster, name, restart_count) is not None and (
            "ContainerStarted" in await cluster.types(name)
        )

    await eventually(up, timeout=30)
    found = running(cluster, name, restart_count)
    assert found is not None
    return found


async def resize(cluster: Cluster, name: str, resources: dict[str, Any]) -> list[str]:
    reply = await cluster.client.send("Pod", "resize", {
        "name": name, "namespace": "default",
        "containers": [{"name": "main", "resources": resources}],
    })  # fmt: skip
    return reply.events


async def test_raising_the_memory_limit_rewrites_the_cgroup_without_a_restart(
    cluster: Cluster,
) -> None:
    await cluster.client.send("Pod", "apply", {"manifest": sleeper("grow")})
    container = await started(cluster, "grow")
    assert memory_limit(container) == 128 * MI
    assert cpu_quota(container) == 20_000

    more = {
        "requests": {"cpu": "300m", "memory": "64Mi"},
        "limits": {"cpu": "400m", "memory": "256Mi"},
    }
    assert await resize(cluster, "grow", more) == ["PodResized"]

    async def applied() -> bool:
        return container_status(cluster, "grow").get(
            "resources"
        ) == more and "PodResizeInProgress" not in conditions(cluster, "grow")

    await eventually(applied, timeout=30)
    assert memory_limit(container) == 256 * MI
    assert cpu_quota(container) == 40_000
    if isinstance(cluster_driver(container), V1Driver):
        assert cgroup_file(container, "cpu", "cpu.shares") == cpu_shares(300)
    assert alive(container.pid)  # the same process, with its PID: no restart
    status = container_status(cluster, "grow")
    assert status["restartCount"] == 0
    assert status["allocatedResources"] == {"cpu": "300m", "memory": "64Mi"}
    types = await cluster.types("grow")
    assert types.index("PodResized") < types.index("PodResizeAllocated")
    assert types.index("PodResizeAllocated") < types.index("PodResizeActuated")
    assert "ContainerRestarted" not in types
    # The node's ledger holds the new requests (what the scheduler fits other pods beside).
    node = [
        e.envelope
        for e in await cluster.store.read_subject("fleet.evt.node._.agent-node")
        if e.envelope.type == "PodAllocated"
    ]
    assert node[-1].payload["requests"]["cpu"] == 300


async def test_restart_container_policy_restarts_it_with_the_new_limit(cluster: Cluster) -> None:
    await cluster.client.send(
        "Pod", "apply", {"manifest": sleeper("jvm", memory_policy="RestartContainer")}
    )
    first = await started(cluster, "jvm")
    more = {**RESOURCES, "limits": {"cpu": "200m", "memory": "192Mi"}}
    await resize(cluster, "jvm", more)
    second = await started(cluster, "jvm", restart_count=1)
    assert second.pid != first.pid
    assert memory_limit(second) == 192 * MI

    async def applied() -> bool:
        return container_status(cluster, "jvm").get(
            "restartCount"
        ) == 1 and "PodResizeInProgress" not in conditions(cluster, "jvm")

    await eventually(applied, timeout=30)
    restarted = [e for e in await cluster.events("jvm") if e.type == "ContainerRestarted"]
    assert [e.payload["reason"] for e in restarted] == ["ResizeRestart"]


async def test_an_infeasible_resize_is_reported_and_changes_nothing(cluster: Cluster) -> None:
    await cluster.client.send("Pod", "apply", {"manifest": sleeper("huge")})
    container = await started(cluster, "huge")
    beyond = {
        "requests": {"cpu": "100m", "memory": "16Gi"},
        "limits": {"cpu": "200m", "memory": "16Gi"},
    }
    await resize(cluster, "huge", beyond)

    async def pending() -> bool:
        return "PodResizePending" in conditions(cluster, "huge")

    await eventually(pending, timeout=30)
    got = conditions(cluster, "huge")["PodResizePending"]
    assert (got["status"], got["reason"]) == ("True", "Infeasible")
    assert got["message"] == (
        f"Node didn't have enough capacity: memory, requested: {16 * 1024 * MI}, "
        f"capacity: {8 * 1024 * MI}"
    )
    assert memory_limit(container) == 128 * MI  # the cgroup was not touched
    # The node still holds the old requests, and says so (the scheduler counts those).
    assert container_status(cluster, "huge")["allocatedResources"] == RESOURCES["requests"]
    assert "PodResizeAllocated" not in await cluster.types("huge")


async def test_a_deferred_resize_is_applied_once_room_is_made(cluster: Cluster) -> None:
    await cluster.client.send("Pod", "apply", {"manifest": sleeper("small")})
    container = await started(cluster, "small")
    hog = pod("hog", SLEEP, container={"resources": {"requests": {"cpu": "3500m"}}})
    await cluster.client.send("Pod", "apply", {"manifest": hog})
    await started(cluster, "hog")
    bigger = {
        "requests": {"cpu": "1", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"},
    }
    await resize(cluster, "small", bigger)

    async def deferred() -> bool:
        got = conditions(cluster, "small").get("PodResizePending") or {}
        return got.get("reason") == "Deferred"

    await eventually(deferred, timeout=30)
    assert (
        "Node didn't have enough resource: cpu, requested: 1000"
        in (conditions(cluster, "small")["PodResizePending"]["message"])
    )
    assert cpu_quota(container) == 20_000
    await cluster.client.send("Pod", "delete", {"name": "hog", "namespace": "default"})

    async def applied() -> bool:
        got = conditions(cluster, "small")
        return (
            "PodResizePending" not in got
            and "PodResizeInProgress" not in got
            and (container_status(cluster, "small").get("resources") == bigger)
        )

    await eventually(applied, timeout=30)
    assert cpu_quota(container) == 100_000
    assert alive(container.pid)


async def test_a_qos_changing_resize_is_refused_in_kubes_words(cluster: Cluster) -> None:
    await cluster.client.send("Pod", "apply", {"manifest": sleeper("qos")})
    await started(cluster, "qos")
    same = {"requests": {"cpu": "200m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "128Mi"}}  # fmt: skip
    with pytest.raises(FleetError) as refused:
        await resize(cluster, "qos", same)
    assert refused.value.message == (
        'Invalid value "Burstable": Pod QOS Class may not change as a result of resizing'
    )
    assert "PodResized" not in await cluster.types("qos")


async def test_a_memory_limit_below_the_usage_waits_until_the_memory_is_freed(
    cluster: Cluster, tmp_path: Path
) -> None:
    flag = tmp_path / "free-it"
    program = (
        "import os, time\n"
        "x = b'x' * (96 * 2**20)\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
        "del x\n"
        "time.sleep(600)\n"
    )
    hungry = pod("hungry", [PY, "-c", program],
                 container={"resources": {"requests": {"memory": "128Mi"},
                                          "limits": {"memory": "256Mi"}}})  # fmt: skip
    await cluster.client.send("Pod", "apply", {"manifest": hungry})
    container = await started(cluster, "hungry")

    async def filled() -> bool:
        usage = cluster.runtime.usage(container)
        return usage.working_set_bytes > 96 * MI

    await eventually(filled, timeout=30)
    # Allowed by the API since 1.34 (NotRequired); the kubelet refuses to set it below usage.
    lower = manifest(cluster, "hungry")["spec"]["containers"][0]["resources"]
    lower = {"requests": {**lower["requests"], "memory": "48Mi"},
             "limits": {**lower["limits"], "memory": "64Mi"}}  # fmt: skip
    await resize(cluster, "hungry", lower)

    async def refused() -> bool:
        got = conditions(cluster, "hungry").get("PodResizeInProgress") or {}
        return got.get("reason") == "Error"

    await eventually(refused, timeout=30)
    message = conditions(cluster, "hungry")["PodResizeInProgress"]["message"]
    assert message.startswith(f"attempting to set container 'main' memory limit ({64 * MI}) ")
    assert "below current usage" in message
    assert memory_limit(container) == 256 * MI
    assert alive(container.pid)

    # Tried again, as the kubelet retries an Error resize: applied once the memory is freed.
    flag.write_text("")

    async def applied() -> bool:
        return "PodResizeInProgress" not in conditions(cluster, "hungry")

    await eventually(applied, timeout=30)
    assert memory_limit(container) == 64 * MI
    assert container_status(cluster, "hungry")["resources"]["limits"]["memory"] == "64Mi"
    assert alive(container.pid)
