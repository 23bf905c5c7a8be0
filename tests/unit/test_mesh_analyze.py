"""Cross-object problems of Istio objects, as istioctl analyze words them (core.mesh.analyze)."""

from __future__ import annotations

from typing import Any

from core.mesh.analyze import (
    EXIT_ISSUES,
    Objects,
    analyze,
    has_errors,
    in_namespace,
    no_issues_line,
    of_object,
)


def _service(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80}]}}  # fmt: skip


def _vs(name: str, spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"kind": "VirtualService", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}  # fmt: skip


def _route(host: str, subset: str | None = None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if subset:
        destination["subset"] = subset
    return {"route": [{"destination": destination}]}


def _rule(host: str, *subsets: str, namespace: str = "shop") -> dict[str, Any]:
    return {"kind": "DestinationRule", "metadata": {"name": host, "namespace": namespace},
            "spec": {"host": host, "subsets": [{"name": s, "labels": {"v": s}} for s in subsets]}}  # fmt: skip


def _gateway(name: str, selector: dict[str, str], hosts: list[str]) -> dict[str, Any]:
    return {"kind": "Gateway", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": selector, "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]}}  # fmt: skip


def test_a_clean_mesh_has_no_messages() -> None:
    objects = Objects(
        services=[_service("web")],
        destination_rules=[_rule("web", "v1")],
        virtual_services=[_vs("web", {"hosts": ["web"], "http": [_route("web", "v1")]})],
    )
    assert analyze(objects) == []
    assert (
        no_issues_line("shop")
        == "\u2714 No validation issues found when analyzing namespace: shop."
    )


def test_a_host_with_no_service_and_a_subset_no_rule_defines_are_ist0101() -> None:
    objects = Objects(
        services=[_service("web")],
        destination_rules=[_rule("web", "v1")],
        virtual_services=[
            _vs(
                "web",
                {
                    "hosts": ["web"],
                    "http": [_route("nope"), _route("web", "v2"), _route("web", "v1")],
                },
            )
        ],
    )
    shown = [str(m) for m in analyze(objects)]
    assert shown == [
        'Error [IST0101] (VirtualService web.shop) Referenced host not found: "nope"',
        "Error [IST0101] (VirtualService web.shop) Referenced host+subset in destinationrule "
        'not found: "web.shop.svc.cluster.local+v2"',
    ]
    assert has_errors(analyze(objects))


def test_a_service_entry_host_counts_as_a_host() -> None:
    entry = {"kind": "ServiceEntry", "metadata": {"name": "ext", "namespace": "shop"},
             "spec": {"hosts": ["*.example.com"]}}  # fmt: skip
    objects = Objects(
        service_entries=[entry],
        virtual_services=[
            _vs("ext", {"hosts": ["api.example.com"], "http": [_route("api.example.com")]})
        ],
    )
    assert analyze(objects) == []


def test_a_missing_gateway_and_a_host_the_gateway_does_not_admit() -> None:
    objects = Objects(
        services=[_service("web")],
        gateways=[_gateway("edge", {"istio": "ingressgateway"}, ["shop.example.com"])],
        virtual_services=[
            _vs("a", {"hosts": ["wrong.com"], "gateways": ["edge"], "http": [_route("web")]}),
            _vs("b", {"hosts": ["x.com"], "gateways": ["bogus"], "http": [_route("web")]}),
        ],
    )
    shown = [str(m) for m in analyze(objects)]
    assert shown == [
        "Warning [IST0132] (VirtualService a.shop) one or more host [wrong.com] defined in "
        "VirtualService shop/a not found in Gateway shop/edge.",
        'Error [IST0101] (VirtualService b.shop) Referenced gateway not found: "bogus"',
    ]


def test_two_mesh_virtual_services_for_one_host_conflict_ist0109_on_both() -> None:
    objects = Objects(
        services=[_service("web")],
        virtual_services=[
            _vs("one", {"hosts": ["web.shop.svc.cluster.local"], "http": [_route("web")]}),
            _vs(
                "two",
                {
                    "hosts": ["web.shop.svc.cluster.local"],
                    "http": [_route("web.shop.svc.cluster.local")],
                },
                namespace="team",
            ),
        ],
    )
    messages = analyze(objects)
    assert [(m.code, m.namespace, m.name) for m in messages] == [
        ("IST0109", "shop", "one"), ("IST0109", "team", "two")]  # fmt: skip
    assert messages[0].text.startswith(
        "The VirtualServices shop/one,team/two associated with mesh gateway define the same "
        "host web.shop.svc.cluster.local which can lead to undefined behavior."
    )
    # Bound to an ingress Gateway instead, they merge (Istio's rule): no conflict.
    gw = [_gateway("edge", {"istio": "ingressgateway"}, ["*"])]
    bound = [_vs(n, {"hosts": ["web.shop.svc.cluster.local"], "gateways": ["shop/edge"],
                     "http": [_route("web.shop.svc.cluster.local")]}) for n in ("one", "two")]  # fmt: skip
    assert analyze(Objects(services=[_service("web")], gateways=gw, virtual_services=bound)) == []


def test_a_gateway_selecting_no_workload_unless_it_is_the_node_ingress() -> None:
    pods = [{"metadata": {"name": "p", "namespace": "shop", "labels": {"app": "edge"}}}]
    objects = Objects(
        pods=pods,
        gateways=[
            _gateway("served", {"istio": "ingressgateway"}, ["*"]),
            _gateway("own", {"app": "edge"}, ["*"]),
            _gateway("nothing", {"app": "gone", "tier": "x"}, ["*"]),
        ],
    )
    messages = analyze(objects)
    assert [str(m) for m in messages] == [
        'Error [IST0101] (Gateway nothing.shop) Referenced selector not found: "app=gone,tier=x"'
    ]
    assert of_object(messages, kind="Gateway", namespace="shop", name="nothing") == [
        str(messages[0])
    ]
    assert of_object(messages, kind="Gateway", namespace="shop", name="own") == []
    assert in_namespace(messages, "other") == [] and in_namespace(messages, None) == messages
    assert EXIT_ISSUES == 79


def test_a_credential_name_no_secret_of_the_gateways_namespace_has_is_ist0101() -> None:
    gateway = _gateway("edge", {"istio": "ingressgateway"}, ["a.example.com"])
    gateway["spec"]["servers"].append(
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
         "tls": {"mode": "SIMPLE", "credentialName": "a-cert"}}
    )  # fmt: skip
    secret = {"kind": "Secret", "metadata": {"name": "a-cert", "namespace": "shop"}}
    elsewhere = {"kind": "Secret", "metadata": {"name": "a-cert", "namespace": "other"}}
    assert analyze(Objects(gateways=[gateway], secrets=[secret])) == []
    assert [str(m) for m in analyze(Objects(gateways=[gateway], secrets=[elsewhere]))] == [
        'Error [IST0101] (Gateway edge.shop) Referenced credentialName not found: "a-cert"'
    ]
    # Secrets unknown (the reader may not list them): not checked.
    assert analyze(Objects(gateways=[gateway])) == []


def test_a_tls_route_destination_with_no_service_is_ist0101() -> None:
    vs = _vs("pass", {"hosts": ["*.example.com"], "gateways": ["mesh"], "tls": [
        {"match": [{"sniHosts": ["a.example.com"]}], "route": [{"destination": {"host": "gone"}}]}
    ]})  # fmt: skip
    assert [m.text for m in analyze(Objects(virtual_services=[vs]))] == [
        'Referenced host not found: "gone"'
    ]
