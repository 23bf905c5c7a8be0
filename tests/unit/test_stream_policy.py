"""The policy for an existing stream (streams/definitions.py), decided without a server."""

from __future__ import annotations

from core.access.signing import NONCE_TTL_NS
from streams.definitions import (
    audit_stream,
    fleet_stream,
    fleet_stream_config,
    leader_bucket,
    metrics_stream,
    plan,
)


def test_a_stream_as_specified_needs_nothing() -> None:
    decided = plan(fleet_stream(), fleet_stream_config())
    assert (decided.update, decided.refused, decided.kept) == ({}, [], [])


def test_settings_jetstream_leaves_out_at_their_zero_value_count_as_off() -> None:
    stored = {k: v for k, v in fleet_stream_config().items() if v is not False}
    assert plan(fleet_stream(), stored).update == {}
    without_atomic = {k: v for k, v in stored.items() if k != "allow_atomic"}
    assert plan(fleet_stream(), without_atomic).update == {"allow_atomic": True}


def test_limits_subjects_and_capabilities_are_updated() -> None:
    stored = {
        **fleet_stream_config(),
        "max_msg_size": 1000,
        "duplicate_window": 1,
        "subjects": ["fleet.evt.Pod.>"],
        "allow_direct": False,
    }
    decided = plan(fleet_stream(), stored)
    assert decided.refused == [] and decided.kept == []
    assert decided.update == {
        "max_msg_size": 1024 * 1024,
        "duplicate_window": 150 * 10**9,
        "subjects": ["fleet.evt.>"],
        "allow_direct": True,
    }


def test_subjects_in_another_order_are_the_same_subjects() -> None:
    spec = fleet_stream()
    spec.config["subjects"] = ["a.>", "b.>"]
    assert plan(spec, {**spec.config, "subjects": ["b.>", "a.>"]}).update == {}


def test_a_missing_guarantee_or_another_storage_refuses_the_whole_stream() -> None:
    stored = {
        **fleet_stream_config(),
        "storage": "memory",
        "deny_purge": False,
        "allow_rollup_hdrs": True,
        "max_msg_size": 1000,
    }
    decided = plan(fleet_stream(), stored)
    assert decided.refused == [
        "storage is memory (fleetlog needs file)",
        "deny_purge is off (fleetlog needs it on)",
        "allow_rollup_hdrs is on (fleetlog needs it off)",
    ]
    audit = plan(audit_stream(), {**audit_stream().config, "deny_delete": False})
    assert audit.refused == ["deny_delete is off (fleetlog needs it on)"]


def test_the_storage_of_a_stream_whose_data_may_be_lost_is_kept() -> None:
    spec = metrics_stream()
    decided = plan(spec, {**spec.config, "storage": "file", "max_age": 1})
    assert decided.refused == []
    assert decided.kept == ["storage is file (fleetlog would use memory)"]
    assert decided.update == {"max_age": 3600 * 10**9}
    bucket = leader_bucket()
    assert plan(bucket, {**bucket.config, "storage": "memory"}).kept == [
        "storage is memory (fleetlog would use file)"
    ]


def test_replicas_are_raised_never_lowered() -> None:
    assert plan(fleet_stream(1), fleet_stream_config(3)).update == {}
    assert plan(fleet_stream(3), fleet_stream_config(1)).update == {"num_replicas": 3}


def test_the_logs_duplicate_window_outlasts_every_signed_commands_nonce() -> None:
    # The log recognises a replayed signed command that appended by its Msg-Ids
    # (handlers.gateway.nonces): for as long as the command's signature may pass the skew check.
    assert fleet_stream_config()["duplicate_window"] >= NONCE_TTL_NS
