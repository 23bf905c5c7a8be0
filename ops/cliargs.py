"""What the command line names and how it spells it: kinds and their aliases, ``KIND/NAME``
references, durations and ``--since`` times, the point of an ``--at`` option, the default
server and actor.

Why this exists: every ``fleetlog`` command parses these before it connects, and ``--help``
never connects. Kept apart from ``ops.client`` (the NATS session), this module loads neither
the NATS client nor the resource models, so printing help or rejecting a bad argument is
quick.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.api.kinds import NAMESPACED
from core.errors import UnknownKind, ValidationFailed
from core.meta.durations import is_duration, parse_duration
from core.meta.timestamps import parse_stamp

DEFAULT_SERVER = "nats://127.0.0.1:4222"

KIND_ALIASES: dict[str, str] = {}
API_GROUPS: dict[str, str] = {
    "Deployment": "apps",
    "ReplicaSet": "apps",
    "PriorityClass": "scheduling.k8s.io",
    "EndpointSlice": "discovery.k8s.io",
    "IPAddress": "networking.k8s.io",
    "NodePortAllocation": "networking.fleetlog.dev",
    "PodCIDR": "networking.fleetlog.dev",
    "Role": "rbac.authorization.k8s.io",
    "ClusterRole": "rbac.authorization.k8s.io",
    "RoleBinding": "rbac.authorization.k8s.io",
    "ClusterRoleBinding": "rbac.authorization.k8s.io",
    "User": "auth.fleetlog.dev",
    "HorizontalPodAutoscaler": "autoscaling",
    "PodDisruptionBudget": "policy",
    "VerticalPodAutoscaler": "autoscaling.k8s.io",
    "FlowSchema": "flowcontrol.apiserver.k8s.io",
    "PriorityLevelConfiguration": "flowcontrol.apiserver.k8s.io",
    "VirtualService": "networking.istio.io",
    "DestinationRule": "networking.istio.io",
    "Gateway": "networking.istio.io",
    "ServiceEntry": "networking.istio.io",
    "PeerAuthentication": "security.istio.io",
}
"""The API group of the kinds outside the core group: ``-o name`` qualifies them with it
(``deployment.apps/web``) and every command takes them so qualified."""


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower + "es" if lower.endswith("s") else lower + "s"


for _kind, _short in (
    ("Pod", ("po",)),
    ("Node", ("no",)),
    ("Deployment", ("deploy",)),
    ("ReplicaSet", ("rs",)),
    ("Service", ("svc",)),
    ("Namespace", ("ns",)),
    ("PriorityClass", ("pc",)),
    ("LimitRange", ("limits",)),
    ("ResourceQuota", ("quota",)),
    ("EndpointSlice", ()),
    ("IPAddress", ("ip",)),
    ("Role", ()),
    ("ClusterRole", ()),
    ("RoleBinding", ()),
    ("ClusterRoleBinding", ()),
    ("ConfigMap", ("cm",)),
    ("Secret", ()),
    ("User", ()),
    ("FlowSchema", ()),
    ("PriorityLevelConfiguration", ()),
    ("VirtualService", ("vs",)),
    ("DestinationRule", ("dr",)),
    ("Gateway", ("gw",)),
    ("ServiceEntry", ("se",)),
    ("PeerAuthentication", ("pa",)),
    ("NodePortAllocation", ()),
    ("PodCIDR", ()),
    ("HorizontalPodAutoscaler", ("hpa",)),
    ("PodDisruptionBudget", ("pdb",)),
    ("VerticalPodAutoscaler", ("vpa",)),
):
    _names = (_kind.lower(), _plural(_kind))
    for _alias in (*_names, *_short):
        KIND_ALIASES[_alias] = _kind
    if _kind in API_GROUPS:
        for _alias in _names:
            KIND_ALIASES[f"{_alias}.{API_GROUPS[_kind]}"] = _kind
ENDPOINTS_VIEW = frozenset({"endpoints", "ep"})
"""``get endpoints``: the legacy v1 Endpoints, a view computed from EndpointSlices (fleetlog
stores no Endpoints objects)."""


def resolve_kind(text: str) -> str:
    kind = KIND_ALIASES.get(text.lower())
    if kind is None:
        raise UnknownKind(
            f'the server doesn\'t have a resource type "{text}"; known: '
            + ", ".join(sorted({k.lower() for k in KIND_ALIASES.values()}))
        )
    return kind


def command_kind(text: str) -> str:
    """The kind a write names: a known kind or alias resolved (``deploy`` -> Deployment), any
    other text as it is written. Unlike :func:`resolve_kind` (for reads), an unknown kind is
    not refused here: the command goes to the gateway, which refuses it and audits the refusal,
    as it does every other refused command."""
    return KIND_ALIASES.get(text.lower(), text)


def split_command_ref(text: str) -> tuple[str, str]:
    """``deployment/web`` -> ("Deployment", "web") for a write (see :func:`command_kind`)."""
    kind, sep, name = text.partition("/")
    if not sep or not name:
        raise ValidationFailed(f"expected KIND/NAME, got {text!r}")
    return command_kind(kind), name


def split_ref(text: str) -> tuple[str, str]:
    """``deployment/web`` → ("Deployment", "web")."""
    kind, sep, name = text.partition("/")
    if not sep or not name:
        raise ValidationFailed(f"expected KIND/NAME, got {text!r}")
    return resolve_kind(kind), name


def is_namespaced(kind: str) -> bool:
    return NAMESPACED[kind]


def default_actor() -> str:
    explicit = os.environ.get("FLEETLOG_USER")
    if explicit:
        return explicit
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def parse_since(text: str, now: datetime) -> datetime:
    """``10m``, ``2h30m``, ``1d`` before ``now``, or an ISO 8601 instant."""
    if is_duration(text):
        return now - timedelta(seconds=parse_duration(text))
    at_ns = parse_stamp(text)
    if at_ns is None:
        raise ValidationFailed(
            f"--since {text!r}: use a duration like 10m, 2h, 1d or a time like 2026-01-31T03:12:00Z"
        )
    seconds, fraction = divmod(at_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=fraction // 1000)


POINT_HELP = (
    "a stream sequence (123 or seq:123), a time (2026-11-26T03:12:00Z), "
    "a time ago (-2h, -30m, -1d2h) or now"
)
"""How a point of the log is written (``--at``, ``replay --to``, ``diff --from``); see
``ops.timetravel``."""


def labels_of(item: dict[str, Any]) -> dict[str, str]:
    """A read-model item's labels (what ``-l`` selects on)."""
    metadata = (item.get("manifest") or {}).get("metadata") or {}
    return metadata.get("labels") or {}


def default_data_dir() -> Path:
    """Where ``fleetlog up`` keeps its data unless told (``$XDG_DATA_HOME/fleetlog``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fleetlog"
