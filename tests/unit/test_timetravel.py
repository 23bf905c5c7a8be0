"""Time travel's pure parts (ops/timetravel.py), without a server: how a point is read (a
sequence, an instant with its nanoseconds, a time ago), what is refused, and how two states
are compared (created, deleted, changed with field paths, re-created) and written out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from core.errors import ValidationFailed
from core.meta.timestamps import parse_stamp
from ops.timetravel import (
    Change,
    ClusterState,
    Point,
    Position,
    diff_document,
    diff_records,
    diff_summary,
    diff_table,
    format_ns,
    parse_point,
    render_state,
)

NOW = 1_795_662_720_000_000_000  # 2026-11-26T03:12:00Z
H = 3600 * 10**9


def ns(text: str) -> int:
    instant = datetime.fromisoformat(text)
    return int(instant.replace(tzinfo=instant.tzinfo or UTC).timestamp()) * 10**9


@pytest.mark.parametrize(
    ("text", "point"),
    [
        ("123", Point("123", seq=123)),
        ("seq:123", Point("seq:123", seq=123)),
        ("SEQ:7", Point("SEQ:7", seq=7)),
        ("0", Point("0", seq=0)),
        ("now", Point("now")),
        ("-2h", Point("-2h", at_ns=NOW - 2 * H)),
        ("-30m", Point("-30m", at_ns=NOW - H // 2)),
        ("-1d2h", Point("-1d2h", at_ns=NOW - 26 * H)),
        ("-45s", Point("-45s", at_ns=NOW - 45 * 10**9)),
        ("2026-11-26T03:12:00Z", Point("2026-11-26T03:12:00Z", at_ns=NOW)),
        ("2026-11-26T04:12:00+01:00", Point("2026-11-26T04:12:00+01:00", at_ns=NOW)),
        ("2026-11-26T03:12:00", Point("2026-11-26T03:12:00", at_ns=NOW)),  # no offset: UTC
        ("2026-11-26 03:12:00", Point("2026-11-26 03:12:00", at_ns=NOW)),
        ("2026-11-26", Point("2026-11-26", at_ns=NOW - 3 * H - 12 * 60 * 10**9)),
    ],
)
def test_points(text: str, point: Point) -> None:
    assert parse_point(text, NOW) == point


def test_an_instant_keeps_its_nanoseconds() -> None:
    assert parse_stamp("2026-11-26T03:12:00.123456789Z") == NOW + 123_456_789
    assert parse_stamp("2026-11-26T03:12:00.5Z") == NOW + 500_000_000
    assert parse_stamp("2026-11-26T04:12:00.000000001+01:00") == NOW + 1
    assert parse_stamp("2026-11-26T03:12:00.1234567891Z") is None  # beyond nanoseconds


def test_a_formatted_instant_reads_back_exactly() -> None:
    for value in (NOW, NOW + 1, NOW + 123_456_789, ns("1999-12-31T23:59:59+00:00")):
        assert parse_stamp(format_ns(value)) == value
    assert format_ns(NOW + 42) == "2026-11-26T03:12:00.000000042Z"


@pytest.mark.parametrize(
    "text", ["", "abc", "-5", "-2x", "2h", "seq:", "seq:-1", "1.5", "2026-13-01", "yesterday"]
)
def test_anything_else_is_refused_with_what_a_point_is(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_point(text, NOW, option="--to")
    message = str(caught.value)
    assert message.startswith(f"--to {text!r} is not a point in the log")
    assert "123 or seq:123" in message and "-2h" in message


def test_position_labels() -> None:
    assert Position(0, None).label() == "sequence 0"
    assert Position(42, NOW).label() == "sequence 42 (2026-11-26T03:12:00.000000000Z)"
    assert Position(42, NOW).as_dict() == {
        "position": 42,
        "time": "2026-11-26T03:12:00.000000000Z",
    }


# -- diff ------------------------------------------------------------------------------------


def record(kind: str, name: str, uid: str, version: int, **manifest: Any) -> dict[str, Any]:
    namespace = "" if kind == "Node" else "default"
    return {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "manifest": {"kind": kind, "metadata": {"name": name}, **manifest},
        "version": version,
        "last_seq": version,
        "created_ns": NOW,
        "updated_ns": NOW,
        "last_event": "",
        "last_actor": "",
    }


def keyed(*records: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["kind"], r["namespace"], r["name"]): r for r in records}


def test_diff_names_created_deleted_changed_and_recreated_objects() -> None:
    containers = [{"name": "main", "image": "nginx:1"}]
    before = keyed(
        record("Pod", "web", "u1", 1, spec={"containers": containers}),
        record("Pod", "gone", "u2", 3, spec={}),
        record("Deployment", "api", "u3", 1, spec={"replicas": 1}),
        record("Node", "n1", "u4", 1, spec={}),
        record("Pod", "same", "u5", 1, spec={}),
        record("Pod", "again", "u6", 2, spec={"containers": containers}),
    )
    after = keyed(
        record("Pod", "web", "u1", 2, spec={"containers": [{"name": "main", "image": "nginx:2"}]}),
        record("Pod", "new", "u7", 1, spec={}),
        record("Deployment", "api", "u3", 2, spec={"replicas": 3}, status={"replicas": 3}),
        record("Node", "n1", "u4", 2, spec={"unschedulable": True}),
        record("Pod", "same", "u5", 4, spec={}),  # events, but the same state: not a change
        record("Pod", "again", "u8", 1, spec={"containers": containers}),
    )
    changes = diff_records(before, after)
    assert [(c.change, c.kind, c.name, c.fields) for c in changes] == [
        ("changed", "Deployment", "api", ["spec.replicas", "status"]),
        ("changed", "Node", "n1", ["spec.unschedulable"]),
        ("recreated", "Pod", "again", []),
        ("deleted", "Pod", "gone", []),
        ("created", "Pod", "new", []),
        ("changed", "Pod", "web", ["spec.containers[0].image"]),
    ]
    web = changes[-1]
    assert (web.uid, web.from_version, web.to_version) == ("u1", 1, 2)
    assert (changes[3].uid, changes[3].from_version, changes[3].to_version) == ("u2", 3, None)
    assert (changes[4].uid, changes[4].from_version, changes[4].to_version) == ("u7", None, 1)
    assert changes[2].uid == "u8"
    assert diff_records(before, before) == []


def test_diff_outputs() -> None:
    changes = [
        Change("created", "Pod", "default", "db", uid="u1", to_version=1),
        Change("changed", "Node", "", "n1", ["spec.unschedulable", "status"], "u2", 1, 2),
    ]
    start, end = Position(3, NOW), Position(9, NOW + H)
    table = diff_table(changes).splitlines()
    assert table[0].split() == ["CHANGE", "KIND", "NAMESPACE", "NAME", "FIELDS"]
    assert table[1].split() == ["created", "Pod", "default", "db", "-"]
    assert table[2].split() == ["changed", "Node", "-", "n1", "spec.unschedulable,status"]
    assert diff_summary(start, end, changes) == (
        "sequence 3 (2026-11-26T03:12:00.000000000Z) → sequence 9 "
        "(2026-11-26T04:12:00.000000000Z): 1 created, 0 deleted, 1 changed, 0 recreated"
    )
    document = json.loads(json.dumps(diff_document(start, end, changes)))
    assert document["from"] == {"position": 3, "time": "2026-11-26T03:12:00.000000000Z"}
    assert document["to"]["position"] == 9
    assert document["changes"][1] == {
        "change": "changed",
        "kind": "Node",
        "namespace": "",
        "name": "n1",
        "uid": "u2",
        "fields": ["spec.unschedulable", "status"],
        "from_version": 1,
        "to_version": 2,
    }


def test_a_replayed_state_reads_back() -> None:
    items = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}},
    ]
    state = ClusterState(Position(7, NOW), items, "ab" * 32, 7)
    assert json.loads(render_state(state, "json")) == {
        "position": 7,
        "time": "2026-11-26T03:12:00.000000000Z",
        "items": items,
    }
    text = render_state(state, "yaml")
    assert text.startswith("# fleetlog replay: sequence 7 (2026-11-26T03:12:00.000000000Z)")
    assert [d for d in yaml.safe_load_all(text) if d is not None] == items
    empty = ClusterState(Position(0, None), [], "cd" * 32, 0)
    assert [d for d in yaml.safe_load_all(render_state(empty, "yaml")) if d is not None] == []
    assert state.summary() == (
        f"replayed 7 events to sequence 7 (2026-11-26T03:12:00.000000000Z): 2 objects, "
        f"digest {'ab' * 32}"
    )
