"""The Service (core/v1): a stable name and virtual IP in front of the pods a selector picks.

Why this exists: the endpoints projection and the mesh push build their configuration from
services, so ports must be validated and defaulted as Kubernetes does (protocol TCP, targetPort
defaulting to port, ports named when there are several). Service names are DNS-1035 labels
(they must start with a letter) because they become DNS names and environment variable names.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from core.meta.fields import PortNumber, PortNumberOrName
from core.meta.model import K8sModel, duplicate, field_error, invalid
from core.meta.names import DNSLabel, Labels, dns1035_label_errors, dns1123_subdomain_errors
from core.meta.types import Condition, ResourceBase
from core.pods.resources import Protocol

ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]


class ServicePort(K8sModel):
    """One exposed port; ``targetPort`` (a number or a container port name) defaults to ``port``."""

    name: DNSLabel | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None
    port: PortNumber
    target_port: PortNumberOrName | None = None
    node_port: PortNumber | None = None

    @model_validator(mode="after")
    def _default_target(self) -> Self:
        if self.target_port is None or self.target_port == 0:
            self.target_port = self.port
        return self


class ServiceSpec(K8sModel):
    type: ServiceType = "ClusterIP"
    selector: Labels | None = None
    ports: list[ServicePort] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    external_ips: list[str] | None = Field(default=None, alias="externalIPs")
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_config: dict[str, Any] | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    health_check_node_port: PortNumber | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    load_balancer_class: str | None = None
    allocate_load_balancer_node_ports: bool | None = None
    ip_families: list[Literal["IPv4", "IPv6"]] | None = Field(default=None, alias="ipFamilies")
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    publish_not_ready_addresses: bool | None = None
    traffic_distribution: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        ports = self.ports or []
        if self.type == "ExternalName":
            if not self.external_name:
                raise field_error(
                    "Required value: must be set when `type` is 'ExternalName'", "externalName"
                )
            errs = dns1123_subdomain_errors(self.external_name.removesuffix("."))
            if errs:
                raise field_error(invalid(self.external_name, "; ".join(errs)), "externalName")
        elif not ports and self.cluster_ip != "None":
            raise field_error("Required value: a service needs at least one port", "ports")
        names: set[str] = set()
        endpoints: set[tuple[int, str]] = set()
        for i, port in enumerate(ports):
            if len(ports) > 1 and not port.name:
                raise field_error(
                    "Required value: ports must be named when a service has several",
                    "ports",
                    i,
                    "name",
                )
            if port.name:
                if port.name in names:
                    raise field_error(duplicate(port.name), "ports", i, "name")
                names.add(port.name)
            key = (port.port, port.protocol)
            if key in endpoints:
                raise field_error(duplicate(f"{port.port}/{port.protocol}"), "ports", i)
            endpoints.add(key)
            if port.node_port is not None and self.type not in ("NodePort", "LoadBalancer"):
                raise field_error(
                    f"Forbidden: may not be used when `type` is '{self.type}'",
                    "ports",
                    i,
                    "nodePort",
                )
        return self


class ServiceStatus(K8sModel):
    """Server-managed."""

    load_balancer: dict[str, Any] | None = None
    conditions: list[Condition] | None = None


class Service(ResourceBase):
    """A service (core/v1)."""

    NAME_RULE = staticmethod(dns1035_label_errors)
    NAMESPACED = True

    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    spec: ServiceSpec
    status: ServiceStatus | None = None


__all__ = ["Service", "ServicePort", "ServiceSpec", "ServiceStatus", "ServiceType"]
