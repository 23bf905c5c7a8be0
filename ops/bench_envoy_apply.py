"""What one real Envoy spends applying a sidecar's route configuration change, by how the
configuration is delivered: the measurement that decides whether virtual host discovery (VHDS)
can bring a VirtualService change under the mesh's 50 ms goal with ten proxies on 2 cores.

    python -m ops.bench_envoy_apply [--services 1000] [--changes 100] [--mode full vhds ondemand]
                                    [--held 1000 100 10]

The route configuration is the builder's own (``core.mesh.envoy.build.build_snapshot`` of the mesh
``ops.bench_mesh`` fills: ``--services`` services on port 8080, one virtual host each). A
small delta xDS server written here (not the handler: this measures Envoy, not the handler)
serves one Envoy a listener on port 8080 and the route configuration ``8080``:

* ``full``: today's RDS; a change re-sends the whole route configuration.
* ``vhds``: the route configuration names a VHDS source (``--vhds-source ads``: ``ads: {}``,
  the ADS stream itself, which Envoy 1.40 accepts over delta ADS; ``grpc``: its own
  ``api_config_source`` DELTA_GRPC stream to the same server) and no host; every virtual
  host is sent proactively; a change sends the ONE changed virtual host.
* ``ondemand``: as ``vhds`` but the connection manager runs ``envoy.filters.http.on_demand``
  and nothing is sent proactively: ``--held`` requests (``Host: svc-i``) make Envoy ask for
  ``8080/svc-i``, answered with that host's virtual host (``aliases`` naming the request); a
  change sends the one changed virtual host (one Envoy holds).

A change edits one held host's route timeout; timed from the response's send to Envoy's ACK,
and Envoy's CPU (``/proc/<pid>/stat`` utime + stime) over all ``--changes`` divided by them.
The Envoy is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.filters.http.on_demand.v3 import on_demand_pb2  # noqa: F401 (its type, for JSON)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc
from google.protobuf import any_pb2, json_format

from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import Proxy
from core.mesh.envoy.names import LISTENER_TYPE, ROUTE_TYPE
from handlers.mesh.model import MeshModel
from ops.bench_mesh import _model, _Projection
from ops.envoybin import envoy_binary
from streams.server import free_port

VHOST_TYPE = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
TICKS = os.sysconf("SC_CLK_TCK")


def _pack(resource: dict[str, Any], type_url: str) -> any_pb2.Any:
    packed = any_pb2.Any()
    json_format.ParseDict({"@type": type_url, **resource}, packed)
    return packed


class _Server:
    """One Envoy's delta streams: ADS (listener and route configuration) and VHDS."""

    def __init__(self, *, mode: str, config: dict[str, Any], port: int, source: str) -> None:
        self.mode, self.port, self.source = mode, port, source
        self.hosts = {vh["name"]: vh for vh in config["virtual_hosts"]}
        self.by_domain = {d: vh["name"] for vh in config["virtual_hosts"] for d in vh["domains"]}
        self.config = config
        self.acks: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self.vhds_out: asyncio.Queue[Any] = asyncio.Queue()
        self.ads_out: asyncio.Queue[Any] = asyncio.Queue()
        self.nonce = 0
        self.sent: dict[str, float] = {}
        self.held: set[str] = set()

    def _nonce(self) -> str:
        self.nonce += 1
        self.sent[str(self.nonce)] = time.perf_counter()
        return str(self.nonce)

    def listener(self) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        if self.mode == "ondemand":
            filters.append({"name": "envoy.filters.http.on_demand", "typed_config": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.filters.http.on_demand.v3.OnDemand"}})  # fmt: skip
        filters.append(
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        )
        return {
            "name": "l8080",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "o", "http_filters": filters,
                    "rds": {"route_config_name": "8080",
                            "config_source": {"ads": {}, "resource_api_version": "V3"}}}}]}],
        }  # fmt: skip

    def route_config(self) -> dict[str, Any]:
        if self.mode == "full":
            return {k: v for k, v in self.config.items() if k != "@type"}
        if self.source == "ads":
            return {
                "name": "8080",
                "vhds": {"config_source": {"ads": {}, "resource_api_version": "V3"}},
            }
        return {
            "name": "8080",
            "ignore_port_in_host_matching": True,
            "vhds": {"config_source": {"resource_api_version": "V3", "api_config_source": {
                "api_type": "DELTA_GRPC", "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}},
        }  # fmt: skip

    def ads_response(self, type_url: str) -> Any:
        resource = self.listener() if type_url == LISTENER_TYPE else self.route_config()
        return discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, nonce=self._nonce(), system_version_info=str(self.nonce),
            resources=[discovery_pb2.Resource(name=resource["name"], version=str(self.nonce),
                                              resource=_pack(resource, type_url))],
        )  # fmt: skip

    def vhost_response(self, names: list[str], aliases: dict[str, list[str]]) -> Any:
        return discovery_pb2.DeltaDiscoveryResponse(
            type_url=VHOST_TYPE, nonce=self._nonce(), system_version_info=str(self.nonce),
            resources=[
                discovery_pb2.Resource(
                    name=f"8080/{name}", version=str(self.nonce), aliases=aliases.get(name, []),
                    resource=_pack(self.hosts[name], VHOST_TYPE))
                for name in names
            ],
        )  # fmt: skip

    async def on_vhost_request(self, request: Any, out: asyncio.Queue[Any]) -> None:
        """A VirtualHost request: an ACK/NACK, the wildcard start (``vhds``: every host) or
        on-demand names (``<route config>/<host>``), answered with their hosts or as not found."""
        if os.environ.get("BENCH_DEBUG"):
            print(
                "VHDS",
                request.response_nonce,
                list(request.resource_names_subscribe),
                request.error_detail.message[:200],
            )
        if request.response_nonce and not request.resource_names_subscribe:
            error = request.error_detail.message if request.HasField("error_detail") else None
            await self.acks.put((request.response_nonce, error))
            return
        if self.mode == "vhds" and not request.response_nonce:
            names = list(self.hosts)
            self.held.update(names)
            await out.put(self.vhost_response(names, {}))
            return
        names, aliases, missing = [], {}, []
        for alias in request.resource_names_subscribe:
            domain = alias.split("/", 1)[1].rsplit(":", 1)[0]
            name = self.by_domain.get(domain)
            if name is not None:
                names.append(name)
                aliases.setdefault(name, []).append(alias)
            else:
                missing.append(alias)
        self.held.update(names)
        response = self.vhost_response(names, aliases)
        if not request.resource_names_subscribe:
            # Envoy's VHDS init completes only on a response naming something (else 15 s).
            response.removed_resources.append("8080/ready")
        for alias in missing:  # not found: the name alone, no resource
            response.resources.append(discovery_pb2.Resource(name=alias, aliases=[alias]))
        await out.put(response)


class _Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: _Server) -> None:
        self.server = server

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        server = self.server

        async def read() -> None:
            async for request in request_iterator:
                if os.environ.get("BENCH_DEBUG"):
                    print(
                        "ADS",
                        request.type_url,
                        request.response_nonce,
                        list(request.resource_names_subscribe),
                    )
                if request.type_url == VHOST_TYPE:
                    await server.on_vhost_request(request, server.ads_out)
                elif request.response_nonce:
                    error = (
                        request.error_detail.message if request.HasField("error_detail") else None
                    )
                    if error:
                        print(f"  NACK {request.type_url}: {error[:300]}")
                    await server.acks.put((request.response_nonce, error))
                elif request.type_url in (LISTENER_TYPE, ROUTE_TYPE):
                    await server.ads_out.put(server.ads_response(request.type_url))
                else:  # clusters and the rest: an empty answer so Envoy goes on
                    await server.ads_out.put(discovery_pb2.DeltaDiscoveryResponse(
                        type_url=request.type_url, nonce=server._nonce()))  # fmt: skip

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await server.ads_out.get()
        finally:
            reader.cancel()


class _Vhds(rds_pb2_grpc.VirtualHostDiscoveryServiceServicer):
    def __init__(self, server: _Server) -> None:
        self.server = server

    async def DeltaVirtualHosts(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        server = self.server

        async def read() -> None:
            async for request in request_iterator:
                await server.on_vhost_request(request, server.vhds_out)

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await server.vhds_out.get()
        finally:
            reader.cancel()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _start_envoy(ads_port: int) -> subprocess.Popen[bytes]:
    directory = Path(tempfile.mkdtemp(prefix="meshvhds-apply-"))
    path = directory / "envoy.json"
    path.write_text(json.dumps(_bootstrap(ads_port, free_port())))
    with open(directory / "log", "wb") as log:  # Envoy's log, kept for a failed run
        return subprocess.Popen(
            [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
             "-l", os.environ.get("ENVOY_LOG", "error")], stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def _bootstrap(ads_port: int, admin_port: int) -> dict[str, Any]:
    return {
        "node": {"id": "sidecar~127.0.0.1~app.bench~bench.svc.cluster.local", "cluster": "app"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": ads_port}}}}]}]}}]},
    }  # fmt: skip


async def _ack(server: _Server, nonce: str, *, timeout: float = 30) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        got, error = await asyncio.wait_for(server.acks.get(), deadline - time.monotonic())
        if got == nonce:
            return error


def _request(port: int, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # the listener is not up yet
        return 0


async def measure(
    config: dict[str, Any], *, mode: str, held: int, changes: int, source: str
) -> dict[str, Any]:
    listen_port = free_port()
    server = _Server(mode=mode, config=config, port=listen_port, source=source)
    grpc_server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Ads(server), grpc_server)
    rds_pb2_grpc.add_VirtualHostDiscoveryServiceServicer_to_server(_Vhds(server), grpc_server)
    ads_port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    envoy = _start_envoy(ads_port)
    try:
        names = list(server.hosts)
        deadline = time.monotonic() + 30
        while not ((mode == "vhds" and len(server.held) == len(names)) or mode != "vhds"):
            await asyncio.sleep(0.01)
            if time.monotonic() > deadline:
                raise TimeoutError("VHDS never asked")
        await asyncio.sleep(1.0)
        probe = server.hosts[names[0]]["domains"][3] if mode != "ondemand" else "nowhere"
        while not await asyncio.to_thread(_request, listen_port, probe):
            await asyncio.sleep(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError("the listener never came up")
        while server.acks.qsize():
            server.acks.get_nowait()
        if mode == "ondemand":
            statuses = []
            for i in range(held):
                domain = server.hosts[names[i]]["domains"][3]
                statuses.append(await asyncio.to_thread(_request, listen_port, domain))
            wanted = names[:held]
            print(f"  on demand: {held} first requests, statuses {sorted(set(statuses))}, "
                  f"held {len(server.held)}")  # fmt: skip
        else:
            status = await asyncio.to_thread(
                _request, listen_port, server.hosts[names[0]]["domains"][3]
            )
            print(f"  a request: status {status}, held {len(server.held)}")
            wanted = names[:held] if mode == "vhds" else names
        await asyncio.sleep(0.5)
        while server.acks.qsize():
            server.acks.get_nowait()
        latencies, errors = [], []
        cpu_before, wall_before = _cpu(envoy.pid), time.perf_counter()
        for change in range(changes):
            name = wanted[change % len(wanted)]
            host = copy.deepcopy(server.hosts[name])
            host["routes"][0]["route"]["timeout"] = f"{7 + change % 2}s"
            server.hosts[name] = host
            if mode == "full":
                server.config = {**server.config, "virtual_hosts": list(server.hosts.values())}
                response = server.ads_response(ROUTE_TYPE)
                queue = server.ads_out
            else:
                response = server.vhost_response([name], {})
                queue = server.ads_out if server.source == "ads" else server.vhds_out
            began = time.perf_counter()
            await queue.put(response)
            error = await _ack(server, response.nonce)
            latencies.append((time.perf_counter() - began) * 1000)
            if error:
                errors.append(error)
        cpu = _cpu(envoy.pid) - cpu_before
        wall = time.perf_counter() - wall_before
        return {
            "mode": mode, "source": source if mode != "full" else "",
            "held": len(server.held) if mode != "full" else len(names),
            "changes": changes, "ack_p50_ms": round(statistics.median(latencies), 2),
            "ack_p99_ms": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
            "envoy_cpu_per_change_ms": round(cpu * 1000 / changes, 2),
            "wall_s": round(wall, 2), "nacks": errors[:2],
            "load": os.getloadavg()[0],
        }  # fmt: skip
    finally:
        envoy.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            envoy.wait(timeout=10)
        if envoy.poll() is None:
            envoy.kill()
        await grpc_server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--mode", nargs="+", default=["full", "vhds", "ondemand"])
    parser.add_argument("--held", type=int, nargs="+", default=[1000, 100, 10])
    parser.add_argument(
        "--vhds-source",
        choices=["ads", "grpc"],
        default="ads",
        help="VHDS over the ADS stream, or its own DELTA_GRPC stream",
    )
    args = parser.parse_args()
    model = MeshModel(_Projection(_model(args.services, 10, 100)))  # type: ignore[arg-type]
    snapshot = build_snapshot(model.state(), Proxy(kind="sidecar", namespace="bench"))
    config = snapshot.routes[0]
    for mode in args.mode:
        for held in args.held if mode == "ondemand" else [args.services]:
            result = asyncio.run(
                measure(config, mode=mode, held=held, changes=args.changes, source=args.vhds_source)
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
