"""A delta stream's view of what changed, found once per build rather than once per proxy over
every resource of the type: ``since`` marks a fully rebuilt type with the names whose version
differs from the last push's, a stream compares only those (and the re-created clusters'
endpoints it must send again), and a refused response restores what Envoy held of the names
it carried. Checked against the full comparison on every case."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from core.mesh.envoy.names import CLUSTER_TYPE, ENDPOINT_TYPE
from core.mesh.push import ProxyStatus
from handlers.mesh.push import MeshPush, _DeltaStream, _Memory
from handlers.mesh.xds import Encoded, Encoder, since
from projections.cluster import ClusterModel


def _cluster(name: str, *, policy: str = "ROUND_ROBIN") -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "EDS", "lb_policy": policy,
        "eds_cluster_config": {"eds_config": {"ads": {}}},
    }  # fmt: skip


NAMES = [f"outbound|80||svc-{i}.bench.svc.cluster.local" for i in range(6)]


def _clusters(random: set[int] = frozenset(), *, names: list[str] = NAMES) -> Encoded:
    return Encoder().encode(
        [
            _cluster(n, policy="RANDOM" if i in random else "ROUND_ROBIN")
            for i, n in enumerate(names)
        ]
    )


def test_a_rebuilt_type_is_marked_with_the_names_whose_version_changed() -> None:
    old, new = _clusters(), _clusters({2, 4})
    marked = since(new, old)
    assert marked.replaced == (old.version, frozenset({NAMES[2], NAMES[4]}))
    assert (marked.version, marked.resources, marked.versions) == (
        new.version, new.resources, new.versions,
    )  # fmt: skip
    # A new resource is among those to compare; nothing to compare with, or nothing changed,
    # or a resource gone (a full comparison says which): left as it was.
    grown = _clusters(names=[*NAMES, "outbound|80||new.bench.svc.cluster.local"])
    assert since(grown, old).replaced == (
        old.version, frozenset({"outbound|80||new.bench.svc.cluster.local"}),
    )  # fmt: skip
    assert since(new, None) is new
    assert since(old, _clusters()) is old
    assert since(_clusters(names=NAMES[:-1]), old).replaced is None


class _Projection:
    def __init__(self) -> None:
        self.model = ClusterModel()
        self.listeners: list[Any] = []


def _stream() -> _DeltaStream:
    push = MeshPush(_Projection(), insecure=True)  # type: ignore[arg-type]  # a model, no log
    return _DeltaStream(push)


def _holding(stream: _DeltaStream, type_url: str, held: Encoded, *, basis: bool) -> None:
    state = stream.delta[type_url]
    state.subscribed = state.wildcard = True
    state.known = dict(zip((n for n, _ in held.resources), held.versions, strict=True))
    state.basis = held.version if basis else ""


@pytest.mark.parametrize(
    ("changed", "force"),
    list(itertools.product([set(), {1}, {0, 5}], [set(), {1}, {3}, {2, 4}])),
)
def test_comparing_the_changed_names_alone_gives_what_a_full_comparison_gives(
    changed: set[int], force: set[int]
) -> None:
    old = _clusters()
    serving = since(_clusters(changed), old)
    results = []
    for basis in (True, False):  # with a basis: by the changed names; without: every name
        stream = _stream()
        _holding(stream, ENDPOINT_TYPE, old, basis=basis)
        stream.delta[ENDPOINT_TYPE].force = {NAMES[i] for i in force}
        results.append(stream._difference(stream.delta[ENDPOINT_TYPE], serving))
    fast, full = results
    assert fast == full
    assert [name for name, _, _ in fast[0]] == sorted(NAMES[i] for i in changed | force)


def test_a_refused_response_restores_what_envoy_held_of_its_names() -> None:
    held = _clusters(names=[*NAMES, "outbound|80||gone.bench.svc.cluster.local"])
    stream = _stream()
    stream.memory = _Memory(
        ProxyStatus(id="sidecar~127.0.0.2~app-0.bench~bench.svc", name="app-0", kind="sidecar")
    )
    _holding(stream, CLUSTER_TYPE, held, basis=True)
    state = stream.delta[CLUSTER_TYPE]
    known = dict(state.known)
    serving = _clusters({1})  # one changed, one gone
    changed, removed = stream._difference(state, serving)
    assert [n for n, _, _ in changed] == [NAMES[1]]
    assert removed == ["outbound|80||gone.bench.svc.cluster.local"]
    response = stream._respond_delta(CLUSTER_TYPE, state, serving, changed, removed)
    assert state.known != known
    status = stream.memory.status.of(CLUSTER_TYPE)
    stream._answered(CLUSTER_TYPE, state, status, "nack", "refused")
    assert state.known == known
    assert state.basis == ""
    assert response.removed_resources == ["outbound|80||gone.bench.svc.cluster.local"]


def test_the_encoder_remembers_small_texts_across_rounds_and_large_ones_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``next_round`` keeps (now walking only the round's own texts): a resource's
    canonical JSON is made once while remembered — a small one through rounds that do not
    use it, up to ``TEXTS_HELD``; a large one only into the next round."""
    import handlers.mesh.xds as xds

    made: list[str] = []
    real = xds.canonical

    def counted(resource: Any) -> str:
        made.append(str(resource.get("name")))
        return real(resource)

    monkeypatch.setattr(xds, "canonical", counted)
    monkeypatch.setattr(xds, "TEXTS_HELD", 3)
    small, large = _cluster("small"), {**_cluster("large"), "pad": "x" * xds.HELD_TEXT_MAX}
    encoder = Encoder()
    encoder.text(small), encoder.text(large)
    encoder.next_round()
    encoder.text(large)  # still remembered: used in the round before
    encoder.next_round()
    encoder.next_round()
    encoder.text(small), encoder.text(large)  # small: held through unused rounds; large: not
    assert made == ["small", "large", "large"]
    encoder.next_round()
    others = [_cluster(f"other-{i}") for i in range(3)]
    for other in others:
        encoder.text(other)
    encoder.next_round()  # over the bound: only this round's are kept
    made.clear()
    encoder.text(small), encoder.text(others[0])
    assert made == ["small"]


def test_an_object_encoded_last_round_gives_what_a_fresh_encoder_gives() -> None:
    """The encoder's identity path (a part taken over from the last build is its entry
    again) and its text path agree: same versions, names and messages as a first encoding."""
    objects = [_cluster(n) for n in NAMES]
    encoder = Encoder()
    first = encoder.encode(objects)
    encoder.next_round()
    changed = [*objects[:2], _cluster(NAMES[2], policy="RANDOM"), *objects[3:]]
    again = encoder.encode(changed)
    fresh = Encoder().encode(changed)
    assert (again.version, again.versions, again.texts) == (
        fresh.version, fresh.versions, fresh.texts,
    )  # fmt: skip
    assert [(n, r.SerializeToString()) for n, r in again.resources] == [
        (n, r.SerializeToString()) for n, r in fresh.resources
    ]
    assert again.resources[0][1] is first.resources[0][1]  # kept, not converted again
    assert again.version != first.version
