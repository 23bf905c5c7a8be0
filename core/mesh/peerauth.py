"""Which mTLS mode a workload's inbound traffic gets, from the PeerAuthentications that apply
to it, as Istio composes them.

Why this exists: the builder's inbound listener (``virtualInbound``, 15006) terminates mTLS, or
not, per the workload's effective policy, and Istio's rules for finding it are precise enough
to get wrong (``pilot/pkg/security/authn``'s ``ComposePeerAuthentication``); they are pure and
tested here without Envoy:

* **Scope**: a policy with no selector in the **root namespace** (``istio-system``) is
  mesh-wide; one with no selector in the workload's namespace is namespace-wide; one in the
  workload's namespace whose ``selector.matchLabels`` all match its labels is workload-level.
  A selector in the root namespace selects workloads of the root namespace only.
* **Precedence**: workload > namespace > mesh. When several policies share the most specific
  level, the oldest (creation time, then name) wins, as Istio picks.
* **UNSET** (or no ``mtls``) inherits from the next level up; with nothing set anywhere the
  mode is **PERMISSIVE** (Istio's default).
* **Port level** (``portLevelMtls``, only on a workload-level policy): a port's own mode over
  the workload's; a port-level UNSET inherits the workload's effective mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from core.mesh.kinds.objects import PeerAuthentication

ROOT_NAMESPACE: Final = "istio-system"
"""Istio's ``meshConfig.rootNamespace``: where a selector-less policy is mesh-wide."""

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
DEFAULT_MODE: Final[Mode] = "PERMISSIVE"


@dataclass(frozen=True, kw_only=True)
class InboundMtls:
    """A workload's effective inbound mTLS: its mode, and the ports that differ from it."""

    mode: Mode = DEFAULT_MODE
    ports: Mapping[int, Mode] = field(default_factory=dict)

    def for_port(self, port: int) -> Mode:
        return self.ports.get(port, self.mode)


def _age(policy: PeerAuthentication) -> tuple[str, str]:
    meta = policy.metadata
    created = meta.creation_timestamp
    return (str(created) if created is not None else "", meta.name or "")


def _oldest(policies: Sequence[PeerAuthentication]) -> PeerAuthentication | None:
    return min(policies, key=_age) if policies else None


def _mode_of(policy: PeerAuthentication | None) -> Mode | None:
    if policy is None or policy.spec.mtls is None or policy.spec.mtls.mode == "UNSET":
        return None
    return policy.spec.mtls.mode


def _selects(policy: PeerAuthentication, labels: Mapping[str, str]) -> bool:
    selector = policy.spec.selector
    if selector is None or not selector.match_labels:
        return False
    return all(labels.get(key) == value for key, value in selector.match_labels.items())


def _is_scope_wide(policy: PeerAuthentication) -> bool:
    selector = policy.spec.selector
    return selector is None or not selector.match_labels


def effective_mtls(
    policies: Sequence[PeerAuthentication],
    *,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = ROOT_NAMESPACE,
) -> InboundMtls:
    """The inbound mTLS of the workload in ``namespace`` with ``labels`` (module docstring)."""
    mesh = _oldest(
        [p for p in policies if p.metadata.namespace == root_namespace and _is_scope_wide(p)]
    )
    own = [p for p in policies if (p.metadata.namespace or "default") == namespace]
    scope = _oldest([p for p in own if _is_scope_wide(p)])
    workload = _oldest([p for p in own if _selects(p, labels)])

    mode: Mode = DEFAULT_MODE
    for level in (mesh, scope, workload):
        chosen = _mode_of(level)
        if chosen is not None:
            mode = chosen
    ports: dict[int, Mode] = {}
    if workload is not None:
        for key, setting in (workload.spec.port_level_mtls or {}).items():
            if setting.mode != "UNSET":
                ports[int(key)] = setting.mode
    return InboundMtls(mode=mode, ports=ports)
