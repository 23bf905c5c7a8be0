"""Istio's kinds as stored objects: VirtualService, DestinationRule, Gateway, ServiceEntry and
PeerAuthentication, each its spec under Kubernetes' metadata, stored as written.

Why this exists: the catalog, the gateway's admission and the builder take these classes; each
is one spec (from its own module) under the shared object behaviour (``_IstioKind``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from core.mesh.kinds.common import NETWORKING_VERSION, SECURITY_VERSION, WorkloadSelector
from core.mesh.kinds.destinationrule import DestinationRuleSpec
from core.mesh.kinds.gateway import GatewaySpec
from core.mesh.kinds.serviceentry import ServiceEntrySpec
from core.mesh.kinds.virtualservice import VirtualServiceSpec
from core.meta.model import K8sModel, Problems
from core.meta.names import dns1123_label_errors, label_problems
from core.meta.types import ResourceBase

# ------------------------------------------------------------------------------------------
# PeerAuthentication
# ------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------
# The stored kinds
# ------------------------------------------------------------------------------------------


class _IstioKind(ResourceBase):
    """An Istio object: namespaced, its spec checked as a whole by ``spec.problems()``.

    Its spec is stored as it was written — the fields the manifest set, not the models' zero
    defaults (``weight: 0``, ``match: []``, ``exportTo: []``): Istio's CRDs keep a proto3
    object as sent, and kubectl's client-side apply compares the live object with the
    manifest, so a stored ``weight: 0`` the user never wrote made every re-apply of an
    unchanged manifest a change ("configured", an event) instead of "unchanged"."""

    NAMESPACED = True
    spec: Any

    @field_serializer("spec", mode="wrap")
    def _spec_as_written(self, spec: Any, handler: SerializerFunctionWrapHandler) -> Any:
        if isinstance(spec, K8sModel):
            return spec.model_dump(
                mode="json", by_alias=True, exclude_none=True, exclude_unset=True
            )
        return handler(spec)

    @model_validator(mode="after")
    def _check_spec(self) -> Self:
        found = Problems()
        found.extend(self.spec.problems().items, "spec")
        found.check()
        return self


class VirtualService(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["VirtualService"] = "VirtualService"
    spec: VirtualServiceSpec = Field(default_factory=VirtualServiceSpec)


class DestinationRule(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["DestinationRule"] = "DestinationRule"
    spec: DestinationRuleSpec = Field(default_factory=DestinationRuleSpec)


class Gateway(_IstioKind):
    # Gateway names are DNS labels (no dots), as Istio's ValidateGateway requires.
    NAME_RULE: ClassVar = staticmethod(dns1123_label_errors)

    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec = Field(default_factory=GatewaySpec)


class ServiceEntry(_IstioKind):
    api_version: Literal["networking.istio.io/v1"] = NETWORKING_VERSION
    kind: Literal["ServiceEntry"] = "ServiceEntry"
    spec: ServiceEntrySpec = Field(default_factory=ServiceEntrySpec)


class PeerAuthentication(_IstioKind):
    api_version: Literal["security.istio.io/v1"] = SECURITY_VERSION
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


MESH_KINDS = (VirtualService, DestinationRule, Gateway, ServiceEntry, PeerAuthentication)
