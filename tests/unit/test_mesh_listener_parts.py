"""A sidecar's listeners taken over from the last build (``core.mesh.listener_parts``): after
any change, each proxy's listeners are exactly what a build of its own state makes, and an
HTTP-only VirtualService change makes none again."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.mesh.envoy.build import MeshBuild, build_snapshot
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.listener_parts import LISTENER_ROUNDS_HELD
from tests.mesh_scenario import NS, dest, istio, scenario, service

SIDECARS = (
    Proxy(),
    Proxy(namespace=NS, labels={"app": "web"}, bind_address="127.0.0.2"),
    Proxy(namespace=NS, labels={"app": "web"}, captured=True),
    Proxy(namespace=NS, labels={"app": "web"}, bind_address="127.0.0.3", on_demand=True),
    Proxy(namespace=NS, labels={"app": "web"}, captured=True, on_demand=True),
)
"""Sidecars differing by what their listeners depend on: the bind address (0.0.0.0 gives
each TCP service a listener on its own address), capture (inbound mTLS), on-demand hosts."""
PROXIES = (*SIDECARS, Proxy(kind="gateway", labels={"istio": "ingressgateway"}))

VAULT_TLS = istio("VirtualService", "vault", {
    "hosts": ["vault"],
    "tls": [{"match": [{"port": 8443, "sniHosts": ["vault"]}],
             "route": [dest("vault")]}],
})  # fmt: skip


def base_state() -> MeshState:
    """The shared scenario (a TCP route, a sniffed port, a delegate, a gateway-bound
    VirtualService) with a TLS service port and a workload PeerAuthentication."""
    state = scenario()
    strict = istio("PeerAuthentication", "web", {
        "selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "STRICT"},
    }, group="security")  # fmt: skip
    return dataclasses.replace(
        state,
        services=[*state.services, service("vault", "10.96.0.20", [{"name": "tls", "port": 8443}])],
        peer_authentications=[strict],
    )


def _with_route(state: MeshState, vs: Any) -> MeshState:
    kept = [v for v in state.virtual_services if v.metadata.name != vs.metadata.name]
    return dataclasses.replace(state, virtual_services=[*kept, vs])


def _without_route(state: MeshState, name: str) -> MeshState:
    kept = [v for v in state.virtual_services if v.metadata.name != name]
    return dataclasses.replace(state, virtual_services=kept)


def _built(state: MeshState, **previous: Any) -> MeshBuild:
    """A build with every proxy's every part made (what a push leaves behind)."""
    build = MeshBuild(state, **previous)
    for proxy in PROXIES:
        build.snapshot(proxy)
    return build


Change = tuple[str, Callable[[MeshState], MeshState], frozenset[str], int]
VS: frozenset[str] = frozenset({"VirtualService"})
ALL, NONE = len(SIDECARS), 0
CHANGES: list[Change] = [
    ("web's HTTP timeout", lambda s: _with_route(s, istio("VirtualService", "web", {
        "hosts": ["web"], "http": [{"route": [dest("web", "v1")], "timeout": "7s"}]})),
     VS, ALL),
    ("an HTTP VirtualService for ratings", lambda s: _with_route(s, istio(
        "VirtualService", "ratings", {"hosts": ["ratings"], "http": [
            {"route": [dest("ratings")], "retries": {"attempts": 2}}]})),
     VS, ALL),
    ("the delegate's routes", lambda s: _with_route(s, istio("VirtualService", "web-reviews", {
        "http": [{"route": [dest("web", "v2")]}]})),
     VS, ALL),
    ("db's TCP weights", lambda s: _with_route(s, istio("VirtualService", "db", {
        "hosts": ["db"], "tcp": [{"route": [dest("db", "primary", 5),
                                            dest("db", "replica", 5)]}]})),
     VS, NONE),
    ("db's TCP weights again, a new object alike", lambda s: _with_route(s, istio(
        "VirtualService", "db", {"hosts": ["db"], "tcp": [
            {"route": [dest("db", "primary", 5), dest("db", "replica", 5)]}]})),
     VS, ALL),
    ("a TLS route for vault", lambda s: _with_route(s, VAULT_TLS), VS, NONE),
    ("vault's VirtualService gains an HTTP route only", lambda s: _with_route(s, istio(
        "VirtualService", "vault", {**VAULT_TLS.spec.model_dump(by_alias=True,
                                                                exclude_defaults=True),
                                    "http": [{"route": [dest("vault")]}]})),
     VS, ALL),
    ("vault's SNI hosts", lambda s: _with_route(s, istio("VirtualService", "vault", {
        "hosts": ["vault", "v.example.com"], "tls": [{"match": [{"port": 8443, "sniHosts": ["v.example.com"]}],
                                     "route": [dest("vault")]}]})),
     VS, NONE),
    ("a TCP route for the sniffed port", lambda s: _with_route(s, istio(
        "VirtualService", "legacy", {"hosts": ["legacy"], "tcp": [
            {"route": [dest("db", "primary")]}]})),
     VS, NONE),
    ("db's VirtualService bound to a gateway only", lambda s: _with_route(s, istio(
        "VirtualService", "db", {"hosts": ["db"], "gateways": ["edge"], "tcp": [
            {"route": [dest("db", "primary")]}]})),
     VS, NONE),
    ("the TCP route for the sniffed port went", lambda s: _without_route(s, "legacy"),
     VS, NONE),
    ("a DestinationRule", lambda s: dataclasses.replace(s, destination_rules=[
        *s.destination_rules, istio("DestinationRule", "vault", {
            "host": "vault", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})]),
     frozenset({"DestinationRule"}), ALL),
    ("the PeerAuthentication PERMISSIVE: captured sidecars' inbound", lambda s: dataclasses.replace(
        s, peer_authentications=[istio("PeerAuthentication", "web", {
            "selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "PERMISSIVE"},
        }, group="security")]),
     frozenset({"PeerAuthentication"}), 3),
    ("an EndpointSlice", lambda s: dataclasses.replace(s, slices=[
        {**s.slices[0], "endpoints": s.slices[0]["endpoints"][1:]}, *s.slices[1:]]),
     frozenset({"EndpointSlice"}), ALL),
    ("a Service's port", lambda s: dataclasses.replace(s, services=[
        service("cache", "10.96.0.13", [{"name": "tcp-redis", "port": 6380}]),
        *[x for x in s.services if x["metadata"]["name"] != "cache"]]),
     frozenset({"Service"}), NONE),
]  # fmt: skip


def test_listeners_taken_over_are_each_proxy_s_own_build_s() -> None:
    """Change after change, every proxy's listeners equal a build of its own state's; those
    of an HTTP-only VirtualService change (or a change of a kind listeners do not read) are
    the last build's very lists, and a change of what they read makes them again."""
    state = base_state()
    build = _built(state)
    for what, change, kinds, reused in CHANGES:
        before = [build.listeners(p) for p in SIDECARS]
        state = change(state)
        build = _built(state, previous=build, kinds=kinds)
        for proxy in PROXIES:
            assert build.listeners(proxy) == build_snapshot(state, proxy).listeners, (what, proxy)
        assert build.listeners_reused == reused, what
        kept = [p for p, old in zip(SIDECARS, before, strict=True) if build.listeners(p) is old]
        assert len(kept) == reused, what


def test_an_http_only_change_leaves_the_listeners_and_a_tcp_one_changes_them() -> None:
    """The check is not idle: the TCP change does alter the listeners."""
    state = base_state()
    build = _built(state)
    _, change, kinds, _ = CHANGES[3]  # db's TCP weights
    after = change(state)
    new = _built(after, previous=build, kinds=kinds)
    assert new.listeners(SIDECARS[0]) != build.listeners(SIDECARS[0])


def test_sidecars_of_other_namespaces_labels_and_localities_share_one_build() -> None:
    """Listeners depend on the bind address, capture, on-demand hosts and inbound mTLS, not
    on which workload the sidecar is: alike sidecars get the very same list, each equal to
    its own build's; a workload whose PeerAuthentication differs gets its own."""
    state = base_state()
    alike = [
        Proxy(namespace=NS, labels={"app": "web"}, captured=True, on_demand=True),
        Proxy(namespace=NS, labels={"app": "web", "pod-template-hash": "b"}, captured=True,
              on_demand=True, locality="r1/z1/"),
        Proxy(namespace="other", labels={"app": "db"}, captured=True, on_demand=True),
    ]  # fmt: skip
    build = MeshBuild(state)
    first = build.listeners(alike[0])
    for proxy in alike:
        assert build.listeners(proxy) == build_snapshot(state, proxy).listeners, proxy
    # web's STRICT and other's default (PERMISSIVE) inbound differ: two builds, not three.
    assert build.listeners(alike[1]) is first
    assert build.listeners(alike[2]) is not first
    assert build.listeners(alike[2]) != first


def test_listeners_no_build_asked_for_are_let_go() -> None:
    """A proxy gone leaves its listeners behind for LISTENER_ROUNDS_HELD builds only; one
    asked for in each build keeps them through any number."""
    state = base_state()
    gone, live = SIDECARS[1], SIDECARS[0]
    build = MeshBuild(state)
    build.listeners(gone), build.listeners(live)
    for _ in range(LISTENER_ROUNDS_HELD + 1):
        build = MeshBuild(state, previous=build, kinds={"EndpointSlice"})
        build.listeners(live)
    build = MeshBuild(state, previous=build, kinds={"VirtualService"})
    build.listeners(live)
    assert build.listeners_reused == 1
    build.listeners(gone)
    assert build.listeners_reused == 1
    assert build.listeners(gone) == build_snapshot(state, gone).listeners


_SPECS: list[dict[str, Any] | None] = [
    None,  # no such VirtualService
    {"hosts": ["db"], "http": [{"route": [dest("db")], "timeout": "2s"}]},
    {"hosts": ["db"], "http": [{"route": [dest("db")], "timeout": "3s"}]},
    {"hosts": ["db"], "tcp": [{"route": [dest("db", "primary")]}]},
    {"hosts": ["db"], "tcp": [{"route": [dest("db", "primary", 3), dest("db", "replica", 1)]}]},
    {"hosts": ["db", "cache"], "tcp": [{"match": [{"port": 6379}],
                                        "route": [dest("cache")]}]},
    {"hosts": ["legacy"], "tcp": [{"route": [dest("db", "replica")]}]},
    {"hosts": ["legacy"], "http": [{"route": [dest("legacy")], "timeout": "1s"}]},
    {"hosts": ["legacy"], "http": [{"directResponse": {"status": 503}}]},
    {"hosts": ["vault"], "tls": [{"match": [{"sniHosts": ["vault"]}],
                                  "route": [dest("vault")]}]},
    {"hosts": ["vault", "a.example.com"], "tls": [{"match": [{"sniHosts": ["a.example.com"]}],
                                  "route": [dest("db")]}],
     "http": [{"route": [dest("vault")]}]},
    {"hosts": ["db"], "gateways": ["edge"], "tcp": [{"route": [dest("db", "replica")]}]},
    {"hosts": ["db"], "gateways": ["mesh", "edge"], "tcp": [{"route": [dest("cache")]}]},
]  # fmt: skip
_NAMES = ("r1", "r2", "r3")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.integers(0, len(_SPECS) - 1)),
                min_size=1, max_size=6))  # fmt: skip
def test_random_virtual_service_edits_give_each_proxy_its_own_build_s_listeners(
    edits: list[tuple[str, int]],
) -> None:
    """Random edits of three VirtualServices (HTTP, TCP and TLS routes, hosts, gateways;
    created, changed and deleted, in any order): after each, every proxy's listeners (and
    the rest of its snapshot) from the build taking the last one over equal a build of its
    own."""
    state = base_state()
    build = _built(state)
    for name, index in edits:
        spec = _SPECS[index]
        state = (
            _without_route(state, name)
            if spec is None
            else _with_route(state, istio("VirtualService", name, spec))
        )
        build = _built(state, previous=build, kinds={"VirtualService"})
        for proxy in PROXIES:
            # The whole snapshot: the virtual hosts taken over are checked the same way.
            assert build.snapshot(proxy) == build_snapshot(state, proxy), (name, spec)
