"""The real ``kubectl`` with Istio's kinds: every version Istio's CRDs serve, Istio's columns.

Why this exists: YAML written for Istio names ``networking.istio.io/v1beta1`` or ``v1alpha3``
and ``security.istio.io/v1beta1`` as often as ``v1``; Istio's CRDs serve them all (stored as
v1), and ``kubectl get vs`` prints the CRDs' printer columns. These tests pin that kubectl
applies such a mixed manifest against ``fleetlog up``, reads an object back in the version it
names, prints Istio's columns, still gets Istio's field path for an invalid object, and deletes.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_kubectl import Kubectl, kubectl, lines  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  gateways: [edge, mesh]
  http: [{route: [{destination: {host: web, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""

NEGATIVE_WEIGHT = """\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: bad, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}, weight: -1}]}]
"""


def test_kubectl_applies_every_served_istio_version_and_prints_istios_columns(
    kubectl: Kubectl,  # noqa: F811
) -> None:
    created = lines(kubectl("apply", "-f", "-", stdin=MESH))
    assert created == [
        "namespace/shop created",
        "gateway.networking.istio.io/edge created",
        "virtualservice.networking.istio.io/web created",
        "destinationrule.networking.istio.io/web created",
        "serviceentry.networking.istio.io/ext created",
        "peerauthentication.security.istio.io/default created",
    ]
    # Applied again unchanged: nothing to patch (the specs are stored as written).
    assert lines(kubectl("apply", "-f", "-", stdin=MESH)) == [
        "namespace/shop unchanged",
        "gateway.networking.istio.io/edge unchanged",
        "virtualservice.networking.istio.io/web unchanged",
        "destinationrule.networking.istio.io/web unchanged",
        "serviceentry.networking.istio.io/ext unchanged",
        "peerauthentication.security.istio.io/default unchanged",
    ]

    vs = lines(kubectl("get", "vs", "-n", "shop"))
    assert vs[0] == "NAME GATEWAYS HOSTS AGE"
    assert vs[1].startswith('web ["edge","mesh"] ["web"] ')
    dr = lines(kubectl("get", "dr", "-n", "shop"))
    assert dr[0] == "NAME HOST AGE" and dr[1].startswith("web web ")
    assert lines(kubectl("get", "gw", "-n", "shop"))[0] == "NAME AGE"
    se = lines(kubectl("get", "se", "-n", "shop"))
    assert se[0] == "NAME HOSTS LOCATION RESOLUTION AGE"
    assert se[1].startswith('ext ["api.example.com"] MESH_EXTERNAL DNS ')
    pa = lines(kubectl("get", "pa", "-n", "shop"))
    assert pa[0] == "NAME MODE AGE" and pa[1].startswith("default STRICT ")

    # The preferred (and stored) version is v1; any served version reads the same object.
    preferred = json.loads(kubectl("get", "vs", "web", "-n", "shop", "-o", "json").stdout)
    assert preferred["apiVersion"] == "networking.istio.io/v1"
    older = json.loads(
        kubectl(
            "get", "virtualservices.v1beta1.networking.istio.io", "web", "-n", "shop", "-o", "json"
        ).stdout
    )
    assert older["apiVersion"] == "networking.istio.io/v1beta1"
    assert older["spec"] == preferred["spec"]
    assert "apiVersion: networking.istio.io/v1alpha3" in (
        kubectl("get", "destinationrules.v1alpha3.networking.istio.io", "web", "-n", "shop",
                "-o", "yaml").stdout
    )  # fmt: skip
    listed = json.loads(
        kubectl("get", "peerauthentications.v1beta1.security.istio.io", "-n", "shop",
                "-o", "json").stdout
    )  # fmt: skip
    assert [i["apiVersion"] for i in listed["items"]] == ["security.istio.io/v1beta1"]

    # A client-side apply at v1beta1 patches through the v1beta1 path.
    changed = MESH.replace("hosts: [web]\n  gateways", "hosts: [web, web.shop]\n  gateways")
    assert "virtualservice.networking.istio.io/web configured" in lines(
        kubectl("apply", "-f", "-", stdin=changed)
    )
    assert kubectl("get", "vs", "web", "-n", "shop", "-o", "jsonpath={.spec.hosts}").stdout == (
        '["web","web.shop"]'
    )

    refused = kubectl("apply", "-f", "-", stdin=NEGATIVE_WEIGHT, check=False)
    assert refused.returncode == 1
    assert "spec.http[0].route[0].weight" in refused.stderr

    deleted = lines(kubectl("delete", "-f", "-", stdin=changed.split("---\n", 1)[1]))
    assert deleted == [
        'gateway.networking.istio.io "edge" deleted from shop namespace',
        'virtualservice.networking.istio.io "web" deleted from shop namespace',
        'destinationrule.networking.istio.io "web" deleted from shop namespace',
        'serviceentry.networking.istio.io "ext" deleted from shop namespace',
        'peerauthentication.security.istio.io "default" deleted from shop namespace',
    ]
    assert kubectl("get", "vs,dr,gw,se,pa", "-n", "shop", "-o", "name").stdout == ""
