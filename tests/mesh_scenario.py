"""One mesh that uses every feature the Envoy builder knows, shared by its unit tests and by the
test that has real Envoy validate the result."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from core.api.manifests import parse_manifest
from core.mesh.envoy.model import MeshState
from streams.server import free_port

NS = "shop"


def service(name: str, cluster_ip: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": name}, "ports": ports},
    }


def endpoint_slice(
    name: str, port_name: str, port: int, pods: list[tuple[str, str, bool]]
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abc",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "namespace": NS, "name": pod},
            }
            for pod, address, ready in pods
        ],
    }


def istio(kind: str, name: str, spec: dict[str, Any], *, group: str = "networking") -> Any:
    return parse_manifest(
        {
            "apiVersion": f"{group}.istio.io/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


def dest(host: str, subset: str | None = None, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host}}
    if subset:
        d["destination"]["subset"] = subset
    if weight is not None:
        d["weight"] = weight
    return d


WEB_ROUTES: list[dict[str, Any]] = [
    {
        "name": "canary-header",
        "match": [{"headers": {"x-canary": {"exact": "yes"}}, "method": {"exact": "GET"}}],
        "route": [dest("web", "v2")],
    },
    {
        "name": "old-api",
        "match": [{"uri": {"exact": "/old"}}],
        "redirect": {"uri": "/new", "redirectCode": 302},
    },
    {
        "name": "api",
        "match": [{"uri": {"prefix": "/api/"}, "queryParams": {"debug": {"exact": "1"}}}],
        "rewrite": {"uri": "/"},
        "route": [dest("web", "v1")],
        "timeout": "2.5s",
        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,503"},
    },
    {
        "name": "regex",
        "match": [{"uri": {"regex": "/items/[0-9]+"}, "withoutHeaders": {"x-debug": {}}}],
        "rewrite": {"uriRegexRewrite": {"match": "/items/([0-9]+)", "rewrite": "/item?id=\\1"}},
        "route": [dest("web", "v1")],
    },
    {
        "name": "faulty",
        "match": [{"uri": {"prefix": "/fault"}}],
        "fault": {
            "delay": {"fixedDelay": "1s", "percentage": {"value": 10}},
            "abort": {"httpStatus": 503, "percentage": {"value": 5.5}},
        },
        "route": [dest("web", "v1")],
    },
    {
        "name": "gone",
        "match": [{"uri": {"exact": "/gone"}}],
        "directResponse": {"status": 410, "body": {"string": "gone for good"}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://shop.example.com"}]},
    },
    {
        "name": "cors",
        "match": [{"uri": {"prefix": "/public"}}],
        "corsPolicy": {
            "allowOrigins": [{"exact": "https://a.example.com"}, {"regex": "https://.*\\.b\\.com"}],
            "allowMethods": ["GET", "POST"],
            "allowHeaders": ["x-token"],
            "exposeHeaders": ["x-trace"],
            "maxAge": "24h",
            "allowCredentials": True,
            "unmatchedPreflights": "IGNORE",
        },
        "route": [dest("web", "v1")],
    },
    {
        "name": "reviews",
        "match": [{"uri": {"prefix": "/reviews"}}],
        "delegate": {"name": "web-reviews"},
    },
    {
        "name": "split",
        "route": [dest("web", "v1", 80), dest("web", "v2", 20)],
        "mirror": {"host": "ratings"},
        "mirrorPercentage": {"value": 25},
        "headers": {"request": {"set": {"x-mesh": "fleetlog"}, "remove": ["x-internal"]}},
    },
]


def scenario() -> MeshState:
    state = _scenario()
    # web's pods run on two nodes in two regions (their endpoints' localities).
    for endpoint in state.slices[0]["endpoints"]:
        endpoint["nodeName"] = "node-1" if endpoint["addresses"] == ["10.244.0.5"] else "node-2"
    return state


def _scenario() -> MeshState:
    return MeshState(
        services=[
            service("web", "10.96.0.10", [{"name": "http", "port": 80, "targetPort": 8080}]),
            service("ratings", "10.96.0.11", [{"name": "http-api", "port": 9080}]),
            service("db", "10.96.0.12", [{"name": "tcp-pg", "port": 5432}]),
            service("cache", "10.96.0.13", [{"name": "tcp-redis", "port": 6379}]),
            # No protocol named: sniffed.
            service("legacy", "10.96.0.14", [{"port": 7000}]),
        ],
        slices=[
            endpoint_slice(
                "web",
                "http",
                8080,
                [
                    ("web-1", "10.244.0.5", True),
                    ("web-2", "10.244.0.6", True),
                    ("web-3", "10.244.0.7", False),
                ],
            ),
            endpoint_slice("ratings", "http-api", 9080, [("ratings-1", "10.244.0.8", True)]),
            endpoint_slice(
                "db", "tcp-pg", 5432, [("db-1", "10.244.0.9", True), ("db-2", "10.244.0.10", True)]
            ),
        ],
        node_localities={"node-1": "us/us-a", "node-2": "eu/eu-a"},
        pod_labels={
            (NS, "web-1"): {"app": "web", "version": "v1"},
            (NS, "web-2"): {"app": "web", "version": "v2"},
            (NS, "web-3"): {"app": "web", "version": "v2"},
            (NS, "db-1"): {"app": "db", "role": "primary"},
            (NS, "db-2"): {"app": "db", "role": "replica"},
        },
        virtual_services=[
            istio("VirtualService", "web", {"hosts": ["web"], "http": WEB_ROUTES}),
            istio(
                "VirtualService",
                "web-reviews",
                {
                    "http": [
                        {
                            "match": [{"uri": {"prefix": "/reviews/v2"}}],
                            "route": [dest("web", "v2")],
                        },
                        {"route": [dest("web", "v1")]},
                    ]
                },
            ),
            istio(
                "VirtualService",
                "db",
                {
                    "hosts": ["db"],
                    "tcp": [{"route": [dest("db", "primary", 9), dest("db", "replica", 1)]}],
                },
            ),
            istio(
                "VirtualService",
                "edge",
                {
                    "hosts": ["shop.example.com"],
                    "gateways": ["edge"],
                    "http": [{"route": [dest("web.shop.svc.cluster.local", "v1")]}],
                },
            ),
        ],
        destination_rules=[
            istio(
                "DestinationRule",
                "web",
                {
                    "host": "web",
                    "trafficPolicy": {
                        "loadBalancer": {
                            "simple": "ROUND_ROBIN",
                            "warmup": {"duration": "30s", "aggression": 1.5},
                            "localityLbSetting": {"failover": [{"from": "us", "to": "eu"}]},
                        },
                        "connectionPool": {
                            "tcp": {"maxConnections": 100, "connectTimeout": "3s"},
                            "http": {
                                "http1MaxPendingRequests": 10,
                                "maxRequestsPerConnection": 5,
                                "maxRetries": 4,
                                "idleTimeout": "30s",
                            },
                        },
                        "outlierDetection": {
                            "consecutive5xxErrors": 5,
                            "interval": "10s",
                            "baseEjectionTime": "30s",
                            "maxEjectionPercent": 50,
                        },
                        "tls": {"mode": "ISTIO_MUTUAL"},
                    },
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {
                            "name": "v2",
                            "labels": {"version": "v2"},
                            "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
                        },
                    ],
                },
            ),
            istio(
                "DestinationRule",
                "ratings",
                {
                    "host": "ratings",
                    "trafficPolicy": {
                        "loadBalancer": {
                            "consistentHash": {
                                "httpHeaderName": "x-user",
                                "ringHash": {"minimumRingSize": 1024},
                            }
                        }
                    },
                },
            ),
            istio(
                "DestinationRule",
                "db",
                {
                    "host": "db",
                    "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
                    "subsets": [
                        {"name": "primary", "labels": {"role": "primary"}},
                        {"name": "replica", "labels": {"role": "replica"}},
                    ],
                },
            ),
            istio(
                "DestinationRule",
                "cache",
                {"host": "cache", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}},
            ),
        ],
        gateways=[
            istio(
                "Gateway",
                "edge",
                {
                    "selector": {"istio": "ingressgateway"},
                    "servers": [
                        {
                            "port": {"number": 8088, "name": "http", "protocol": "HTTP"},
                            "hosts": ["shop.example.com"],
                        }
                    ],
                },
            )
        ],
        service_entries=[
            istio(
                "ServiceEntry",
                "payments",
                {
                    "hosts": ["payments.example.com"],
                    "resolution": "DNS",
                    "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                },
            ),
            istio(
                "ServiceEntry",
                "legacy",
                {
                    "hosts": ["legacy.internal"],
                    "resolution": "STATIC",
                    "addresses": ["10.50.0.1"],
                    "ports": [{"number": 8000, "name": "http", "protocol": "HTTP"}],
                    "endpoints": [{"address": "10.50.0.7", "ports": {"http": 8001}}],
                },
            ),
        ],
    )


@contextlib.contextmanager
def http_backends(root: Path, names: tuple[str, ...]) -> Iterator[dict[str, int]]:
    """A ``python -m http.server`` on loopback per name, each answering its own name; yields
    name -> port once all answer, stopped by PID."""
    ports: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            directory = root / name
            directory.mkdir()
            (directory / "index.html").write_text(name)
            port = free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                     "--directory", str(directory), str(port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
            ports[name] = port
        deadline = time.monotonic() + 60
        for port in ports.values():
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"backend on port {port} never answered"
                time.sleep(0.1)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
