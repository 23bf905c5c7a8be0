"""``fleetlog rollout`` and ``fleetlog get rs`` in-process (click's CliRunner, in a thread with its
own event loop) against a real nats-server with the gateway and the query service running.

No deployment controller runs here: the tests play its part through commands, as it will write
them — replica sets named ``<deployment>-<hash>`` controlled by the deployment's uid, with their
revision and change-cause annotations, and the deployment's ``status`` via the ``status`` verb.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import yaml
from nats.aio.client import Client

from core.errors import FleetError
from handlers.gateway import Gateway
from ops.client import Session
from ops.rollout import apply_deployment, controlled_by, plan_undo
from streams.commandbus import CommandClient
from streams.eventstore import EventStore
from streams.subjects import AggregateRef
from tests.integration.support import cli

pytestmark = pytest.mark.integration

REVISION = "deployment.kubernetes.io/revision"
CAUSE = "kubernetes.io/change-cause"


@pytest.fixture
def session(nc: Client, store: EventStore) -> Session:
    return Session(nc, store, CommandClient(nc, actor="user:alice"))


def deployment(name: str, image: str, cause: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if cause:
        metadata["annotations"] = {CAUSE: cause}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


async def stored(s: Session, kind: str, name: str) -> dict[str, Any]:
    (item,) = await s.query(kind, namespace="default", name=name)
    return item


async def controller_creates_replica_set(
    s: Session, name: str, revision: int, *, owner_uid: str | None = None
) -> dict[str, Any]:
    """What the deployment controller does for the deployment's current template: a replica
    set ``<name>-<hash>`` with the hash label, the revision and the deployment's change-cause."""
    owner = await stored(s, "Deployment", name)
    template = copy.deepcopy(owner["manifest"]["spec"]["template"])
    hash_label = f"h{revision}{template['spec']['containers'][0]['image'].replace(':', '')}"
    template["metadata"]["labels"]["pod-template-hash"] = hash_label
    annotations = {REVISION: str(revision)}
    cause = (owner["manifest"]["metadata"].get("annotations") or {}).get(CAUSE)
    if cause:
        annotations[CAUSE] = cause
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{hash_label}",
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                 "uid": owner_uid or owner["uid"], "controller": True, "blockOwnerDeletion": True}
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name, "pod-template-hash": hash_label}},
            "template": template,
        },
    }  # fmt: skip
    await s.commands.send("ReplicaSet", "create", {"manifest": manifest})
    return await stored(s, "ReplicaSet", f"{name}-{hash_label}")


async def record_status(s: Session, kind: str, name: str, **status: Any) -> None:
    await s.commands.send(kind, "status", {"name": name, "namespace": "default", "status": status})


async def test_history_undo_pause_and_resume(nats_server, session: Session, queries: None) -> None:
    url, s = nats_server.url, session
    created = await s.commands.send(
        "Deployment", "create", {"manifest": deployment("web", "app:v1", "create v1")}
    )
    first = await controller_creates_replica_set(s, "web", 1)
    await s.commands.send(
        "Deployment", "apply", {"manifest": deployment("web", "app:v2", "image v2")}
    )
    second = await controller_creates_replica_set(s, "web", 2)
    await s.commands.send(
        "Deployment", "status",
        {"name": "web", "status": {"observedGeneration": 2, "replicas": 3},
         "annotations": {REVISION: "2"}},
    )  # fmt: skip
    # Neither a replica set of another deployment's uid nor one of an earlier "web" counts.
    await s.commands.send("Deployment", "create", {"manifest": deployment("api", "app:v9")})
    await controller_creates_replica_set(s, "api", 7)
    stranger = await controller_creates_replica_set(s, "web", 5, owner_uid="earlier-web-uid")
    assert controlled_by([first, second, stranger], created.uid) == [first, second]

    result = await cli(url, "rollout", "history", "deployment/web")
    assert result.exit_code == 0, result.output
    assert [line.split(maxsplit=1) for line in result.output.splitlines()] == [
        ["deployment.apps/web"],
        ["REVISION", "CHANGE-CAUSE"],
        ["1", "create v1"],
        ["2", "image v2"],
    ]
    result = await cli(url, "rollout", "history", "deploy/web", "--revision", "1")
    header, _, body = result.output.partition("\n")
    assert (result.exit_code, header) == (0, "deployment.apps/web with revision #1")
    template = yaml.safe_load(body)
    assert template["metadata"]["labels"] == {"app": "web", "pod-template-hash": "h1appv1"}
    assert template["metadata"]["annotations"] == {CAUSE: "create v1"}
    assert template["spec"]["containers"][0]["image"] == "app:v1"
    result = await cli(url, "rollout", "history", "deployment/web", "--revision", "5")
    assert (result.exit_code, result.output) == (
        1,
        "error: unable to find the specified revision\n",
    )

    await s.commands.send("Deployment", "scale", {"name": "web", "replicas": 5})
    scaled = await stored(s, "Deployment", "web")

    result = await cli(url, "rollout", "undo", "deployment/web")
    assert (result.exit_code, result.output) == (0, "deployment.apps/web rolled back\n")
    rolled = await stored(s, "Deployment", "web")
    manifest = rolled["manifest"]
    expected = copy.deepcopy(first["manifest"]["spec"]["template"])
    del expected["metadata"]["labels"]["pod-template-hash"]
    assert manifest["spec"]["template"] == expected
    assert manifest["spec"]["replicas"] == 5  # the scale in between is kept
    assert manifest["metadata"]["annotations"] == {REVISION: "2", CAUSE: "create v1"}
    assert manifest["metadata"]["generation"] == scaled["manifest"]["metadata"]["generation"] + 1
    assert manifest["status"] == {"observedGeneration": 2, "replicas": 3}
    assert rolled["uid"] == created.uid and rolled["version"] == scaled["version"] + 1

    result = await cli(url, "rollout", "undo", "deployment.apps/web")
    assert result.output == (
        "deployment.apps/web skipped rollback (current template already matches revision 1)\n"
    )
    assert (await stored(s, "Deployment", "web"))["version"] == rolled["version"]
    result = await cli(url, "rollout", "undo", "deployment/web", "--to-revision", "2")
    assert (result.exit_code, result.output) == (0, "deployment.apps/web rolled back\n")
    back = (await stored(s, "Deployment", "web"))["manifest"]
    assert back["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v2"
    assert back["metadata"]["annotations"][CAUSE] == "image v2"
    result = await cli(url, "rollout", "undo", "deployment/web", "--to-revision", "9")
    assert (result.exit_code, result.output) == (
        1,
        "error: unable to find specified revision 9 in history\n",
    )

    result = await cli(url, "rollout", "pause", "deployment/web")
    assert (result.exit_code, result.output) == (0, "deployment.apps/web paused\n")
    assert (await stored(s, "Deployment", "web"))["manifest"]["spec"]["paused"] is True
    result = await cli(url, "rollout", "pause", "deployment/web")
    assert (result.exit_code, result.output) == (
        1,
        'error: deployments.apps "web" is already paused\n',
    )
    result = await cli(url, "rollout", "undo", "deployment/web")
    assert (result.exit_code, result.output) == (
        1,
        "error: you cannot rollback a paused deployment; resume it first with "
        "'fleetlog rollout resume deployment/web' and try again\n",
    )
    result = await cli(url, "rollout", "resume", "deployment/web")
    assert (result.exit_code, result.output) == (0, "deployment.apps/web resumed\n")
    assert (await stored(s, "Deployment", "web"))["manifest"]["spec"]["paused"] is False
    result = await cli(url, "rollout", "resume", "deployment/web")
    assert (result.exit_code, result.output) == (
        1,
        'error: deployments.apps "web" is not paused\n',
    )


async def test_get_replicasets(nats_server, session: Session, queries: None) -> None:
    s = session
    await s.commands.send("Deployment", "create", {"manifest": deployment("web", "app:v1")})
    rs = await controller_creates_replica_set(s, "web", 1)
    await s.commands.send("ReplicaSet", "scale", {"name": rs["name"], "replicas": 3})
    await record_status(
        s, "ReplicaSet", rs["name"], replicas=3, readyReplicas=2, observedGeneration=2
    )
    result = await cli(nats_server.url, "get", "rs")
    assert [line.split()[:4] for line in result.output.splitlines()] == [
        ["NAME", "DESIRED", "CURRENT", "READY"],
        ["web-h1appv1", "3", "3", "2"],
    ]
    result = await cli(nats_server.url, "get", "replicasets", "-o", "wide")
    assert result.output.splitlines()[1].split()[5:] == [
        "main",
        "app:v1",
        "app=web,pod-template-hash=h1appv1",
    ]


async def test_undo_needs_a_previous_revision(nats_server, session: Session, queries: None) -> None:
    url, s = nats_server.url, session
    await s.commands.send("Deployment", "create", {"manifest": deployment("solo", "app:v1")})
    result = await cli(url, "rollout", "history", "deployment/solo")
    assert result.output == "deployment.apps/solo\nNo rollout history found.\n"
    result = await cli(url, "rollout", "undo", "deployment/solo")
    assert (result.exit_code, result.output) == (
        1,
        'error: no rollout history found for deployment "solo"\n',
    )
    await controller_creates_replica_set(s, "solo", 1)
    result = await cli(url, "rollout", "undo", "deployment/solo")
    assert result.output == 'error: no rollout history found for deployment "solo"\n'
    result = await cli(url, "rollout", "history", "deployment/solo")
    assert result.output.splitlines()[2].split() == ["1", "<none>"]

    result = await cli(url, "rollout", "undo", "deployment/nope")
    assert (result.exit_code, result.output) == (1, 'error: deployments.apps "nope" not found\n')
    result = await cli(url, "rollout", "status", "rs/solo-h1appv1")
    assert result.exit_code == 1
    assert "fleetlog rollout works on deployments only, not on a replicaset" in result.output


WAITING = 'Waiting for deployment "web" rollout to finish: '
OBSERVING = "Waiting for deployment spec update to be observed..."
DONE = 'deployment "web" successfully rolled out'


async def test_rollout_status(nats_server, session: Session, queries: None) -> None:
    url, s = nats_server.url, session
    await s.commands.send("Deployment", "create", {"manifest": deployment("web", "app:v1")})
    result = await cli(url, "rollout", "status", "deployment/web", "--no-watch")
    assert (result.exit_code, result.output) == (0, OBSERVING + "\n")
    await record_status(s, "Deployment", "web", observedGeneration=1, replicas=1, updatedReplicas=1)
    result = await cli(url, "rollout", "status", "deploy/web", "--no-watch")
    assert result.output == WAITING + "1 out of 3 new replicas have been updated...\n"

    result = await cli(url, "rollout", "status", "deployment/web", "--timeout", "1")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        WAITING + "1 out of 3 new replicas have been updated...",
        'error: timed out after 1s waiting for deployment "web" rollout',
    ]

    # Watching: each message once, in order, until the rollout completes.
    watching = asyncio.create_task(
        cli(url, "rollout", "status", "deployment/web", "--timeout", "60s")
    )
    steps = [
        {"replicas": 5, "updatedReplicas": 3},
        {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 1},
        {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
    ]
    for step in steps:
        await asyncio.sleep(0.8)
        await record_status(s, "Deployment", "web", observedGeneration=1, **step)
    result = await asyncio.wait_for(watching, 30)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    expected = [
        WAITING + "1 out of 3 new replicas have been updated...",
        WAITING + "2 old replicas are pending termination...",
        WAITING + "1 of 3 updated replicas are available...",
        DONE,
    ]
    assert lines[0] == expected[0] and lines[-1] == DONE
    assert lines == sorted(set(lines), key=expected.index)  # once each, in order

    # A spec change not yet observed is waited for; a stalled rollout is an error.
    await s.commands.send("Deployment", "scale", {"name": "web", "replicas": 4})
    result = await cli(url, "rollout", "status", "deployment/web", "--no-watch")
    assert result.output == OBSERVING + "\n"
    stalled = {
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "web-abc" has timed out progressing.',
        "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    await record_status(
        s, "Deployment", "web",
        observedGeneration=2, replicas=3, updatedReplicas=3, conditions=[stalled],
    )  # fmt: skip
    result = await cli(url, "rollout", "status", "deployment/web")
    assert (result.exit_code, result.output) == (
        1,
        'error: deployment "web" exceeded its progress deadline\n',
    )
    result = await cli(url, "rollout", "status", "deployment/nope")
    assert (result.exit_code, result.output) == (1, 'error: deployments.apps "nope" not found\n')


async def history_of_two_revisions(s: Session) -> None:
    await s.commands.send("Deployment", "create", {"manifest": deployment("web", "app:v1")})
    await controller_creates_replica_set(s, "web", 1)
    await s.commands.send("Deployment", "apply", {"manifest": deployment("web", "app:v2")})
    await controller_creates_replica_set(s, "web", 2)


async def test_an_undo_decided_on_a_stale_version_is_refused(
    nats_server, session: Session, queries: None
) -> None:
    s = session
    await history_of_two_revisions(s)
    read = await stored(s, "Deployment", "web")
    owned = controlled_by(await s.query("ReplicaSet", namespace="default"), read["uid"])
    undo = plan_undo(read, owned, 0)
    assert undo.revision == 1 and undo.manifest is not None
    await s.commands.send("Deployment", "scale", {"name": "web", "replicas": 5})
    with pytest.raises(FleetError) as refused:
        await apply_deployment(s.commands, read, undo.manifest)
    assert refused.value.code == "conflict"
    assert str(refused.value) == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been '
        "modified since it was read; please run the command again"
    )
    after = (await stored(s, "Deployment", "web"))["manifest"]["spec"]
    assert (after["replicas"], after["template"]["spec"]["containers"][0]["image"]) == (5, "app:v2")


async def test_an_undo_is_accepted_when_the_gateway_has_not_cached_the_deployment(
    nats_server, session: Session, queries: None, gateway: Gateway
) -> None:
    await history_of_two_revisions(session)
    # As after a gateway restart, an eviction from its cache, or any refused command on it.
    gateway.repository.forget(AggregateRef("Deployment", "default", "web"))
    result = await cli(nats_server.url, "rollout", "undo", "deployment/web")
    assert (result.exit_code, result.output) == (0, "deployment.apps/web rolled back\n")
