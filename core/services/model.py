"""The Service (core/v1): a stable name and virtual IP in front of the pods a selector picks.

Why this exists: the gateway's allocator, the endpoint-slice controller and the node's
forwarding build on services, so a service is validated and defaulted as kube-apiserver does it
(``pkg/apis/core/validation.ValidateService`` and ``v1.SetDefaults_Service``), with every
problem reported at once: protocol TCP, ``targetPort`` defaulting to ``port``, ports named when
there are several, ``sessionAffinity: ClientIP`` with a 3-hour timeout unless one is given,
``externalTrafficPolicy``/``internalTrafficPolicy: Cluster`` where they apply, ``clusterIPs``
following ``clusterIP``. Service names are DNS-1035 labels (they must start with a letter)
because they become DNS names and environment variable names.

What depends on the cluster (the IP families it serves, whether a requested ``clusterIP`` or
``nodePort`` is in range and free) is decided by ``core.services.allocation`` when the service
is written, as kube-apiserver's service registry does after validation.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from core.meta.fields import PortNumber, PortNumberOrName
from core.meta.model import K8sModel, Problems, duplicate, invalid
from core.meta.names import (
    DNSLabel,
    Labels,
    QualifiedName,
    dns1035_label_errors,
    dns1123_subdomain_errors,
)
from core.meta.types import Condition, ObjectMeta, ResourceBase
from core.pods.resources import Protocol
from core.services.balancing import POLICY_ANNOTATION, policy_problem

ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
IPFamily = Literal["IPv4", "IPv6"]
IPFamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]

CLUSTER_IP_NONE = "None"
"""``clusterIP: None``: a headless service (no virtual IP; DNS answers with the pods)."""
DEFAULT_CLIENT_IP_TIMEOUT_SECONDS = 10800
"""``sessionAffinity: ClientIP`` keeps a client on one endpoint this long (3 hours) by default."""
MAX_CLIENT_IP_TIMEOUT_SECONDS = 86400
IP_MESSAGE = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _shown(values: list[str]) -> str:
    return json.dumps(values, separators=(", ", ": "))


def ip_errors(value: str) -> list[str]:
    """``validation.IsValidIP``: an IPv4 or IPv6 address in canonical-enough form."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return [IP_MESSAGE]
    return []


class ServicePort(K8sModel):
    """One exposed port; ``targetPort`` (a number or a container port name) defaults to ``port``."""

    name: DNSLabel | None = None
    protocol: Protocol = "TCP"
    app_protocol: QualifiedName | None = None
    port: PortNumber
    target_port: PortNumberOrName | None = None
    node_port: PortNumber | None = None

    @model_validator(mode="after")
    def _default_target(self) -> Self:
        if self.target_port is None or self.target_port == 0:
            self.target_port = self.port
        return self


class ClientIPConfig(K8sModel):
    timeout_seconds: int | None = None


class SessionAffinityConfig(K8sModel):
    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


class ServiceSpec(K8sModel):
    type: ServiceType = "ClusterIP"
    selector: Labels | None = None
    ports: list[ServicePort] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    external_ips: list[str] | None = Field(default=None, alias="externalIPs")
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_config: SessionAffinityConfig | None = None
    external_traffic_policy: Literal["Cluster", "Local"] | None = None
    internal_traffic_policy: Literal["Cluster", "Local"] | None = None
    health_check_node_port: PortNumber | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] | None = None
    load_balancer_class: QualifiedName | None = None
    allocate_load_balancer_node_ports: bool | None = None
    ip_families: list[IPFamily] | None = Field(default=None, alias="ipFamilies")
    ip_family_policy: IPFamilyPolicy | None = None
    publish_not_ready_addresses: bool | None = None
    traffic_distribution: str | None = None

    @property
    def headless(self) -> bool:
        return self.cluster_ip == CLUSTER_IP_NONE

    @property
    def externally_accessible(self) -> bool:
        """``service.ExternallyAccessible``: reachable from outside the cluster's pods."""
        return self.type in ("NodePort", "LoadBalancer") or (
            self.type == "ClusterIP" and bool(self.external_ips)
        )

    @model_validator(mode="after")
    def _defaults_then_check(self) -> Self:
        self._default()
        found = Problems()
        self._check_type(found)
        self._check_ports(found)
        self._check_affinity(found)
        if self.type != "ExternalName":
            self._check_cluster_ips(found)
        for i, ip in enumerate(self.external_ips or ()):
            for message in ip_errors(ip):
                found.add(invalid(ip, message), "externalIPs", i)
        self._check_traffic_policy(found)
        found.check()
        return self

    # -- v1.SetDefaults_Service and the strategy's NormalizeClusterIPs on create ---------------

    def _default(self) -> None:
        if self.session_affinity == "None":
            self.session_affinity_config = None
        else:
            config = self.session_affinity_config
            if (
                config is None
                or config.client_ip is None
                or config.client_ip.timeout_seconds is None
            ):
                self.session_affinity_config = SessionAffinityConfig(
                    client_ip=ClientIPConfig(timeout_seconds=DEFAULT_CLIENT_IP_TIMEOUT_SECONDS)
                )
        if self.externally_accessible and self.external_traffic_policy is None:
            self.external_traffic_policy = "Cluster"
        if self.internal_traffic_policy is None and self.type != "ExternalName":
            self.internal_traffic_policy = "Cluster"
        if self.type == "LoadBalancer" and self.allocate_load_balancer_node_ports is None:
            self.allocate_load_balancer_node_ports = True
        if self.cluster_ip and not self.cluster_ips:
            self.cluster_ips = [self.cluster_ip]

    # -- ValidateService -------------------------------------------------------------------------

    def _check_type(self, found: Problems) -> None:
        ports = self.ports or []
        if not ports and not self.headless and self.type != "ExternalName":
            found.add("Required value: a service needs at least one port", "ports")
        if self.type in ("LoadBalancer", "NodePort") and self.headless:
            found.add(
                invalid(CLUSTER_IP_NONE, f"may not be set to 'None' for {self.type} services"),
                "clusterIPs",
                0,
            )
        if self.type == "ExternalName":
            for value, path in (
                (self.cluster_ips or self.cluster_ip, "clusterIPs"),
                (self.ip_families, "ipFamilies"),
                (self.ip_family_policy, "ipFamilyPolicy"),
            ):
                if value:
                    found.add("Forbidden: may not be set for ExternalName services", path)
            name = (self.external_name or "").removesuffix(".")
            if not name:
                found.add(
                    "Required value: must be set when `type` is 'ExternalName'", "externalName"
                )
            else:
                errors = dns1123_subdomain_errors(name)
                if errors:
                    found.add(invalid(self.external_name, "; ".join(errors)), "externalName")
        if self.type != "LoadBalancer":
            for value, path in (
                (self.load_balancer_source_ranges, "loadBalancerSourceRanges"),
                (self.load_balancer_class, "loadBalancerClass"),
                (self.allocate_load_balancer_node_ports, "allocateLoadBalancerNodePorts"),
            ):
                if value is not None and value != []:
                    found.add("Forbidden: may only be used when `type` is 'LoadBalancer'", path)

    def _check_ports(self, found: Problems) -> None:
        ports = self.ports or []
        names: set[str] = set()
        endpoints: set[tuple[int, str]] = set()
        node_ports: set[tuple[int, str]] = set()
        for i, port in enumerate(ports):
            if len(ports) > 1 and not port.name:
                found.add(
                    "Required value: ports must be named when a service has several",
                    "ports",
                    i,
                    "name",
                )
            if port.name:
                if port.name in names:
                    found.add(duplicate(port.name), "ports", i, "name")
                names.add(port.name)
            key = (port.port, port.protocol)
            if key in endpoints:
                found.add(duplicate(f"{port.port}/{port.protocol}"), "ports", i)
            endpoints.add(key)
            if port.node_port is None:
                continue
            if self.type not in ("NodePort", "LoadBalancer"):
                found.add(
                    f"Forbidden: may not be used when `type` is '{self.type}'",
                    "ports",
                    i,
                    "nodePort",
                )
            node_key = (port.node_port, port.protocol)
            if node_key in node_ports:
                found.add(duplicate(port.node_port), "ports", i, "nodePort")
            node_ports.add(node_key)

    def _check_affinity(self, found: Problems) -> None:
        config = self.session_affinity_config
        if config is None or config.client_ip is None:
            return
        timeout = config.client_ip.timeout_seconds
        if timeout is not None and not 0 < timeout <= MAX_CLIENT_IP_TIMEOUT_SECONDS:
            found.add(
                invalid(
                    timeout, f"must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT_SECONDS}"
                ),
                "sessionAffinityConfig",
                "clientIP",
                "timeoutSeconds",
            )

    def _check_cluster_ips(self, found: Problems) -> None:
        """``ValidateServiceClusterIPsRelatedFields``: ``clusterIP`` and ``clusterIPs`` agree,
        each is an IP (``None`` only alone), at most one per family, families not repeated."""
        ips = self.cluster_ips or []
        if self.cluster_ip:
            if not ips:
                found.add("Required value", "clusterIPs")
            elif ips[0] != self.cluster_ip:
                found.add(
                    f"Invalid value: {_shown(ips)}: first value must match `clusterIP`",
                    "clusterIPs",
                )
        elif ips:
            found.add(
                f"Invalid value: {_shown(ips)}: must be empty when `clusterIP` is not specified",
                "clusterIPs",
            )
        bad = False
        for i, ip in enumerate(ips):
            if ip == CLUSTER_IP_NONE and i == 0:
                if len(ips) > 1:
                    bad = True
                    found.add(
                        f"Invalid value: {_shown(ips)}: 'None' must be the first and only value",
                        "clusterIPs",
                    )
                continue
            for message in ip_errors(ip):
                bad = True
                found.add(invalid(ip, message), "clusterIPs", i)
        if len(ips) > 2:
            found.add(f"Invalid value: {_shown(ips)}: may only hold up to 2 values", "clusterIPs")
        if not bad and len(ips) == 2:
            versions = {ipaddress.ip_address(ip).version for ip in ips}
            if len(versions) != 2:
                found.add(
                    f"Invalid value: {_shown(ips)}: "
                    "may specify no more than one IP for each IP family",
                    "clusterIPs",
                )
        seen: set[str] = set()
        for i, family in enumerate(self.ip_families or ()):
            if family in seen:
                found.add(duplicate(family), "ipFamilies", i)
            seen.add(family)
        if bad or self.headless:
            return
        for i, (ip, family) in enumerate(zip(ips, self.ip_families or (), strict=False)):
            version = ipaddress.ip_address(ip).version
            if (family == "IPv4") != (version == 4):
                found.add(
                    invalid(ip, f"expected an {family} value as indicated by `ipFamilies[{i}]`"),
                    "clusterIPs",
                    i,
                )

    def _check_traffic_policy(self, found: Problems) -> None:
        if not self.externally_accessible and self.external_traffic_policy is not None:
            found.add(
                invalid(
                    self.external_traffic_policy,
                    "may only be set for externally-accessible services",
                ),
                "externalTrafficPolicy",
            )
        needs_health_check = self.type == "LoadBalancer" and self.external_traffic_policy == "Local"
        if not needs_health_check and self.health_check_node_port is not None:
            found.add(
                invalid(
                    self.health_check_node_port,
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` "
                    "is 'Local'",
                ),
                "healthCheckNodePort",
            )


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

    @field_validator("metadata")
    @classmethod
    def _check_policy(cls, meta: ObjectMeta) -> ObjectMeta:
        """The balancing policy annotation names one of the five policies: a typo would
        otherwise balance the service another way without a word."""
        problems = Problems()
        problem = policy_problem(meta.annotations)
        if problem:
            problems.add(problem, "annotations", POLICY_ANNOTATION)
        problems.check()
        return meta


__all__ = [
    "CLUSTER_IP_NONE",
    "ClientIPConfig",
    "Service",
    "ServicePort",
    "ServiceSpec",
    "ServiceStatus",
    "ServiceType",
    "SessionAffinityConfig",
]
