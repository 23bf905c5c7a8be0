"""How long ``fleetlog up``'s periodic snapshot of the cluster model holds its event loop.

Usage: ``python -m ops.bench_snapshot [--pods 10000] [--saves 5] [--checkout DIR]``

``up`` saves the cluster model to the snapshot object store every minute (and when it
stops). Whatever of that runs on the event loop delays every command, read and fold of that
moment: a tail every minute. This builds a model of ``--pods`` pods shaped like a
deployment's (labels, owner, managed fields, a container with requests, a status), saves it
``--saves`` times to a real embedded nats-server, and prints, per save, its wall time and the
longest the loop went without running (a 1 ms ticker measures the stalls), with the bytes
written. ``--checkout DIR`` runs another checkout's code (``PYTHONPATH``) for a same-period
comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.logging import configure
from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import Projection
from streams.connection import connect
from streams.definitions import ensure_streams, open_snapshots
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

TICK_S = 0.001


def pod(index: int) -> ObjectRecord:
    """One running replica as the cluster model holds it."""
    name = f"web-7d4b9-{index:05d}"
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default", "uid": f"uid-{index:08d}",
            "labels": {"app": "web", "pod-template-hash": "7d4b9"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d4b9", "uid": "rs-uid", "controller": True}],
            "managedFields": [{"manager": "replicaset-controller", "operation": "Update",
                               "fieldsV1": {"f:spec": {"f:containers": {}}}}],
        },
        "spec": {
            "nodeName": f"node-{index % 100}",
            "containers": [{"name": "main", "image": "python:3.11",
                            "command": ["python3", "-m", "http.server", "8080"],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
        },
        "status": {"phase": "Running", "podIP": f"10.0.{index // 256 % 256}.{index % 256}",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip
    return ObjectRecord(
        "Pod", "default", name, f"uid-{index:08d}", manifest, 4, index + 1, 1, 2, "PodReady",
        "system:node:node-1", bytes(32),
    )  # fmt: skip


async def _ticker(stalls: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(TICK_S)
        now = time.perf_counter()
        stalls.append(now - last - TICK_S)
        last = now


async def run(pods: int, saves: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"pods": pods, "saves": []}
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:
        server = EmbeddedServer(data_dir=Path(tmp) / "nats", port=free_port())
        await server.start()
        try:
            nc = await connect(server.url, name="bench-snapshot")
            try:
                await ensure_streams(nc)
                snapshots = await open_snapshots(nc)
                async with EventStore(nc) as store:
                    model = ClusterModel()
                    for index in range(pods):
                        record = pod(index)
                        model.objects[(record.kind, record.namespace, record.name)] = record
                    projection = Projection(model, store)
                    for _ in range(saves):
                        stalls: list[float] = []
                        stop = asyncio.Event()
                        ticker = asyncio.create_task(_ticker(stalls, stop))
                        await asyncio.sleep(0.05)
                        began = time.perf_counter()
                        await projection.save_snapshot(snapshots)
                        took = time.perf_counter() - began
                        stop.set()
                        await ticker
                        info = await snapshots.get_info(model.name)
                        figures["saves"].append({
                            "wall_ms": round(took * 1000, 1),
                            "longest_loop_stall_ms": round(max(stalls) * 1000, 1),
                            "bytes": info.size,
                        })  # fmt: skip
            finally:
                await nc.close()
        finally:
            await server.stop()
    figures["load_average"] = os.getloadavg()[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--checkout", type=Path, default=None, help="run another checkout's code")
    args = parser.parse_args()
    if args.checkout is not None:
        env = {**os.environ, "PYTHONPATH": str(args.checkout.resolve())}
        argv = [sys.executable, "-m", "ops.bench_snapshot", "--pods", str(args.pods),
                "--saves", str(args.saves)]  # fmt: skip
        raise SystemExit(subprocess.run(argv, env=env, cwd=args.checkout).returncode)
    configure("warning")
    print(json.dumps(asyncio.run(run(args.pods, args.saves)), indent=2))


if __name__ == "__main__":
    main()
