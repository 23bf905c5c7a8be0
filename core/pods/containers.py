"""Containers: ports, probes, lifecycle hooks, volume mounts and the container itself.

Why this exists: the node agent runs what these describe and probes what they declare, so the
defaults (probe timings, image pull policy) and checks must be Kubernetes' own
(``pkg/apis/core/v1/defaults.go``, ``pkg/apis/core/validation``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from core.meta.fields import PortNumber, PortNumberOrName
from core.meta.model import K8sModel, field_error, invalid
from core.meta.names import (
    DNSLabel,
    PortName,
)
from core.pods.env import EnvFromSource, EnvVar
from core.pods.resources import Protocol, ResourceRequirements

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
