"""Istio's kinds as stored objects: VirtualService, DestinationRule, Gateway, ServiceEntry and
PeerAuthentication, each its spec under Kubernetes' metadata, stored as written.

Why this exists: the API catalog (``core.api.catalog``) stores these classes and the mesh
builder reads them; each is one spec (from its own module) under the shared object behaviour
(``_IstioKind``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SerializerFunctionWrapHandler, field_serializer, model_validator

from core.mesh.kinds.common import NETWORKING_VERSION, SECURITY_VERSION
from core.mesh.kinds.destinationrule import DestinationRuleSpec
from core.mesh.kinds.gateway import GatewaySpec
from core.mesh.kinds.peerauthentication import PeerAuthenticationSpec
from core.mesh.kinds.serviceentry import ServiceEntrySpec
from core.mesh.kinds.virtualservice import VirtualServiceSpec
from core.meta.model import K8sModel, Problems
from core.meta.names import dns1123_label_errors
from core.meta.types import ResourceBase


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
