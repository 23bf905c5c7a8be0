"""The cluster model's snapshot packed a record at a time (in a worker thread, so the event
loop is not held for the whole model) is byte for byte the one-call ``packb`` of
``snapshot()``, and a capture is the state when it was taken, whatever the model folds after."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.cluster import ClusterModel, ObjectRecord
from projections.runtime import CapturedSnapshots, packed_snapshot

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
plain = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
records = st.lists(
    st.tuples(
        st.sampled_from(["Pod", "Node", "Deployment", "Service"]),
        st.sampled_from(["", "default", "kube-system"]),
        st.text("abc-", min_size=1, max_size=6),
        st.dictionaries(st.text(max_size=5), plain, max_size=4),
        st.integers(0, 2**40),
        st.binary(max_size=32),
    ),
    max_size=30,
)


def model_of(rows: list[tuple[str, str, str, dict[str, Any], int, bytes]]) -> ClusterModel:
    model = ClusterModel()
    for kind, namespace, name, manifest, number, chain in rows:
        model.objects[(kind, namespace, name)] = ObjectRecord(
            kind, namespace, name, f"uid-{name}", manifest, number % 7, number, number,
            number + 1, f"{kind}Created", "user:test", chain,
        )  # fmt: skip
    return model


@settings(max_examples=200, deadline=None)
@given(records, st.integers(0, 2**40))
def test_packed_a_record_at_a_time_is_packb_of_the_snapshot(rows: Any, position: int) -> None:
    model = model_of(rows)
    assert isinstance(model, CapturedSnapshots)
    captured = model.snapshot_capture()
    packed = packed_snapshot(position, model.snapshot_items(captured), len(captured))
    whole = msgpack.packb({"position": position, "state": model.snapshot()}, use_bin_type=True)
    assert packed == whole
    assert msgpack.unpackb(packed, raw=False, strict_map_key=False)["position"] == position


def test_a_capture_is_the_state_when_taken() -> None:
    model = model_of([("Pod", "default", "a", {"spec": {"x": 1}}, 3, b"\x01")])
    before = model.snapshot()
    captured = model.snapshot_capture()
    # What folds do afterwards: fields changed on the record, a manifest replaced (an evolve
    # returns a new one), a record removed, another added.
    record = model.objects[("Pod", "default", "a")]
    record.version, record.last_seq, record.last_event = 9, 99, "PodBound"
    record.manifest = {"spec": {"x": 2}}
    model.objects[("Pod", "default", "b")] = model.objects.pop(("Pod", "default", "a"))
    assert list(model.snapshot_items(captured)) == before
