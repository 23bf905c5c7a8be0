"""ConfigMaps and Secrets against a real nats-server: a Secret's value never reaches a stream's
bytes, deleting it destroys its data key (the log's copies open no more), a get shows its
caller ``data`` as kube does, and invalid or forbidden writes append nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import msgpack
import pytest
import yaml
from click.testing import Result
from nats.aio.client import Client

from core.access.secretdata import SecretUnreadable, open_manifest
from core.api.commands import command_message
from handlers.gateway import Gateway
from ops.client import Session
from streams import jsapi
from streams.commandbus import CommandClient, CommandFailed
from streams.definitions import AUDIT_STREAM, FLEET_STREAM
from streams.eventstore import EventStore
from streams.subjects import command_subject, event_subject
from tests.integration.support import cli

pytestmark = pytest.mark.integration


async def ok(server: str, *args: str) -> Result:
    result = await cli(server, *args)
    assert result.exit_code == 0, result.output
    return result


VALUE = "hunter2-correct-horse-battery"


def secret(name: str = "db", **body: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **body}


async def stream_bytes(nc: Client, stream: str) -> bytes:
    """Every message of ``stream``, headers and data, raw."""
    js = jsapi.jetstream(nc)
    info = await js.stream_info(stream)
    out = bytearray()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except Exception:
            continue
        out += repr(msg.headers).encode() + (msg.data or b"")
    return bytes(out)


async def events_of(store: EventStore, kind: str, name: str) -> list[Any]:
    return [e.envelope for e in await store.read_subject(event_subject(kind, "default", name))]


async def test_a_secrets_value_appears_nowhere_in_the_streams_and_dies_with_its_key(
    gateway: Gateway, client: CommandClient, store: EventStore, nc: Client, queries: None
) -> None:
    encoded = base64.b64encode(VALUE.encode()).decode()
    await client.send(
        "Secret", "apply",
        {"manifest": secret(data={"password": encoded}, stringData={"user": "admin-" + VALUE})},
    )  # fmt: skip
    # A re-apply of the same values changes nothing (the sealed text is kept).
    same = await client.send(
        "Secret", "apply",
        {"manifest": secret(data={"password": encoded}, stringData={"user": "admin-" + VALUE})},
    )  # fmt: skip
    assert same.unchanged
    await asyncio.sleep(0.2)  # the audit records are written after the answers
    for stream in (FLEET_STREAM, AUDIT_STREAM):
        raw = await stream_bytes(nc, stream)
        assert VALUE.encode() not in raw and encoded.encode() not in raw, stream
    # Nor in the base64 of any other alignment of it.
    raw = await stream_bytes(nc, FLEET_STREAM)
    assert base64.b64encode(("admin-" + VALUE).encode()) not in raw

    # Its reader is shown data as kube shows it; stringData is merged and not kept.
    session = Session(nc=nc, store=store, commands=client)
    (shown,) = await session.query("Secret", namespace="default", name="db")
    manifest = shown["manifest"]
    assert base64.b64decode(manifest["data"]["password"]).decode() == VALUE
    assert base64.b64decode(manifest["data"]["user"]).decode() == "admin-" + VALUE
    assert "stringData" not in manifest and manifest["type"] == "Opaque"

    (created,) = await events_of(store, "Secret", "db")
    stored = created.payload["manifest"]
    assert gateway.secret_keys is not None
    data_key = await gateway.secret_keys.find(shown["uid"])
    assert data_key is not None
    opened = open_manifest(
        stored, data_key=data_key, namespace="default", name="db", uid=shown["uid"]
    )
    assert base64.b64decode(opened["data"]["password"]).decode() == VALUE

    await client.send("Secret", "delete", {"name": "db", "namespace": "default"})
    assert await gateway.secret_keys.find(shown["uid"]) is None
    # The events stay; what they hold opens for nobody now, not even with the old key's
    # bucket read raw: its message was erased.
    assert [e.type for e in await events_of(store, "Secret", "db")] == [
        "SecretCreated", "SecretDeleted",
    ]  # fmt: skip
    kv_raw = await stream_bytes(nc, "KV_fleet_secret_keys")
    assert kv_raw == b""
    with pytest.raises(SecretUnreadable):
        open_manifest(stored, data_key=bytes(32), namespace="default", name="db", uid=shown["uid"])


async def test_invalid_and_immutable_writes_are_refused_in_kubes_words_and_append_nothing(
    gateway: Gateway, client: CommandClient, store: EventStore
) -> None:
    async def refused(kind: str, manifest: dict[str, Any]) -> str:
        with pytest.raises(CommandFailed) as info:
            await client.send(kind, "apply", {"manifest": manifest})
        error = info.value
        # Every field error as ``field: message``, as kube lists them.
        listed = error.errors or [error]
        return "\n".join(f"{e.field}: {e.message}" for e in listed)

    message = await refused("Secret", secret("tls", type="kubernetes.io/tls",
                                             stringData={"tls.crt": "x"}))  # fmt: skip
    assert "data[tls.key]: Required value" in message
    message = await refused("Secret", secret("bad", stringData={"no/slash": VALUE}))
    assert "a valid config key must consist of alphanumeric characters" in message
    assert VALUE not in message
    message = await refused(
        "ConfigMap",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"},
         "data": {"a": "1"}, "binaryData": {"a": "MQ=="}},
    )  # fmt: skip
    assert "duplicate of key present in data" in message
    for name in ("tls", "bad"):
        assert await events_of(store, "Secret", name) == []
    assert await events_of(store, "ConfigMap", "dup") == []

    await client.send(
        "Secret", "apply", {"manifest": secret("frozen", immutable=True, stringData={"k": "v1"})}
    )
    message = await refused("Secret", secret("frozen", immutable=True, stringData={"k": "v2"}))
    assert "data: Forbidden: field is immutable when `immutable` is set" in message
    message = await refused("Secret", secret("frozen", stringData={"k": "v1"}))
    assert "immutable: Forbidden: field is immutable when `immutable` is set" in message
    message = await refused(
        "Secret", secret("frozen", immutable=True, type="kubernetes.io/basic-auth",
                         stringData={"k": "v1", "username": "u"}),
    )  # fmt: skip
    assert "field is immutable" in message
    assert [e.type for e in await events_of(store, "Secret", "frozen")] == ["SecretCreated"]


async def test_a_gateway_without_a_cluster_key_refuses_secrets(
    nc: Client, store: EventStore, gateway: Gateway
) -> None:
    keyless = Gateway(nc, store)
    answer = await keyless.handle(
        command_subject("Secret", "apply"),
        msgpack.packb(
            command_message(
                idempotency_key="keyless-1", actor="user:alice", source="test",
                body={"manifest": secret("k", stringData={"a": "b"})},
            )
        ),
    )  # fmt: skip
    assert answer["error"]["code"] == "unavailable", answer
    assert await events_of(store, "Secret", "k") == []


async def test_the_cli_shows_a_secret_to_its_reader_and_only_sizes_from_the_log(
    nats_server: Any, client: CommandClient, queries: None
) -> None:
    url = nats_server.url
    await client.send("Secret", "apply", {"manifest": secret("app", stringData={"token": VALUE})})
    changed = await client.send(
        "Secret", "apply", {"manifest": secret("app", stringData={"token": VALUE + "-2"})}
    )
    await client.send(
        "ConfigMap", "apply",
        {"manifest": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                      "data": {"mode": "fast"}}},
    )  # fmt: skip

    shown = yaml.safe_load((await ok(url, "get", "secret", "app", "-o", "yaml")).stdout)
    assert base64.b64decode(shown["data"]["token"]).decode() == VALUE + "-2"
    table = (await ok(url, "get", "secrets")).stdout.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert table[1].split()[:3] == ["app", "Opaque", "1"]
    described = (await ok(url, "describe", "secret", "app")).stdout
    assert f"token:  {len(VALUE) + 2} bytes" in described and VALUE not in described
    assert "mode:\n----\nfast" in (await ok(url, "describe", "configmap", "cfg")).stdout

    # The log's readers: that the value changed, and its size, never the value.
    history = (await ok(url, "history", "secret/app")).stdout
    assert "changed data.token" in history
    as_json = (await ok(url, "history", "secret/app", "-o", "json")).stdout
    before = (await ok(url, "get", "secret", "app", "--at", str(changed.seqs[0] - 1),
                       "-o", "yaml")).stdout  # fmt: skip
    replayed = (await ok(url, "replay", "--to", "now")).stdout
    for text in (history, as_json, before, replayed):
        assert VALUE not in text and base64.b64encode(VALUE.encode()).decode() not in text
        assert "fleetlog-sealed" not in text
    assert yaml.safe_load(before)["data"] == {"token": f"<sealed, {len(VALUE)} bytes>"}
    assert f"<sealed, {len(VALUE) + 2} bytes>" in replayed


async def test_a_secret_commands_fingerprint_in_the_log_is_keyed(
    gateway: Gateway, client: CommandClient, nc: Client
) -> None:
    """The write token stored with each event holds a fingerprint of the request; a plain hash
    of a request holding a secret value would let a reader of the log test guesses of it."""

    def plain_fingerprint(kind: str, body: dict[str, Any]) -> bytes:
        request = [command_subject(kind, "apply"), client.actor, body, None]
        return hashlib.sha256(msgpack.packb(request, use_bin_type=True)).hexdigest()[:16].encode()

    config = {"manifest": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                           "data": {"pin": "1234"}}}  # fmt: skip
    sealed = {"manifest": secret("pin", stringData={"pin": "1234"})}
    await client.send("ConfigMap", "apply", config)
    await client.send("Secret", "apply", sealed)
    raw = await stream_bytes(nc, FLEET_STREAM)
    assert plain_fingerprint("ConfigMap", config) in raw  # what a plain fingerprint looks like
    assert plain_fingerprint("Secret", sealed) not in raw
    # A retry (same key, same request) is still answered with the first outcome.
    key = "retry-of-pin-secret"
    first = await client.send("Secret", "apply", {"manifest": secret("pin2", stringData={"a": "1"})},
                              idempotency_key=key)  # fmt: skip
    again = await client.send("Secret", "apply", {"manifest": secret("pin2", stringData={"a": "1"})},
                              idempotency_key=key)  # fmt: skip
    assert again.replayed and again.seqs == first.seqs
