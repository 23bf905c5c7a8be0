"""Field managers across the two doors, against a real nats-server: an apply through the NATS
door (what ``fleetlog apply`` sends) keeps the managers the Kubernetes door recorded and is
recorded itself as the ``fleetlog`` manager's update.

Why this exists: without it a ``fleetlog apply`` stored its manifest without
``managedFields``, and a later ``kubectl apply --server-side`` found every field owned by
``before-first-apply`` (kube's name for fields nobody is known to have set) and its own
ownership lost.
"""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client

from streams.commandbus import CommandClient
from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

APPLY = {"Content-Type": "application/apply-patch+yaml"}
URL = "/api/v1/namespaces/default/pods/web"
CONFIG = """\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {team: a}}
spec:
  containers: [{name: c, image: busybox}]
"""


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["manager"], m["operation"]): m for m in obj["metadata"].get("managedFields", [])}


async def test_a_nats_door_apply_keeps_the_managers_and_records_fleetlog(
    api: API,  # noqa: F811
    nc: Client,
) -> None:
    status, created = await api.request("PATCH", URL + "?fieldManager=kubectl", CONFIG.encode(),
                                        **APPLY)  # fmt: skip
    assert status == 201, created
    client = CommandClient(nc, actor="user:alice")
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"team": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert (await client.send("Pod", "apply", {"manifest": manifest})).seqs
    status, stored = await api.request("GET", URL)
    assert status == 200
    found = managers(stored)
    assert set(found) == {("kubectl", "Apply"), ("fleetlog", "Update")}, found
    assert found[("fleetlog", "Update")]["fieldsV1"] == {"f:metadata": {"f:labels": {"f:team": {}}}}
    assert set(found[("kubectl", "Apply")]["fieldsV1"]) == {"f:spec"}  # the label is taken

    # The same apply again changes nothing (not even the manager's time).
    last = await api.store.stream_last_seq()
    again = await client.send("Pod", "apply", {"manifest": manifest})
    assert again.unchanged and await api.store.stream_last_seq() == last

    # kubectl applying its old value now conflicts with who really changed it.
    status, refused = await api.request("PATCH", URL + "?fieldManager=kubectl", CONFIG.encode(),
                                        **APPLY)  # fmt: skip
    assert status == 409, refused
    assert refused["message"] == (
        'Apply failed with 1 conflict: conflict with "fleetlog" using v1: .metadata.labels.team'
    )


async def test_a_re_apply_after_a_controller_wrote_status_is_unchanged_a_second_later(
    api: API,  # noqa: F811
    nc: Client,
) -> None:
    """A controller's status and annotations are no change of the person's: comparing with
    them, a re-apply "removed" them and restamped its manager's time, so crossing a second
    boundary made an unchanged apply "configured" (seen in the walkthrough e2e test)."""
    import asyncio

    client = CommandClient(nc, actor="user:alice")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    assert (await client.send("Deployment", "apply", {"manifest": deployment})).seqs
    controller = CommandClient(nc, actor="system:deployment-controller")
    status = {"observedGeneration": 1, "replicas": 0}
    body = {"status": status, "annotations": {"deployment.kubernetes.io/revision": "1"}}
    await controller.send("Deployment", "status", {"name": "web", "namespace": "default", **body})
    await asyncio.sleep(1.1)  # the manager's time has a resolution of one second
    again = await client.send("Deployment", "apply", {"manifest": deployment})
    assert again.unchanged, again
