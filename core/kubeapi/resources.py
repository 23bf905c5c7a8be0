"""The API resources fleetlog serves: each kind's group, version, plural, short names and verbs.

Why this exists: discovery (``/api/v1``, ``/apis/apps/v1``, the aggregated documents), the
URL router and the OpenAPI paths all need the same table; kubectl resolves ``po``, ``deploy``
and ``get all`` from it. The kinds, their apiVersions and scopes come from
``core.api.catalog`` (one home); this module adds what only the HTTP door needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from core.api.catalog import KINDS, SERVED_VERSIONS

VERBS: tuple[str, ...] = (
    "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
)  # fmt: skip
"""What every stored kind answers (patch includes server-side apply)."""
READ_ONLY: tuple[str, ...] = ("get", "list")
"""What a derived resource without a watch answers (metrics.k8s.io, as metrics-server)."""
READ_AND_WATCH: tuple[str, ...] = ("get", "list", "watch")


@dataclass(frozen=True, slots=True)
class Subresource:
    """A subresource a kind serves (``pods/log``, ``deployments/scale``): what discovery lists.

    Only subresources with a handler in ``handlers.apiserver.subresources`` are declared here (a
    unit test holds the two together), so kubectl never discovers a verb that is not served.
    """

    name: str
    verbs: tuple[str, ...]
    kind: str
    """The kind of the answer (``Scale`` for ``scale``, the object's own kind for ``status``)."""
    group: str = ""
    version: str = "v1"


@dataclass(frozen=True, slots=True)
class APIResource:
    """One resource of the API: a kind at a group/version under a plural name."""

    kind: str
    group: str
    version: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    verbs: tuple[str, ...] = VERBS
    derived: bool = False
    """Served from what fleetlog records about other objects (its log, its usage samples),
    not stored as objects of its own: never written (``handlers.apiserver.events``,
    ``handlers.apiserver.metrics``)."""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> dict[str, object]:
        """The ``APIResource`` entry of an ``APIResourceList`` (the legacy discovery)."""
        entry: dict[str, object] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        return entry

    def subresource_discovery(self) -> list[dict[str, object]]:
        """The ``<plural>/<subresource>`` entries of the legacy ``APIResourceList``."""
        entries: list[dict[str, object]] = []
        for sub in self.subresources:
            entry: dict[str, object] = {
                "name": f"{self.plural}/{sub.name}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if (sub.group, sub.version) != (self.group, self.version):
                entry["group"] = sub.group
                entry["version"] = sub.version
            entries.append(entry)
        return entries

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


# plural, short names and categories as kube-apiserver registers them ("all" is what
# ``kubectl get all`` lists).
_NAMES: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "Pod": ("pods", ("po",), ("all",)),
    "Node": ("nodes", ("no",), ()),
    "Deployment": ("deployments", ("deploy",), ("all",)),
    "ReplicaSet": ("replicasets", ("rs",), ("all",)),
    "Service": ("services", ("svc",), ("all",)),
    "Namespace": ("namespaces", ("ns",), ()),
    "PriorityClass": ("priorityclasses", ("pc",), ()),
    "LimitRange": ("limitranges", ("limits",), ()),
    "ResourceQuota": ("resourcequotas", ("quota",), ()),
    "EndpointSlice": ("endpointslices", (), ()),
    "IPAddress": ("ipaddresses", ("ip",), ()),
    "NodePortAllocation": ("nodeportallocations", (), ()),
    "PodCIDR": ("podcidrs", (), ()),
    "Role": ("roles", (), ()),
    "ClusterRole": ("clusterroles", (), ()),
    "RoleBinding": ("rolebindings", (), ()),
    "ClusterRoleBinding": ("clusterrolebindings", (), ()),
    "ConfigMap": ("configmaps", ("cm",), ()),
    "Secret": ("secrets", (), ()),
    "User": ("users", (), ()),
    "FlowSchema": ("flowschemas", (), ()),
    "PriorityLevelConfiguration": ("prioritylevelconfigurations", (), ()),
    "VirtualService": ("virtualservices", ("vs",), ("istio-io", "networking-istio-io")),
    "DestinationRule": ("destinationrules", ("dr",), ("istio-io", "networking-istio-io")),
    "Gateway": ("gateways", ("gw",), ("istio-io", "networking-istio-io")),
    "ServiceEntry": ("serviceentries", ("se",), ("istio-io", "networking-istio-io")),
    "PeerAuthentication": ("peerauthentications", ("pa",), ("istio-io", "security-istio-io")),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", ("hpa",), ("all",)),
    "PodDisruptionBudget": ("poddisruptionbudgets", ("pdb",), ()),
    "VerticalPodAutoscaler": ("verticalpodautoscalers", ("vpa",), ()),
}


_READ_WRITE = ("get", "patch", "update")


def _status(kind: str) -> Subresource:
    group, _, version = KINDS[kind].api_version.rpartition("/")
    return Subresource("status", _READ_WRITE, kind, group, version)


def _scale() -> Subresource:
    return Subresource("scale", _READ_WRITE, "Scale", "autoscaling", "v1")


SUBRESOURCES: Mapping[str, tuple[Subresource, ...]] = {
    "Pod": (
        Subresource("log", ("get",), "Pod"),
        Subresource("exec", ("create", "get"), "PodExecOptions"),
        Subresource("portforward", ("create", "get"), "PodPortForwardOptions"),
        _status("Pod"),
        Subresource("binding", ("create",), "Binding"),
        Subresource("eviction", ("create",), "Eviction", "policy", "v1"),
        Subresource("resize", _READ_WRITE, "Pod"),
    ),
    "Node": (_status("Node"),),
    "Deployment": (_status("Deployment"), _scale()),
    "ReplicaSet": (_status("ReplicaSet"), _scale()),
    "Service": (_status("Service"),),
    "Namespace": (_status("Namespace"),),
    "ResourceQuota": (_status("ResourceQuota"),),
    "HorizontalPodAutoscaler": (_status("HorizontalPodAutoscaler"),),
    "VerticalPodAutoscaler": (_status("VerticalPodAutoscaler"),),
}
"""kind -> the subresources it serves (each handled in ``handlers.apiserver.subresources``):
``status`` for the kinds Kubernetes gives one, ``scale`` for the scalable workloads,
``log``, ``exec``, ``portforward``, ``binding``, ``eviction`` and ``resize`` for pods."""


def _resource(kind: str, api_version: str) -> APIResource:
    info = KINDS[kind]
    group, _, version = api_version.rpartition("/")
    plural, short, categories = _NAMES[kind]
    return APIResource(
        kind=kind,
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        namespaced=info.namespaced,
        short_names=short,
        categories=categories,
        subresources=SUBRESOURCES.get(kind, ()),
    )


RESOURCES: tuple[APIResource, ...] = tuple(
    _resource(kind, KINDS[kind].api_version) for kind in KINDS
)
"""The stored kinds at their stored (and preferred) versions (each with an OpenAPI schema from
its pydantic model)."""
OLDER_VERSIONS: tuple[APIResource, ...] = tuple(
    _resource(kind, older) for kind, versions in SERVED_VERSIONS.items() for older in versions[1:]
)
"""The same kinds at the older versions they are still served at (``core.api.catalog.
SERVED_VERSIONS``): the same schema and objects, read back with the apiVersion asked for."""
VERSIONED: tuple[APIResource, ...] = RESOURCES + OLDER_VERSIONS
"""Every stored kind at every version it is served at: what OpenAPI describes."""
EVENTS = APIResource(
    kind="Event", group="", version="v1", plural="events", singular="event", namespaced=True,
    short_names=("ev",), verbs=READ_AND_WATCH, derived=True,
)  # fmt: skip
"""core/v1 events: what Kubernetes' components would have recorded, derived from the log
(``projections.kube_events``) for ``kubectl describe`` and ``kubectl get events``."""
METRICS_GROUP = "metrics.k8s.io"
POD_METRICS = APIResource(
    kind="PodMetrics", group=METRICS_GROUP, version="v1beta1", plural="pods", singular="pod",
    namespaced=True, verbs=READ_ONLY, derived=True,
)  # fmt: skip
NODE_METRICS = APIResource(
    kind="NodeMetrics", group=METRICS_GROUP, version="v1beta1", plural="nodes", singular="node",
    namespaced=False, verbs=READ_ONLY, derived=True,
)  # fmt: skip
"""metrics.k8s.io/v1beta1 (what ``kubectl top`` reads), from the node agents' usage samples;
get and list only: metrics-server refuses a watch too."""
DERIVED: tuple[APIResource, ...] = (EVENTS, POD_METRICS, NODE_METRICS)
SERVED: tuple[APIResource, ...] = VERSIONED + DERIVED
"""Everything discovery lists and a URL may name."""
BY_KIND: Mapping[str, APIResource] = MappingProxyType({r.kind: r for r in RESOURCES})
"""kind -> its resource at the stored version."""
BY_PATH: Mapping[tuple[str, str, str], APIResource] = MappingProxyType(
    {(r.group, r.version, r.plural): r for r in SERVED}
)
"""(group, version, plural) -> resource: what a URL names."""


def group_versions() -> dict[str, list[str]]:
    """group ("" for the core group) -> its versions, in the order they were first seen: the
    stored versions come first, so the first is the preferred one (``v1`` before Istio's
    ``v1beta1`` and ``v1alpha3``)."""
    groups: dict[str, list[str]] = {}
    for resource in SERVED:
        versions = groups.setdefault(resource.group, [])
        if resource.version not in versions:
            versions.append(resource.version)
    return groups


def resources_of(group: str, version: str) -> list[APIResource]:
    return [r for r in SERVED if r.group == group and r.version == version]
