"""Setting streams up against a real nats-server: the policy for a stream that already exists
(streams/definitions.py): limits are brought up to date, a lost guarantee or another storage
type is refused with what to do and nothing is changed, and the optional streams never stop
the control plane."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType

from streams import definitions, jsapi
from streams.connection import connect
from streams.definitions import (
    AUDIT_STREAM,
    FLEET_STREAM,
    LEADER_BUCKET,
    LOGS_STREAM,
    METRICS_STREAM,
    STREAM_NOT_FOUND,
    StreamSetupError,
    ensure_streams,
    fleet_stream_config,
)
from streams.leases import LeaderLease
from tests.conftest import RunningServer, StartServer
from tests.integration.support import captured_logs

pytestmark = pytest.mark.integration


async def config_of(nc: Client, name: str) -> dict[str, Any]:
    info = await jsapi.of(nc).stream_info(name)
    assert "error" not in info, info
    config: dict[str, Any] = info["config"]
    return config


async def test_an_existing_stream_with_changed_limits_is_updated(nc: Client) -> None:
    api = jsapi.of(nc)
    before = await config_of(nc, FLEET_STREAM)
    changed = {**before, "max_msg_size": 1000, "duplicate_window": 30 * 10**9}
    assert "error" not in await api.update_stream(changed)
    with captured_logs(definitions) as logs:
        await ensure_streams(nc)
    after = await config_of(nc, FLEET_STREAM)
    assert after == before
    assert {
        "event": "streams.updated",
        "stream": FLEET_STREAM,
        "settings": ["duplicate_window", "max_msg_size"],
        "log_level": "info",
    } in logs


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"storage": "memory"}, "storage is memory (fleetlog needs file)"),
        ({"deny_purge": False}, "deny_purge is off (fleetlog needs it on)"),
    ],
)
async def test_a_log_that_lost_a_guarantee_is_refused_and_left_as_it_is(
    nats_server: RunningServer, setting: dict[str, Any], problem: str
) -> None:
    nc = await connect(nats_server.url, name="setup-test")
    try:
        api = jsapi.of(nc)
        config = {**fleet_stream_config(), "max_msg_size": 1000, **setting}
        assert "error" not in await api.create_stream(config)
        before = await config_of(nc, FLEET_STREAM)
        with pytest.raises(StreamSetupError) as refused:
            await ensure_streams(nc)
        message = str(refused.value)
        assert f"stream FLEET exists with settings fleetlog cannot accept: {problem}." in message
        assert "Nothing was changed." in message
        assert "nats stream edit FLEET" in message  # what to do
        assert await config_of(nc, FLEET_STREAM) == before  # not even the limit
        for later in (AUDIT_STREAM, LOGS_STREAM, METRICS_STREAM):
            assert (await api.stream_info(later))["error"]["err_code"] == STREAM_NOT_FOUND
    finally:
        await nc.close()


async def test_a_server_refusing_the_telemetry_streams_is_logged_not_fatal(
    start_server: StartServer,
) -> None:
    # Less file storage than FLEET_LOGS reserves (2 GiB): the server refuses that stream.
    small = await start_server("small", extra_config="jetstream { max_file_store: 1073741824 }\n")
    nc = await connect(small.url, name="setup-test")
    try:
        with captured_logs(definitions) as logs:
            await ensure_streams(nc)
        api = jsapi.of(nc)
        for name in (FLEET_STREAM, AUDIT_STREAM, METRICS_STREAM):
            assert "error" not in await api.stream_info(name), name
        assert (await api.stream_info(LOGS_STREAM))["error"]["err_code"] == STREAM_NOT_FOUND
        (refusal,) = [e for e in logs if e["event"] == "streams.optional_stream_unavailable"]
        assert refusal["stream"] == LOGS_STREAM and refusal["log_level"] == "error"
        assert "cannot create stream FLEET_LOGS" in refusal["error"]
    finally:
        await nc.close()


async def test_a_bucket_is_brought_up_to_date_when_it_is_opened(nc: Client) -> None:
    js = jsapi.jetstream(nc)
    # The fixture's ensure_streams set the bucket up; someone else's comes in its place.
    await js.delete_key_value(LEADER_BUCKET)
    await js.create_key_value(
        KeyValueConfig(bucket=LEADER_BUCKET, history=1, ttl=60.0, storage=StorageType.MEMORY)
    )
    with captured_logs(definitions) as logs:
        lease = await LeaderLease.open(nc, "role", "me")
    assert await lease.try_lead()
    stored = await config_of(nc, f"KV_{LEADER_BUCKET}")
    assert stored["max_age"] == 15 * 10**9  # the TTL fleetlog's leases are renewed within
    assert stored["storage"] == "memory"  # a lease may be lost with the server: kept, said so
    assert [e["setting"] for e in logs if e["event"] == "streams.setting_kept"] == [
        "storage is memory (fleetlog would use file)"
    ]
