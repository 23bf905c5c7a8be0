"""A PeerAuthentication's spec (``security.istio.io/v1``): its selector, mTLS mode and per-port
modes, validated as Istio validates it.

Why this exists: it is the one security kind of the mesh; how the modes combine for a
workload is ``core.mesh.peerauth``'s, what a single object may say is here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from core.mesh.kinds.common import WorkloadSelector
from core.meta.model import K8sModel, Problems
from core.meta.names import label_problems

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class PeerMtls(K8sModel):
    mode: MtlsMode = "UNSET"


class PeerAuthenticationSpec(K8sModel):
    selector: WorkloadSelector | None = None
    mtls: PeerMtls | None = None
    port_level_mtls: dict[str, PeerMtls] | None = None

    @field_validator("port_level_mtls", mode="before")
    @classmethod
    def _port_keys(cls, value: object) -> object:
        # YAML reads ``8080:`` as a number, JSON (and the log) as a string: both name a port.
        if isinstance(value, dict):
            return {str(key) if isinstance(key, int) else key: v for key, v in value.items()}
        return value

    def problems(self) -> Problems:
        """``ValidatePeerAuthentication``."""
        found = Problems()
        empty_selector = self.selector is None or not self.selector.match_labels
        if empty_selector and self.port_level_mtls:
            found.add(
                "mesh/namespace peer authentication cannot have port level mTLS", "portLevelMtls"
            )
        if self.port_level_mtls is not None and not self.port_level_mtls:
            found.add(
                "port level mTLS, if defined, must have at least one element", "portLevelMtls"
            )
        for key in self.port_level_mtls or {}:
            if not key.isdigit() or not 1 <= int(key) <= 65535:
                found.add("port must be in range 1..65535", "portLevelMtls", key)
        if self.selector is not None:
            found.extend(label_problems(self.selector.match_labels), "selector", "matchLabels")
        return found
