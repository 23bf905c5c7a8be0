"""Server-side apply and events over HTTP, against a real nats-server: the Python client's
apply, and bad apply input refused with kube's status and message, nothing appended.

Why this exists: the kubectl tests cover the happy paths; these pin the refusals a client
library branches on (422 PatchOptions, 409 with FieldManagerConflict causes, 400 for a body
that is not YAML, 405 for a write to events) and that none of them reaches the log.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_apiserver import API, api  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

APPLY = {"Content-Type": "application/apply-patch+yaml"}
CONFIG = """\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {team: a}}
spec:
  containers: [{name: c, image: busybox}]
"""


async def test_apply_creates_then_conflicts_and_bad_input_appends_nothing(
    api: API,  # noqa: F811
) -> None:
    url = "/api/v1/namespaces/default/pods/web"
    status, created = await api.request("PATCH", url + "?fieldManager=one", CONFIG.encode(),
                                        **APPLY)  # fmt: skip
    assert status == 201, created
    entry = created["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("one", "Apply",
                                                                           "FieldsV1")  # fmt: skip
    assert entry["fieldsV1"]["f:metadata"]["f:labels"] == {"f:team": {}}
    last = await api.store.stream_last_seq()
    status, same = await api.request("PATCH", url + "?fieldManager=one", CONFIG.encode(), **APPLY)
    assert status == 200 and same["metadata"]["resourceVersion"] == created["metadata"][
        "resourceVersion"]  # fmt: skip
    other = CONFIG.replace("team: a", "team: b")
    cases = [
        (url, CONFIG, APPLY, 422, "Invalid",
         'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
         "for apply patch"),
        (url + "?fieldManager=two", other, APPLY, 409, "Conflict",
         'Apply failed with 1 conflict: conflict with "one": .metadata.labels.team'),
        (url + "?fieldManager=two", "a: [1, 2", APPLY, 400, "BadRequest", "error decoding YAML"),
        (url + "?fieldManager=two", "x: &a [1]\ny: *a\n", APPLY, 400, "BadRequest",
         "anchors and aliases"),
        (url + "?fieldManager=two&force=maybe", other, APPLY, 400, "BadRequest", "invalid force"),
        (url + "?force=true", json.dumps({"metadata": {"labels": {"x": "y"}}}),
         {"Content-Type": "application/merge-patch+json"}, 422, "Invalid",
         "force: Forbidden: may not be specified for non-apply patch"),
        (url + "?fieldManager=" + "m" * 129, other, APPLY, 422, "Invalid",
         "fieldManager: Too long: may not be more than 128 bytes"),
        ("/api/v1/namespaces/default/pods/other?fieldManager=two", CONFIG, APPLY, 400,
         "BadRequest", "does not match the name on the URL"),
        ("/api/v1/namespaces/default/events", "{}", {"Content-Type": "application/json"}, 405,
         "MethodNotAllowed", "so they are read-only"),
    ]  # fmt: skip
    for path, body, headers, code, reason, message in cases:
        method = "POST" if path.endswith("/events") else "PATCH"
        status, answer = await api.request(method, path, body.encode(), **headers)
        assert (status, answer["reason"], answer["code"]) == (code, reason, code), answer
        assert message in answer["message"], answer
        if reason == "Conflict":
            assert answer["details"]["causes"] == [
                {"reason": "FieldManagerConflict", "message": 'conflict with "one"',
                 "field": ".metadata.labels.team"},
            ]  # fmt: skip
    assert await api.store.stream_last_seq() == last

    status, forced = await api.request(
        "PATCH", url + "?fieldManager=two&force=true", other.encode(), **APPLY
    )
    assert status == 200 and forced["metadata"]["labels"] == {"team": "b"}
    managers = {m["manager"] for m in forced["metadata"]["managedFields"]}
    assert managers == {"one", "two"}
