"""ConfigMaps and Secrets through the Kubernetes door, with the real kubectl: create, apply
(client-side, whose last-applied note holds the values), get -o yaml with data as kube shows
it, an unchanged re-apply, a patch that keeps the other values, delete; and the value in none
of the streams' bytes."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client

from core.kubeapi.resources import RESOURCES
from core.kubeapi.tables import Columns
from handlers.apiserver import APIServer, ensure_pki, write_kubeconfig
from handlers.apiserver.watch import object_of
from handlers.gateway import Gateway
from ops.render.objects import COLUMNS
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.definitions import AUDIT_STREAM, FLEET_STREAM
from streams.eventstore import EventStore
from streams.subjects import event_subject
from tests.e2e.test_kubectl import kubectl_binary
from tests.integration.test_secrets import stream_bytes

pytestmark = pytest.mark.integration

VALUE = "kubectl-s3cret-value-42"
MANIFEST = f"""
apiVersion: v1
kind: Secret
metadata:
  name: app
stringData:
  token: {VALUE}
  user: robot
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"""


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(kubeconfig.parent / "kubectl-cache"),
        }

    async def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = await asyncio.to_thread(
            subprocess.run, [kubectl_binary(), *args], input=stdin, capture_output=True,
            text=True, timeout=60, env=self.env,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout


@pytest.fixture
async def kubectl(
    nc: Client, store: EventStore, gateway: Gateway, tmp_path: Path
) -> AsyncIterator[Kubectl]:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    pki = ensure_pki(tmp_path / "pki", service_ip="10.96.0.1")
    server = APIServer(
        nc=nc, projection=projection, store=store, pki=pki, port=0,
        columns={kind: Columns(*entry) for kind, entry in COLUMNS.items()},
        secret_keys=gateway.secret_keys,
    )  # fmt: skip
    await server.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, pki, server=server.url)
    try:
        yield Kubectl(kubeconfig)
    finally:
        await server.stop()
        await projection.stop()


async def events_of(store: EventStore, name: str) -> list[object]:
    return list(await store.read_subject(event_subject("Secret", "default", name)))


async def test_kubectl_applies_gets_patches_and_deletes_secrets_never_storing_a_value(
    kubectl: Kubectl, nc: Client, store: EventStore
) -> None:
    created = await kubectl("apply", "-f", "-", stdin=MANIFEST)
    assert created.split() == ["secret/app", "created", "configmap/settings", "created"]
    version = (await events_of(store, "app")).__len__()
    # A second later, as on a slow host: the unchanged re-apply must not restamp its manager
    # (kube's managed fields change only with the object), which appended an event.
    await asyncio.sleep(1.1)
    again = await kubectl("apply", "-f", "-", stdin=MANIFEST)
    # kubectl sends stringData again (a live Secret never has it), so it says "configured",
    # as against kube-apiserver; the values are the same, so nothing is appended.
    assert again.split() == ["secret/app", "configured", "configmap/settings", "unchanged"]
    assert len(await events_of(store, "app")) == version
    # ``kubectl create secret`` sends protobuf, which this door does not speak yet; its
    # client-side dry run piped to apply is the same object.
    literal = await kubectl(
        "create", "secret", "generic", "lit", f"--from-literal=pw={VALUE}",
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    await kubectl("apply", "-f", "-", stdin=literal)

    shown = yaml.safe_load(await kubectl("get", "secret", "app", "-o", "yaml"))
    assert base64.b64decode(shown["data"]["token"]).decode() == VALUE
    assert "stringData" not in shown and shown["type"] == "Opaque"
    lit = yaml.safe_load(await kubectl("get", "secret", "lit", "-o", "yaml"))
    assert base64.b64decode(lit["data"]["pw"]).decode() == VALUE
    table = (await kubectl("get", "secrets")).splitlines()
    assert table[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert [row.split()[:3] for row in table[1:]] == [["app", "Opaque", "2"],
                                                      ["lit", "Opaque", "1"]]  # fmt: skip
    cm = yaml.safe_load(await kubectl("get", "configmap", "settings", "-o", "yaml"))
    assert cm["data"] == {"mode": "fast"}

    # A patch of one value keeps the other (computed on the values, not their sealed text).
    patch = '{"stringData": {"user": "other"}}'
    await kubectl("patch", "secret", "app", "--type", "merge", "-p", patch)
    patched = yaml.safe_load(await kubectl("get", "secret", "app", "-o", "yaml"))
    assert base64.b64decode(patched["data"]["token"]).decode() == VALUE
    assert base64.b64decode(patched["data"]["user"]).decode() == "other"

    await asyncio.sleep(0.2)  # audit records are written after the answers
    for stream in (FLEET_STREAM, AUDIT_STREAM):
        raw = await stream_bytes(nc, stream)
        assert VALUE.encode() not in raw, stream
        assert base64.b64encode(VALUE.encode()) not in raw, stream

    assert "deleted" in await kubectl("delete", "secret", "app", "lit")
    assert (await kubectl("get", "secrets", "-o", "name")).strip() == ""


def test_a_watch_shows_a_secrets_values_sealed_as_sizes() -> None:
    """A watch replays the log: a Secret's values appear as their sizes, never their sealed
    text (a get opens them)."""
    secrets = next(r for r in RESOURCES if r.kind == "Secret")
    item = {
        "namespace": "default", "uid": "u", "created_ns": 0,
        "manifest": {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "app", "namespace": "default"},
                     "data": {"token": "fleetlog-sealed:v1:" + "A" * 60}},
    }  # fmt: skip
    shown = object_of(secrets, item, 7)
    assert shown["data"] == {"token": "<sealed, 17 bytes>"}
