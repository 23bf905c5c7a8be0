"""The Pod (core/v1): the pod spec, its status, and the Pod model itself.

Why this exists: the pod spec is what the scheduler filters and scores, what the node agent runs
and what a Deployment stamps out, so it has to accept the manifests people already have and
refuse the ones Kubernetes refuses, with the same defaults (restartPolicy Always,
terminationGracePeriodSeconds 30, ...) so that decisions made on it match what a Kubernetes
cluster would decide. Defaults are those of ``pkg/apis/core/v1/defaults.go``; checks are those
of ``pkg/apis/core/validation``. The parts of a pod spec live beside this module
(``containers``, ``env``, ``resources``, ``affinity``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from core.meta.fields import Timestamp
from core.meta.model import K8sModel, duplicate, field_error, invalid
from core.meta.names import (
    DNSLabel,
    DNSSubdomain,
    Labels,
    QualifiedName,
)
from core.meta.quantity import parse_quantity
from core.meta.types import Condition, ResourceBase, Toleration
from core.pods.affinity import Affinity, TopologySpreadConstraint
from core.pods.containers import Container
from core.pods.env import LocalObjectReference
from core.pods.resources import ResourceList, ResourceRequirements, container_resource_name_errors

# --------------------------------------------------------------------------------------------
# Volumes and the rest of the pod spec
# --------------------------------------------------------------------------------------------


class Volume(K8sModel):
    """A named volume with exactly one source (the source's own fields are not modelled)."""

    SOURCES: ClassVar[tuple[str, ...]] = (
        "empty_dir",
        "host_path",
        "config_map",
        "secret",
        "projected",
        "persistent_volume_claim",
        "downward_api",
        "ephemeral",
        "nfs",
        "csi",
        "image",
    )

    name: DNSLabel
    empty_dir: dict[str, Any] | None = None
    host_path: dict[str, Any] | None = None
    config_map: dict[str, Any] | None = None
    secret: dict[str, Any] | None = None
    projected: dict[str, Any] | None = None
    persistent_volume_claim: dict[str, Any] | None = None
    downward_api: dict[str, Any] | None = Field(default=None, alias="downwardAPI")
    ephemeral: dict[str, Any] | None = None
    nfs: dict[str, Any] | None = None
    csi: dict[str, Any] | None = None
    image: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        fields = type(self).model_fields
        given = [fields[n].alias or n for n in self.SOURCES if getattr(self, n) is not None]
        if not given:
            raise field_error("Required value: must specify a volume type")
        if len(given) > 1:
            raise field_error("Forbidden: may not specify more than 1 volume type", given[1])
        return self


class HostAlias(K8sModel):
    ip: str
    hostnames: list[str] | None = None


class PodReadinessGate(K8sModel):
    condition_type: QualifiedName


class PodSchedulingGate(K8sModel):
    name: QualifiedName


class PodOS(K8sModel):
    name: Literal["linux", "windows"]


class PodDNSConfigOption(K8sModel):
    name: str
    value: str | None = None


class PodDNSConfig(K8sModel):
    nameservers: list[str] | None = None
    searches: list[str] | None = None
    options: list[PodDNSConfigOption] | None = None


DNSPolicy = Literal["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]


class PodSpec(K8sModel):
    """What to run and where it may run. Shared by Pod and the Deployment's pod template."""

    containers: list[Container]
    init_containers: list[Container] | None = None
    volumes: list[Volume] | None = None
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    termination_grace_period_seconds: Annotated[int, Field(ge=0)] = 30
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    dns_policy: DNSPolicy = "ClusterFirst"
    dns_config: PodDNSConfig | None = None
    node_selector: Labels | None = None
    node_name: DNSSubdomain | None = None
    service_account_name: DNSSubdomain | None = None
    service_account: str | None = None
    automount_service_account_token: bool | None = None
    host_network: bool | None = None
    host_pid: bool | None = Field(default=None, alias="hostPID")
    host_ipc: bool | None = Field(default=None, alias="hostIPC")
    host_users: bool | None = None
    share_process_namespace: bool | None = None
    security_context: dict[str, Any] | None = None
    image_pull_secrets: list[LocalObjectReference] | None = None
    hostname: DNSLabel | None = None
    subdomain: DNSLabel | None = None
    set_hostname_as_fqdn: bool | None = Field(default=None, alias="setHostnameAsFQDN")
    host_aliases: list[HostAlias] | None = None
    affinity: Affinity | None = None
    scheduler_name: DNSSubdomain = "default-scheduler"
    tolerations: list[Toleration] | None = None
    priority_class_name: DNSSubdomain | None = None
    priority: Annotated[int, Field(ge=-(2**31), le=2**31 - 1)] | None = None  # int32
    preemption_policy: Literal["PreemptLowerPriority", "Never"] | None = None
    runtime_class_name: str | None = None
    enable_service_links: bool | None = None
    overhead: ResourceList | None = None
    topology_spread_constraints: list[TopologySpreadConstraint] | None = None
    readiness_gates: list[PodReadinessGate] | None = None
    scheduling_gates: list[PodSchedulingGate] | None = None
    os: PodOS | None = None
    resources: ResourceRequirements | None = None
    resource_claims: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _cross_field_checks(self) -> Self:
        if not self.containers:
            raise field_error("Required value: a pod needs at least one container", "containers")
        if self.overhead:
            for name, text in self.overhead.items():
                errs = container_resource_name_errors(name)
                if errs:
                    raise field_error(invalid(name, "; ".join(errs)), "overhead", name)
                if parse_quantity(text).sign() < 0:
                    raise field_error(
                        invalid(text, "must be greater than or equal to 0"), "overhead", name
                    )
        self._check_container_names()
        self._check_ports()
        self._check_init_containers()
        self._check_volumes()
        self._check_spread()
        self._check_scheduling_gates()
        if self.dns_policy == "None" and self.dns_config is None:
            raise field_error(
                "Required value: must provide `dnsConfig` when `dnsPolicy` is None", "dnsConfig"
            )
        return self

    def all_containers(self) -> list[tuple[str, int, Container]]:
        """(field, index, container) for init containers then regular containers."""
        out = [("initContainers", i, c) for i, c in enumerate(self.init_containers or ())]
        out += [("containers", i, c) for i, c in enumerate(self.containers)]
        return out

    def _check_container_names(self) -> None:
        seen: set[str] = set()
        for section, i, container in self.all_containers():
            if container.name in seen:
                raise field_error(duplicate(container.name), section, i, "name")
            seen.add(container.name)

    def _check_ports(self) -> None:
        names: set[str] = set()
        container_ports: set[tuple[int, str, str]] = set()
        host_ports: set[tuple[int, str, str]] = set()
        for i, container in enumerate(self.containers):
            for j, port in enumerate(container.ports or ()):
                where = ("containers", i, "ports", j)
                if port.name is not None:
                    if port.name in names:
                        raise field_error(duplicate(port.name), *where, "name")
                    names.add(port.name)
                key = (port.container_port, port.protocol, port.host_ip or "")
                if key in container_ports:
                    raise field_error(
                        duplicate(f"{port.container_port}/{port.protocol}"),
                        *where,
                        "containerPort",
                    )
                container_ports.add(key)
                if port.host_port:
                    if self.host_network and port.host_port != port.container_port:
                        raise field_error(
                            invalid(
                                port.host_port,
                                "must match `containerPort` when `hostNetwork` is true",
                            ),
                            *where,
                            "hostPort",
                        )
                    host_key = (port.host_port, port.protocol, port.host_ip or "")
                    if host_key in host_ports:
                        raise field_error(
                            duplicate(f"{port.host_port}/{port.protocol}"), *where, "hostPort"
                        )
                    host_ports.add(host_key)

    def _check_init_containers(self) -> None:
        for i, container in enumerate(self.containers):
            if container.restart_policy is not None:
                raise field_error(
                    "Forbidden: may not be set for non-init containers",
                    "containers",
                    i,
                    "restartPolicy",
                )
        for i, container in enumerate(self.init_containers or ()):
            if container.restart_policy == "Always":
                continue  # a sidecar: probes are allowed
            for alias, probe in (
                ("livenessProbe", container.liveness_probe),
                ("readinessProbe", container.readiness_probe),
                ("startupProbe", container.startup_probe),
            ):
                if probe is not None:
                    raise field_error(
                        "Forbidden: may not be set for init containers without "
                        "restartPolicy=Always",
                        "initContainers",
                        i,
                        alias,
                    )

    def _check_volumes(self) -> None:
        volume_names: set[str] = set()
        for i, volume in enumerate(self.volumes or ()):
            if volume.name in volume_names:
                raise field_error(duplicate(volume.name), "volumes", i, "name")
            volume_names.add(volume.name)
        for section, i, container in self.all_containers():
            for j, mount in enumerate(container.volume_mounts or ()):
                if mount.name not in volume_names:
                    raise field_error(
                        f"Not found: {mount.name!r} (no volume of that name in spec.volumes)",
                        section,
                        i,
                        "volumeMounts",
                        j,
                        "name",
                    )

    def _check_scheduling_gates(self) -> None:
        seen: set[str] = set()
        for i, gate in enumerate(self.scheduling_gates or ()):
            if gate.name in seen:
                raise field_error(duplicate(gate.name), "schedulingGates", i)
            seen.add(gate.name)

    def _check_spread(self) -> None:
        seen: set[tuple[str, str]] = set()
        for i, constraint in enumerate(self.topology_spread_constraints or ()):
            key = (constraint.topology_key, constraint.when_unsatisfiable)
            if key in seen:
                raise field_error(
                    duplicate(f"{key[0]}, {key[1]}"),
                    "topologySpreadConstraints",
                    i,
                    "topologyKey",
                )
            seen.add(key)


# --------------------------------------------------------------------------------------------
# The Pod
# --------------------------------------------------------------------------------------------


class PodIP(K8sModel):
    ip: str


class PodStatus(K8sModel):
    """Server-managed: what the node agent last reported. Nested details are kept loosely."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] | None = None
    conditions: list[Condition] | None = None
    message: str | None = None
    reason: str | None = None
    nominated_node_name: str | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")
    host_ips: list[PodIP] | None = Field(default=None, alias="hostIPs")
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] | None = Field(default=None, alias="podIPs")
    start_time: Timestamp | None = None
    init_container_statuses: list[dict[str, Any]] | None = None
    container_statuses: list[dict[str, Any]] | None = None
    ephemeral_container_statuses: list[dict[str, Any]] | None = None
    qos_class: Literal["Guaranteed", "Burstable", "BestEffort"] | None = None
    resize: str | None = None
    resource_claim_statuses: list[dict[str, Any]] | None = None
    observed_generation: int | None = None


class Pod(ResourceBase):
    """A pod (core/v1): one or more containers scheduled together onto one node."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    spec: PodSpec
    status: PodStatus | None = None
