"""The mesh-push handler's pure rules: node ids, versions, the debounce, ACK/NACK/stale, and the
rows of ``fleetlog mesh status``."""

from __future__ import annotations

import dataclasses

import pytest

from core.mesh.envoy.build import MeshBuild, build_snapshot
from core.mesh.envoy.model import Proxy
from core.mesh.envoy.names import ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from core.mesh.push import (
    BUILT_TYPES,
    REBUILT_BY,
    BadNodeId,
    Debounce,
    ProxyStatus,
    TypeStatus,
    ads_bootstrap,
    classify,
    node_id,
    one_line,
    parse_node_id,
    rebuilt_by,
    record,
    status_row,
    version_of,
)
from core.mesh.vhds import VIRTUAL_HOST_TYPE
from tests.mesh_scenario import scenario
from tests.unit.test_mesh_envoy import PROXIES, rich_state


def test_istio_node_ids_name_the_proxy() -> None:
    sidecar = parse_node_id("sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local")
    assert (sidecar.kind, sidecar.ip, sidecar.pod, sidecar.namespace) == (
        "sidecar", "10.1.0.5", "web-1", "shop",
    )  # fmt: skip
    assert sidecar.name == "web-1.shop"
    gateway = node_id(kind="gateway", ip="127.0.0.1", pod="ingress.v2-1", namespace="ops")
    assert gateway == "router~127.0.0.1~ingress.v2-1.ops~ops.svc.cluster.local"
    parsed = parse_node_id(gateway)
    assert (parsed.kind, parsed.pod, parsed.namespace) == ("gateway", "ingress.v2-1", "ops")


@pytest.mark.parametrize(
    "bad",
    ["web-1", "sidecar~1.2.3.4~web~x", "ztunnel~1.2.3.4~a.b~b.svc.cluster.local",
     "sidecar~1.2.3.4~a.b~c.svc.cluster.local"],
)  # fmt: skip
def test_other_node_ids_are_refused(bad: str) -> None:
    with pytest.raises(BadNodeId):
        parse_node_id(bad)


def test_a_version_is_the_resources_hash_whatever_their_order() -> None:
    snapshot = build_snapshot(scenario(), Proxy())
    clusters = snapshot.clusters
    assert version_of(clusters) == version_of(list(reversed(clusters)))
    changed = [dict(clusters[0], connect_timeout="9s"), *clusters[1:]]
    assert version_of(changed) != version_of(clusters)
    assert version_of(snapshot.clusters) == version_of(build_snapshot(scenario(), Proxy()).clusters)


def test_the_debounce_waits_for_quiet_but_never_past_the_maximum() -> None:
    debounce = Debounce(quiet_s=0.01, max_s=0.1)
    assert debounce.wait(first_at=0.0, last_at=0.0, now=0.0) == pytest.approx(0.01)
    assert debounce.wait(first_at=0.0, last_at=0.0, now=0.02) == 0
    # Changes keep coming: each pushes the quiet deadline, the maximum holds.
    assert debounce.wait(first_at=0.0, last_at=0.05, now=0.055) == pytest.approx(0.005)
    assert debounce.wait(first_at=0.0, last_at=0.099, now=0.099) == pytest.approx(0.001)
    assert debounce.wait(first_at=0.0, last_at=0.2, now=0.2) == 0


def test_ack_nack_and_stale_requests() -> None:
    status = TypeStatus(sent="v2", sent_nonce="n2", acked="v1")
    assert classify(status, nonce="", error=None) == "initial"
    assert classify(status, nonce="n1", error=None) == "stale"
    assert classify(status, nonce="n2", error="bad") == "nack"
    record(status, "nack", version="v1", error="bad", at_ns=5)
    assert (status.state(), status.acked, status.nacked, status.error) == (
        "NACKED",
        "v1",
        "v2",
        "bad",
    )
    # A later version acked clears the refusal.
    status.sent, status.sent_nonce = "v3", "n3"
    assert status.state() == "STALE"
    assert classify(status, nonce="n3", error=None) == "ack"
    record(status, "ack", version="v3", error=None, at_ns=9)
    assert (status.state(), status.nacked, status.error, status.acked_ns) == ("SYNCED", "", "", 9)
    assert TypeStatus().state() == "NOT SENT"


def test_the_status_row_shows_states_lag_and_the_refusal() -> None:
    status = ProxyStatus(id="x", name="web-1.shop", kind="sidecar")
    status.types["CDS"] = TypeStatus(sent="a", acked="a")
    status.types["EDS"] = TypeStatus(sent="b", acked="a", sent_ns=1_000_000_000)
    status.types["RDS"] = TypeStatus(sent="c", acked="b", nacked="c", error="no\n  good")
    status.types["VHDS"] = TypeStatus(sent="d", acked="d")
    row = status_row(status, now_ns=3_500_000_000)
    assert row == [
        "web-1.shop", "SYNCED", "NOT SENT", "STALE", "NACKED", "SYNCED", "2.5s", "RDS: no good",
    ]  # fmt: skip
    assert status_row(ProxyStatus.from_dict(status.as_dict()), now_ns=3_500_000_000) == row
    status.types = {"CDS": TypeStatus(sent="a", acked="a")}
    status.connected = False
    assert status_row(status, now_ns=0)[-2:] == ["0s", "disconnected"]


def test_a_long_error_keeps_its_end() -> None:
    text = "dump " * 100 + "reason: is required"
    shown = one_line(text, width=40)
    assert len(shown) == 40 and shown.endswith("reason: is required") and shown[0] == "…"


def test_the_ads_bootstrap_points_envoy_at_the_handler() -> None:
    config = ads_bootstrap(
        node="router~1.2.3.4~gw-1.ops~ops.svc.cluster.local", ads_host="127.0.0.1",
        ads_port=15010, admin_port=15000, metadata={"LABELS": {"istio": "ingressgateway"}},
    )  # fmt: skip
    assert config["node"]["cluster"] == "gw-1"
    assert config["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    (xds,) = config["static_resources"]["clusters"]
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 15010}


def test_the_ads_bootstrap_asks_for_delta_xds_unless_told_state_of_the_world() -> None:
    node = "router~1.2.3.4~gw-1.ops~ops.svc.cluster.local"
    delta = ads_bootstrap(node=node, ads_host="127.0.0.1", ads_port=15010, admin_port=0)
    sotw = ads_bootstrap(node=node, ads_host="127.0.0.1", ads_port=15010, admin_port=0,
                         delta=False)  # fmt: skip
    assert delta["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert sotw["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"


def test_a_type_version_is_a_hash_of_its_resources_versions() -> None:
    from core.mesh.push import canonical, resource_version, type_version

    one, two = {"name": "a", "x": 1}, {"name": "b", "x": 2}
    pairs = [("a", resource_version(canonical(one))), ("b", resource_version(canonical(two)))]
    assert version_of([one, two]) == type_version(pairs) == type_version(reversed(pairs))
    assert resource_version(canonical({"x": 1, "name": "a"})) == pairs[0][1]  # key order
    assert version_of([one, {**two, "x": 3}]) != version_of([one, two])
    # Pairs the encoder hands over sorted already are not sorted again: the same version.
    assert type_version(iter(pairs), ordered=True) == type_version(pairs)


def test_a_sidecar_bootstrap_reaches_ads_through_a_socket_and_marks_its_upstreams() -> None:
    config = ads_bootstrap(
        node="sidecar~100.96.0.5~app.shop~shop.svc.cluster.local", ads_host="", ads_port=0,
        admin_port=15000, ads_pipe="/run/agent/ads.sock", upstream_mark=0x539,
    )  # fmt: skip
    (xds,) = config["static_resources"]["clusters"]
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"pipe": {"path": "/run/agent/ads.sock"}}
    [option] = config["cluster_manager"]["upstream_bind_config"]["socket_options"]
    assert (option["level"], option["name"], option["int_value"]) == (1, 36, 0x539)
    plain = ads_bootstrap(node="router~1.2.3.4~gw-1.ops~ops.svc.cluster.local",
                          ads_host="127.0.0.1", ads_port=15010, admin_port=0)  # fmt: skip
    assert "cluster_manager" not in plain


@pytest.mark.parametrize(
    "proxy",
    [Proxy(), Proxy(captured=True), Proxy(kind="gateway", labels={"istio": "ingressgateway"})],
)
def test_every_resource_the_builder_makes_converts_to_protobuf(proxy: Proxy) -> None:
    """Each typed config's message must be known to protobuf (its module imported), or the
    handler cannot send the proxy anything."""
    from handlers.mesh.xds import Encoder

    snapshot = build_snapshot(scenario(), proxy)
    encoder = Encoder()
    for resources in (snapshot.clusters, snapshot.endpoints, snapshot.listeners, snapshot.routes):
        assert len(encoder.encode(resources).resources) == len(resources)


def test_the_encoder_packs_each_type_with_the_builders_version_and_reuses_unchanged() -> None:
    from handlers.mesh.xds import Encoder

    snapshot = build_snapshot(scenario(), Proxy())
    encoder = Encoder()
    clusters = encoder.encode(snapshot.clusters)
    assert clusters.version == version_of(snapshot.clusters)
    assert all(
        r.type_url.endswith("envoy.config.cluster.v3.Cluster") for _, r in clusters.resources
    )
    first_name, first = clusters.resources[0]
    assert clusters.named([first_name]) == [first]
    assert len(clusters.named([])) == len(snapshot.clusters)
    encoder.next_round()
    again = encoder.encode(snapshot.clusters)
    assert again.resources[0][1] is first  # not converted again


def test_slices_are_indexed_by_their_service_once_per_build() -> None:
    from core.mesh.envoy.endpoints import slices_by_service
    from tests.mesh_scenario import endpoint_slice

    web = endpoint_slice("web", "http", 8080, [("web-1", "10.0.0.1", True)])
    other = {**web, "metadata": {**web["metadata"], "namespace": "other"}}
    unlabelled = {**web, "metadata": {"name": "x", "namespace": "shop"}}
    index = slices_by_service([web, other, unlabelled])
    assert index == {("shop", "web"): [web], ("other", "web"): [other]}


def test_an_endpoints_only_push_equals_a_full_build() -> None:
    """What the handler does when only EndpointSlices changed (build their services' endpoints
    and replace them) gives the endpoints, and the version, a whole new build gives."""
    import dataclasses

    from handlers.mesh.push import touched_endpoints
    from handlers.mesh.xds import Encoder

    before = scenario()
    old = build_snapshot(before, Proxy())
    web = next(s for s in before.slices if s["metadata"]["labels"][
        "kubernetes.io/service-name"] == "web")  # fmt: skip
    changed = {**web, "endpoints": web["endpoints"][:1]}
    after = dataclasses.replace(before, slices=[changed if s is web else s for s in before.slices])
    fresh = touched_endpoints(after, {("shop", "web")})
    assert fresh, "web's clusters get new assignments"
    full = build_snapshot(after, Proxy())
    assert {e["cluster_name"] for e in fresh} == {
        e["cluster_name"]
        for e in full.endpoints
        if e["cluster_name"].endswith("|web.shop.svc.cluster.local")
    }
    encoder = Encoder()
    old_encoded = encoder.encode(old.endpoints)
    incremental = encoder.replace(old_encoded, fresh)
    assert incremental.version == Encoder().encode(full.endpoints).version
    assert incremental.version != old_encoded.version


FIELDS = {
    "Service": ("services",),
    "ServiceEntry": ("service_entries",),
    "EndpointSlice": ("slices",),
    "Pod": ("pod_labels", "meshed_pods"),
    "Namespace": ("meshed_pods",),
    "VirtualService": ("virtual_services",),
    "DestinationRule": ("destination_rules",),
    "Gateway": ("gateways",),
    "PeerAuthentication": ("peer_authentications",),
    "Secret": ("credentials",),
    "Node": ("node_localities",),
}
"""What of the builder's state each kind the read model watches makes."""


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_a_change_of_a_kind_rebuilds_exactly_the_types_it_can_alter(kind: str) -> None:
    """``REBUILT_BY`` against the builder: with every object of the kind gone, the types not
    listed are what they were for every proxy (so keeping them is right), and each listed type
    changes for some proxy (so the scoping is as narrow as the builder allows)."""
    assert set(FIELDS) == set(REBUILT_BY)
    before = rich_state()
    empty = {name: type(getattr(before, name))() for name in FIELDS[kind]}
    after = dataclasses.replace(before, **empty)
    old, new = MeshBuild(before), MeshBuild(after)
    changed = {
        type_url
        for type_url in BUILT_TYPES
        for proxy in PROXIES
        if old.resources(proxy, type_url) != new.resources(proxy, type_url)
    }
    assert changed == rebuilt_by({kind}) == REBUILT_BY[kind]


def test_a_kind_the_table_does_not_know_rebuilds_everything() -> None:
    assert rebuilt_by({"Sidecar"}) == set(BUILT_TYPES)
    assert rebuilt_by(set()) == set()
    assert rebuilt_by({"EndpointSlice", "VirtualService"}) == {
        ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, VIRTUAL_HOST_TYPE,
    }  # fmt: skip


def test_a_large_route_configuration_is_converted_host_by_host_to_the_same_message() -> None:
    """A route configuration of many virtual hosts keeps each host's conversion: what is sent
    is the message protobuf's own JSON parsing gives, before and after one host changes, and
    the version is the same hash of the whole resource's JSON."""
    import copy

    from envoy.config.route.v3 import route_pb2
    from google.protobuf import any_pb2, json_format

    from core.mesh.envoy.build import MeshBuild
    from core.mesh.envoy.model import Proxy
    from core.mesh.push import canonical, resource_version
    from handlers.mesh.xds import SPLIT_HOSTS, Encoder

    state = dataclasses.replace(scenario(), services=[
        {"metadata": {"name": f"svc-{i}", "namespace": "shop"},
         "spec": {"clusterIP": f"10.96.1.{i + 1}", "ports": [{"name": "http", "port": 80}]}}
        for i in range(SPLIT_HOSTS * 2)
    ])  # fmt: skip
    [config] = [r for r in MeshBuild(state).resources(Proxy(), ROUTE_TYPE) if r["name"] == "80"]
    assert len(config["virtual_hosts"]) >= SPLIT_HOSTS
    changed = copy.deepcopy(config)
    changed["virtual_hosts"][3]["routes"][0]["route"]["timeout"] = "9s"
    encoder = Encoder()
    for resource in (config, changed):
        encoded = encoder.encode([resource])
        encoder.next_round()
        [(_, packed)] = encoded.resources
        reference = any_pb2.Any()
        json_format.ParseDict(resource, reference)
        assert packed.type_url == reference.type_url
        ours, theirs = route_pb2.RouteConfiguration(), route_pb2.RouteConfiguration()
        assert packed.Unpack(ours) and reference.Unpack(theirs)
        assert ours == theirs
        assert encoded.versions == (resource_version(canonical(resource)),)
