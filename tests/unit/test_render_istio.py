"""Istio's printer columns in ``fleetlog get`` and in the door's server-side tables.

Why this exists: Istio's CRDs declare additionalPrinterColumns (VirtualService GATEWAYS and
HOSTS, DestinationRule HOST, ServiceEntry HOSTS, LOCATION and RESOLUTION, PeerAuthentication
MODE), so ``kubectl get vs`` against Istio prints them, lists as kube prints a JSONPath list
(compact JSON), an unset value as a blank cell. fleetlog's two tables must print the same.
"""

from __future__ import annotations

from typing import Any

from core.api.manifests import dump_manifest, parse_manifest
from core.kubeapi.tables import Columns, column_definitions, table_row
from ops.render.objects import COLUMNS, object_table

NOW = 1_800_000_000 * 10**9
CREATED = NOW - 90 * 10**9


def item(doc: dict[str, Any]) -> dict[str, Any]:
    """A read-model item of a manifest as the gateway stores it (the model's defaults in)."""
    doc = {**doc, "metadata": {"name": doc["kind"].lower(), "namespace": "shop"}}
    manifest = dump_manifest(parse_manifest(doc))
    return {"name": manifest["metadata"]["name"], "namespace": "shop",
            "created_ns": CREATED, "manifest": manifest}  # fmt: skip


VS = {
    "apiVersion": "networking.istio.io/v1beta1",
    "kind": "VirtualService",
    "spec": {
        "hosts": ["web", "web.shop.svc.cluster.local"],
        "gateways": ["edge", "mesh"],
        "http": [{"route": [{"destination": {"host": "web"}}]}],
    },
}
SE = {
    "apiVersion": "networking.istio.io/v1alpha3",
    "kind": "ServiceEntry",
    "spec": {
        "hosts": ["api.example.com"],
        "location": "MESH_INTERNAL",
        "resolution": "DNS",
        "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
    },
}


def rows(kind: str, doc: dict[str, Any]) -> list[list[str]]:
    text = object_table(kind, [item(doc)], now_ns=NOW, wide=False, show_namespace=False)
    return [line.split() for line in text.splitlines()]


def test_fleetlog_get_prints_istios_printer_columns() -> None:
    assert rows("VirtualService", VS) == [
        ["NAME", "GATEWAYS", "HOSTS", "AGE"],
        ["virtualservice", '["edge","mesh"]', '["web","web.shop.svc.cluster.local"]', "90s"],
    ]
    no_gateways = {**VS, "spec": {**VS["spec"], "gateways": []}}
    assert rows("VirtualService", no_gateways)[1] == [
        "virtualservice",
        '["web","web.shop.svc.cluster.local"]',
        "90s",
    ]  # fmt: skip  (a blank GATEWAYS cell)
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "spec": {"host": "reviews.shop.svc.cluster.local"}}  # fmt: skip
    assert rows("DestinationRule", dr) == [
        ["NAME", "HOST", "AGE"],
        ["destinationrule", "reviews.shop.svc.cluster.local", "90s"],
    ]
    gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "spec": {"servers": [
        {"hosts": ["*"], "port": {"number": 80, "name": "http", "protocol": "HTTP"}}]}}  # fmt: skip
    assert rows("Gateway", gw) == [["NAME", "AGE"], ["gateway", "90s"]]
    assert rows("ServiceEntry", SE) == [
        ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"],
        ["serviceentry", '["api.example.com"]', "MESH_INTERNAL", "DNS", "90s"],
    ]
    pa = {"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
          "spec": {"mtls": {"mode": "PERMISSIVE"}}}  # fmt: skip
    assert rows("PeerAuthentication", pa) == [
        ["NAME", "MODE", "AGE"], ["peerauthentication", "PERMISSIVE", "90s"],
    ]  # fmt: skip
    unset = {**pa, "spec": {}}
    assert rows("PeerAuthentication", unset)[1] == ["peerauthentication", "90s"]


def test_the_doors_table_has_the_same_columns_and_cells() -> None:
    columns = Columns(*COLUMNS["ServiceEntry"])
    names = [d["name"] for d in column_definitions(columns)]
    assert names == ["Name", "Hosts", "Location", "Resolution", "Age"]
    shown = item(SE)
    row = table_row(columns, shown, shown["manifest"], now_ns=NOW, include="None")
    assert row == {"cells": ["serviceentry", '["api.example.com"]', "MESH_INTERNAL", "DNS", "90s"]}
    vs = Columns(*COLUMNS["VirtualService"])
    assert [d["name"] for d in column_definitions(vs)] == ["Name", "Gateways", "Hosts", "Age"]
    gw = Columns(*COLUMNS["Gateway"])
    assert [d["name"] for d in column_definitions(gw)] == ["Name", "Age"]
