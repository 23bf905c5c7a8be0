"""Benchmark of the Kubernetes API door: big lists, pages, watch fan-out and a write over HTTPS
beside the same write over NATS.

    python -m ops.bench_kubeapi [--pods 10000] [--rounds 20] [--writes 200] [--watchers 100]

Why this exists: issue 16 asks what ``kubectl get pods`` costs with 10,000 pods, what a paged
list (``limit=500``) costs, how long 100 watchers take to see a change, and what a write costs
through the HTTPS door compared with the same command on the native NATS door. It starts its
own nats-server, a gateway, the cluster read model and the API server in one process (as
``fleetlog up`` runs them), creates the pods through the gateway, then measures with an HTTPS
client holding the admin certificate. Times are client-side round trips on loopback (the
server's time plus TLS and loopback: the client is in the same process, so it shares the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from core.kubeapi.tables import Columns
from handlers.apiserver import APIServer, ensure_pki
from handlers.gateway import Gateway
from ops.render.objects import COLUMNS
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.commandbus import CommandClient
from streams.connection import connect
from streams.definitions import ensure_streams
from streams.eventstore import EventStore
from streams.server import EmbeddedServer, free_port

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-kubeapi-"))
    server = EmbeddedServer(data_dir=workdir / "nats", port=free_port())
    await server.start()
    nc = await connect(server.url, name="bench-kubeapi")
    try:
        await ensure_streams(nc)
        async with EventStore(nc) as store:
            gateway = await Gateway.create(nc, store)
            ready = asyncio.Event()
            serving = asyncio.create_task(gateway.run(ready))
            await ready.wait()
            commands = CommandClient(nc, actor="user:bench")
            await commands.send(
                "Namespace", "apply",
                {"manifest": {"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "default"}}},
            )  # fmt: skip
            projection = Projection(ClusterModel(), store)
            await projection.catch_up()
            await projection.follow()
            pki = ensure_pki(workdir / "pki", service_ip=None)
            api = APIServer(
                nc=nc, projection=projection, store=store, pki=pki, port=0,
                columns={k: Columns(*v) for k, v in COLUMNS.items()},
            )  # fmt: skip
            await api.start()
            started = time.perf_counter()
            gate = asyncio.Semaphore(64)

            async def create(n: int) -> None:
                async with gate:
                    await commands.send("Pod", "create", {"manifest": pod(f"p{n:05d}")})

            await asyncio.gather(*(create(n) for n in range(args.pods)))
            await projection.wait_for_log_end(30)
            print(f"created {args.pods} pods through the gateway in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            context = ssl.create_default_context(cafile=str(pki.ca_cert))
            context.load_cert_chain(pki.admin_cert, pki.admin_key)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=200)
            ) as http:
                await measure(http, api.url, args, commands)
            await api.stop()
            await projection.stop()
            serving.cancel()
    finally:
        await nc.close()
        await server.stop()


async def timed(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    async with http.request(method, url, **kw) as response:
        body = await response.read()
        assert response.status < 300, body[:300]
    return time.perf_counter() - started, body


async def measure(
    http: aiohttp.ClientSession, url: str, args: argparse.Namespace, commands: CommandClient
) -> None:
    pods = f"{url}/api/v1/namespaces/default/pods"
    for label, headers in (("JSON", {}), ("Table (kubectl get pods)", {"Accept": TABLE})):
        samples = [(await timed(http, "GET", pods, headers=headers))[0] for _ in range(args.rounds)]
        print(f"list {args.pods} pods as {label}: {percentiles(samples)}")
    pages: list[float] = []
    for _ in range(max(1, args.rounds // 5)):
        token = ""
        while True:
            took, body = await timed(
                http, "GET", f"{pods}?limit=500" + (f"&continue={token}" if token else "")
            )
            pages.append(took)
            token = json.loads(body)["metadata"].get("continue", "")
            if not token:
                break
    print(f"list with limit=500, {len(pages)} pages: {percentiles(pages)}")

    http_writes, nats_writes = [], []
    for n in range(args.writes):
        took, _ = await timed(
            http, "POST", pods, data=json.dumps(pod(f"w-http-{n}")),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        http_writes.append(took)
        started = time.perf_counter()
        await commands.send("Pod", "create", {"manifest": pod(f"w-nats-{n}")})
        nats_writes.append(time.perf_counter() - started)
    print(f"create a pod over HTTPS (answered with the stored object): {percentiles(http_writes)}")
    print(f"create a pod over NATS (the gateway's answer): {percentiles(nats_writes)}")

    if args.watchers:
        await fan_out(http, pods, args.watchers, commands)


async def fan_out(
    http: aiohttp.ClientSession, pods: str, watchers: int, commands: CommandClient
) -> None:
    """``watchers`` watches from now; one change; how long until each has seen it."""
    seen: list[float] = []
    at = [0.0]
    ready = asyncio.Semaphore(0)

    async def watch() -> None:
        _, body = await timed(http, "GET", f"{pods}?limit=1")
        rv = json.loads(body)["metadata"]["resourceVersion"]
        async with http.get(f"{pods}?watch=1&resourceVersion={rv}&timeoutSeconds=60") as stream:
            ready.release()
            async for line in stream.content:
                if b'"fanout"' in line:
                    seen.append(time.perf_counter() - at[0])
                    return

    tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
    for _ in range(watchers):
        await ready.acquire()
    await asyncio.sleep(0.5)
    at[0] = time.perf_counter()
    await commands.send("Pod", "create", {"manifest": pod("fanout")})
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    print(f"{watchers} watchers see a new pod: {percentiles(seen)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=100)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
