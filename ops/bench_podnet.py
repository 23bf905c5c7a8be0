"""Benchmark of the node's pod networks alone: a burst of pods attached at once, then detached.

    python -m ops.bench_podnet [--pods 100] [--pool 0] [--rounds 3]

Why this exists: ``bench_agent`` measures a pod's whole start through the log, on a shared
host where its figures swing by 2x; this one times only what the agent does for the pods'
networks (``handlers.agent.network.BridgeNetwork``: namespaces, veth pairs on the bridge,
addresses, routes, the ledger), with the cpu of the agent's process and of the processes it
started (``ip``), so two ways of making them compare on cpu as well as time. With ``--pool``
the sandboxes are made first (not timed) and the burst takes them. Everything is named
``fpnet`` (bridge ``fpnet0``) in ``100.111.248.0/24`` and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import statistics
import tempfile
import time
from pathlib import Path

from handlers.agent.network import BridgeNetwork, NetworkOptions, detect
from ops.benchlock import host_pod_networks
from ops.podnets import remove_pod_networks

PREFIX = "fpnet"
BRIDGE = "fpnet0"
CIDR = "100.111.248.0/24"


def cpu_ms() -> float:
    """This process's cpu and that of the children it has waited for, in ms."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return used * 1000


async def one_round(root: Path, *, pods: int, pool: int) -> tuple[float, float, float, float]:
    """(attach wall ms, attach cpu ms, detach wall ms, detach cpu ms) for one burst."""
    fields = {f.name for f in dataclasses.fields(NetworkOptions)}
    extra = {"pool": pool} if "pool" in fields else {}
    options = NetworkOptions(bridge=BRIDGE, prefix=PREFIX, **extra)
    network = await detect(root, options)
    assert isinstance(network, BridgeNetwork), network.condition()
    await network.start()
    await network.set_pod_cidr(CIDR)
    if pool:
        while len(network.sandboxes()) < pool:  # noqa: ASYNC110 - the pool has no event
            await asyncio.sleep(0.05)
    uids = [f"bench-{i}" for i in range(pods)]
    started, cpu = time.perf_counter(), cpu_ms()
    await asyncio.gather(
        *(network.attach(uid=uid, namespace="bench", name=uid, host_network=False) for uid in uids)
    )
    attached, attach_cpu = time.perf_counter(), cpu_ms()
    for uid in uids:
        await network.detach(uid)
    detached, detach_cpu = time.perf_counter(), cpu_ms()
    stop = getattr(network, "stop", None)
    if stop is not None:
        await stop()
    return (
        (attached - started) * 1000,
        attach_cpu - cpu,
        (detached - attached) * 1000,
        detach_cpu - attach_cpu,
    )


async def main_async(args: argparse.Namespace) -> None:
    try:
        results = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="fleetlog-bench-podnet-") as root:
                results.append(await one_round(Path(root), pods=args.pods, pool=args.pool))
            remove_pod_networks(PREFIX, BRIDGE)
        for label, column in (("attach", 0), ("detach", 2)):
            walls = [r[column] for r in results]
            cpus = [r[column + 1] for r in results]
            print(
                f"{args.pods} pods' networks, {label} (pool {args.pool}, {args.rounds} rounds): "
                f"wall median {statistics.median(walls):,.0f} ms "
                f"({', '.join(f'{w:,.0f}' for w in walls)}), cpu median "
                f"{statistics.median(cpus):,.0f} ms ({', '.join(f'{c:,.0f}' for c in cpus)})",
                flush=True,
            )
    finally:
        remove_pod_networks(PREFIX, BRIDGE)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--pool", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with host_pod_networks("bench_podnet"):  # one run at a time on a host: fixed names
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
