"""A DestinationRule's spec: its host, subsets, traffic policy, workload selector and export,
validated as Istio validates it.

Why this exists: the rule as a whole (its host, its subsets) is checked apart from the
traffic policy it carries, which appears in it three times.
"""

from __future__ import annotations

from core.mesh import checks
from core.mesh.kinds.common import WorkloadSelector, _add_all
from core.mesh.kinds.trafficpolicy import TrafficPolicy
from core.meta.model import K8sModel, Problems
from core.meta.names import label_problems


class Subset(K8sModel):
    name: str = ""
    labels: dict[str, str] = {}
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(K8sModel):
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
    workload_selector: WorkloadSelector | None = None

    def problems(self) -> Problems:
        """``ValidateDestinationRule``."""
        found = Problems()
        _add_all(found, checks.wildcard_domain_errors(self.host), "host")
        if self.traffic_policy is not None:
            found.extend(self.traffic_policy.problems().items, "trafficPolicy")
        seen: set[str] = set()
        for index, subset in enumerate(self.subsets):
            if subset.name in seen:
                found.add(f"duplicate subset names: {subset.name}", "subsets", index, "name")
            seen.add(subset.name)
            _add_all(found, checks.subset_name_errors(subset.name), "subsets", index, "name")
            found.extend(label_problems(subset.labels), "subsets", index, "labels")
            if subset.traffic_policy is not None:
                found.extend(
                    subset.traffic_policy.problems().items, "subsets", index, "trafficPolicy"
                )
        return found
