"""The pure parts of the subresources: a Scale and its selector string, what a Scale, a Binding,
an Eviction and a status write ask for (and kube's refusals of bad ones), and the template
comparison ``kubectl rollout undo`` depends on."""

from __future__ import annotations

from typing import Any

import pytest

from core.kubeapi.objects import Preconditions, status_write
from core.kubeapi.podwrites import binding_node, eviction_delete_options
from core.kubeapi.resources import BY_KIND
from core.kubeapi.scale import requested_scale, scale_object, selector_text
from core.kubeapi.status import APIError, Target
from core.workloads.deployment import (
    CopyAnnotations,
    CreateReplicaSet,
    OwnedReplicaSet,
    plan_deployment,
    template_without_hash,
)
from core.workloads.replicaset import PodCounts

WEB = Target("deployments", "apps", "web", "Deployment")


@pytest.mark.parametrize(
    ("selector", "text"),
    [
        (None, ""),
        ({}, ""),
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        (
            {"matchLabels": {"app": "web"},
             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                  {"key": "env", "operator": "NotIn", "values": ["prod"]},
                                  {"key": "zz", "operator": "Exists"},
                                  {"key": "canary", "operator": "DoesNotExist"}]},
            "app=web,!canary,env notin (prod),tier in (a,b),zz",
        ),
    ],
)  # fmt: skip
def test_a_selector_prints_as_apimachinery_prints_it(
    selector: dict[str, Any] | None, text: str
) -> None:
    # Sorted by key: "!canary" sorts under "canary".
    assert selector_text(selector) == text


def test_the_scale_of_a_workload() -> None:
    manifest = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"replicas": 2},
    }
    scale = scale_object(
        manifest=manifest, namespace="default", uid="u", resource_version=42, created_ns=0
    )
    assert scale == {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "42",
                     "creationTimestamp": "1970-01-01T00:00:00Z"},
        "spec": {"replicas": 3},
        "status": {"replicas": 2, "selector": "app=web"},
    }  # fmt: skip
    fresh = scale_object(
        manifest={"metadata": {"name": "web"}, "spec": {}}, namespace="default", uid="u",
        resource_version=1, created_ns=0,
    )  # fmt: skip
    assert fresh["spec"] == {"replicas": 1}  # kube's default
    assert fresh["status"] == {"replicas": 0, "selector": ""}


def scale(replicas: object, **metadata: object) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", **metadata}, "spec": {"replicas": replicas}}  # fmt: skip


def test_a_requested_scale_and_its_precondition() -> None:
    asked = requested_scale(scale(4, resourceVersion="17"), target=WEB, namespace="default")
    assert (asked.replicas, asked.preconditions) == (4, Preconditions(resource_version=17))
    assert requested_scale(scale(0), target=WEB, namespace="default").replicas == 0


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (scale(-1), 422, 'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: '
                         "must be greater than or equal to 0"),
        (scale(2**31), 422, "must be less than or equal to 2147483647"),
        (scale("3"), 422, "must be an integer"),
        (scale(True), 422, "must be an integer"),
        (scale(1, name="db"), 400, "does not match the name on the URL"),
        (scale(1, namespace="other"), 400, "does not match the namespace"),
        ({**scale(1), "kind": "Deployment"}, 400, "is not an autoscaling/v1 Scale"),
        ([], 400, "must be a JSON object"),
        (scale(1, resourceVersion="abc"), 400, 'invalid resourceVersion "abc"'),
    ],
)  # fmt: skip
def test_a_bad_scale_is_refused_as_kube_refuses_it(body: object, code: int, message: str) -> None:
    with pytest.raises(APIError) as refused:
        requested_scale(body, target=WEB, namespace="default")
    assert refused.value.code == code and message in refused.value.message


def binding(pod: str = "p", **target: object) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
            "target": target}  # fmt: skip


def test_a_binding_names_its_node() -> None:
    assert binding_node(binding(kind="Node", name="n1"), name="p", namespace="default") == "n1"
    assert binding_node(binding(name="n1"), name="p", namespace="default") == "n1"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (binding("q", name="n1"), 400, "name in URL does not match name in Binding object"),
        (binding(kind="Pod", name="n1"), 422,
         'target.kind: Unsupported value: "Pod": supported values: "Node", "<empty>"'),
        (binding(kind="Node"), 422, 'Binding "p" is invalid: target.name: Required value'),
        ({**binding(name="n"), "kind": "Eviction"}, 400, "is not a v1 Binding"),
    ],
)  # fmt: skip
def test_a_bad_binding_is_refused(body: object, code: int, message: str) -> None:
    with pytest.raises(APIError) as refused:
        binding_node(body, name="p", namespace="default")
    assert refused.value.code == code and message in refused.value.message


def test_an_eviction_carries_its_delete_options() -> None:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    assert eviction_delete_options(eviction, name="p", namespace="default") == {}
    options = {"gracePeriodSeconds": 5, "preconditions": {"uid": "u"}}
    assert (
        eviction_delete_options({**eviction, "deleteOptions": options}, name="p",
                                namespace="default")
        == options
    )  # fmt: skip
    beta = {**eviction, "apiVersion": "policy/v1beta1"}
    assert eviction_delete_options(beta, name="p", namespace="default") == {}
    for bad, message in (
        ({**eviction, "metadata": {"name": "q"}}, "name in URL does not match name in Eviction"),
        ({**eviction, "deleteOptions": []}, "deleteOptions must be an object"),
        ({**eviction, "kind": "Binding"}, "is not a policy/v1 Eviction"),
    ):
        with pytest.raises(APIError) as refused:
            eviction_delete_options(bad, name="p", namespace="default")
        assert refused.value.code == 400 and message in refused.value.message


def test_a_status_write_keeps_only_the_status_and_its_preconditions() -> None:
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": "9"},
            "spec": {"replicas": 100}, "status": {"replicas": 1}}  # fmt: skip
    written = status_write(body, BY_KIND["Deployment"], namespace="default", name="web")
    assert written.status == {"replicas": 1}
    assert written.preconditions == Preconditions(resource_version=9)
    no_status = {k: v for k, v in body.items() if k != "status"}
    assert status_write(no_status, BY_KIND["Deployment"], namespace="default",
                        name="web").status is None  # fmt: skip
    with pytest.raises(APIError) as refused:
        status_write({**body, "status": [1]}, BY_KIND["Deployment"], namespace="default",
                     name="web")  # fmt: skip
    assert refused.value.code == 400
    with pytest.raises(APIError) as refused:
        status_write(body, BY_KIND["Deployment"], namespace="default", name="db")
    assert refused.value.code == 400


def test_a_template_a_go_client_sent_back_is_the_same_template() -> None:
    stored = {
        "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
    }
    from_kubectl = {
        "metadata": {"labels": {"app": "web"}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "web", "image": "nginx:1", "resources": {}}]},
    }
    assert template_without_hash(stored) == template_without_hash(from_kubectl)
    limited = {
        "spec": {"containers": [{"name": "web", "image": "nginx:1",
                                 "resources": {"limits": {"cpu": "1"}}}]}
    }  # fmt: skip
    assert template_without_hash(limited) != template_without_hash(from_kubectl)
    assert from_kubectl["spec"]["containers"][0]["resources"] == {}  # not changed in place


def test_the_new_replica_set_takes_the_deployments_annotations_added_after_it() -> None:
    """``kubectl annotate deploy/web kubernetes.io/change-cause=…`` after ``set image``: the
    new replica set carries it (where ``rollout history`` reads it), as kube copies it."""
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    }  # fmt: skip
    first = plan_deployment("web", "default", "d", manifest, [], 0)
    created = first.actions[0]
    assert isinstance(created, CreateReplicaSet)
    owned = OwnedReplicaSet(created.manifest["metadata"]["name"], "rs", created.manifest, 0,
                            PodCounts(1, 1, 1, 1))  # fmt: skip
    assert plan_deployment("web", "default", "d", manifest, [owned], 0).actions == []
    manifest["metadata"]["annotations"]["kubernetes.io/change-cause"] = "image x"
    again = plan_deployment("web", "default", "d", manifest, [owned], 0)
    assert again.actions == [CopyAnnotations(owned.name, {"kubernetes.io/change-cause": "image x"})]
