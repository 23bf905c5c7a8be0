"""Field selectors (``?fieldSelector=spec.nodeName=n1,status.phase!=Failed``): their syntax, the
fields each resource can be selected by, and whether an object matches.

Why this exists: kubectl and controllers select by fields kube-apiserver indexes per resource
(``metadata.name`` and ``metadata.namespace`` everywhere; a pod's node, phase, addresses …);
asking for another is a BadRequest (``field label not supported``), never an empty answer.
Label selectors are ``core.meta.labels`` (one home); this module is their field twin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.kubeapi.status import bad_request

FieldValue = Callable[[Mapping[str, Any]], str]


def _at(*path: str, default: str = "") -> FieldValue:
    def value(manifest: Mapping[str, Any]) -> str:
        node: Any = manifest
        for step in path:
            if not isinstance(node, Mapping):
                return default
            node = node.get(step)
        if node is None:
            return default
        if isinstance(node, bool):
            return "true" if node else "false"
        return str(node)

    return value


def _pod_ips(manifest: Mapping[str, Any]) -> str:
    ips = (manifest.get("status") or {}).get("podIPs") or []
    return ",".join(str(ip.get("ip", "")) for ip in ips if isinstance(ip, Mapping))


_COMMON: Mapping[str, FieldValue] = {
    "metadata.name": _at("metadata", "name"),
    "metadata.namespace": _at("metadata", "namespace"),
}

FIELDS: Mapping[str, Mapping[str, FieldValue]] = {
    # pkg/registry/core/pod/strategy.go ToSelectableFields
    "Pod": {
        "spec.nodeName": _at("spec", "nodeName"),
        "spec.restartPolicy": _at("spec", "restartPolicy"),
        "spec.schedulerName": _at("spec", "schedulerName"),
        "spec.serviceAccountName": _at("spec", "serviceAccountName"),
        "spec.hostNetwork": _at("spec", "hostNetwork", default="false"),
        "status.phase": _at("status", "phase"),
        "status.podIP": _at("status", "podIP"),
        "status.podIPs": _pod_ips,
        "status.nominatedNodeName": _at("status", "nominatedNodeName"),
    },
    "Node": {"spec.unschedulable": _at("spec", "unschedulable", default="false")},
    "Namespace": {"status.phase": _at("status", "phase")},
    "ReplicaSet": {"status.replicas": _at("status", "replicas", default="0")},
    "Service": {"spec.clusterIP": _at("spec", "clusterIP"), "spec.type": _at("spec", "type")},
    # pkg/registry/core/event/strategy.go ToSelectableFields
    "Event": {
        **{
            f"involvedObject.{f}": _at("involvedObject", f)
            for f in (
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            )
        },
        "reason": _at("reason"),
        "reportingComponent": _at("reportingComponent"),
        "source": _at("source", "component"),
        "type": _at("type"),
    },
}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str
    read: FieldValue


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, manifest: Mapping[str, Any]) -> bool:
        return all((r.read(manifest) == r.value) == r.equal for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def name(self) -> str | None:
        """The one name a ``metadata.name=`` requirement pins (a get in disguise)."""
        for r in self.requirements:
            if r.field == "metadata.name" and r.equal:
                return r.value
        return None


def _split(text: str, separators: str) -> list[str]:
    """Split on unescaped separators (``\\,`` and ``\\=`` are literal, as apimachinery's)."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char in separators:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, escaped = [], False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def parse_field_selector(text: str | None, kind: str) -> FieldSelector:
    """``kind``'s field selector written as ``?fieldSelector=`` takes it: ``f=v``, ``f==v`` and
    ``f!=v`` joined by commas; a field the kind cannot be selected by is a BadRequest."""
    if not text:
        return FieldSelector()
    fields = {**_COMMON, **FIELDS.get(kind, {})}
    requirements = []
    for part in _split(text, ","):
        if not part.strip():
            continue
        found = next(
            (
                (index, operator)
                for operator in ("!=", "==", "=")
                if (index := _find_unescaped(part, operator)) >= 0
            ),
            None,
        )
        if found is None:
            raise bad_request(f"invalid selector: '{text[:200]}'; can't understand '{part[:100]}'")
        index, operator = found
        field, value = part[:index].strip(), part[index + len(operator) :]
        equal = operator != "!="
        read = fields.get(field)
        if read is None:
            raise bad_request(f"field label not supported: {field[:100]}")
        requirements.append(FieldRequirement(field, equal, _unescape(value), read))
    return FieldSelector(tuple(requirements))


def _find_unescaped(text: str, needle: str) -> int:
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
            continue
        if char == "\\":
            escaped = True
            continue
        if text.startswith(needle, index):
            return index
    return -1
