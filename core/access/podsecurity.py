"""Pod Security Admission: the ``privileged``, ``baseline`` and ``restricted`` levels a namespace
asks for with its ``pod-security.kubernetes.io/*`` labels.

Why this exists: a user who may create pods must not thereby get the node (issue 17): host
namespaces, privileged containers, added capabilities, host paths and host ports are how a pod
escapes. Kubernetes answers with the Pod Security Standards, enforced per namespace by label;
fleetlog's admission chain runs the same checks (``k8s.io/pod-security-admission/policy``) on
the pod spec of pods and of the templates of workloads, and refuses (``enforce``), warns
(``warn``) or records (``audit``) with Kubernetes' words, so that a message users search for is
the one they get::

    violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container
    "web" must set securityContext.allowPrivilegeEscalation=false), ...

Checks run in the order of their ids, as the admission plugin aggregates them; at
``restricted`` the baseline checks run too, except where a restricted check overrides one
(seccomp). Only the ``latest`` version of the standards is implemented: a namespace pinning an
older version is evaluated at latest and the message says ``:latest``.

Pure: a pod spec (a manifest dict) in, the violations out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Level = Literal["privileged", "baseline", "restricted"]
LEVELS: Final[tuple[Level, ...]] = ("privileged", "baseline", "restricted")
MODES: Final = ("enforce", "audit", "warn")
LABEL_PREFIX: Final = "pod-security.kubernetes.io/"

BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
    }
)  # fmt: skip
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
        "projected", "secret",
    }
)  # fmt: skip
SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)


@dataclass(frozen=True, slots=True)
class Violation:
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


@dataclass(frozen=True, slots=True)
class NamespacePolicy:
    """What a namespace's labels ask for: a level per mode (``privileged`` when unset)."""

    enforce: Level = "privileged"
    audit: Level = "privileged"
    warn: Level = "privileged"

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> NamespacePolicy:
        """The namespace's policy; an unknown level is refused when the label is written
        (:func:`label_problems`) and read as ``restricted`` if found, as the plugin does."""
        levels: dict[str, Level] = {}
        for mode in MODES:
            value = labels.get(f"{LABEL_PREFIX}{mode}")
            if value is None:
                continue
            levels[mode] = value if value in LEVELS else "restricted"  # type: ignore[assignment]
        return cls(**levels)


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """What is wrong with a namespace's pod-security labels (for namespace validation)."""
    problems = []
    for mode in MODES:
        value = labels.get(f"{LABEL_PREFIX}{mode}")
        if value is not None and value not in LEVELS:
            problems.append(
                f'{LABEL_PREFIX}{mode}: Unsupported value: "{value}": supported values: '
                + ", ".join(f'"{level}"' for level in LEVELS)
            )
        version = labels.get(f"{LABEL_PREFIX}{mode}-version")
        if version is not None and version != "latest" and not _is_version(version):
            problems.append(
                f'{LABEL_PREFIX}{mode}-version: Invalid value: "{version}": must be "latest" '
                'or "v1.<minor>"'
            )
    return problems


def _is_version(text: str) -> bool:
    major, _, minor = text.partition(".")
    return major == "v1" and minor.isdigit()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Init containers, containers, ephemeral containers: the plugin's visiting order."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or ()


def _security(holder: Mapping[str, Any]) -> Mapping[str, Any]:
    return holder.get("securityContext") or {}


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _plural(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


def _containers_phrase(names: Sequence[str]) -> str:
    return f"{_plural(len(names), 'container', 'containers')} {_quoted(names)}"


def _setters(pod: bool, containers: Sequence[str]) -> str:
    """``pod``, ``container "a"``, ``pod and containers "a", "b"``: who set a bad value."""
    named = ["pod"] if pod else []
    if containers:
        named.append(_containers_phrase(containers))
    return " and ".join(named)


# --------------------------------------------------------------------------------------------
# Baseline checks
# --------------------------------------------------------------------------------------------


def _app_armor(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Violation]:
    """The beta annotations as the plugin reads them, and the GA field the same way."""
    bad: list[str] = []
    prefix = "container.apparmor.security.beta.kubernetes.io/"
    for key, value in (meta.get("annotations") or {}).items():
        allowed = not value or value == "runtime/default" or str(value).startswith("localhost/")
        if key.startswith(prefix) and not allowed:
            bad.append(f'{key}="{value}"')
    if (_security(spec).get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad.append('securityContext.appArmorProfile.type="Unconfined"')
    for container in _containers(spec):
        if (_security(container).get("appArmorProfile") or {}).get("type") == "Unconfined":
            name = container.get("name", "")
            bad.append(f'container "{name}" securityContext.appArmorProfile.type="Unconfined"')
    if not bad:
        return []
    bad.sort()
    reason = _plural(len(bad), "forbidden AppArmor profile", "forbidden AppArmor profiles")
    return [Violation(reason, ", ".join(bad))]


def _capabilities_baseline(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names, added = [], []
    for container in _containers(spec):
        extra = [
            cap
            for cap in (_security(container).get("capabilities") or {}).get("add") or ()
            if cap not in BASELINE_CAPABILITIES
        ]
        if extra:
            names.append(container.get("name", ""))
            added.extend(extra)
    if not names:
        return []
    return [
        Violation(
            "non-default capabilities",
            f"{_containers_phrase(names)} must not include {_quoted(sorted(set(added)))} in "
            "securityContext.capabilities.add",
        )
    ]


def _host_namespaces(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    used = sorted(key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key))
    return [Violation("host namespaces", ", ".join(used))] if used else []


def _host_path_volumes(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names = [v.get("name", "") for v in spec.get("volumes") or () if "hostPath" in v]
    if not names:
        return []
    return [Violation("hostPath volumes", f"{_plural(len(names), 'volume', 'volumes')} "
                                          f"{_quoted(names)}")]  # fmt: skip


def _host_ports(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names, ports = [], []
    for container in _containers(spec):
        used = [str(p["hostPort"]) for p in container.get("ports") or () if p.get("hostPort")]
        if used:
            names.append(container.get("name", ""))
            ports.extend(used)
    if not names:
        return []
    ports = sorted(set(ports))
    verb = _plural(len(names), "uses", "use")
    noun = _plural(len(ports), "hostPort", "hostPorts")
    return [Violation("hostPort", f"{_containers_phrase(names)} {verb} {noun} {', '.join(ports)}")]


def _privileged(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names = [c.get("name", "") for c in _containers(spec) if _security(c).get("privileged")]
    if not names:
        return []
    return [
        Violation(
            "privileged",
            f"{_containers_phrase(names)} must not set securityContext.privileged=true",
        )
    ]


def _proc_mount(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names, kinds = [], set()
    for container in _containers(spec):
        mount = _security(container).get("procMount")
        if mount not in (None, "Default"):
            names.append(container.get("name", ""))
            kinds.add(str(mount))
    if not names:
        return []
    return [
        Violation(
            "procMount",
            f"{_containers_phrase(names)} must not set securityContext.procMount to "
            f"{_quoted(sorted(kinds))}",
        )
    ]


def _se_linux(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    bad_types: set[str] = set()
    set_user = set_role = False

    def valid(options: Mapping[str, Any]) -> bool:
        nonlocal set_user, set_role
        ok = True
        if (options.get("type") or "") not in SELINUX_TYPES:
            ok = False
            bad_types.add(options["type"])
        if options.get("user"):
            ok, set_user = False, True
        if options.get("role"):
            ok, set_role = False, True
        return ok

    pod_options = _security(spec).get("seLinuxOptions")
    pod_bad = pod_options is not None and not valid(pod_options)
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _security(c).get("seLinuxOptions") is not None
        and not valid(_security(c)["seLinuxOptions"])
    ]
    if not pod_bad and not names:
        return []
    data = []
    # As the plugin words it: user and role are named only beside a bad type.
    if bad_types:
        data.append(f"{_plural(len(bad_types), 'type', 'types')} {_quoted(sorted(bad_types))}")
        if set_user:
            data.append("user may not be set")
        if set_role:
            data.append("role may not be set")
    detail = f"{_setters(pod_bad, names)} set forbidden securityContext.seLinuxOptions: "
    return [Violation("seLinuxOptions", detail + "; ".join(data))]


def _seccomp_set_badly(spec: Mapping[str, Any], bad: Callable[[str], bool]) -> Violation | None:
    """The pod or containers that set a seccomp type ``bad`` calls bad."""
    values: set[str] = set()
    pod_type = (_security(spec).get("seccompProfile") or {}).get("type")
    pod_bad = pod_type is not None and bad(pod_type)
    if pod_bad:
        values.add(pod_type)
    names = []
    for container in _containers(spec):
        kind = (_security(container).get("seccompProfile") or {}).get("type")
        if kind is not None and bad(kind):
            names.append(container.get("name", ""))
            values.add(kind)
    if not pod_bad and not names:
        return None
    return Violation(
        "seccompProfile",
        f"{_setters(pod_bad, names)} must not set securityContext.seccompProfile.type to "
        f"{_quoted(sorted(values))}",
    )


def _seccomp_baseline(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    found = _seccomp_set_badly(spec, lambda kind: kind == "Unconfined")
    return [found] if found else []


def _sysctls(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names = [
        s.get("name", "")
        for s in _security(spec).get("sysctls") or ()
        if s.get("name") not in SAFE_SYSCTLS
    ]
    return [Violation("forbidden sysctls", ", ".join(names))] if names else []


def _windows_host_process(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    def host_process(security: Mapping[str, Any]) -> bool:
        return bool((security.get("windowsOptions") or {}).get("hostProcess"))

    pod = host_process(_security(spec))
    names = [c.get("name", "") for c in _containers(spec) if host_process(_security(c))]
    if not pod and not names:
        return []
    detail = f"{_setters(pod, names)} must not set securityContext.windowsOptions.hostProcess=true"
    return [Violation("hostProcess", detail)]


# --------------------------------------------------------------------------------------------
# Restricted checks
# --------------------------------------------------------------------------------------------


def _allow_privilege_escalation(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _security(c).get("allowPrivilegeEscalation") is not False
    ]
    if not names:
        return []
    return [
        Violation(
            "allowPrivilegeEscalation != false",
            f"{_containers_phrase(names)} must set securityContext.allowPrivilegeEscalation=false",
        )
    ]


def _capabilities_restricted(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    not_dropping, adding, added = [], [], set()
    for container in _containers(spec):
        capabilities = _security(container).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or ()):
            not_dropping.append(container.get("name", ""))
        extra = [cap for cap in capabilities.get("add") or () if cap != "NET_BIND_SERVICE"]
        if extra:
            adding.append(container.get("name", ""))
            added.update(extra)
    details = []
    if not_dropping:
        details.append(
            f'{_containers_phrase(not_dropping)} must set securityContext.capabilities.drop=["ALL"]'
        )
    if adding:
        details.append(
            f"{_containers_phrase(adding)} must not include {_quoted(sorted(added))} in "
            "securityContext.capabilities.add"
        )
    return [Violation("unrestricted capabilities", "; ".join(details))] if details else []


def _restricted_volumes(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    names = sorted(
        {
            volume.get("name", "")
            for volume in spec.get("volumes") or ()
            if not any(key in RESTRICTED_VOLUME_TYPES for key in volume)
        }
    )
    if not names:
        return []
    # Go's %q of a []string: ["a" "b"]
    listed = "[" + " ".join(f'"{name}"' for name in names) + "]"
    return [Violation("restricted volume types", f"volumes {listed} have restricted types")]


def _run_as_non_root(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    pod_value = _security(spec).get("runAsNonRoot")
    explicit, implicit = [], []
    for container in _containers(spec):
        value = _security(container).get("runAsNonRoot")
        if value is False:
            explicit.append(container.get("name", ""))
        elif value is None and pod_value is not True:
            implicit.append(container.get("name", ""))
    reason = "runAsNonRoot != true"
    if pod_value is False or explicit:
        setters = _setters(pod_value is False, explicit)
        return [Violation(reason, f"{setters} must not set securityContext.runAsNonRoot=false")]
    if implicit:
        phrase = _containers_phrase(implicit)
        return [Violation(reason, f"pod or {phrase} must set securityContext.runAsNonRoot=true")]
    return []


def _run_as_user(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    pod = _security(spec).get("runAsUser") == 0
    names = [c.get("name", "") for c in _containers(spec) if _security(c).get("runAsUser") == 0]
    if not pod and not names:
        return []
    return [Violation("runAsUser=0", f"{_setters(pod, names)} must not set runAsUser=0")]


def _seccomp_restricted(spec: Mapping[str, Any], _: Mapping[str, Any]) -> list[Violation]:
    allowed = ("RuntimeDefault", "Localhost")
    explicit = _seccomp_set_badly(spec, lambda kind: kind not in allowed)
    if explicit is not None:
        return [explicit]
    if (_security(spec).get("seccompProfile") or {}).get("type") in allowed:
        return []
    implicit = [
        c.get("name", "")
        for c in _containers(spec)
        if (_security(c).get("seccompProfile") or {}).get("type") is None
    ]
    if not implicit:
        return []
    return [
        Violation(
            "seccompProfile",
            f"pod or {_containers_phrase(implicit)} must set securityContext.seccompProfile.type "
            'to "RuntimeDefault" or "Localhost"',
        )
    ]


Check = Callable[[Mapping[str, Any], Mapping[str, Any]], list[Violation]]

# (id, lowest level it applies at, check), in id order: the order of the message.
_CHECKS: Final[tuple[tuple[str, Level, Check], ...]] = (
    ("allowPrivilegeEscalation", "restricted", _allow_privilege_escalation),
    ("appArmorProfile", "baseline", _app_armor),
    ("capabilities_baseline", "baseline", _capabilities_baseline),
    ("capabilities_restricted", "restricted", _capabilities_restricted),
    ("hostNamespaces", "baseline", _host_namespaces),
    ("hostPathVolumes", "baseline", _host_path_volumes),
    ("hostPorts", "baseline", _host_ports),
    ("privileged", "baseline", _privileged),
    ("procMount", "baseline", _proc_mount),
    ("restrictedVolumes", "restricted", _restricted_volumes),
    ("runAsNonRoot", "restricted", _run_as_non_root),
    ("runAsUser", "restricted", _run_as_user),
    ("seLinuxOptions", "baseline", _se_linux),
    ("seccompProfile_baseline", "baseline", _seccomp_baseline),
    ("seccompProfile_restricted", "restricted", _seccomp_restricted),
    ("sysctls", "baseline", _sysctls),
    ("windowsHostProcess", "baseline", _windows_host_process),
)
_OVERRIDDEN_AT_RESTRICTED: Final = frozenset({"seccompProfile_baseline"})


def violations(
    level: Level, spec: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> list[Violation]:
    """Every way ``spec`` (a pod spec) breaks ``level``; ``metadata`` is the pod's (or the
    template's), for the AppArmor annotations."""
    if level == "privileged":
        return []
    found: list[Violation] = []
    for check_id, lowest, check in _CHECKS:
        if lowest == "restricted" and level != "restricted":
            continue
        if level == "restricted" and check_id in _OVERRIDDEN_AT_RESTRICTED:
            continue
        found.extend(check(spec, metadata or {}))
    return found


def violation_message(level: Level, found: Sequence[Violation]) -> str:
    """``violates PodSecurity "restricted:latest": reason (detail), …``."""
    return f'violates PodSecurity "{level}:latest": ' + ", ".join(str(v) for v in found)


def would_violate_message(level: Level, found: Sequence[Violation]) -> str:
    """``would violate PodSecurity "restricted:latest": reason (detail), …``: the words of
    a warning and of an audit annotation."""
    return f'would violate PodSecurity "{level}:latest": ' + ", ".join(str(v) for v in found)


# --------------------------------------------------------------------------------------------
# The admission plugin's decisions
# --------------------------------------------------------------------------------------------

ENFORCE_POLICY_ANNOTATION: Final = f"{LABEL_PREFIX}enforce-policy"
AUDIT_VIOLATIONS_ANNOTATION: Final = f"{LABEL_PREFIX}audit-violations"
"""The audit annotations kube-apiserver's plugin adds to a request's audit event."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What Pod Security Admission makes of one pod, or one workload's pod template, in its
    namespace: the refusal (``enforce``; empty: allowed), the warnings for the client
    (``warn``) and the annotations for the audit record (``audit``)."""

    denied: str = ""
    """``violates PodSecurity "restricted:latest": ...`` (the caller names the object)."""
    warnings: tuple[str, ...] = ()
    annotations: Mapping[str, str] | None = None


def evaluate(
    policy: NamespacePolicy,
    spec: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    enforce: bool,
) -> Evaluation:
    """Each mode of ``policy`` applied to a pod spec, as the plugin's ``EvaluatePod``.

    ``enforce`` is False for workload objects (Deployments, ReplicaSets): Kubernetes checks
    their templates in ``warn`` and ``audit`` only ("enforce mode is not applied to workload
    resources, only to the resulting pod objects"). A refused pod gets no warning: the refusal
    already names every violation the client has to fix."""
    annotations: dict[str, str] = {}
    denied = ""
    if enforce:
        annotations[ENFORCE_POLICY_ANNOTATION] = f"{policy.enforce}:latest"
        found = violations(policy.enforce, spec, metadata)
        if found:
            denied = violation_message(policy.enforce, found)
    audited = violations(policy.audit, spec, metadata)
    if audited:
        annotations[AUDIT_VIOLATIONS_ANNOTATION] = would_violate_message(policy.audit, audited)
    warnings: tuple[str, ...] = ()
    if not denied:
        warned = violations(policy.warn, spec, metadata)
        if warned:
            warnings = (would_violate_message(policy.warn, warned),)
    return Evaluation(denied=denied, warnings=warnings, annotations=annotations or None)


def significant_pod_update(spec: Mapping[str, Any], old_spec: Mapping[str, Any]) -> bool:
    """Whether an update of an existing pod is evaluated again: as the plugin's
    ``isSignificantPodUpdate``, only when a container's image changes (or containers are
    added or removed); every other field the policies read is immutable in a pod."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        new = [c.get("image") for c in spec.get(key) or ()]
        old = [c.get("image") for c in old_spec.get(key) or ()]
        if new != old:
            return True
    return False


def existing_pod_warnings(
    namespace: str,
    level: Level,
    pods: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
) -> list[str]:
    """The warnings kube-apiserver gives when a namespace's ``enforce`` level is raised: its
    existing pods (name, spec, metadata) checked against the new level, pods failing the same
    way folded into one line (``web-1 (and 2 other pods): privileged, hostPort``). Existing
    pods keep running; the warnings say what a re-creation would meet."""
    if level == "privileged":
        return []
    by_reasons: dict[str, list[str]] = {}
    for name, spec, metadata in pods:
        found = violations(level, spec, metadata)
        if found:
            reasons = ", ".join(v.reason for v in found)
            by_reasons.setdefault(reasons, []).append(name)
    if not by_reasons:
        return []
    warnings = [
        f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
        f'"{level}:latest"'
    ]
    for reasons, names in by_reasons.items():
        others = len(names) - 1
        who = names[0]
        if others:
            who += f" (and {others} other {_plural(others, 'pod', 'pods')})"
        warnings.append(f"{who}: {reasons}")
    return warnings
