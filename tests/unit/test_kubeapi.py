"""The Kubernetes API's pure rules (``core.kubeapi``): paths, resourceVersion and continue
rules, field selectors, patches, objects a client writes, Status objects and OpenAPI."""

from __future__ import annotations

import json

import pytest

from core.errors import FieldError, FleetError
from core.kubeapi import openapi
from core.kubeapi.objects import writable
from core.kubeapi.patch import json_patch, merge_patch, strategic_merge_patch
from core.kubeapi.paths import parse_resource_path
from core.kubeapi.resources import BY_KIND
from core.kubeapi.selectors import parse_field_selector
from core.kubeapi.status import APIError, Target, from_fleet_error
from core.kubeapi.versions import Continue, ReadAt, list_read, watch_from

PODS = BY_KIND["Pod"]


def test_paths_tell_a_namespace_from_the_resources_in_it() -> None:
    pods = parse_resource_path("", "v1", ["namespaces", "default", "pods", "web"])
    assert (pods.resource.kind, pods.namespace, pods.name) == ("Pod", "default", "web")
    namespace = parse_resource_path("", "v1", ["namespaces", "default"])
    assert (namespace.resource.kind, namespace.name) == ("Namespace", "default")
    everywhere = parse_resource_path("", "v1", ["pods"])
    assert (everywhere.namespace, everywhere.name) == (None, None)
    sub = parse_resource_path("apps", "v1", ["namespaces", "a", "deployments", "w", "scale"])
    assert sub.subresource == "scale"
    for bad in (["gizmos"], ["namespaces", "a", "nodes", "n"], ["pods", "a", "b", "c"]):
        with pytest.raises(APIError) as refused:
            parse_resource_path("", "v1", bad)
        assert refused.value.code == 404


def test_list_resource_version_rules_are_kubernetes() -> None:
    assert list_read(None, None, continuing=False) == ReadAt("latest")
    assert list_read("0", None, continuing=False) == ReadAt("not_older_than", 0)
    assert list_read("7", "Exact", continuing=False) == ReadAt("exact", 7)
    for rv, match, continuing, words in (
        (None, "Exact", False, "forbidden unless resourceVersion is provided"),
        ("0", "Exact", False, 'exact" is forbidden for resourceVersion "0"'),
        ("5", "Sometime", False, "Unsupported value"),
        ("5", None, True, "not allowed when using continue"),
        ("abc", None, False, 'invalid resourceVersion "abc"'),
    ):
        with pytest.raises(APIError) as refused:
            list_read(rv, match, continuing=continuing)
        assert refused.value.code == 400 and words in refused.value.message


def test_watch_from_no_version_starts_with_the_state_and_from_a_number_replays() -> None:
    assert watch_from(None, None, None).initial
    assert watch_from("0", None, None).initial
    assert watch_from("12", None, None) == watch_from("12", None, "false")
    assert not watch_from("12", None, None).initial and watch_from("12", None, None).rv == 12
    streaming = watch_from("", "NotOlderThan", "true")
    assert streaming.initial and streaming.initial_events_end
    with pytest.raises(APIError):
        watch_from("", None, "true")


def test_continue_tokens_round_trip_and_garbage_is_a_bad_request() -> None:
    token = Continue(rv=9, after=("default", "web"), exact=True)
    assert Continue.decode(token.encode()) == token
    for garbage in ("!!!", "e30", "x" * 5000):
        with pytest.raises(APIError) as refused:
            Continue.decode(garbage)
        assert refused.value.code == 400


def test_field_selectors_read_the_fields_kube_indexes() -> None:
    pod = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running"}}  # fmt: skip
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Failed", "Pod").matches(pod)
    assert not parse_field_selector("spec.nodeName==n2", "Pod").matches(pod)
    assert parse_field_selector("spec.nodeName=", "Pod").matches({"spec": {}})
    assert parse_field_selector(r"metadata.name=a\,b", "Pod").requirements[0].value == "a,b"
    with pytest.raises(APIError) as refused:
        parse_field_selector("spec.nodeName=n1", "Deployment")
    assert refused.value.message == "field label not supported: spec.nodeName"


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    target = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                       "finalizers": ["f1"]}}  # fmt: skip
    patched = strategic_merge_patch(
        target,
        {"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}],
                  "finalizers": ["f2"]}},
    )  # fmt: skip
    assert patched == {"spec": {"containers": [{"name": "b", "image": "z"}],
                                "finalizers": ["f1", "f2"]}}  # fmt: skip
    ordered = strategic_merge_patch(
        target,
        {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                  "containers": [{"name": "a", "image": "w"}]}},
    )  # fmt: skip
    assert [c["image"] for c in ordered["spec"]["containers"]] == ["y", "w"]
    # A merge patch replaces the list whole, null removes.
    assert merge_patch(target, {"spec": {"containers": [], "finalizers": None}}) == {
        "spec": {"containers": []}
    }


def test_json_patch_is_all_or_nothing() -> None:
    target = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(target, [{"op": "add", "path": "/a/-", "value": 3},
                               {"op": "move", "from": "/b/c", "path": "/d"}]) == {
        "a": [1, 2, 3], "b": {}, "d": 1,
    }  # fmt: skip
    with pytest.raises(APIError) as refused:
        json_patch(target, [{"op": "remove", "path": "/a/0"},
                            {"op": "test", "path": "/b/c", "value": 2}])  # fmt: skip
    assert refused.value.code == 422 and target == {"a": [1, 2], "b": {"c": 1}}


def test_a_written_object_loses_server_fields_and_must_match_its_url() -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
            "metadata": {"name": "web", "uid": "u1", "resourceVersion": "5",
                         "creationTimestamp": "x"}}  # fmt: skip
    written = writable(body, PODS, namespace="default", name="web")
    assert written.manifest == {"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": "web", "namespace": "default"}}  # fmt: skip
    assert (written.preconditions.uid, written.preconditions.resource_version) == ("u1", 5)
    generated = writable(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}},
        PODS, namespace="default", name_entropy=bytes(8),
    )  # fmt: skip
    assert generated.name == "web-bbbbb"
    for bad, words in (
        ({**body, "metadata": {"name": "web", "namespace": "other"}}, "namespace"),
        ({**body, "metadata": {"name": "other"}}, "does not match the name on the URL"),
        ({**body, "kind": "Service"}, "does not match"),
    ):
        with pytest.raises(APIError) as refused:
            writable(bad, PODS, namespace="default", name="web")
        assert refused.value.code == 400 and words in refused.value.message


def test_gateway_refusals_become_kubernetes_statuses() -> None:
    target = Target("deployments", "apps", "web", "Deployment")
    invalid = from_fleet_error(
        FleetError("bad", code="invalid", errors=[FieldError("spec.replicas", "Invalid value: -1"),
                                                  FieldError("spec.x", "unknown field")]),
        target,
    )  # fmt: skip
    assert (invalid.code, invalid.reason) == (422, "Invalid")
    assert invalid.message == (
        'Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1, spec.x: unknown field]'
    )
    assert invalid.status()["details"]["causes"][0]["field"] == "spec.replicas"
    conflict = from_fleet_error(FleetError("stale", code="conflict"), target)
    assert (conflict.code, conflict.reason) == (409, "Conflict")
    assert conflict.message.startswith('Operation cannot be fulfilled on deployments.apps "web"')
    assert from_fleet_error(FleetError("x", code="not_found"), target).status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "web" not found', "reason": "NotFound", "code": 404,
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
    }  # fmt: skip
    # API Priority and Fairness refused it: kube's 429, with when to try again.
    throttled = from_fleet_error(
        FleetError("Too many requests, please try again later.", code="too_many_requests"), target
    )
    assert (throttled.code, throttled.reason, throttled.retry_after) == (429, "TooManyRequests", 1)
    assert throttled.status()["details"]["retryAfterSeconds"] == 1


def test_openapi_tags_every_kind_and_v2_has_no_json_schema_only_keywords() -> None:
    v3 = openapi.schemas(v2=False)
    deployment = v3["dev.fleetlog.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "version": "v1", "kind": "Deployment"}
    ]
    v2 = json.dumps(openapi.document_v2("test"))
    for keyword in ('"anyOf"', '"oneOf"', '"const"', '"$defs"', "#/components"):
        assert keyword not in v2
    paths = openapi.document_v3("apps", "v1", v3)["paths"]
    patch = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])


def test_discovered_subresources_are_exactly_the_served_ones() -> None:
    from core.kubeapi.resources import RESOURCES
    from handlers.apiserver.subresources import HANDLERS

    declared = {(r.plural, sub.name) for r in RESOURCES for sub in r.subresources}
    assert declared == set(HANDLERS)


def test_subresources_are_listed_beside_their_resource_in_discovery() -> None:
    from core.kubeapi.resources import APIResource, Subresource

    deployments = APIResource(
        kind="Deployment",
        group="apps",
        version="v1",
        plural="deployments",
        singular="deployment",
        namespaced=True,
        subresources=(
            Subresource(
                name="scale", verbs=("get", "patch", "update"), kind="Scale", group="autoscaling"
            ),
            Subresource(name="status", verbs=("get",), kind="Deployment", group="apps"),
        ),
    )
    scale, status = deployments.subresource_discovery()
    assert scale["name"] == "deployments/scale"
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert status == {
        "name": "deployments/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Deployment",
        "verbs": ["get"],
    }
    assert deployments.subresource("log") is None


def test_an_admission_refusal_naming_its_object_is_not_named_twice() -> None:
    target = Target("pods", "", "web")
    refused = FleetError(
        'pods "web" is forbidden: violates PodSecurity "baseline:latest": privileged',
        code="forbidden",
    )
    assert from_fleet_error(refused, target).status()["message"] == (
        'pods "web" is forbidden: violates PodSecurity "baseline:latest": privileged'
    )
    plain = from_fleet_error(FleetError("no", code="forbidden"), target)
    assert plain.status()["message"] == 'pods "web" is forbidden: no'


def test_a_written_secret_has_its_string_data_merged_into_data_as_kubes_conversion_does() -> None:
    secrets = BY_KIND["Secret"]
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"},
            "data": {"token": "b2xk", "user": "cm9ib3Q="},
            "stringData": {"token": "new"}}  # fmt: skip
    written = writable(body, secrets, namespace="default", name="app")
    assert "stringData" not in written.manifest
    assert written.manifest["data"] == {"token": "bmV3", "user": "cm9ib3Q="}
    # A malformed stringData is left for validation to name (never silently dropped).
    odd = {**body, "stringData": {"token": 7}}
    assert writable(odd, secrets, namespace="default", name="app").manifest["stringData"] == {
        "token": 7
    }


def test_re_applying_a_secrets_string_data_changes_no_manager_a_second_later() -> None:
    from core.kubeapi.fieldsets import update

    secrets = BY_KIND["Secret"]
    target = Target("secrets", "", "app", "Secret")
    # The live secret as a read shows it: its values in data (stringData is never stored).
    stored = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "app", "namespace": "default"},
              "data": {"token": "czNjcmV0"}}  # fmt: skip
    live = update(None, stored, manager="kubectl", api_version="v1",
                  now="2026-12-06T04:00:00Z", target=target).object  # fmt: skip
    # kubectl's re-apply patch puts the same value back as stringData.
    again = writable({**live, "stringData": {"token": "s3cret"}}, secrets,
                     namespace="default", name="app").manifest  # fmt: skip
    later = update(live, again, manager="kubectl", api_version="v1",
                   now="2026-12-06T04:00:01Z", target=target).object  # fmt: skip
    assert later == live
