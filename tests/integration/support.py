"""Helpers the integration tests share: waiting for a condition of the log or a read model,
running the CLI in process, running the workload roles against simulated nodes, and the bytes
of a plain event to append straight to the store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from types import ModuleType
from typing import Any

import structlog
from click.testing import CliRunner, Result
from structlog.testing import LogCapture

from core.network.ranges import ClusterCIDR
from handlers.deployment_controller import DeploymentController
from handlers.garbage_collector import GarbageCollector
from handlers.node_ipam import NodeIPAMController
from handlers.replicaset_controller import ReplicaSetController
from handlers.scheduler import Scheduler
from handlers.simnodes import SimNodeSpec, SimulatedNodes, SimulatedPods
from ops.cli import main
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.envelope import Envelope
from streams.eventstore import EventStore
from streams.repository import AggregateRepository


def event_bytes(
    name: str,
    version: int,
    *,
    event_type: str,
    payload: dict[str, Any],
    kind: str = "Pod",
    namespace: str = "default",
) -> bytes:
    """A sealed envelope of version ``version`` of ``kind``/``name``, for tests that write to
    the store directly (its id and time follow from the name and version)."""
    return Envelope(
        event_id=f"e-{name}-{version}",
        type=event_type,
        schema_version=1,
        kind=kind,
        namespace=namespace,
        name=name,
        version=version,
        timestamp_ns=1_700_000_000_000_000_000 + version,
        actor="test",
        correlation_id="c",
        causation_id="c",
        payload=payload,
    ).encode()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def captured_logs(*modules: ModuleType) -> Iterator[list[MutableMapping[str, Any]]]:
    """What ``modules`` log through their module-level ``log`` while the block runs, whatever
    earlier tests in this process configured structlog with (an in-process CLI run caches
    loggers and filters by level, which ``structlog.testing.capture_logs`` does not undo)."""
    capture = LogCapture()
    logger = structlog.wrap_logger(None, processors=[capture], wrapper_class=structlog.BoundLogger)
    saved = [(module, module.log) for module in modules]
    for module, _ in saved:
        module.log = logger
    try:
        yield capture.entries
    finally:
        for module, original in saved:
            module.log = original


async def cli(server: str, *args: str) -> Result:
    """``fleetlog --server SERVER ARGS`` in process (click's runner, in a thread with its own
    event loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, main, ["--server", server, *args], catch_exceptions=False
    )


@contextlib.asynccontextmanager
async def workload_roles(
    nc: Any,
    store: EventStore,
    projection: Projection[ClusterModel],
    *,
    nodes: int = 3,
    collect: bool = True,
) -> AsyncIterator[SimulatedNodes]:
    """The replica-set and deployment controllers (and the garbage collector unless told
    not), a scheduler, the node IPAM controller and ``nodes`` simulated nodes that run what is
    bound to them (each pod with an address of its node's range)."""
    simulated = await SimulatedNodes.create(nc, SimNodeSpec(prefix="sim", zones=1), nodes)
    await simulated.register()
    fast = {"period_seconds": 0.1, "retry_seconds": 0.2}
    ipam = await NodeIPAMController.create(
        nc, AggregateRepository(store), projection, cluster=ClusterCIDR.parse(), **fast
    )
    roles = [
        (await ReplicaSetController.create(nc, projection, **fast)).run,
        (await DeploymentController.create(nc, projection, **fast)).run,
        Scheduler(nc, store, seed=1).run,
        ipam.run,
        SimulatedPods(store, simulated.names.__contains__, start_delay=0.05).run,
    ]
    if collect:
        roles.append((await GarbageCollector.create(nc, store, projection, **fast)).run)
    tasks = []
    try:
        for role in roles:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(role(ready)))
            await asyncio.wait_for(ready.wait(), 10)
        yield simulated
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
