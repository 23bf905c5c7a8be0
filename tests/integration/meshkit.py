"""What the mesh integration tests share: the mesh-push handler started and stopped around a
test, an Envoy configured only over ADS (started and stopped by PID), a wait on a condition,
and an apply through the command gateway.

They were copied into each mesh test file (gateway TLS, TLS origination, auth, SDS, root
rotation), each copy a little different; one set here keeps the start/stop order (the run task
cancelled, then the gRPC server stopped) the same everywhere and each file to what it tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from core.mesh.push import ads_bootstrap, node_id
from handlers.mesh.ca import MeshCA
from handlers.mesh.push import Amend, MeshPush, type_status
from handlers.mesh.status import StatusWriter
from ops.envoybin import envoy_binary
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.secretkeys import SecretKeys
from streams.server import free_port

NS = "default"
GATEWAY_NODE = node_id(kind="gateway", ip="127.0.0.1", pod="ingress-1", namespace=NS)
"""The gateway proxy ``ingress-1`` an :func:`envoy` is unless told another node id."""


async def until(check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 60.0) -> None:
    """Wait (polling every 50 ms) until ``check`` holds; an AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def synced(push: MeshPush, node: str = GATEWAY_NODE) -> bool:
    """Every type a gateway proxy runs (its routes are whole: no VHDS) sent and ACKed."""
    return all(
        (t := type_status(push, node, short)).sent and t.state() == "SYNCED"
        for short in ("CDS", "EDS", "LDS", "RDS")
    )


async def apply(client: CommandClient, manifest: dict[str, Any]) -> None:
    """Apply ``manifest`` through the command gateway (returns once the log holds it)."""
    await client.send(manifest["kind"], "apply", {"manifest": manifest})


@contextlib.contextmanager
def envoy(
    tmp_path: Path,
    *,
    ads_port: int,
    labels: dict[str, str],
    delta: bool = True,
    node: str = GATEWAY_NODE,
    bind: str = "127.0.0.1",
    locality: dict[str, str] | None = None,
) -> Iterator[int]:
    """An Envoy configured only over ADS from the handler, as ``node`` (the gateway proxy
    ``ingress-1`` unless told), over incremental xDS or, when not ``delta``, state of the
    world; yields its admin port; stopped by PID."""
    admin = free_port()
    config = ads_bootstrap(
        node=node,
        ads_host="127.0.0.1",
        ads_port=ads_port,
        admin_port=admin,
        metadata={"LABELS": labels, "BIND_ADDRESS": bind},
        delta=delta,
    )
    if locality is not None:
        config["node"]["locality"] = locality
    path = tmp_path / f"envoy-{admin}.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / f"envoy-{admin}.log").open("w")
    process = subprocess.Popen(
        [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
         "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield admin
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


async def start_push(
    projection: Projection[ClusterModel],
    nc: Client | None = None,
    *,
    port: int = 0,
    handler_id: str = "",
    secret_keys: SecretKeys | None = None,
    ca: MeshCA | None = None,
    amend: Amend | None = None,
    trusted_keys: Mapping[str, str] | None = None,
    admission_wait_s: float | None = None,
    root_tick_s: float | None = None,
) -> tuple[MeshPush, asyncio.Task[None]]:
    """The handler, bound and running. With ``nc`` it writes each proxy's status to the
    bucket (``fleetlog mesh status``), without it none. Insecure (any proxy served on its node
    id's word) unless ``trusted_keys`` are given: the tests' Envoys are started by hand, with
    no proxy token (``test_mesh_auth.py`` tests the tokens). ``root_tick_s`` is set before the
    handler runs, so even its first root check waits only that long. It starts once the
    projection has folded the whole log (what the test applied before it)."""
    # Read-your-writes: the handler starts from everything the test applied before it. From
    # a projection still folding those it would push a part of the mesh (a Service whose
    # EndpointSlice is not folded yet: Envoy's 503 "no healthy upstream") while the test
    # already calls it: the VHDS test's failure under load.
    assert await projection.wait_for_log_end(timeout=60), "the projection did not catch up"
    options: dict[str, Any] = {}
    if admission_wait_s is not None:
        options["admission_wait_s"] = admission_wait_s
    push = MeshPush(
        projection, port=port, status=await StatusWriter.open(nc) if nc is not None else None,
        handler_id=handler_id, secret_keys=secret_keys, ca=ca, amend=amend,
        trusted_keys=trusted_keys, insecure=trusted_keys is None, **options,
    )  # fmt: skip
    if root_tick_s is not None:
        push.root_tick_s = root_tick_s
    await push.start()
    return push, asyncio.create_task(push.run())


async def stop_push(push: MeshPush, task: asyncio.Task[None]) -> None:
    """Cancel the handler's run (bounded) and stop its gRPC server."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    await push.stop()


@contextlib.asynccontextmanager
async def mesh_push(
    projection: Projection[ClusterModel],
    nc: Client | None = None,
    *,
    port: int = 0,
    handler_id: str = "",
    secret_keys: SecretKeys | None = None,
    ca: MeshCA | None = None,
    amend: Amend | None = None,
    trusted_keys: Mapping[str, str] | None = None,
    admission_wait_s: float | None = None,
    root_tick_s: float | None = None,
) -> AsyncIterator[MeshPush]:
    """:func:`start_push` around the block, :func:`stop_push` after it."""
    push, task = await start_push(
        projection, nc, port=port, handler_id=handler_id, secret_keys=secret_keys, ca=ca,
        amend=amend, trusted_keys=trusted_keys, admission_wait_s=admission_wait_s,
        root_tick_s=root_tick_s,
    )  # fmt: skip
    try:
        yield push
    finally:
        await stop_push(push, task)
