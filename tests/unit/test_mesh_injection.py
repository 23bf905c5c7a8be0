"""Which pods get a sidecar (Istio's injection policy) and the capture rules made in a meshed
pod's network namespace (``core.mesh.injection``)."""

from __future__ import annotations

from typing import Any

import pytest

from core.mesh.injection import PROXY_MARK, capture_rules, wants_sidecar


def pod(labels: dict[str, str] | None = None, *, annotations: dict[str, str] | None = None,
        host_network: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": "p", "namespace": "ns", "labels": labels or {},
                     "annotations": annotations or {}},
        "spec": {"hostNetwork": host_network, "containers": [{"name": "app"}]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("pod_labels", "namespace_labels", "meshed"),
    [
        ({}, {}, False),
        ({}, {"istio-injection": "enabled"}, True),
        ({"sidecar.istio.io/inject": "true"}, {}, True),
        ({"sidecar.istio.io/inject": "false"}, {"istio-injection": "enabled"}, False),
        ({"sidecar.istio.io/inject": "true"}, {"istio-injection": "disabled"}, False),
        ({}, {"istio-injection": "disabled"}, False),
    ],
)
def test_istio_injection_policy(
    pod_labels: dict[str, str], namespace_labels: dict[str, str], meshed: bool
) -> None:
    assert wants_sidecar(pod(pod_labels), namespace_labels) is meshed


def test_the_older_annotation_counts_and_host_network_pods_are_never_meshed() -> None:
    asked = pod(annotations={"sidecar.istio.io/inject": "true"})
    assert wants_sidecar(asked, {})
    opted_out = pod(annotations={"sidecar.istio.io/inject": "false"})
    assert not wants_sidecar(opted_out, {"istio-injection": "enabled"})
    host = pod({"sidecar.istio.io/inject": "true"}, host_network=True)
    assert not wants_sidecar(host, {"istio-injection": "enabled"})


def test_capture_redirects_outbound_tcp_except_envoys_own_and_loopback() -> None:
    rules = capture_rules()
    lines = [line.strip() for line in rules.splitlines()]
    # Replaces an earlier table of the same name (a restarted agent applies it again).
    assert lines[:3] == ["table ip fleetlog_mesh", "delete table ip fleetlog_mesh",
                         "table ip fleetlog_mesh {"]  # fmt: skip
    assert "type nat hook output priority -100; policy accept;" in lines
    chain = lines[lines.index("chain output {") + 2 :]
    # The pod's own address is reached over lo (the agent's probes, an app calling itself).
    assert chain[:4] == [f"meta mark {PROXY_MARK:#x} return", "ip daddr 127.0.0.0/8 return",
                         'oifname "lo" return', "meta l4proto tcp redirect to :15001"]  # fmt: skip


def test_capture_redirects_inbound_tcp_to_15006_but_not_to_15001() -> None:
    lines = [line.strip() for line in capture_rules().splitlines()]
    chain = lines[lines.index("chain prerouting {") + 1 :]
    assert chain[:3] == ["type nat hook prerouting priority -100; policy accept;",
                         "tcp dport 15001 return", "meta l4proto tcp redirect to :15006"]  # fmt: skip


def test_the_ingress_runs_while_a_gateway_selects_istios_ingress_labels() -> None:
    from handlers.agent.ingress import selects_ingress

    def gateway(selector: dict[str, str]) -> dict[str, Any]:
        return {"spec": {"selector": selector, "servers": []}}

    assert not selects_ingress([])
    assert selects_ingress([gateway({"istio": "ingressgateway"})])
    assert selects_ingress([gateway({"app": "istio-ingressgateway", "istio": "ingressgateway"})])
    assert not selects_ingress([gateway({"istio": "egressgateway"})])
    assert not selects_ingress([gateway({})])  # the builder gives such a Gateway to no proxy


def test_a_socket_path_too_long_for_sun_path_moves_under_tmp() -> None:
    from pathlib import Path

    from handlers.agent.sidecar import SOCKET_PATH_MAX, socket_path

    assert socket_path(Path("/var/lib/agent"), "ads.sock") == Path("/var/lib/agent/mesh/ads.sock")
    deep = Path("/tmp") / ("d" * 120)
    moved = socket_path(deep, "ads.sock")
    assert moved.parent.parent == Path("/tmp") and moved.name == "ads.sock"
    assert len(str(moved)) <= SOCKET_PATH_MAX
    assert moved == socket_path(deep, "ads.sock") != socket_path(deep / "other", "ads.sock")
