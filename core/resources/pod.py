"""The Pod (core/v1) and everything a pod spec is made of: containers, probes, affinity, ...

Why this exists: the pod spec is what the scheduler filters and scores, what the node agent runs
and what a Deployment stamps out, so it has to accept the manifests people already have and
refuse the ones Kubernetes refuses, with the same defaults (probe timings, restartPolicy Always,
terminationGracePeriodSeconds 30, requests copied from limits, ...) so that decisions made on it
match what a Kubernetes cluster would decide. Defaults are those of
``pkg/apis/core/v1/defaults.go``; checks are those of ``pkg/apis/core/validation``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from core.quantity import parse_quantity
from core.resources.base import (
    Condition,
    ConfigKey,
    DNSLabel,
    DNSSubdomain,
    K8sModel,
    Labels,
    LabelSelector,
    PortName,
    PortNumber,
    PortNumberOrName,
    QualifiedName,
    QuantityString,
    ResourceBase,
    Timestamp,
    duplicate,
    field_error,
    invalid,
    qualified_name_errors,
)

Protocol = Literal["TCP", "UDP", "SCTP"]
ResourceList = dict[str, QuantityString]
"""Resource name -> canonical quantity string (``{"cpu": "500m", "memory": "128Mi"}``)."""

# --------------------------------------------------------------------------------------------
# Compute resources
# --------------------------------------------------------------------------------------------

_STANDARD_CONTAINER_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})


def _is_extended_resource(name: str) -> bool:
    """Extended resources (``example.com/gpu``) are integers and cannot be overcommitted."""
    return "/" in name and "kubernetes.io/" not in name and not name.startswith("requests.")


def container_resource_name_errors(name: str) -> list[str]:
    """Problems with ``name`` as a container resource (``cpu``, ``hugepages-2Mi``, ``x.io/gpu``)."""
    if name in _STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-"):
        return []
    errs = qualified_name_errors(name)
    if errs:
        return errs
    if "/" not in name:
        return [
            "must be a standard resource for containers (cpu, memory, ephemeral-storage, "
            "hugepages-<size>) or a fully qualified extended resource such as example.com/gpu"
        ]
    return []


def _check_resource_list(section: str, resources: dict[str, str]) -> None:
    for name, text in resources.items():
        errs = container_resource_name_errors(name)
        if errs:
            raise field_error(invalid(name, "; ".join(errs)), section, name)
        quantity = parse_quantity(text)
        if quantity.sign() < 0:
            raise field_error(invalid(text, "must be greater than or equal to 0"), section, name)
        if _is_extended_resource(name) and quantity.amount.denominator != 1:
            raise field_error(invalid(text, "must be an integer"), section, name)


class ResourceClaim(K8sModel):
    """A reference to a pod-level resource claim (dynamic resource allocation)."""

    name: str
    request: str | None = None


class ResourceRequirements(K8sModel):
    """``requests`` and ``limits``; a limit without a request sets the request (as Kubernetes)."""

    limits: ResourceList | None = None
    requests: ResourceList | None = None
    claims: list[ResourceClaim] | None = None

    @model_validator(mode="after")
    def _default_and_check(self) -> Self:
        limits = self.limits or {}
        if limits:
            requests = dict(self.requests or {})
            missing = {k: v for k, v in limits.items() if k not in requests}
            if missing:
                requests.update(missing)
                self.requests = requests
        requests = self.requests or {}
        _check_resource_list("limits", limits)
        _check_resource_list("requests", requests)
        for name, request in requests.items():
            limit = limits.get(name)
            if limit is None:
                if _is_extended_resource(name):
                    raise field_error(
                        "Forbidden: a limit must be set for non-overcommitable resources",
                        "limits",
                        name,
                    )
                continue
            if _is_extended_resource(name) and parse_quantity(request) != parse_quantity(limit):
                raise field_error(
                    invalid(request, f"must be equal to {name} limit of {limit}"), "requests", name
                )
            if parse_quantity(request) > parse_quantity(limit):
                raise field_error(
                    invalid(request, f"must be less than or equal to {name} limit of {limit}"),
                    "requests",
                    name,
                )
        return self


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

_ENV_NAME_RE: Final = re.compile(r"[\x20-\x3c\x3e-\x7e]+")  # printable ASCII except '='


_FIELD_PATHS: Final = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "metadata.labels",
        "metadata.annotations",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    }
)
_SUBSCRIPT_PATH_RE: Final = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class ObjectFieldSelector(K8sModel):
    """``fieldRef``: a field of the pod itself (``metadata.name``, ``status.podIP``, ...)."""

    api_version: str = "v1"
    field_path: str

    @model_validator(mode="after")
    def _supported(self) -> Self:
        path = self.field_path
        if path in _FIELD_PATHS:
            return self
        match = _SUBSCRIPT_PATH_RE.fullmatch(path)
        if match and not qualified_name_errors(match.group(2).lower()):
            return self
        supported = ", ".join(f'"{p}"' for p in sorted(_FIELD_PATHS))
        raise field_error(
            f"Unsupported value {path!r}: supported values: {supported}, "
            "\"metadata.labels['<KEY>']\", \"metadata.annotations['<KEY>']\"",
            "fieldPath",
        )


_RESOURCE_FIELD_REFS: Final = frozenset(
    {
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
    }
)


class ResourceFieldSelector(K8sModel):
    """``resourceFieldRef``: a container's request or limit, divided by ``divisor``."""

    container_name: str | None = None
    resource: str
    divisor: QuantityString | None = None

    @model_validator(mode="after")
    def _supported(self) -> Self:
        res = self.resource
        if res not in _RESOURCE_FIELD_REFS and not res.startswith(
            ("limits.hugepages-", "requests.hugepages-")
        ):
            supported = ", ".join(f'"{r}"' for r in sorted(_RESOURCE_FIELD_REFS))
            raise field_error(
                f"Unsupported value {res!r}: supported values: {supported}", "resource"
            )
        if self.divisor is not None and parse_quantity(self.divisor).sign() <= 0:
            raise field_error(invalid(self.divisor, "must be greater than 0"), "divisor")
        return self


class ConfigMapKeySelector(K8sModel):
    """``configMapKeyRef``: one key of a ConfigMap."""

    name: str
    key: ConfigKey
    optional: bool | None = None


class SecretKeySelector(K8sModel):
    """``secretKeyRef``: one key of a Secret."""

    name: str
    key: ConfigKey
    optional: bool | None = None


class EnvVarSource(K8sModel):
    """``valueFrom``: exactly one source."""

    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            alias
            for name, alias in (
                ("field_ref", "fieldRef"),
                ("resource_field_ref", "resourceFieldRef"),
                ("config_map_key_ref", "configMapKeyRef"),
                ("secret_key_ref", "secretKeyRef"),
            )
            if getattr(self, name) is not None
        ]
        if not given:
            raise field_error(
                "Required value: must specify one of: `fieldRef`, `resourceFieldRef`, "
                "`configMapKeyRef` or `secretKeyRef`"
            )
        if len(given) > 1:
            raise field_error(
                "Forbidden: may not have more than one field specified at a time", given[1]
            )
        return self


class EnvVar(K8sModel):
    """One environment variable: a literal ``value`` or a ``valueFrom`` source."""

    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.name:
            raise field_error("Required value: an environment variable needs a name", "name")
        if not _ENV_NAME_RE.fullmatch(self.name):
            raise field_error(
                invalid(
                    self.name,
                    "a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='",
                ),
                "name",
            )
        if self.value and self.value_from is not None:
            raise field_error(
                "Forbidden: may not be specified when `value` is not empty", "valueFrom"
            )
        return self


class LocalObjectReference(K8sModel):
    """A reference by name to an object in the same namespace."""

    name: str
    optional: bool | None = None


class EnvFromSource(K8sModel):
    """``envFrom``: every key of a ConfigMap or Secret, optionally prefixed."""

    prefix: str | None = None
    config_map_ref: LocalObjectReference | None = None
    secret_ref: LocalObjectReference | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if self.config_map_ref is None and self.secret_ref is None:
            raise field_error("Required value: must specify one of: `configMapRef` or `secretRef`")
        if self.config_map_ref is not None and self.secret_ref is not None:
            raise field_error(
                "Forbidden: may not have more than one field specified at a time", "secretRef"
            )
        return self


# --------------------------------------------------------------------------------------------
# Ports, probes, lifecycle
# --------------------------------------------------------------------------------------------


class ContainerPort(K8sModel):
    """A port the container listens on (informational, except for hostPort)."""

    name: PortName | None = None
    container_port: PortNumber
    host_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")
    protocol: Protocol = "TCP"


class ExecAction(K8sModel):
    """Run a command in the container; exit status 0 is success."""

    command: list[str] | None = None


class HTTPHeader(K8sModel):
    name: str
    value: str


class HTTPGetAction(K8sModel):
    """An HTTP GET; any status in [200, 400) is success. Path defaults to ``/``, scheme HTTP."""

    path: str = "/"
    port: PortNumberOrName
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    http_headers: list[HTTPHeader] | None = None

    @model_validator(mode="after")
    def _default_path(self) -> Self:
        if self.path == "":
            self.path = "/"
        return self


class TCPSocketAction(K8sModel):
    """Open a TCP connection; success if it connects."""

    port: PortNumberOrName
    host: str | None = None


class GRPCAction(K8sModel):
    """A gRPC health check (``grpc.health.v1``)."""

    port: PortNumber
    service: str | None = None


class SleepAction(K8sModel):
    seconds: Annotated[int, Field(ge=0)]


def _one_handler(model: K8sModel, names: Iterable[str], kinds: str) -> None:
    fields = type(model).model_fields
    given = [fields[n].alias or n for n in names if getattr(model, n) is not None]
    if not given:
        raise field_error(f"Required value: must specify a handler type (one of: {kinds})")
    if len(given) > 1:
        raise field_error("Forbidden: may not specify more than 1 handler type", given[1])


class Probe(K8sModel):
    """A liveness/readiness/startup probe: exactly one handler plus the timings.

    Zero timings mean "default" as in Kubernetes: timeout 1 s, period 10 s, success threshold 1,
    failure threshold 3.
    """

    HANDLERS: ClassVar[tuple[str, ...]] = ("exec", "http_get", "tcp_socket", "grpc")

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: Annotated[int, Field(ge=0)] = 0
    timeout_seconds: Annotated[int, Field(ge=0)] = 1
    period_seconds: Annotated[int, Field(ge=0)] = 10
    success_threshold: Annotated[int, Field(ge=0)] = 1
    failure_threshold: Annotated[int, Field(ge=0)] = 3
    termination_grace_period_seconds: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _defaults_and_handler(self) -> Self:
        if self.timeout_seconds == 0:
            self.timeout_seconds = 1
        if self.period_seconds == 0:
            self.period_seconds = 10
        if self.success_threshold == 0:
            self.success_threshold = 1
        if self.failure_threshold == 0:
            self.failure_threshold = 3
        _one_handler(self, self.HANDLERS, "exec, httpGet, tcpSocket, grpc")
        return self


class LifecycleHandler(K8sModel):
    """What to do at postStart/preStop: exactly one handler."""

    HANDLERS: ClassVar[tuple[str, ...]] = ("exec", "http_get", "tcp_socket", "sleep")

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    sleep: SleepAction | None = None

    @model_validator(mode="after")
    def _handler(self) -> Self:
        _one_handler(self, self.HANDLERS, "exec, httpGet, tcpSocket, sleep")
        return self


class Lifecycle(K8sModel):
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None
    stop_signal: str | None = None


class VolumeMount(K8sModel):
    name: str
    mount_path: str
    read_only: bool | None = None
    recursive_read_only: Literal["Disabled", "IfPossible", "Enabled"] | None = None
    sub_path: str | None = None
    sub_path_expr: str | None = None
    mount_propagation: Literal["None", "HostToContainer", "Bidirectional"] | None = None


class VolumeDevice(K8sModel):
    name: str
    device_path: str


class ContainerResizePolicy(K8sModel):
    resource_name: str
    restart_policy: Literal["NotRequired", "RestartContainer"]


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


def default_image_pull_policy(image: str) -> Literal["Always", "IfNotPresent"]:
    """Kubernetes' default: ``Always`` for the ``latest`` tag (or no tag and no digest)."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    if not tag and not digest:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


class Container(K8sModel):
    """One container of a pod (also the type of ``initContainers``)."""

    name: DNSLabel
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    ports: list[ContainerPort] | None = None
    env_from: list[EnvFromSource] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    resize_policy: list[ContainerResizePolicy] | None = None
    restart_policy: Literal["Always"] | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_devices: list[VolumeDevice] | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: Lifecycle | None = None
    termination_message_path: str | None = None
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    security_context: dict[str, Any] | None = None
    stdin: bool | None = None
    stdin_once: bool | None = None
    tty: bool | None = None

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> Self:
        if not self.image:
            raise field_error("Required value: a container needs an image", "image")
        if self.image != self.image.strip():
            raise field_error(
                invalid(self.image, "must not have leading or trailing whitespace"), "image"
            )
        if self.image_pull_policy is None:
            self.image_pull_policy = default_image_pull_policy(self.image)
        for alias, probe in (
            ("livenessProbe", self.liveness_probe),
            ("startupProbe", self.startup_probe),
        ):
            if probe is not None and probe.success_threshold != 1:
                raise field_error(
                    invalid(probe.success_threshold, "must be 1"), alias, "successThreshold"
                )
        return self

    def requests(self) -> dict[str, str]:
        """The container's requests (after limits were copied into missing requests)."""
        return dict(self.resources.requests or {}) if self.resources else {}

    def limits(self) -> dict[str, str]:
        return dict(self.resources.limits or {}) if self.resources else {}


# --------------------------------------------------------------------------------------------
# Scheduling constraints
# --------------------------------------------------------------------------------------------

_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")


class NodeSelectorRequirement(K8sModel):
    """One node-affinity expression (``key operator values``)."""

    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        op, values = self.operator, self.values or []
        if op in ("In", "NotIn") and not values:
            raise field_error(
                "Required value: must be specified when `operator` is 'In' or 'NotIn'", "values"
            )
        if op in ("Exists", "DoesNotExist") and values:
            raise field_error(
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "values",
            )
        if op in ("Gt", "Lt"):
            if len(values) != 1:
                raise field_error(
                    "Required value: must be specified single value when `operator` is 'Lt' or "
                    "'Gt'",
                    "values",
                )
            text = values[0]
            if not _INT64_RE.fullmatch(text) or not -(2**63) <= int(text) < 2**63:
                raise field_error(
                    invalid(text, "must be an integer when `operator` is 'Gt' or 'Lt'"),
                    "values",
                    0,
                )
        return self


class NodeSelectorTerm(K8sModel):
    """Expressions and fields of one term are ANDed; the terms of a selector are ORed."""

    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None

    @model_validator(mode="after")
    def _fields(self) -> Self:
        for i, req in enumerate(self.match_fields or ()):
            if req.operator not in ("In", "NotIn"):
                raise field_error(
                    invalid(req.operator, "not a valid selector operator"),
                    "matchFields",
                    i,
                    "operator",
                )
            if len(req.values or ()) != 1:
                raise field_error(
                    "Required value: must be only one value when `operator` is 'In' or 'NotIn' "
                    "for node field selector",
                    "matchFields",
                    i,
                    "values",
                )
            if req.key != "metadata.name":
                raise field_error(
                    invalid(req.key, "not a valid field selector key (only metadata.name)"),
                    "matchFields",
                    i,
                    "key",
                )
        return self


class NodeSelector(K8sModel):
    node_selector_terms: list[NodeSelectorTerm]

    @model_validator(mode="after")
    def _non_empty(self) -> Self:
        if not self.node_selector_terms:
            raise field_error(
                "Required value: must have at least one node selector term", "nodeSelectorTerms"
            )
        return self


Weight = Annotated[int, Field(ge=1, le=100)]


class PreferredSchedulingTerm(K8sModel):
    weight: Weight
    preference: NodeSelectorTerm


class NodeAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        None
    )


class PodAffinityTerm(K8sModel):
    """Pods matching ``labelSelector`` in ``namespaces`` define the topology domains to (avoid)."""

    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[str] | None = None
    topology_key: QualifiedName
    match_label_keys: list[str] | None = None
    mismatch_label_keys: list[str] | None = None


class WeightedPodAffinityTerm(K8sModel):
    weight: Weight
    pod_affinity_term: PodAffinityTerm


class PodAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )


class PodAntiAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = None
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        None
    )


class Affinity(K8sModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAntiAffinity | None = None


class Toleration(K8sModel):
    """Lets a pod onto nodes with a matching taint. Empty effect matches every effect."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.key:
            errs = qualified_name_errors(self.key)
            if errs:
                raise field_error(invalid(self.key, "; ".join(errs)), "key")
        elif self.operator != "Exists":
            raise field_error(
                invalid(
                    self.operator,
                    'operator must be Exists when `key` is empty, which means "match all '
                    'values and all keys"',
                ),
                "operator",
            )
        if self.operator == "Exists" and self.value:
            raise field_error(
                invalid(self.value, "value must be empty when `operator` is 'Exists'"), "value"
            )
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise field_error(
                invalid(self.effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"),
                "effect",
            )
        return self


class TopologySpreadConstraint(K8sModel):
    """Spread matching pods across the domains of ``topologyKey`` within ``maxSkew``."""

    max_skew: Annotated[int, Field(ge=1)]
    topology_key: QualifiedName
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    label_selector: LabelSelector | None = None
    min_domains: Annotated[int, Field(ge=1)] | None = None
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    match_label_keys: list[str] | None = None

    @model_validator(mode="after")
    def _min_domains(self) -> Self:
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            raise field_error(
                invalid(
                    self.min_domains,
                    "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not "
                    "ScheduleAnyway",
                ),
                "minDomains",
            )
        return self


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
    condition_type: str


class PodSchedulingGate(K8sModel):
    name: str


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


__all__ = [
    "Affinity",
    "ConfigMapKeySelector",
    "Container",
    "ContainerPort",
    "ContainerResizePolicy",
    "EnvFromSource",
    "EnvVar",
    "EnvVarSource",
    "ExecAction",
    "GRPCAction",
    "HTTPGetAction",
    "HTTPHeader",
    "HostAlias",
    "Lifecycle",
    "LifecycleHandler",
    "LocalObjectReference",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "ObjectFieldSelector",
    "Pod",
    "PodAffinity",
    "PodAffinityTerm",
    "PodAntiAffinity",
    "PodDNSConfig",
    "PodDNSConfigOption",
    "PodIP",
    "PodOS",
    "PodReadinessGate",
    "PodSchedulingGate",
    "PodSpec",
    "PodStatus",
    "PreferredSchedulingTerm",
    "Probe",
    "Protocol",
    "ResourceClaim",
    "ResourceFieldSelector",
    "ResourceList",
    "ResourceRequirements",
    "SecretKeySelector",
    "SleepAction",
    "TCPSocketAction",
    "Toleration",
    "TopologySpreadConstraint",
    "Volume",
    "VolumeDevice",
    "VolumeMount",
    "WeightedPodAffinityTerm",
    "container_resource_name_errors",
    "default_image_pull_policy",
]
