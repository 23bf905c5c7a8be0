"""A ServiceEntry's spec: hosts, addresses, ports, location, resolution and its endpoints or
workload selector, validated as Istio validates it.

Why this exists: a ServiceEntry adds services the mesh does not run, with rules of their own
(what each resolution allows); the builder turns them into clusters and endpoints.
"""

from __future__ import annotations

from typing import Literal

from core.mesh import checks
from core.mesh.kinds.common import Port, WorkloadSelector, _add_all
from core.meta.model import K8sModel, Problems
from core.meta.names import label_problems


class WorkloadEntry(K8sModel):
    address: str = ""
    ports: dict[str, int] = {}
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: int = 0
    service_account: str | None = None


ServicePort = Port


class ServiceEntrySpec(K8sModel):
    hosts: list[str] = []
    addresses: list[str] = []
    ports: list[ServicePort] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntry] | None = None
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []

    def problems(self) -> Problems:
        """``ValidateServiceEntry``."""
        found = Problems()
        endpoints = self.endpoints or []
        if self.workload_selector is not None and self.endpoints is not None:
            found.add("only one of WorkloadSelector or Endpoints is allowed in Service Entry")
        if not self.hosts:
            found.add("service entry must have at least one host", "hosts")
        for index, host in enumerate(self.hosts):
            if host == "*":
                found.add(f"invalid host {host}", "hosts", index)
            else:
                _add_all(found, checks.wildcard_domain_errors(host), "hosts", index)
        cidr = False
        for index, address in enumerate(self.addresses):
            cidr = cidr or "/" in address
            _add_all(found, checks.ip_subnet_errors(address), "addresses", index)
        if cidr and self.resolution not in ("NONE", "STATIC"):
            found.add(
                "CIDR addresses are allowed only for NONE/STATIC resolution types", "addresses"
            )
        names: set[str] = set()
        numbers: set[int] = set()
        for index, port in enumerate(self.ports):
            if port.name in names:
                found.add(
                    f'service entry port name "{port.name}" already defined', "ports", index, "name"
                )
            if port.number in numbers:
                found.add(
                    f"service entry port {port.number} already defined", "ports", index, "number"
                )
            names.add(port.name)
            numbers.add(port.number)
            if port.target_port:
                _add_all(found, checks.port_errors(port.target_port), "ports", index, "targetPort")
            _add_all(found, checks.port_name_errors(port.name), "ports", index, "name")
            if port.protocol and checks.protocol_of(port.protocol) is None:
                found.add(f"unsupported protocol: {port.protocol}", "ports", index, "protocol")
            _add_all(found, checks.port_errors(port.number), "ports", index, "number")
        if self.resolution == "NONE" and endpoints:
            found.add("no endpoints should be provided for resolution type none", "endpoints")
        elif self.resolution == "STATIC":
            for index, endpoint in enumerate(endpoints):
                found.extend(
                    self._endpoint_problems(endpoint, fqdn=False).items, "endpoints", index
                )
        elif self.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            if not endpoints:
                for index, host in enumerate(self.hosts):
                    if messages := checks.fqdn_errors(host):
                        found.add(
                            "hosts must be FQDN or contain only prefix wildcards if no endpoints "
                            f"are provided for resolution mode {self.resolution}, {messages[0]}",
                            "hosts",
                            index,
                        )
                        break
            if self.resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
                found.add(
                    f"there must only be 0 or 1 endpoint for resolution mode {self.resolution}",
                    "endpoints",
                )
            for index, endpoint in enumerate(endpoints):
                found.extend(self._endpoint_problems(endpoint, fqdn=True).items, "endpoints", index)
        if self.resolution != "NONE" and len(self.hosts) > 1:
            for port in self.ports:
                protocol = checks.protocol_of(port.protocol) or ""
                if protocol not in checks.HTTP_PROTOCOLS | checks.TLS_PROTOCOLS:
                    found.add("multiple hosts provided with non-HTTP, non-TLS ports", "hosts")
                    break
        return found

    def _endpoint_problems(self, endpoint: WorkloadEntry, *, fqdn: bool) -> Problems:
        """``validateWorkloadEntry`` (STATIC: addresses are IPs; DNS: IPs or host names)."""
        found = Problems()
        address = endpoint.address
        if not address:
            found.add("address is required", "address")
        elif address.startswith("unix://"):
            if endpoint.ports:
                found.add(f"unix endpoint {address} must not include ports", "ports")
        elif not checks.is_ip(address):
            if not fqdn:
                found.add(f'endpoint address "{address}" is not a valid IP address', "address")
            elif checks.fqdn_errors(address):
                found.add(
                    f'endpoint address "{address}" is not a valid FQDN or an IP address', "address"
                )
        port_names = {port.name for port in self.ports}
        for name, number in endpoint.ports.items():
            if name not in port_names:
                found.add(
                    f"endpoint port {number} is not defined by the service entry", "ports", name
                )
            _add_all(found, checks.port_name_errors(name), "ports", name)
            _add_all(found, checks.port_errors(number), "ports", name)
        found.extend(label_problems(endpoint.labels), "labels")
        return found
