"""A container's environment as the kubelet builds it: literal values, the downward API
(``fieldRef``, ``resourceFieldRef``) and ``$(VAR)`` references, and the same references in
``command`` and ``args``.

Why this exists: a pod with its own address is told it through ``valueFrom.fieldRef:
status.podIP`` (how servers learn what to bind or advertise), and manifests lean on
``$(VAR)`` in their commands; the rules are the kubelet's (``makeEnvironmentVariables``,
``third_party/forked/golang/expansion``), kept here pure so they are tested without a node.
ConfigMaps and Secrets come in :attr:`PodFacts.config` (the values the agent got from the
control plane): a reference to one that does not exist, or to a key it lacks, is a
:class:`ContainerConfigError` (the kubelet's ``CreateContainerConfigError``) unless it is
``optional``, when the variable is left out, as the kubelet leaves it out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from core.config.consume import ConfigSources, missing_key, not_found
from core.meta.quantity import parse_quantity


class ContainerConfigError(ValueError):
    """The container's configuration cannot be made (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True, kw_only=True)
class PodFacts:
    """What the downward API can tell a container about its pod and node."""

    manifest: Mapping[str, Any]
    pod_ip: str | None
    host_ip: str | None
    node_name: str
    node_allocatable: Mapping[str, str]
    config: ConfigSources = field(default_factory=ConfigSources)
    """The values of the ConfigMaps and Secrets the pod references."""


_SUBSCRIPT: Final = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field_value(path: str, facts: PodFacts) -> str:
    metadata = facts.manifest.get("metadata") or {}
    spec = facts.manifest.get("spec") or {}
    if subscript := _SUBSCRIPT.fullmatch(path):
        return str((metadata.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        # The kubelet formats a map as sorted ``key="value"`` lines.
        mapping = metadata.get(path.split(".")[1]) or {}
        return "\n".join(f'{key}="{mapping[key]}"' for key in sorted(mapping))
    values = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", "default"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or facts.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": facts.pod_ip or "",
        "status.podIPs": facts.pod_ip or "",
        "status.hostIP": facts.host_ip or "",
        "status.hostIPs": facts.host_ip or "",
    }
    if path not in values:
        raise ContainerConfigError(f'unsupported fieldRef "{path}"')
    return str(values[path])


def _resource_value(ref: Mapping[str, Any], container: Mapping[str, Any], facts: PodFacts) -> str:
    """``resourceFieldRef``: the container's request or limit (a limit not set is the node's
    allocatable), divided by ``divisor`` and rounded up, as the kubelet's
    ``ExtractContainerResourceValue`` does."""
    resource = str(ref.get("resource", ""))
    which, _, name = resource.partition(".")
    if which not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ContainerConfigError(f'unsupported resourceFieldRef "{resource}"')
    resources = container.get("resources") or {}
    amount = (resources.get(which) or {}).get(name)
    if amount is None and which == "requests":
        amount = (resources.get("limits") or {}).get(name)  # a request defaults to the limit
    if amount is None:
        amount = facts.node_allocatable.get(name)
    if amount is None:
        return "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1")).amount
    if divisor <= 0:
        raise ContainerConfigError(f'resourceFieldRef "{resource}": divisor must be positive')
    return str(math.ceil(parse_quantity(str(amount)).amount / divisor))


_REFERENCE: Final = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is a literal
    ``$``, and a reference to an undefined variable is left as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables[name] if name in variables else match.group(0)

    return _REFERENCE.sub(replace, text)


def container_environment(container: Mapping[str, Any], facts: PodFacts) -> dict[str, str]:
    """The container's variables in order: each ``value`` expanded against those before it
    (and none of the process's own, as the kubelet does), each ``valueFrom`` resolved."""
    env: dict[str, str] = {}
    config = facts.config
    for source in container.get("envFrom") or ():
        ref_kind = "configMapRef" if "configMapRef" in source else "secretRef"
        kind = "configmap" if ref_kind == "configMapRef" else "secret"
        ref = source.get(ref_kind) or {}
        name = str(ref.get("name", ""))
        values = config.source(kind, name)
        if values is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(str(not_found(kind, name)))
        text_keys = config.env_only.get(name) if kind == "configmap" else None
        prefix = str(source.get("prefix") or "")
        for key, value in values.items():
            if text_keys is None or key in text_keys:
                env[prefix + key] = value.decode(errors="replace")
    for entry in container.get("env") or ():
        name = entry.get("name")
        if not name:
            continue
        source = entry.get("valueFrom")
        if source is None:
            env[name] = expand(str(entry.get("value") or ""), env)
        elif "fieldRef" in source:
            env[name] = _field_value(str(source["fieldRef"].get("fieldPath", "")), facts)
        elif "resourceFieldRef" in source:
            env[name] = _resource_value(source["resourceFieldRef"], container, facts)
        else:
            ref_kind = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
            kind = "configmap" if ref_kind == "configMapKeyRef" else "secret"
            ref = source.get(ref_kind) or {}
            value = _key_value(kind, ref, config)
            if value is not None:
                env[name] = value
    return env


def _key_value(kind: str, ref: Mapping[str, Any], config: ConfigSources) -> str | None:
    """One key of a ConfigMap or Secret as a variable's value; None when the reference is
    optional and the object or key is missing."""
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    optional = bool(ref.get("optional"))
    values = config.source(kind, name)
    if values is None:
        if optional:
            return None
        raise ContainerConfigError(str(not_found(kind, name)))
    text_keys = config.env_only.get(name) if kind == "configmap" else None
    if key not in values or (text_keys is not None and key not in text_keys):
        if optional:
            return None
        raise ContainerConfigError(str(missing_key(kind, key, config.namespace, name)))
    return values[key].decode(errors="replace")


def expanded_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` references to the container's variables
    replaced (the kubelet's ``ExpandContainerCommandAndArgs``)."""
    words: Sequence[str] = [*(container.get("command") or ()), *(container.get("args") or ())]
    return [expand(str(word), env) for word in words]
