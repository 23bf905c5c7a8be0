"""Every kind fleetlog stores: its apiVersion, its model, its scope and its aggregate.

Why this exists: the gateway, the repository and the manifest reader look a kind up by name;
one table keeps the model (``core.<kind>.model``) and the aggregate (``core.<kind>.aggregate``)
of each kind together. ``core.api.kinds`` is the light version (scope only) for the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from core.access import aggregates as access
from core.access.flowkinds import FlowSchema, PriorityLevelConfiguration
from core.access.kinds import ClusterRole, ClusterRoleBinding, Role, RoleBinding
from core.access.users import User
from core.autoscaling import aggregate as autoscaling
from core.autoscaling.model import HorizontalPodAutoscaler, convert_v1
from core.autoscaling.vertical_model import VerticalPodAutoscaler
from core.config import aggregates as config
from core.config.model import ConfigMap, Secret
from core.disruption import aggregate as disruption
from core.disruption.model import PodDisruptionBudget
from core.mesh import aggregates as mesh
from core.mesh.kinds.common import API_VERSION_ALIASES as MESH_VERSION_ALIASES
from core.mesh.kinds.objects import (
    DestinationRule,
    Gateway,
    PeerAuthentication,
    ServiceEntry,
    VirtualService,
)
from core.meta.aggregate import Resource
from core.meta.types import ResourceBase
from core.namespaces import aggregate as namespaces
from core.namespaces.model import Namespace
from core.network import aggregate as network
from core.network.model import PodCIDR
from core.nodes import aggregate as nodes
from core.nodes.model import Node
from core.pods import aggregate as pods
from core.pods.model import Pod
from core.policy import aggregates as policy
from core.policy.limitrange import LimitRange
from core.policy.priorityclass import PriorityClass
from core.policy.resourcequota import ResourceQuota
from core.services import aggregate as services
from core.services.endpointslice import EndpointSlice
from core.services.ipaddress import IPAddress, NodePortAllocation
from core.services.model import Service
from core.workloads import aggregate as workloads
from core.workloads.models import Deployment, ReplicaSet

AGGREGATES: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (
        namespaces.Namespace,
        nodes.Node,
        pods.Pod,
        workloads.Deployment,
        workloads.ReplicaSet,
        services.Service,
        policy.PriorityClass,
        policy.LimitRange,
        policy.ResourceQuota,
        services.EndpointSlice,
        services.IPAddress,
        services.NodePortAllocation,
        network.PodCIDR,
        access.Role,
        access.ClusterRole,
        access.RoleBinding,
        access.ClusterRoleBinding,
        config.ConfigMap,
        config.Secret,
        access.User,
        access.FlowSchema,
        access.PriorityLevelConfiguration,
        mesh.VirtualService,
        mesh.DestinationRule,
        mesh.Gateway,
        mesh.ServiceEntry,
        mesh.PeerAuthentication,
        autoscaling.HorizontalPodAutoscaler,
        disruption.PodDisruptionBudget,
        autoscaling.VerticalPodAutoscaler,
    )
}
"""kind name -> its aggregate class."""
SCALABLE_KINDS = frozenset({"Deployment", "ReplicaSet"})

ResourceModel = (
    Pod
    | Node
    | Deployment
    | ReplicaSet
    | Service
    | Namespace
    | PriorityClass
    | LimitRange
    | ResourceQuota
    | EndpointSlice
    | IPAddress
    | NodePortAllocation
    | PodCIDR
    | Role
    | ClusterRole
    | RoleBinding
    | ClusterRoleBinding
    | ConfigMap
    | Secret
    | User
    | FlowSchema
    | PriorityLevelConfiguration
    | VirtualService
    | DestinationRule
    | Gateway
    | ServiceEntry
    | PeerAuthentication
    | HorizontalPodAutoscaler
    | PodDisruptionBudget
    | VerticalPodAutoscaler
)
"""Any top-level object fleetlog stores."""


class KindInfo(NamedTuple):
    """What fleetlog knows about a kind: its apiVersion, its model, and whether it is namespaced."""

    api_version: str
    model: type[ResourceBase]
    namespaced: bool


def _info(model: type[ResourceBase]) -> KindInfo:
    fields = model.model_fields
    return KindInfo(fields["api_version"].default, model, model.NAMESPACED)


KINDS: Mapping[str, KindInfo] = MappingProxyType(
    {
        "Pod": _info(Pod),
        "Node": _info(Node),
        "Deployment": _info(Deployment),
        "ReplicaSet": _info(ReplicaSet),
        "Service": _info(Service),
        "Namespace": _info(Namespace),
        "PriorityClass": _info(PriorityClass),
        "LimitRange": _info(LimitRange),
        "ResourceQuota": _info(ResourceQuota),
        "EndpointSlice": _info(EndpointSlice),
        "IPAddress": _info(IPAddress),
        "NodePortAllocation": _info(NodePortAllocation),
        "PodCIDR": _info(PodCIDR),
        "Role": _info(Role),
        "ClusterRole": _info(ClusterRole),
        "RoleBinding": _info(RoleBinding),
        "ClusterRoleBinding": _info(ClusterRoleBinding),
        "ConfigMap": _info(ConfigMap),
        "Secret": _info(Secret),
        "User": _info(User),
        "FlowSchema": _info(FlowSchema),
        "PriorityLevelConfiguration": _info(PriorityLevelConfiguration),
        "VirtualService": _info(VirtualService),
        "DestinationRule": _info(DestinationRule),
        "Gateway": _info(Gateway),
        "ServiceEntry": _info(ServiceEntry),
        "PeerAuthentication": _info(PeerAuthentication),
        "HorizontalPodAutoscaler": _info(HorizontalPodAutoscaler),
        "PodDisruptionBudget": _info(PodDisruptionBudget),
        "VerticalPodAutoscaler": _info(VerticalPodAutoscaler),
    }
)
"""kind name -> (apiVersion, model class, namespaced)."""

API_VERSION_ALIASES: Mapping[str, str] = MappingProxyType(dict(MESH_VERSION_ALIASES))
"""An older apiVersion a group still serves with the same schema -> the stored one
(``networking.istio.io/v1beta1`` -> ``networking.istio.io/v1``): the manifest is read and
stored as the newer version, as the API server converts to its storage version."""

SERVED_VERSIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        kind: (
            info.api_version,
            *(older for older, stored in API_VERSION_ALIASES.items() if stored == info.api_version),
        )
        for kind, info in KINDS.items()
    }
)
"""kind -> every apiVersion the API serves it at, the stored (and preferred) one first, then
the older ones of the same schema (Istio's CRDs serve ``v1``, ``v1beta1`` and ``v1alpha3``).
A kind with a converted older version (``autoscaling/v1`` HPAs) is read only at the stored
one: the door cannot convert back."""

CONVERSIONS: Mapping[tuple[str, str], Callable[[Mapping[str, Any]], dict[str, Any]]] = (
    MappingProxyType({("HorizontalPodAutoscaler", "autoscaling/v1"): convert_v1})
)
"""(kind, older apiVersion) -> how a document of it becomes the stored version's, as
kube-apiserver converts it (``autoscaling/v1`` HPAs are stored as ``autoscaling/v2``)."""
