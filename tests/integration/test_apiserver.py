"""The Kubernetes API against a real nats-server: the Python ``kubernetes`` client lists and
watches (a watch from an old resourceVersion replays history, which Kubernetes answers with 410
once etcd has compacted), every HTTP write is audited as coming over HTTPS from its peer, and
bad input answers the Kubernetes status and message with nothing appended to the log."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest
from nats.aio.client import Client

from core.kubeapi.tables import Columns
from handlers.apiserver import APIServer, ensure_pki, write_kubeconfig
from handlers.gateway import Gateway
from projections.cluster import ClusterModel
from projections.runtime import Projection
from streams.audit import read_audit
from streams.eventstore import EventStore
from tests.integration.support import eventually

pytestmark = pytest.mark.integration


@dataclass
class API:
    server: APIServer
    kubeconfig: Path
    ssl: ssl.SSLContext
    store: EventStore

    @property
    def url(self) -> str:
        return self.server.url

    async def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, self.url + path, data=body, headers=headers, ssl=self.ssl
            ) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:  # a watch: one JSON document a line
                return response.status, text

    def client(self) -> kubernetes.client.CoreV1Api:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=config
        )
        return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


@pytest.fixture
async def api(
    nc: Client, store: EventStore, gateway: Gateway, tmp_path: Path
) -> AsyncIterator[API]:
    projection = Projection(ClusterModel(), store)
    await projection.catch_up()
    await projection.follow()
    pki = ensure_pki(tmp_path / "pki", service_ip="10.96.0.1")
    columns = {"Pod": Columns(["NAME"], ["NODE"], lambda i, now, w: [i["name"], "n"])}
    server = APIServer(
        nc=nc, projection=projection, store=store, pki=pki, columns=columns, port=0,
        bookmark_every_s=0.5, secret_keys=gateway.secret_keys,
    )  # fmt: skip
    await server.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, pki, server=server.url)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.admin_cert, pki.admin_key)
    try:
        yield API(server, kubeconfig, context, store)
    finally:
        await server.stop()
        await projection.stop()


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


async def test_a_watch_from_an_old_resource_version_replays_history(api: API) -> None:
    core = api.client()
    first = await asyncio.to_thread(core.create_namespaced_pod, "default", pod("a", v="1"))
    old_rv = first.metadata.resource_version
    await asyncio.to_thread(
        core.patch_namespaced_pod,
        "a",
        "default",
        {"metadata": {"labels": {"v": "2"}}},
        _content_type="application/strategic-merge-patch+json",
    )
    await asyncio.to_thread(core.create_namespaced_pod, "default", pod("b"))
    await asyncio.to_thread(core.delete_namespaced_pod, "a", "default")

    listed = await asyncio.to_thread(core.list_namespaced_pod, "default")
    assert [p.metadata.name for p in listed.items] == ["b"]
    assert int(listed.metadata.resource_version) >= int(old_rv)

    def replay() -> list[tuple[str, str, str]]:
        watch = kubernetes.watch.Watch()
        seen = []
        for event in watch.stream(
            core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=3
        ):
            obj = event["object"]
            seen.append(
                (event["type"], obj.metadata.name, (obj.metadata.labels or {}).get("v", ""))
            )
            if len(seen) == 3:
                watch.stop()
        return seen

    # Everything after the first create, in the log's order: the label change, b, a's delete.
    assert await asyncio.to_thread(replay) == [
        ("MODIFIED", "a", "2"),
        ("ADDED", "b", ""),
        ("DELETED", "a", "2"),
    ]


async def test_a_watch_without_a_version_starts_with_the_state_then_follows(api: API) -> None:
    core = api.client()
    await asyncio.to_thread(core.create_namespaced_pod, "default", pod("x", app="web"))
    await asyncio.to_thread(core.create_namespaced_pod, "default", pod("y", app="db"))

    def follow() -> list[tuple[str, str]]:
        seen = []
        for event in kubernetes.watch.Watch().stream(
            core.list_namespaced_pod, "default", label_selector="app=web", timeout_seconds=4
        ):
            seen.append((event["type"], event["object"].metadata.name))
        return seen

    watching = asyncio.create_task(asyncio.to_thread(follow))
    await asyncio.sleep(1.0)
    # A label change out of the selector reads as a DELETED, as in Kubernetes.
    await asyncio.to_thread(
        core.patch_namespaced_pod,
        "x",
        "default",
        {"metadata": {"labels": {"app": "old"}}},
        _content_type="application/merge-patch+json",
    )
    assert await watching == [("ADDED", "x"), ("DELETED", "x")]


async def test_bookmarks_and_a_watch_before_the_log_starts(api: API) -> None:
    status, answer = await api.request(
        "GET", "/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=2"
    )
    lines = [json.loads(line) for line in answer.splitlines()]
    assert status == 200 and any(line["type"] == "BOOKMARK" for line in lines)
    bookmark = next(line for line in lines if line["type"] == "BOOKMARK")
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) > 0


async def test_every_http_write_is_audited_with_its_transport_and_peer(
    api: API, nc: Client
) -> None:
    status, _ = await api.request(
        "POST", "/api/v1/namespaces/default/pods", json.dumps(pod("audited")).encode(),
        **{"Content-Type": "application/json", "User-Agent": "probe/1"},
    )  # fmt: skip
    assert status == 201
    records: list[Any] = []

    async def recorded() -> bool:
        records[:] = [r for r in await read_audit(nc) if r.name == "audited"]
        return bool(records)

    await eventually(recorded)
    assert records[0].actor == "user:admin"
    assert records[0].source.startswith("https 127.0.0.1:") and records[0].source.endswith(
        "probe/1"
    )


async def test_bad_input_answers_kubernetes_statuses_and_appends_nothing(api: API) -> None:
    created = pod("web")
    status, obj = await api.request(
        "POST", "/api/v1/namespaces/default/pods", json.dumps(created).encode(),
        **{"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 201
    stale = obj["metadata"]["resourceVersion"]
    changed = {**obj, "metadata": {**obj["metadata"], "labels": {"v": "2"}}}
    status, _ = await api.request(
        "PUT", "/api/v1/namespaces/default/pods/web", json.dumps(changed).encode(),
        **{"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200
    last = await api.store.stream_last_seq()
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("POST", "/api/v1/namespaces/default/pods", b'{"kind": "Pod",', json_type,
         400, "BadRequest", "could not be decoded as JSON"),
        ("POST", "/api/v1/namespaces/default/pods", json.dumps(pod("p")).encode(),
         {"Content-Type": "text/plain"}, 415, "UnsupportedMediaType", "text/plain"),
        ("POST", "/api/v1/namespaces/default/gizmos", json.dumps(pod("p")).encode(), json_type,
         404, "NotFound", "the server could not find the requested resource"),
        ("POST", "/apis/apps/v2/namespaces/default/deployments", b"{}", json_type,
         404, "NotFound", "the server could not find the requested resource"),
        ("PUT", "/api/v1/namespaces/default/pods/web",
         json.dumps({**changed, "metadata": {**changed["metadata"], "resourceVersion": stale,
                                             "labels": {"v": "3"}}}).encode(),
         json_type, 409, "Conflict",
         'Operation cannot be fulfilled on pods "web": the object has been modified'),
        ("POST", "/api/v1/namespaces/default/pods", b" " * (3 * 1024 * 1024 + 1), json_type,
         413, "RequestEntityTooLarge", "limit is 3145728"),
        ("POST", "/api/v1/namespaces/default/pods",
         json.dumps({**pod("bad"), "spec": {"containers": [{"name": "c"}]}}).encode(),
         json_type, 422, "Invalid", 'Pod "bad" is invalid'),
        ("POST", "/api/v1/namespaces/default/pods", json.dumps(pod("web")).encode(), json_type,
         409, "AlreadyExists", 'pods "web" already exists'),
        ("GET", "/api/v1/namespaces/default/pods/nope", None, {}, 404, "NotFound",
         'pods "nope" not found'),
        ("GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.color%3Dred", None, {},
         400, "BadRequest", "field label not supported: spec.color"),
    ]  # fmt: skip
    for method, path, body, headers, code, reason, message in cases:
        status, answer = await api.request(method, path, body, **headers)
        assert (status, answer["kind"], answer["reason"], answer["code"]) == (
            code, "Status", reason, code,
        ), (path, answer)  # fmt: skip
        assert message in answer["message"], answer
    assert await api.store.stream_last_seq() == last


async def test_a_caller_without_a_client_certificate_is_unauthorized(api: API) -> None:
    context = ssl.create_default_context(cafile=str(api.server.pki.ca_cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/api/v1/pods", ssl=context) as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "Unauthorized"
        async with session.get(api.url + "/healthz", ssl=context) as response:
            assert response.status == 200


async def test_lists_page_with_continue_and_read_exactly_at_a_past_version(api: API) -> None:
    for name in ("p1", "p2", "p3"):
        status, obj = await api.request(
            "POST", "/api/v1/namespaces/default/pods", json.dumps(pod(name)).encode(),
            **{"Content-Type": "application/json"},
        )  # fmt: skip
        if name == "p2":
            at_p2 = obj["metadata"]["resourceVersion"]
    status, page = await api.request("GET", "/api/v1/namespaces/default/pods?limit=2")
    assert [i["metadata"]["name"] for i in page["items"]] == ["p1", "p2"]
    assert page["metadata"]["remainingItemCount"] == 1
    token = page["metadata"]["continue"]
    status, rest = await api.request("GET", f"/api/v1/namespaces/default/pods?continue={token}")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["p3"]
    assert "continue" not in rest["metadata"]
    status, then = await api.request(
        "GET", f"/api/v1/namespaces/default/pods?resourceVersion={at_p2}&resourceVersionMatch=Exact"
    )
    assert [i["metadata"]["name"] for i in then["items"]] == ["p1", "p2"]
    assert then["metadata"]["resourceVersion"] == at_p2
    status, table = await api.request(
        "GET", "/api/v1/pods", None, Accept="application/json;as=Table;v=v1;g=meta.k8s.io"
    )
    assert status == 200
    assert table["kind"] == "Table" and [c["priority"] for c in table["columnDefinitions"]] == [
        0,
        1,
    ]
    assert [r["cells"] for r in table["rows"]] == [["p1", "n"], ["p2", "n"], ["p3", "n"]]
    assert table["rows"][0]["object"]["metadata"]["namespace"] == "default"


async def test_a_second_start_reuses_the_certificates(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path / "pki", service_ip="10.96.0.1")
    before = {p.name: p.read_bytes() for p in first.directory.iterdir()}
    second = ensure_pki(tmp_path / "pki", service_ip="10.96.0.1")
    assert {p.name: p.read_bytes() for p in second.directory.iterdir()} == before
    assert {oct(p.stat().st_mode & 0o777) for p in second.directory.iterdir()} == {"0o600"}
    # A server certificate that no longer names the service address is made again.
    third = ensure_pki(tmp_path / "pki", service_ip="10.0.0.1")
    assert third.server_cert.read_bytes() != before["apiserver.crt"]
    assert third.ca_cert.read_bytes() == before["ca.crt"]
