"""Every version a kind is served at: Istio's ``v1beta1``/``v1alpha3`` beside the stored ``v1``.

Why this exists: Istio's CRDs serve ``networking.istio.io`` v1, v1beta1 and v1alpha3 and
``security.istio.io`` v1 and v1beta1, one schema, v1 preferred; kubectl discovers them, fetches
their OpenAPI to validate, and reads and writes through their paths. These tests pin the pure
tables the door derives it all from (``core.api.catalog.SERVED_VERSIONS``).
"""

from __future__ import annotations

import pytest

from core.api.catalog import SERVED_VERSIONS
from core.kubeapi import openapi
from core.kubeapi.objects import api_object, writable
from core.kubeapi.paths import parse_resource_path
from core.kubeapi.resources import BY_KIND, group_versions
from core.kubeapi.status import APIError
from handlers.apiserver import discovery


def test_istio_kinds_are_served_at_every_version_istio_serves_v1_first() -> None:
    assert SERVED_VERSIONS["VirtualService"] == (
        "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3",
    )  # fmt: skip
    assert SERVED_VERSIONS["PeerAuthentication"] == (
        "security.istio.io/v1", "security.istio.io/v1beta1",
    )  # fmt: skip
    # A converted older version (autoscaling/v1 HPAs) is not read back: one version only.
    assert SERVED_VERSIONS["HorizontalPodAutoscaler"] == ("autoscaling/v2",)
    assert SERVED_VERSIONS["Deployment"] == ("apps/v1",)
    assert group_versions()["networking.istio.io"] == ["v1", "v1beta1", "v1alpha3"]
    assert group_versions()["security.istio.io"] == ["v1", "v1beta1"]


def test_discovery_lists_every_version_and_prefers_v1() -> None:
    group = discovery.named_group("networking.istio.io")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1", "v1alpha3"]
    assert group["preferredVersion"]["version"] == "v1"
    listed = discovery.group_version_resources("networking.istio.io", "v1alpha3")
    assert {r["name"] for r in listed["resources"]} == {
        "virtualservices", "destinationrules", "gateways", "serviceentries",
    }  # fmt: skip
    assert listed["groupVersion"] == "networking.istio.io/v1alpha3"
    with pytest.raises(APIError):
        discovery.group_version_resources("security.istio.io", "v1alpha3")
    aggregated = discovery.aggregated(legacy=False, version="v2")
    security = next(i for i in aggregated["items"] if i["metadata"]["name"] == "security.istio.io")
    assert [v["version"] for v in security["versions"]] == ["v1", "v1beta1"]
    pa = security["versions"][1]["resources"][0]
    assert pa["responseKind"] == {
        "group": "security.istio.io", "version": "v1beta1", "kind": "PeerAuthentication",
    }  # fmt: skip


def test_an_older_version_path_names_the_same_kind_and_reads_it_at_that_version() -> None:
    path = parse_resource_path(
        "networking.istio.io", "v1beta1", ["namespaces", "shop", "virtualservices", "web"]
    )
    assert (path.resource.kind, path.namespace, path.name) == ("VirtualService", "shop", "web")
    assert path.resource.group_version == "networking.istio.io/v1beta1"
    with pytest.raises(APIError):
        parse_resource_path("security.istio.io", "v1alpha3", ["peerauthentications"])
    stored = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["web"]},
    }
    shown = api_object(
        path.resource, manifest=stored, namespace="shop", uid="u", resource_version=7, created_ns=0
    )
    assert shown["apiVersion"] == "networking.istio.io/v1beta1"
    assert shown["spec"] == {"hosts": ["web"]}
    assert BY_KIND["VirtualService"].group_version == "networking.istio.io/v1"
    # A body sent to the v1beta1 path names v1beta1 (as kube-apiserver requires).
    written = writable(
        {**stored, "apiVersion": "networking.istio.io/v1beta1"}, path.resource, namespace="shop"
    )
    assert written.name == "web"
    with pytest.raises(APIError):
        writable(stored, path.resource, namespace="shop")


def test_openapi_describes_every_served_version_with_the_one_schema() -> None:
    schemas = openapi.schemas(v2=False)
    assert schemas["dev.fleetlog.VirtualService"]["x-kubernetes-group-version-kind"] == [
        {"group": "networking.istio.io", "version": v, "kind": "VirtualService"}
        for v in ("v1", "v1beta1", "v1alpha3")
    ]
    doc = openapi.document_v3("security.istio.io", "v1beta1", schemas)
    item = doc["paths"][
        "/apis/security.istio.io/v1beta1/namespaces/{namespace}/peerauthentications/{name}"
    ]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"]["version"] == "v1beta1"
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/dev.fleetlog.PeerAuthentication"
    }
    v2 = openapi.document_v2("test")
    ids = [
        op["operationId"]
        for ops in v2["paths"].values()
        for op in ops.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert len(ids) == len(set(ids))
    assert "/apis/networking.istio.io/v1alpha3/namespaces/{namespace}/gateways" in v2["paths"]
