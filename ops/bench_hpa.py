"""Benchmark of the HorizontalPodAutoscaler controller at scale: many HPAs over many simulated
pods, how fast it evaluates, how soon a sample that crosses the target becomes a ``ScaledTo``,
and what an evaluation costs.

    python -m ops.bench_hpa [--hpas 100] [--pods 1000] [--period 10] [--steady 20]
                            [--probes 20] [--setup-timeout 600] [--profile FILE]

(issue 19's figure: ``--hpas 1000 --pods 10000``.)

Everything runs **in this process** against a real embedded nats-server: the gateway, the
cluster projection, the deployment and replica-set controllers, a scheduler, the node IPAM
controller, simulated nodes (``handlers/simnodes.py``, one per 100 pods), their synthetic usage
(``handlers/simusage.py``, a sample per pod every ``--period`` seconds, as the agent's default),
the metrics read model and the HPA controller itself. A whole ``fleetlog up`` would run its own
HPA controller, whose counters and CPU this process could not see.

1. **Setup**: ``--hpas`` Deployments of ``--pods / --hpas`` replicas (100m CPU request, a
   synthetic load of 50m through the ``sim.fleetlog.dev/cpu`` annotation: exactly the 50 %
   target, so nothing scales), each with an ``autoscaling/v2`` HPA (CPU 50 %, max 4x the
   replicas). Timed until every pod is Ready. The synthetic usage starts once they are (its
   rounds would only slow the setup down), and a round later the steady phase begins.
2. **Steady**: ``--steady`` seconds of sample rounds. Reported: evaluations per second (mean,
   and the busiest second: what the controller sustains while a round's samples pour in), and
   CPU per evaluation two ways: the controller's own synchronous work (finding the HPAs of a
   sample, reading the pods and samples, the maths: thread CPU time around those calls) and the
   whole process's CPU time divided by evaluations (an upper bound: the simulators, the
   gateway and the projection run here too).
3. **Latency**: ``--probes`` times, one deployment's load is set to 80m on ``fleet.sim.load``
   (160 % of the target), one every half second. Timed from the first sample showing the new
   load (its ``at_ns``) to the deployment's ``ScaledTo`` (its event timestamp): p50 / p99.

The controller runs with ``cpu_initialization_period`` and ``initial_readiness_delay`` at 0, so
freshly ready pods count at once (Kubernetes' 300 s and 30 s would only delay the first
reading). Bounded: setup by ``--setup-timeout``, each probe by 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import handlers.autoscaler.horizontal as horizontal_module
from core.autoscaling.horizontal import ControllerOptions
from core.network.ranges import ClusterCIDR
from handlers.autoscaler.horizontal import HorizontalController
from handlers.deployment_controller import DeploymentController
from handlers.gateway import Gateway
from handlers.node_ipam import NodeIPAMController
from handlers.replicaset_controller import ReplicaSetController
from handlers.scheduler import Scheduler
from handlers.simnodes import SimNodeSpec, SimulatedNodes, SimulatedPods
from handlers.simusage import LOAD_SUBJECT, SimulatedUsage
from ops.logging import configure
from projections.cluster import ClusterModel
from projections.metrics import PodMetrics
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.envelope import StoredEvent
from streams.eventstore import EventStore
from streams.repository import AggregateRepository
from streams.secretkeys import load_cluster_key
from streams.server import EmbeddedServer, free_port
from streams.telemetry import PodUsage

NS = "bench"
PODS_PER_NODE = 100
STEADY_LOAD = "50m"
PROBE_LOAD_M = 80
T = TypeVar("T")


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name},
                             "annotations": {"sim.fleetlog.dev/cpu": STEADY_LOAD}},
                "spec": {"containers": [{"name": "app", "image": "x",
                                         "resources": {"requests": {"cpu": "100m"}}}]},
            },
        },
    }  # fmt: skip


def hpa(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": replicas * 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    }  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ControllerClock:
    """Thread CPU time spent in the controller's synchronous steps (each call runs to the end
    without yielding, so its thread time is its own)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start

        return timed


async def _until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_hpa: {what} not reached in {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def _report(what: Callable[[], str]) -> None:
    """Say how the setup goes every 10 s (on stderr: stdout is the figures)."""
    began = time.monotonic()
    while True:
        await asyncio.sleep(10)
        print(f"bench_hpa: {time.monotonic() - began:.0f}s: {what()}", file=sys.stderr)


async def _bounded(calls: list[Callable[[], Awaitable[Any]]], *, in_flight: int = 64) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def run(*, hpas: int, pods: int, period: float, steady: float, probes: int,
              setup_timeout: float, profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    replicas = max(1, pods // hpas)
    names = [f"h{i:05d}" for i in range(hpas)]
    figures: dict[str, Any] = {"hpas": hpas, "pods": replicas * hpas, "period_s": period}
    with tempfile.TemporaryDirectory(prefix="bench-hpa-") as tmp:
        server = EmbeddedServer(data_dir=Path(tmp) / "nats", port=free_port())
        await server.start()
        tasks: list[asyncio.Task[Any]] = []
        nc = None
        try:
            nc = await connect(server.url, name="bench-hpa")
            await ensure_streams(nc)
            async with EventStore(nc) as store:
                gateway = await Gateway.create(
                    nc, store, cluster_key=load_cluster_key(Path(tmp) / "pki" / "cluster.key")
                )
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(gateway.run(ready)))
                await ready.wait()
                client = CommandClient(nc, actor="user:bench")
                for namespace in ("default", NS):
                    manifest = {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": namespace}}  # fmt: skip
                    await client.send("Namespace", "apply", {"manifest": manifest})
                projection = Projection(ClusterModel(), store)
                await projection.catch_up()
                await projection.follow()
                nodes = -(-replicas * hpas * 2 // PODS_PER_NODE)  # room for the scale-ups
                simulated = await SimulatedNodes.create(
                    nc, SimNodeSpec(prefix="sim", cpu="64", memory="256Gi",
                                    pods=str(PODS_PER_NODE), zones=1), nodes,
                )  # fmt: skip
                await simulated.register()
                owns = simulated.names.__contains__
                fast = {"period_seconds": 0.1, "retry_seconds": 0.2}
                ipam = await NodeIPAMController.create(
                    nc, AggregateRepository(store), projection, cluster=ClusterCIDR.parse(), **fast
                )
                metrics = PodMetrics(nc)
                controller = await HorizontalController.create(
                    nc, store, projection, metrics, period_seconds=0.1, retry_seconds=0.2,
                    options=ControllerOptions(cpu_initialization_period=0,
                                              initial_readiness_delay=0),
                )  # fmt: skip
                clock = ControllerClock()
                controller._readings = clock.wrap(controller._readings)  # type: ignore[method-assign]
                controller._on_sample = clock.wrap(controller._on_sample)  # type: ignore[method-assign]
                horizontal_module.evaluate = clock.wrap(horizontal_module.evaluate)
                usage = SimulatedUsage(nc, projection, owns, period=period)
                roles = [
                    (await ReplicaSetController.create(nc, projection, **fast)).run,
                    (await DeploymentController.create(nc, projection, **fast)).run,
                    Scheduler(nc, store, seed=1).run,
                    ipam.run,
                    SimulatedPods(store, owns, start_delay=0.05).run,
                    metrics.run,
                    controller.run,
                ]
                for role in roles:
                    started = asyncio.Event()
                    tasks.append(asyncio.create_task(role(started)))
                    await asyncio.wait_for(started.wait(), 60)

                # 1. setup
                began = time.monotonic()
                await _bounded([
                    lambda n=n: client.send("Deployment", "create",  # type: ignore[misc]
                                            {"manifest": deployment(n, replicas)})
                    for n in names
                ])  # fmt: skip
                await _bounded([
                    lambda n=n: client.send("HorizontalPodAutoscaler", "create",  # type: ignore[misc]
                                            {"manifest": hpa(n, replicas)})
                    for n in names
                ])  # fmt: skip

                def ready_pods() -> int:
                    return sum(1 for p in projection.model.list("Pod", NS)
                               if p.last_event == "PodReady")  # fmt: skip

                progress = asyncio.create_task(_report(lambda: f"{ready_pods()} pods ready"))
                try:
                    await _until(lambda: ready_pods() >= replicas * hpas, timeout=setup_timeout,
                                 what=f"{replicas * hpas} ready pods")  # fmt: skip
                finally:
                    progress.cancel()
                figures["setup_s"] = round(time.monotonic() - began, 1)
                # The synthetic usage starts now (its samples would only slow the setup down):
                # a first round for every pod at once; then wait until those evaluations settled.
                started = asyncio.Event()
                tasks.append(asyncio.create_task(usage.run(started)))
                await asyncio.wait_for(started.wait(), 60)
                await asyncio.sleep(period + 2)

                # 2. steady
                scaled_before = controller.scaled
                evaluations0, cpu0, clock0 = (
                    controller.evaluations,
                    time.process_time(),
                    clock.seconds,
                )
                per_second: list[int] = []
                last = controller.evaluations
                start = time.monotonic()
                profiler = cProfile.Profile() if profile is not None else None
                if profiler is not None:
                    profiler.enable()
                while time.monotonic() - start < steady:
                    await asyncio.sleep(1.0)
                    per_second.append(controller.evaluations - last)
                    last = controller.evaluations
                elapsed = time.monotonic() - start
                if profiler is not None and profile is not None:
                    profiler.disable()
                    profiler.dump_stats(profile)
                evaluations = controller.evaluations - evaluations0
                figures["steady"] = {
                    "evaluations": evaluations,
                    "evaluations_per_s_mean": round(evaluations / elapsed, 1),
                    "evaluations_per_s_busiest": max(per_second, default=0),
                    "controller_cpu_ms_per_evaluation": round(
                        (clock.seconds - clock0) * 1000 / max(1, evaluations), 3),
                    "process_cpu_ms_per_evaluation": round(
                        (time.process_time() - cpu0) * 1000 / max(1, evaluations), 3),
                    "scaled": controller.scaled - scaled_before,
                    "samples_published": usage.published,
                }  # fmt: skip

                print(f"bench_hpa: {json.dumps(figures)}", file=sys.stderr)  # kept if 3. fails

                # 3. latency
                first_sample: dict[str, int] = {}
                probing: set[str] = set()
                scaled_at: dict[str, int] = {}

                def on_sample(sample: PodUsage) -> None:
                    owner = sample.name.split("-")[0]
                    if (owner in probing and owner not in first_sample
                            and sample.cpu_millicores >= PROBE_LOAD_M):  # fmt: skip
                        first_sample[owner] = sample.at_ns

                def on_event(event: StoredEvent) -> None:
                    e = event.envelope
                    if e.type == "ScaledTo" and e.name in probing and e.name not in scaled_at:
                        scaled_at[e.name] = e.timestamp_ns

                metrics.listeners.insert(0, on_sample)
                projection.listeners.append(on_event)
                latencies: list[float] = []
                for name in names[:probes]:
                    probing.add(name)
                    body = {"namespace": NS, "selector": {"app": name}, "cpu": f"{PROBE_LOAD_M}m"}
                    reply = await nc.request(LOAD_SUBJECT, json.dumps(body).encode(), timeout=30)
                    assert "error" not in json.loads(reply.data), reply.data
                    await asyncio.sleep(0.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _until(lambda: all(n in scaled_at for n in probing), timeout=1e9,
                               what="a ScaledTo for every probe"), 30,
                    )  # fmt: skip
                for name in probing:
                    if name in scaled_at and name in first_sample:
                        latencies.append((scaled_at[name] - first_sample[name]) / 1e6)
                figures["latency_ms"] = {
                    "probes": len(probing),
                    "unanswered_after_30s": len(probing) - len(latencies),
                }
                if latencies:
                    figures["latency_ms"] |= {
                        "p50": round(_percentile(latencies, 0.5), 1),
                        "p99": round(_percentile(latencies, 0.99), 1),
                        "max": round(max(latencies), 1),
                        "mean": round(statistics.fmean(latencies), 1),
                    }
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            # Closed before its server stops: left open, it tried to reconnect, and now and then
            # (2 runs in 37 on a loaded host) its reconnect task did not end when asyncio.run
            # cancelled it (in nats-py's _select_next_server), so the bench never exited.
            if nc is not None:
                await nc.close()
            await server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hpas", type=int, default=100)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--setup-timeout", type=float, default=600.0)
    parser.add_argument(
        "--profile", type=Path, default=None, help="write a cProfile of the steady phase here"
    )
    args = parser.parse_args()
    configure("warning")
    figures = asyncio.run(run(
        hpas=args.hpas, pods=args.pods, period=args.period, steady=args.steady,
        probes=min(args.probes, args.hpas), setup_timeout=args.setup_timeout,
        profile=args.profile,
    ))  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
