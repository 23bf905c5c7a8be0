"""The kinds fleetlog stores and their scope: namespaced, or cluster-wide.

Why this exists: the command line resolves ``deployment/web`` and decides whether
``-n/--namespace`` applies before it talks to the cluster, and a read command must not load
every pydantic resource model just for that: they cost most of its start-up.
``core.api.catalog.KINDS`` holds the full entry of each kind (apiVersion, model, scope); a unit
test keeps the two tables in agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

NAMESPACED: Mapping[str, bool] = MappingProxyType(
    {
        "Pod": True,
        "Node": False,
        "Deployment": True,
        "ReplicaSet": True,
        "Service": True,
        "Namespace": False,
        "PriorityClass": False,
        "LimitRange": True,
        "ResourceQuota": True,
        "EndpointSlice": True,
        "IPAddress": False,
        "NodePortAllocation": False,
        "PodCIDR": False,
        "Role": True,
        "ClusterRole": False,
        "RoleBinding": True,
        "ClusterRoleBinding": False,
        "ConfigMap": True,
        "Secret": True,
        "User": False,
        "FlowSchema": False,
        "PriorityLevelConfiguration": False,
        "VirtualService": True,
        "DestinationRule": True,
        "Gateway": True,
        "ServiceEntry": True,
        "PeerAuthentication": True,
        "HorizontalPodAutoscaler": True,
        "PodDisruptionBudget": True,
        "VerticalPodAutoscaler": True,
    }
)
"""kind name -> whether its objects live in a namespace (as ``ResourceBase.NAMESPACED``)."""
