"""Server-side dry run (``dryRun=All``) through the Kubernetes door against a real nats-server:
each write is decided as a real one (validation, admission, the object's rules, conflicts)
and answered with the object it would make, and nothing reaches the log — what ``kubectl
diff`` and ``--dry-run=server`` rely on."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from nats.aio.client import Client

from handlers.gateway import Gateway
from streams.audit import read_audit
from streams.eventstore import EventStore
from tests.integration.support import eventually
from tests.integration.test_apiserver import API, api

pytestmark = pytest.mark.integration
__all__ = ["api"]  # the door, as tests.integration.test_apiserver sets it up

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
CONTENT_JSON = {"Content-Type": "application/json"}


def deployment(replicas: int) -> bytes:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }).encode()  # fmt: skip


async def replicas_stored(api: API) -> Any:
    status, live = await api.request("GET", f"{DEPLOYMENTS}/web")
    return live["spec"]["replicas"] if status == 200 else status


async def test_every_write_verb_decides_and_answers_as_a_write_and_stores_nothing(
    api: API, store: EventStore, nc: Client
) -> None:
    start = await store.stream_last_seq()
    status, would = await api.request(
        "POST", f"{DEPLOYMENTS}?dryRun=All", deployment(2), **CONTENT_JSON
    )
    assert status == 201, would
    assert would["spec"]["replicas"] == 2 and would["metadata"]["uid"]
    assert "resourceVersion" not in would["metadata"]  # nothing was stored
    assert would["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted, as a create is
    assert await replicas_stored(api) == 404
    assert await store.stream_last_seq() == start

    status, live = await api.request("POST", DEPLOYMENTS, deployment(2), **CONTENT_JSON)
    assert status == 201, live
    written = await store.stream_last_seq()
    version = live["metadata"]["resourceVersion"]

    status, would = await api.request(
        "PUT", f"{DEPLOYMENTS}/web?dryRun=All", deployment(5), **CONTENT_JSON
    )
    assert status == 200, would
    assert would["spec"]["replicas"] == 5 and would["metadata"]["generation"] == 2
    assert would["metadata"]["resourceVersion"] == version
    patch = json.dumps({"spec": {"replicas": 7}}).encode()
    status, would = await api.request(
        "PATCH", f"{DEPLOYMENTS}/web?dryRun=All", patch,
        **{"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert (status, would["spec"]["replicas"]) == (200, 7), would
    status, _ = await api.request("DELETE", f"{DEPLOYMENTS}/web?dryRun=All")
    assert status == 200
    delete_options = json.dumps({"kind": "DeleteOptions", "apiVersion": "v1",
                                 "dryRun": ["All"]}).encode()  # fmt: skip
    status, _ = await api.request("DELETE", f"{DEPLOYMENTS}/web", delete_options, **CONTENT_JSON)
    assert status == 200
    assert await replicas_stored(api) == 2
    assert await store.stream_last_seq() == written

    # Refused as a write is: the object's rules, a create of what exists, a stale version.
    status, refused = await api.request(
        "POST", f"{DEPLOYMENTS}?dryRun=All", deployment(2), **CONTENT_JSON
    )
    assert (status, refused["reason"]) == (409, "AlreadyExists"), refused
    status, refused = await api.request(
        "PUT", f"{DEPLOYMENTS}/web?dryRun=All", deployment(-1), **CONTENT_JSON
    )
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    stale = json.loads(deployment(3))
    stale["metadata"]["resourceVersion"] = str(int(version) - 1)
    status, refused = await api.request(
        "PUT", f"{DEPLOYMENTS}/web?dryRun=All", json.dumps(stale).encode(), **CONTENT_JSON
    )
    assert (status, refused["reason"]) == (409, "Conflict"), refused
    status, refused = await api.request(
        "POST", f"{DEPLOYMENTS}?dryRun=Some", deployment(2), **CONTENT_JSON
    )
    assert status == 400
    assert refused["message"] == 'dryRun: Unsupported value: "Some": supported values: "All"'
    assert await store.stream_last_seq() == written

    dry: list[Any] = []

    async def audited() -> bool:
        records = await read_audit(nc)
        dry[:] = [r for r in records if r.annotations.get("fleetlog.dev/dry-run") == "true"]
        return len(dry) >= 5

    # Audited as what they were: dry runs (the five the gateway accepted), with no events.
    await eventually(audited)
    assert len(dry) == 5 and all(not r.events and not r.seqs for r in dry), dry


async def test_a_secrets_dry_run_answers_its_values_and_makes_no_data_key(
    api: API, store: EventStore, gateway: Gateway
) -> None:
    start = await store.stream_last_seq()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
              "stringData": {"pw": "s3cret"}}  # fmt: skip
    status, would = await api.request(
        "POST", "/api/v1/namespaces/default/secrets?dryRun=All",
        json.dumps(secret).encode(), **CONTENT_JSON,
    )  # fmt: skip
    assert status == 201, would
    assert base64.b64decode(would["data"]["pw"]) == b"s3cret"
    assert gateway.secret_keys is not None
    assert await gateway.secret_keys.find(would["metadata"]["uid"]) is None
    assert await store.stream_last_seq() == start
