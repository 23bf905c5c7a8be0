"""Which pods get a sidecar, what it is called, and the nftables rules that capture a pod's
traffic for it.

Why this exists: the node agent starts a pod's Envoy and redirects the pod's connections to it
(Istio's injector and its ``istio-init`` step, done on the node); *whether* a pod is meshed and
*what* the capture rules say are decisions worth testing without a machine. Istio's rules:

* **Injection** (Istio's injection policy with ``enableNamespacesByDefault`` off): the pod's
  label ``sidecar.istio.io/inject`` (or the older annotation of that name) says ``"false"`` →
  never; the namespace's ``istio-injection: disabled`` → never; the pod's ``"true"`` or the
  namespace's ``istio-injection: enabled`` → injected. A ``hostNetwork`` pod never is (its
  traffic cannot be captured without capturing the node's).
* **Capture** (``istio-iptables``' REDIRECT mode, with nftables): in the pod's network
  namespace, outbound TCP is redirected to the sidecar's 15001 — except Envoy's own
  connections (they carry :data:`PROXY_MARK`, set on every upstream socket by its bootstrap,
  so the rule works for process pods whose Envoy runs as the same user as the application)
  and loopback (127.0.0.0/8, and whatever leaves by ``lo``: the pod's own address); inbound
  TCP (arriving from outside the pod: the bridge) to its 15006, except to 15001 itself (whose
  listener refuses what was not redirected to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from core.mesh.envoy.sidecar import INBOUND_PORT, OUTBOUND_PORT
from core.pods.status import MESH_SIDECAR

SIDECAR_CONTAINER: Final = MESH_SIDECAR
"""Istio's name for the sidecar container (``fleetlog logs -c istio-proxy``; its status is
among the pod's ``containerStatuses``, ``core.pods.status``)."""
INJECT_KEY: Final = "sidecar.istio.io/inject"
NAMESPACE_KEY: Final = "istio-injection"
PROXY_MARK: Final = 0x539
"""The socket mark of the sidecar's upstream connections (1337, Istio's proxy uid), which the
capture rules let pass."""
CAPTURE_TABLE: Final = "fleetlog_mesh"


def wants_sidecar(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """Whether ``pod`` (a manifest) is injected, by Istio's policy (module docstring)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return False
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    asked = str(labels.get(INJECT_KEY, annotations.get(INJECT_KEY, ""))).lower()
    if asked == "false":
        return False
    namespace = namespace_labels.get(NAMESPACE_KEY, "")
    if namespace == "disabled":
        return False
    return asked == "true" or namespace == "enabled"


def capture_rules(
    *, mark: int = PROXY_MARK, port: int = OUTBOUND_PORT, inbound: int = INBOUND_PORT
) -> str:
    """The nftables script run in a pod's network namespace (replacing an earlier one: a
    restarted agent applies it again)."""
    return (
        f"table ip {CAPTURE_TABLE}\n"
        f"delete table ip {CAPTURE_TABLE}\n"
        f"table ip {CAPTURE_TABLE} {{\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        f"    meta mark {mark:#x} return\n"
        "    ip daddr 127.0.0.0/8 return\n"
        # The pod reaching its own address goes over lo (an application calling itself, the
        # node agent's probes made in the pod): not captured, as Istio's rules let it pass.
        '    oifname "lo" return\n'
        f"    meta l4proto tcp redirect to :{port}\n"
        "  }\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority -100; policy accept;\n"
        f"    tcp dport {port} return\n"
        f"    meta l4proto tcp redirect to :{inbound}\n"
        "  }\n"
        "}\n"
    )
