"""The real ``kubectl`` against ``fleetlog up``: server-side apply, ``top``, and the events of
``describe``.

Why this exists: ``kubectl apply --server-side`` is how declarative tools (and controllers)
share objects field by field; these tests pin that fleetlog keeps each field's manager in
``managedFields``, refuses another manager's change with kube's conflict message, takes the
field over with ``--force-conflicts``, and keeps the managers in the log (a replay of the log
shows the same ones).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_cli import Cluster
from tests.e2e.test_kubectl import Kubectl, kubectl  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, command: ["sleep", "1000"]}]
"""


def managers(run: Kubectl) -> dict[str, dict[str, object]]:
    shown = run("get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout
    return {m["manager"]: m for m in json.loads(shown)["metadata"]["managedFields"]}


def test_server_side_apply_twice_a_conflict_and_force(kubectl: Kubectl) -> None:  # noqa: F811
    first = kubectl("apply", "--server-side", "-f", "-", stdin=DEPLOYMENT)
    assert first.stdout.strip() == "deployment.apps/web serverside-applied"
    owned = managers(kubectl)
    assert set(owned) == {"kubectl"} and owned["kubectl"]["operation"] == "Apply"
    fields = owned["kubectl"]["fieldsV1"]
    assert isinstance(fields, dict)
    assert fields["f:spec"]["f:replicas"] == {}
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"web"}']["f:image"] == {}
    hidden = kubectl("get", "deployment", "web", "-o", "yaml").stdout
    assert "managedFields" not in hidden  # kubectl hides them unless asked

    version = kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.resourceVersion}")
    again = kubectl("apply", "--server-side", "-f", "-", stdin=DEPLOYMENT)
    assert again.stdout.strip() == "deployment.apps/web serverside-applied"
    after = kubectl("get", "deployment", "web", "-o", "jsonpath={.metadata.resourceVersion}")
    assert after.stdout == version.stdout  # the same apply again writes nothing

    scaled = DEPLOYMENT.replace("replicas: 1", "replicas: 3")
    refused = kubectl(
        "apply", "--server-side", "--field-manager=ci", "-f", "-", stdin=scaled, check=False
    )
    assert refused.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in (
        refused.stderr
    )
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "1"

    forced = kubectl(
        "apply", "--server-side", "--field-manager=ci", "--force-conflicts", "-f", "-",
        stdin=scaled,
    )  # fmt: skip
    assert forced.stdout.strip() == "deployment.apps/web serverside-applied"
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    owned = managers(kubectl)
    assert "f:replicas" in owned["ci"]["fieldsV1"]["f:spec"]  # type: ignore[index]
    assert "f:replicas" not in owned["kubectl"]["fieldsV1"]["f:spec"]  # type: ignore[index]

    # An ordinary write by another client takes the fields it changes.
    kubectl("patch", "deployment", "web", "--type=merge", "-p", '{"spec":{"paused":true}}')
    patcher = managers(kubectl)["kubectl-patch"]
    assert patcher["operation"] == "Update" and patcher["apiVersion"] == "apps/v1"
    assert patcher["fieldsV1"] == {"f:spec": {"f:paused": {}}}

    # A field only kubectl applied, which it then stops applying, is removed (it applies
    # ci's replicas now: the same value, so the two share that field).
    extra = scaled.replace("  replicas: 3\n", "  replicas: 3\n  minReadySeconds: 7\n")
    kubectl("apply", "--server-side", "-f", "-", stdin=extra)
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.minReadySeconds}").stdout == "7"
    kubectl("apply", "--server-side", "-f", "-", stdin=scaled)
    # removed, and defaulted again as any unset minReadySeconds is
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.minReadySeconds}").stdout == "0"
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"


def test_managed_fields_survive_a_replay_of_the_log(
    kubectl: Kubectl,  # noqa: F811
    cluster: Cluster,
) -> None:
    kubectl("apply", "--server-side", "-f", "-", stdin=DEPLOYMENT)
    kubectl("label", "deployment", "web", "team=a")
    before = managers(kubectl)
    assert set(before) == {"kubectl", "kubectl-label"}
    assert cluster.down() == 0
    cluster.up()
    wait_for(lambda: kubectl("get", "deployment", "web", check=False).returncode == 0)
    assert managers(kubectl) == before


def test_describe_shows_events_derived_from_the_log(kubectl: Kubectl) -> None:  # noqa: F811
    kubectl("apply", "--server-side", "-f", "-", stdin=DEPLOYMENT)

    def scaled() -> bool:
        page = kubectl("describe", "deployment", "web").stdout
        return "ScalingReplicaSet" in page

    wait_for(scaled)
    page = kubectl("describe", "deployment", "web").stdout
    events = page[page.index("Events:") :]
    assert "Type    Reason             Age" in events
    assert "Normal  ScalingReplicaSet" in events and "deployment-controller" in events
    assert "Scaled up replica set web-" in events

    rs = kubectl("get", "rs", "-l", "app=web", "-o", "name").stdout.strip()
    assert "SuccessfulCreate" in kubectl("describe", rs).stdout
    listed = kubectl(
        "get", "events", "--field-selector", "involvedObject.kind=Deployment", "-o", "json"
    ).stdout  # fmt: skip
    items = json.loads(listed)["items"]
    assert items and all(i["involvedObject"]["name"] == "web" for i in items)
    refused = kubectl("delete", "events", "--all", check=False)
    assert refused.returncode == 1 and "MethodNotAllowed" in refused.stderr + refused.stdout
