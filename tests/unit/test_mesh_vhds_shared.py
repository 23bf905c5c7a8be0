"""The handler's answer to on-demand virtual-host requests, made once per build for the proxies
asking alike and chosen by name (``handlers.mesh.push._DeltaStream._asked_hosts``,
``handlers.mesh.xds.chosen``): the answer each proxy gets must be exactly what resolving and
choosing on its own, over every host of the build, gave it (the same resources, versions,
aliases and not-found names)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection
from typing import Any

import pytest

from core.mesh.envoy.build import MeshBuild
from core.mesh.envoy.model import MeshState, Proxy
from core.mesh.envoy.names import PASSTHROUGH_CLUSTER
from core.mesh.push import ProxyStatus
from core.mesh.vhds import VIRTUAL_HOST_TYPE, passthrough_host, resolve
from handlers.mesh import push as push_module
from handlers.mesh.push import MeshPush, _Asked, _DeltaStream, _Memory
from handlers.mesh.xds import Encoded, _encoded, _entries, chosen, combined
from projections.cluster import ClusterModel
from tests.mesh_scenario import NS, dest, istio, service

SERVICES = 40


class _Projection:
    def __init__(self) -> None:
        self.model = ClusterModel()
        self.listeners: list[Any] = []


def _state(*, timeout: str = "5s") -> MeshState:
    http = [{"name": "http", "port": 8080}]
    services = [service(f"svc{i}", f"10.96.1.{i}", http) for i in range(SERVICES)]
    rules = [
        istio(
            "VirtualService",
            f"svc{i}",
            {
                "hosts": [f"svc{i}"],
                "http": [{"route": [dest(f"svc{i}")], "timeout": timeout}],
            },
        )
        for i in range(0, SERVICES, 3)
    ]
    entries = [
        istio(
            "ServiceEntry",
            name,
            {
                "hosts": [host],
                "location": "MESH_EXTERNAL",
                "resolution": "NONE",
                "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
            },
        )
        for name, host in (("wild", "*.example.com"), ("deeper", "*.b.example.com"))
    ]
    return MeshState(services=services, virtual_services=rules, service_entries=entries)


def _shared(push: MeshPush, state: MeshState) -> Encoded:
    build = MeshBuild(state)
    hosts = build.virtual_hosts(Proxy(namespace=NS, bind_address="127.0.0.2", on_demand=True))
    return dataclasses.replace(push.encode(hosts), index=build.host_index)


def _aliases(rng: random.Random) -> set[str]:
    names = {f"8080/svc{i}" for i in rng.sample(range(SERVICES), 12)}
    names |= {f"8080/svc{i}.{NS}.svc.cluster.local:8080" for i in rng.sample(range(SERVICES), 5)}
    names |= {"8080/a.b.example.com", "8080/x.example.com", "8080/nowhere.org", "9090/svc1"}
    return set(rng.sample(sorted(names), rng.randint(1, len(names))))


def _chosen_by_walk(
    encoded: Encoded,
    names: Collection[str],
    *,
    refused: Collection[tuple[str, str]] = (),
    good: Encoded | None = None,
) -> Encoded:
    """The former ``chosen``: a walk of every resource of the build."""
    kept = {e[0]: e for e in _entries(good)} if good is not None and refused else {}
    entries = []
    for entry in _entries(encoded):
        if entry[0] not in names:
            continue
        if (entry[0], entry[2]) in refused:
            if entry[0] in kept:
                entries.append(kept[entry[0]])
            continue
        entries.append(entry)
    return _encoded(entries)


def _answer_alone(stream: _DeltaStream, shared: Encoded) -> _Asked:
    """The former per-stream answer: every request resolved, then chosen by a walk."""
    captured = stream.proxy is not None and stream.proxy.captured
    aliases: dict[str, list[str]] = {}
    extra: list[Encoded] = []
    missing: list[str] = []
    assert shared.index is not None
    for alias in sorted(stream.delta[VIRTUAL_HOST_TYPE].names):
        found = resolve(shared.index, alias)
        if found is None and captured:
            host = passthrough_host(alias, cluster=PASSTHROUGH_CLUSTER)
            extra.append(stream.push.encode([host]))
            found = (host["name"],)
        if found is None:
            missing.append(alias)
            continue
        for name in found:
            aliases.setdefault(name, [])
        aliases[found[0]].append(alias)
    good = stream.memory.good.get(VIRTUAL_HOST_TYPE) if stream.memory is not None else None
    encoded = _chosen_by_walk(shared, aliases, refused=stream.refused_hosts, good=good)
    if extra:
        encoded = combined(encoded, *extra)
    return _Asked(encoded=encoded, aliases=aliases, missing=tuple(missing))


def _stream(push: MeshPush, names: set[str], *, captured: bool = False) -> _DeltaStream:
    stream = _DeltaStream(push)
    stream.proxy = Proxy(namespace=NS, bind_address="127.0.0.2", on_demand=True, captured=captured)
    stream.memory = _Memory(ProxyStatus(id=f"sidecar~{id(stream)}", name="app", kind="sidecar"))
    stream.delta[VIRTUAL_HOST_TYPE].names = set(names)
    return stream


@pytest.mark.parametrize("seed", range(20))
def test_choosing_by_name_gives_what_a_walk_of_every_host_gave(seed: int) -> None:
    rng = random.Random(seed)
    push = MeshPush(_Projection(), insecure=True)  # type: ignore[arg-type]  # a model, no log
    shared, before = _shared(push, _state(timeout="6s")), _shared(push, _state())
    all_names = [name for name, _ in shared.resources]
    names = [*rng.sample(all_names, rng.randint(0, len(all_names))), "8080/none", "9090/x"]
    versions = dict(zip(all_names, shared.versions, strict=True))
    refused = {(n, versions[n]) for n in rng.sample(names[:-2], min(3, len(names) - 2))}
    refused.add((all_names[0], "not-a-version"))
    for good in (None, before):
        for asked in (names, set(names), dict.fromkeys(names)):
            assert chosen(shared, asked, refused=refused, good=good) == _chosen_by_walk(
                shared, asked, refused=refused, good=good
            )
        assert chosen(shared, names) == _chosen_by_walk(shared, names)


@pytest.mark.parametrize("seed", range(10))
def test_proxies_asking_alike_share_one_answer_each_the_one_they_had_alone(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    resolved: list[str] = []

    def counted(index: Any, alias: str) -> Any:
        resolved.append(alias)
        return resolve(index, alias)

    monkeypatch.setattr(push_module, "resolve", counted)
    push = MeshPush(_Projection(), insecure=True)  # type: ignore[arg-type]  # a model, no log
    alike, other = _aliases(rng), _aliases(rng) | {"8080/svc0"}
    streams = [_stream(push, alike) for _ in range(5)]
    odd = _stream(push, other)
    captured = _stream(push, alike, captured=True)
    for state in (_state(), _state(timeout="7s")):  # a build, then a VirtualService change
        shared = _shared(push, state)
        resolved.clear()
        answers = [s._asked_hosts(shared) for s in [*streams, odd, captured]]
        # One resolution per distinct set of requests (and capture), not one per proxy.
        assert len(resolved) == len(alike) + len(other) + len(alike)
        assert all(a is answers[0] for a in answers[1:5])
        assert answers[6] is not answers[0]
        for stream, answer in zip([*streams, odd, captured], answers, strict=True):
            assert answer == _answer_alone(stream, shared)
        push._asked.clear()  # as each push does


def test_a_proxy_that_refused_a_host_keeps_its_own_answer() -> None:
    push = MeshPush(_Projection(), insecure=True)  # type: ignore[arg-type]  # a model, no log
    names = {"8080/svc0", "8080/svc3", "8080/svc4"}
    before, shared = _shared(push, _state()), _shared(push, _state(timeout="9s"))
    plain, refusing = _stream(push, names), _stream(push, names)
    assert refusing.memory is not None
    refusing.memory.good[VIRTUAL_HOST_TYPE] = plain._asked_hosts(before).encoded
    changed = next(n for n, _ in plain._asked_hosts(shared).encoded.resources if "svc0" in n)
    refusing.refused_hosts.add((changed, shared.by_name[changed][0]))
    mine, theirs = refusing._asked_hosts(shared), plain._asked_hosts(shared)
    assert mine is not theirs and mine == _answer_alone(refusing, shared)
    assert mine.encoded.by_name[changed] == before.by_name[changed]  # the version it acked
    assert theirs.encoded.by_name[changed] == shared.by_name[changed]
