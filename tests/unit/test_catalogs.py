"""Event and command catalogs: schema versions and the upcaster mechanism."""

from __future__ import annotations

import types
import typing

import msgpack
import pytest

from core.api.commands import COMMAND_UPCASTERS, ScaleBody, parse_command
from core.api.events import CATALOG, PAYLOAD_FIELDS, Upcasters, payload_problem, schema_version
from core.api.summaries import summarize
from core.errors import ValidationFailed
from streams.envelope import Envelope, decode_envelope


def test_every_resource_kind_has_created_updated_deleted_events() -> None:
    for kind in ("Namespace", "Node", "Pod", "Deployment", "Service"):
        for suffix in ("Created", "Updated", "Deleted"):
            assert schema_version(f"{kind}{suffix}") == 1
    assert "ScaledTo" in CATALOG
    with pytest.raises(ValidationFailed, match="unknown event type"):
        schema_version("PodExploded")


def test_every_event_type_has_the_payload_model_the_catalog_names() -> None:
    from core.api.payloads import PAYLOAD_MODELS, EventPayload

    assert set(PAYLOAD_MODELS) == set(CATALOG)
    for name, entry in CATALOG.items():
        model = PAYLOAD_MODELS[name]
        assert issubclass(model, EventPayload) and model.__name__ == entry.payload
    assert PAYLOAD_MODELS["NodeReady"] is PAYLOAD_MODELS["NodeNotReady"]


def _accepted_types(annotation: object) -> set[type]:
    """The Python types a reader sees for a pydantic field annotation (``dict[str, Any]`` is
    a dict; ``float`` accepts an int, as pydantic does)."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return set().union(*(_accepted_types(arg) for arg in typing.get_args(annotation)))
    if annotation is None or annotation is type(None):
        return {type(None)}
    base = typing.get_origin(annotation) or annotation
    assert isinstance(base, type), annotation
    return {int, float} if base is float else {base}


def test_the_readers_payload_fields_are_the_payload_models_fields() -> None:
    from core.api.payloads import PAYLOAD_MODELS

    for name, entry in CATALOG.items():
        model = PAYLOAD_MODELS[name]
        fields = PAYLOAD_FIELDS[entry.payload]
        assert set(fields) == set(model.model_fields), name
        for field, info in model.model_fields.items():
            accepted, required = fields[field]
            assert required == info.is_required(), (name, field)
            assert set(accepted) == _accepted_types(info.annotation), (name, field)


def test_a_payload_a_fold_cannot_take_is_named_with_what_is_wrong() -> None:
    assert payload_problem("ScaledTo", {"replicas": 3, "previous": 1, "extra": object()}) is None
    assert payload_problem("PodExploded", {}) == "unknown event type 'PodExploded'"
    assert payload_problem("PodCreated", {"uid": "u"}) == "PodCreated payload lacks manifest"
    assert payload_problem("PodCreated", {}) == "PodCreated payload lacks manifest, uid"
    assert payload_problem("PodBound", {"node": 7}) == "PodBound payload field node is a int"
    assert payload_problem("PodBound", {"node": "n", "score": None}) is None


def test_upcasters_walk_old_payloads_up_one_version_at_a_time() -> None:
    upcasters = Upcasters({"ThingHappened": 3})

    @upcasters.register("ThingHappened", 1)
    def rename_count(payload: dict) -> dict:
        return {"replicas": payload["count"]}

    @upcasters.register("ThingHappened", 2)
    def add_reason(payload: dict) -> dict:
        return {**payload, "reason": "unknown (recorded before v3)"}

    assert upcasters.upcast("ThingHappened", 1, {"count": 3}) == (
        3,
        {"replicas": 3, "reason": "unknown (recorded before v3)"},
    )
    assert upcasters.upcast("ThingHappened", 3, {"replicas": 1, "reason": "x"}) == (
        3,
        {"replicas": 1, "reason": "x"},
    )
    with pytest.raises(ValidationFailed, match="newer than this build"):
        upcasters.upcast("ThingHappened", 4, {})
    with pytest.raises(ValueError, match="already exists"):
        upcasters.register("ThingHappened", 1)(rename_count)


def test_a_gap_in_the_upcaster_chain_is_reported() -> None:
    upcasters = Upcasters({"Gappy": 3})
    upcasters.register("Gappy", 2)(lambda p: p)
    with pytest.raises(ValidationFailed, match="no upcaster for Gappy from version 1"):
        upcasters.upcast("Gappy", 1, {})


def test_decoding_an_envelope_upcasts_its_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.api.events as events

    upcasters = Upcasters({"ScaledTo": 2})
    upcasters.register("ScaledTo", 1)(lambda p: {**p, "reason": p.get("reason") or "legacy"})
    monkeypatch.setattr(events, "UPCASTERS", upcasters)
    stored = Envelope(
        "id",
        "ScaledTo",
        1,
        "Deployment",
        "default",
        "web",
        2,
        0,
        "a",
        "c",
        "c",
        {"replicas": 3, "previous": 1},
    ).encode()
    decoded = decode_envelope(stored)
    assert decoded.schema_version == 2 and decoded.payload["reason"] == "legacy"


def test_garbage_is_not_an_envelope() -> None:
    for data in (b"\xc1", msgpack.packb([1]), msgpack.packb({"t": "x"})):
        with pytest.raises(ValidationFailed, match="not a fleetlog event envelope"):
            decode_envelope(data)


def test_commands_are_versioned_and_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"v": 1, "id": "key-12345678", "actor": "alice", "body": {"name": "web", "replicas": 3}}
    command = parse_command("Deployment", "scale", raw)
    assert isinstance(command.body, ScaleBody) and command.body.replicas == 3
    assert COMMAND_UPCASTERS.upcast("cmd:scale", 1, {"x": 1}) == (1, {"x": 1})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"id": "short", "actor": "a", "body": {}}, "id"),
        ({"id": "key-12345678", "actor": "", "body": {}}, "actor"),
        ({"id": "key-12345678", "actor": "a", "body": []}, "body"),
        (
            {"id": "key-12345678", "actor": "a", "body": {"name": "w", "replicas": -1}},
            "body.replicas",
        ),
        (
            {
                "id": "key-12345678",
                "actor": "a",
                "body": {"name": "w", "replicas": 1},
                "surprise": 1,
            },
            "surprise",
        ),
    ],
)
def test_malformed_commands_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_command("Deployment", "scale", raw)
    assert caught.value.field == field


def test_summaries_are_one_line() -> None:
    assert (
        summarize("ScaledTo", {"replicas": 3, "previous": 1, "reason": "hpa"})
        == "scaled from 1 to 3 replicas: hpa"
    )
    assert summarize("PodUpdated", {"changed": ["a", "b"]}) == "changed a, b"
    assert summarize("PodDeleted", {"reason": ""}) == "deleted"
    status = {
        "replicas": 3,
        "updatedReplicas": 2,
        "availableReplicas": 3,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
    }
    annotations = {"deployment.kubernetes.io/revision": "2"}
    assert summarize("DeploymentStatusUpdated", {"status": status, "annotations": annotations}) == (
        "status: 3 replicas, 2 updated, 3 available; Progressing=True (ReplicaSetUpdated); "
        "revision 2"
    )
    assert (
        summarize("QuotaCharged", {"pod": "ns/p", "amounts": {"pods": 1}, "reason": "counted"})
        == "charged ns/p: counted"
    )
