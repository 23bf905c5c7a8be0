"""Benchmark of scheduling, in the shape of kube-scheduler's ``SchedulingBasic``.

    python -m ops.bench_scheduler [--nodes 5000] [--warmup 1000] [--pods 10000] [--replicas 1 2]
                                  [--rate R] [--profile DIR] [--checkout DIR ...]
                                  [--rounds N] [--nodes-only]

5,000 nodes of 4 CPU / 32 Gi / 110 pods (registered through the gateway of a ``fleetlog up``
that runs no scheduler of its own), pods requesting 100m / 500Mi. For each replica count it
starts that many ``fleetlog scheduler`` processes, creates the warm-up pods and waits until they
are bound, then creates the measured pods in one burst (appended straight to the log, so the
gateway is not what is measured) and waits until every one is bound. Figures come from the log
itself (JetStream's store timestamps): pods/s from the first measured ``PodCreated`` to the last
``PodBound``; per-pod latency ``PodCreated`` → ``PodBound``, p50/p99; binding conflicts per
1,000 bindings as counted by the replicas, and the CPU time the replicas spent per measured pod
(the stable figure on a shared host). kube-scheduler's CI enforces 680-810 pods/s here.
Before the pods, it prints how fast ``up``'s node IPAM controller gave the nodes their pod
ranges (nodes/s, store times); ``--nodes-only`` stops there.
``--rate R`` offers the measured pods at R per second (in slices every 20 ms) instead of in one
burst: the latency then says how long a pod waits when the scheduler keeps up. ``--profile DIR``
runs each replica under cProfile and leaves its statistics in ``DIR`` (one file per replica;
the profile covers the replica's whole life, its catch-up and the warm-up pods included).
``--checkout DIR`` (repeated) runs the replicas from each of those checkouts in turn, ``--rounds``
times, in one cluster: an A/B comparison on the same nodes, each round in its own namespace (the
nodes fill up a little from round to round, which costs the scheduler nothing measurable).

The nodes heartbeat (node leases, every 10 s) for the whole run, and the measurement starts
only once ``up``'s node IPAM controller has given every node its pod range, so neither the node
lifecycle controller nor IPAM writes to the nodes while pods are being scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from handlers.simnodes import SimNodeSpec, SimulatedNodes
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.envelope import Envelope
from streams.eventstore import EventStore, Write
from streams.seal import use as use_seal_key
from streams.sealing import writer_seal_key
from streams.server import EmbeddedServer, free_port
from streams.subjects import event_subject


def pod_event(namespace: str, name: str) -> bytes:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "pause",
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
                }
            ],
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
        },
    }
    return Envelope(
        str(uuid.uuid4()), "PodCreated", 1, "Pod", namespace, name, 1, time.time_ns(),
        "bench", f"bench-{name}", f"bench-{name}", {"manifest": manifest, "uid": str(uuid.uuid4())},
    ).encode()  # fmt: skip


async def create_pods(
    store: EventStore, namespace: str, prefix: str, count: int, rate: float | None = None
) -> None:
    """Append ``count`` pods: in one burst, or ``rate`` a second in slices every 20 ms."""
    names = [f"{prefix}-{i}" for i in range(count)]
    items = [
        ([Write(event_subject("Pod", namespace, name), [pod_event(namespace, name)], 0)],
         f"bench.{namespace}.{name}")
        for name in names
    ]  # fmt: skip
    step = 1000 if rate is None else max(1, int(rate * 0.02))
    started = time.perf_counter()
    for first in range(0, count, step):
        if rate is not None:
            delay = started + first / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        results = await store.append_many(items[first : first + step])
        assert all(isinstance(r, list) for r in results), "creating pods failed"


CLUSTER_CIDR = "100.96.0.0/11"
"""Room for 8,192 node ranges of /24: the default /12 holds 4,096, and the node IPAM
controller would refuse the rest of the 5,000 nodes (and retry them when ranges are freed)."""


async def wait_until_nodes_settle(store: EventStore, count: int, timeout: float) -> float:
    """Wait until ``up``'s controllers have answered ``count`` nodes: the node IPAM controller
    (a range assigned or refused) and the node lifecycle controller (Ready, from the first
    heartbeat). Their appends (each folded by the scheduler too, and each a possible conflict
    with a binding) would otherwise run during the measurement and be measured with it.

    Returns the node IPAM controller's pace, in nodes per second, from the log's store times:
    the nodes answered over the span from the first ``NodeCreated`` to the last answer."""
    ranged: set[str] = set()
    ready: set[str] = set()
    changed = asyncio.Event()
    span = [0, 0]  # store times (ns): the first NodeCreated, the last range answered

    def on_event(event: object) -> None:
        envelope = event.envelope  # type: ignore[attr-defined]
        if envelope.type == "NodeCreated" and not span[0]:
            span[0] = event.stored_ns  # type: ignore[attr-defined]
        if envelope.type in ("NodePodCIDRAssigned", "NodePodCIDRRefused"):
            ranged.add(envelope.name)
            span[1] = event.stored_ns  # type: ignore[attr-defined]
            changed.set()
        elif envelope.type == "NodeReady":
            ready.add(envelope.name)
            changed.set()

    subscription = await store.subscribe(on_event, filter_subject="fleet.evt.node.>", from_seq=1)
    deadline = time.monotonic() + timeout
    try:
        while len(ranged) < count or len(ready) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"after {timeout:.0f}s, {len(ranged)}/{count} nodes have a pod range and "
                    f"{len(ready)}/{count} are Ready"
                )
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 5.0))
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return len(ranged) / max((span[1] - span[0]) / 1e9, 1e-9)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def bound_times(store: EventStore, namespace: str) -> tuple[dict[str, int], dict[str, int]]:
    created: dict[str, int] = {}
    bound: dict[str, int] = {}

    def fold(event: object) -> None:
        envelope = event.envelope  # type: ignore[attr-defined]
        if envelope.kind != "Pod" or envelope.namespace != namespace:
            return
        if envelope.type == "PodCreated":
            created[envelope.name] = event.stored_ns  # type: ignore[attr-defined]
        elif envelope.type == "PodBound":
            bound[envelope.name] = event.stored_ns  # type: ignore[attr-defined]

    await store.replay(fold, filter_subject=f"fleet.evt.pod.{namespace}.*")
    return created, bound


class BoundCounter:
    """Counts the namespace's ``PodBound`` events as they are appended (one subscription, each
    event decoded once: polling the log instead would compete with the scheduler for the
    machine's two cores)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.bound: set[str] = set()
        self._changed = asyncio.Event()

    def on_event(self, event: object) -> None:
        envelope = event.envelope  # type: ignore[attr-defined]
        if envelope.type == "PodBound":
            self.bound.add(envelope.name)
            self._changed.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bound) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"only {len(self.bound)}/{count} pods bound after {timeout:.0f}s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 5.0))


def profiled(directory: Path | None, name: str) -> list[str]:
    """The interpreter options that run a replica under cProfile, its statistics written to
    ``directory/name`` when it stops (none without ``directory``)."""
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return ["-m", "cProfile", "-o", str(directory / name)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_round(
    url: str,
    replicas: int,
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    *,
    label: str,
    checkout: Path,
) -> None:
    """Measure ``replicas`` scheduler processes run from ``checkout`` in a namespace of their
    own (``label`` tells rounds apart)."""
    namespace = f"bench-{replicas}r{label}"
    nc = await connect(url, name="bench-scheduler")
    async with EventStore(nc) as store:
        from streams.commandbus import CommandClient

        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        await CommandClient(nc, actor="bench").send("Namespace", "apply", {"manifest": manifest})
        logs = [workdir / f"scheduler-{replicas}{label}-{i}.log" for i in range(replicas)]
        processes = [
            subprocess.Popen(  # noqa: ASYNC220 - long-lived children, stopped below
                [sys.executable, *profiled(args.profile, f"scheduler-{replicas}{label}-{i}.prof"),
                 "-m", "ops", "scheduler", "--name", f"bench-{replicas}{label}-{i}"],
                stderr=log.open("w"), env=env, cwd=checkout,
            )
            for i, log in enumerate(logs)
        ]  # fmt: skip
        try:
            for process, log in zip(processes, logs, strict=True):
                while "ready" not in log.read_text():
                    assert process.poll() is None, f"a scheduler exited: {log.read_text()}"
                    await asyncio.sleep(0.1)
            counter = BoundCounter(namespace)
            subscription = await store.subscribe(
                counter.on_event,
                filter_subject=f"fleet.evt.pod.{namespace}.*",
                from_seq=await store.stream_last_seq() + 1,
            )
            try:
                await create_pods(store, namespace, "warm", args.warmup)
                await counter.wait_for(args.warmup, 600)
                cpu_before = cpu_seconds([process.pid for process in processes])
                await create_pods(store, namespace, "pod", args.pods, args.rate)
                await counter.wait_for(args.warmup + args.pods, 1800)
                cpu = cpu_seconds([process.pid for process in processes]) - cpu_before
            finally:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        finally:
            stats = []
            for process, log in zip(processes, logs, strict=True):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
                stats += re.findall(r"bound=(\d+) conflicts=(\d+)", log.read_text())
        created, bound = await bound_times(store, namespace)
    await nc.close()
    measured = [name for name in created if name.startswith("pod-")]
    start = min(created[name] for name in measured)
    end = max(bound[name] for name in measured)
    latencies = [(bound[name] - created[name]) / 1e6 for name in measured]
    total_bound = sum(int(b) for b, _ in stats)
    conflicts = sum(int(c) for _, c in stats)
    print(
        f"[{checkout}] {replicas} replica(s): {len(measured)} pods in {(end - start) / 1e9:.1f}s = "
        f"{len(measured) / ((end - start) / 1e9):,.0f} pods/s; latency created→bound "
        f"p50 {statistics.median(latencies):,.0f} ms, p99 {percentile(latencies, 0.99):,.0f} ms; "
        f"conflicts {1000 * conflicts / max(1, total_bound):.1f} per 1,000 bindings; "
        f"scheduler CPU {1e3 * cpu / len(measured):.3f} ms per pod"
        + ("" if args.rate is None else f" (offered at {args.rate:,.0f}/s)")
    )


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleetlog-bench-sched-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    env = {
        **os.environ,
        "FLEETLOG_SERVER": server.url,
        "FLEETLOG_SEAL_KEY": str(workdir / "seal.key"),
    }
    up = None
    try:
        nc = await connect(server.url, name="bench-setup")
        await ensure_streams(nc)
        up = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, stopped below
            [sys.executable, "-m", "ops", "up", "--nats-url", server.url, "--no-scheduler",
             "--no-agent", "--no-api", "--cluster-cidr", CLUSTER_CIDR,
             # Its own data directory: another cluster's snapshots must not be read here.
             "--data-dir", str(workdir / "up")],
            stdout=subprocess.DEVNULL, stderr=(workdir / "up.log").open("wb"), env=env,
        )  # fmt: skip
        await asyncio.sleep(3)
        # The bench appends nodes and pods itself: sealed with the key ``up`` made, or every
        # reader quarantines them and no pod is ever bound.
        use_seal_key(None, given=workdir / "seal.key")
        await writer_seal_key()
        nodes = await SimulatedNodes.create(
            nc, SimNodeSpec(prefix="node", cpu="4", memory="32Gi"), args.nodes
        )
        started = time.perf_counter()
        await nodes.register()
        print(
            f"{args.nodes} nodes registered in {time.perf_counter() - started:.1f}s ({server.url})",
            flush=True,
        )
        # Simulated nodes renew their leases as kubelets do; without it the node lifecycle
        # controller of ``up`` takes them for dead 40 s on and evicts the pods.
        heartbeats = asyncio.create_task(nodes.keep_alive())
        started = time.perf_counter()
        async with EventStore(nc) as store:
            ipam_rate = await wait_until_nodes_settle(store, args.nodes, 900)
        print(
            f"every node Ready with its pod range after {time.perf_counter() - started:.1f}s; "
            f"node IPAM: {ipam_rate:,.0f} nodes/s (first NodeCreated to last range, store times)",
            flush=True,
        )
        if args.nodes_only:
            args.rounds = 0
        checkouts = args.checkout or [Path.cwd()]
        for number in range(args.rounds):
            for which, checkout in enumerate(checkouts):
                label = f"-{number}{chr(ord('a') + which)}" if len(checkouts) > 1 else (
                    f"-{number}" if args.rounds > 1 else ""
                )  # fmt: skip
                for replicas in args.replicas:
                    await run_round(
                        server.url, replicas, args, env, workdir, label=label, checkout=checkout
                    )
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats
        await nc.close()
    finally:
        if up is not None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rate", type=float, default=None, help="offer the measured pods at this rate per second"
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        help="run the replicas from this checkout of fleetlog (repeat it: the checkouts take "
        "turns in one cluster, for A/B comparisons; default: the current directory)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every checkout this many times, in turn"
    )
    parser.add_argument(
        "--nodes-only",
        action="store_true",
        help="stop once every node is Ready with its pod range (measures node IPAM's pace)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run each replica under cProfile, its statistics written to this directory",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
