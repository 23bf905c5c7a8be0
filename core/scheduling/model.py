"""Compact snapshots of pods and nodes, built once, read many times by the scheduling plugins.

Why this exists: a scheduling cycle looks at hundreds of nodes per pod, so nothing in the hot loop
may re-parse manifests, walk pydantic models or convert quantities. :class:`PodInfo` and
:class:`NodeInfo` turn stored manifests (plain camelCase dicts, as ``dump_manifest`` writes them)
into plain Python values once: resource amounts as integers (cpu in millicores, memory and other
byte counts in bytes, extended resources as counts), selectors and node-affinity terms compiled to
tuples, taints and tolerations as small slotted objects. A :class:`NodeInfo` is updated in place
when a pod is added or removed, like kube-scheduler's cache ``NodeInfo``.

Request arithmetic follows component-helpers ``resource.PodRequests``: the sum of the regular
containers plus the restartable (sidecar) init containers, against the largest of each init
container (plus the sidecars started before it), plus ``spec.overhead``. The "non-zero" variant
(``NonMissingContainerRequests``) substitutes 100m cpu / 200Mi memory for every container that
does not request them; it is used by scoring only. Pod-level ``spec.resources.requests`` (the
PodLevelResources feature), when present, replace the container aggregate for those resources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from core.meta.features import DEFAULT_FEATURES, FeatureGates
from core.meta.labels import SET_OPERATORS, Selector, parse_int64, set_operator_matches
from core.meta.quantity import resource_amount
from core.meta.taints import NodeTaint, PodToleration
from core.meta.timestamps import parse_stamp

__all__ = [
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "AffinityTerm",
    "NodeInfo",
    "NodeSelectorTerm",
    "PodInfo",
    "SpreadConstraint",
    "node_matches_required_affinity",
    "resource_amount",
]

DEFAULT_MILLI_CPU_REQUEST: Final = 100
"""schedutil.DefaultMilliCPURequest: what scoring assumes for a container without a cpu request."""
DEFAULT_MEMORY_REQUEST: Final = 200 * 1024 * 1024
"""schedutil.DefaultMemoryRequest (200Mi)."""

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def _resource_dict(raw: Mapping[str, Any] | None) -> dict[str, int]:
    if not raw:
        return {}
    return {name: resource_amount(name, value) for name, value in raw.items()}


# --------------------------------------------------------------------------------------------
# Node selector terms (label selectors and taints are core.meta.labels and core.meta.taints)
# --------------------------------------------------------------------------------------------


class NodeSelectorTerm:
    """One compiled ``nodeSelectorTerms`` entry: its expressions and fields are ANDed.

    As in component-helpers ``nodeaffinity``: an empty term matches nothing, a term with an
    unparsable ``Gt``/``Lt`` value matches nothing, a node label that is not an integer fails
    ``Gt``/``Lt``, and ``matchFields`` only knows ``metadata.name``.
    """

    __slots__ = ("expressions", "fields", "valid")

    def __init__(
        self,
        expressions: tuple[tuple[str, str, frozenset[str], int | None], ...],
        fields: tuple[tuple[str, str, frozenset[str]], ...],
        valid: bool,
    ) -> None:
        self.expressions = expressions
        self.fields = fields
        self.valid = valid

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any]) -> NodeSelectorTerm:
        valid = True
        expressions: list[tuple[str, str, frozenset[str], int | None]] = []
        for expr in raw.get("matchExpressions") or ():
            op = expr["operator"]
            values = list(expr.get("values") or ())
            number: int | None = None
            if op in ("Gt", "Lt"):
                number = parse_int64(values[0]) if len(values) == 1 else None
                if number is None:
                    valid = False
            elif op in ("In", "NotIn"):
                if not values:
                    valid = False
            elif op in ("Exists", "DoesNotExist"):
                if values:
                    valid = False
            else:
                valid = False
            expressions.append((expr["key"], op, frozenset(values), number))
        fields: list[tuple[str, str, frozenset[str]]] = []
        for req in raw.get("matchFields") or ():
            values = list(req.get("values") or ())
            if (
                req["key"] != "metadata.name"
                or req["operator"] not in ("In", "NotIn")
                or len(values) != 1
            ):
                valid = False
            fields.append((req["key"], req["operator"], frozenset(values)))
        if not expressions and not fields:
            valid = False
        return cls(tuple(expressions), tuple(fields), valid)

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        if not self.valid:
            return False
        for key, op, values, number in self.expressions:
            if op in SET_OPERATORS:
                if not set_operator_matches(op, key, values, labels):
                    return False
            else:  # Gt / Lt
                text = labels.get(key)
                if text is None:
                    return False
                have = parse_int64(text)
                if have is None or number is None:
                    return False
                if op == "Gt" and not have > number:
                    return False
                if op == "Lt" and not have < number:
                    return False
        return all((node_name in values) == (op == "In") for _key, op, values in self.fields)


# --------------------------------------------------------------------------------------------
# Inter-pod affinity terms and topology spread constraints
# --------------------------------------------------------------------------------------------


class AffinityTerm:
    """A compiled ``PodAffinityTerm`` of some pod (namespaces already defaulted).

    ``namespaces`` empty with no ``namespaceSelector`` means the owning pod's namespace; a
    ``namespaceSelector`` of ``{}`` means every namespace. matchLabelKeys / mismatchLabelKeys are
    merged into the selector with the owning pod's label values, as the API server does.
    """

    __slots__ = ("namespace_selector", "namespaces", "selector", "topology_key")

    def __init__(
        self,
        selector: Selector,
        namespaces: frozenset[str],
        namespace_selector: Selector | None,
        topology_key: str,
    ) -> None:
        self.selector = selector
        self.namespaces = namespaces
        self.namespace_selector = namespace_selector
        self.topology_key = topology_key

    @classmethod
    def from_manifest(
        cls, raw: Mapping[str, Any], namespace: str, labels: Mapping[str, str]
    ) -> AffinityTerm:
        extra: list[tuple[str, str, frozenset[str]]] = []
        for key in raw.get("matchLabelKeys") or ():
            if key in labels:
                extra.append((key, "In", frozenset((labels[key],))))
        for key in raw.get("mismatchLabelKeys") or ():
            if key in labels:
                extra.append((key, "NotIn", frozenset((labels[key],))))
        raw_selector = raw.get("labelSelector")
        if raw_selector is None and extra:
            raw_selector = {}
        selector = Selector.from_manifest(raw_selector, extra=extra)
        namespaces = frozenset(raw.get("namespaces") or ())
        raw_ns_selector = raw.get("namespaceSelector")
        ns_selector = None if raw_ns_selector is None else Selector.from_manifest(raw_ns_selector)
        if not namespaces and ns_selector is None:
            namespaces = frozenset((namespace,))
        return cls(selector, namespaces, ns_selector, raw["topologyKey"])

    def matches(self, pod: PodInfo, namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
        """``AffinityTerm.Matches``: namespace (listed or selected) and label selector."""
        if pod.namespace not in self.namespaces:
            ns_sel = self.namespace_selector
            if ns_sel is None:
                return False
            if (ns_sel.requirements or ns_sel.nothing) and not ns_sel.matches(
                namespace_labels.get(pod.namespace, {})
            ):
                return False
        return self.selector.matches(pod.labels)


class SpreadConstraint:
    """A compiled ``topologySpreadConstraints`` entry with the Kubernetes defaults applied."""

    __slots__ = (
        "max_skew",
        "min_domains",
        "node_affinity_policy",
        "node_taints_policy",
        "selector",
        "topology_key",
        "when_unsatisfiable",
    )

    def __init__(
        self,
        max_skew: int,
        topology_key: str,
        when_unsatisfiable: str,
        selector: Selector,
        min_domains: int = 1,
        node_affinity_policy: str = "Honor",
        node_taints_policy: str = "Ignore",
    ) -> None:
        self.max_skew = max_skew
        self.topology_key = topology_key
        self.when_unsatisfiable = when_unsatisfiable
        self.selector = selector
        self.min_domains = min_domains
        self.node_affinity_policy = node_affinity_policy
        self.node_taints_policy = node_taints_policy

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any], labels: Mapping[str, str]) -> SpreadConstraint:
        extra = [
            (key, "In", frozenset((labels[key],)))
            for key in raw.get("matchLabelKeys") or ()
            if key in labels
        ]
        return cls(
            int(raw["maxSkew"]),
            raw["topologyKey"],
            raw["whenUnsatisfiable"],
            Selector.from_manifest(raw.get("labelSelector"), extra=extra),
            int(raw.get("minDomains") or 1),
            raw.get("nodeAffinityPolicy") or "Honor",
            raw.get("nodeTaintsPolicy") or "Ignore",
        )


# --------------------------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------------------------


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    # A limit without a request is the request (defaulting normally did that already).
    for name, value in (resources.get("limits") or {}).items():
        requests.setdefault(name, value)
    return _resource_dict(requests)


def _resized_requests(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    containers: list[dict[str, int]],
    inits: list[tuple[dict[str, int], bool]],
) -> tuple[list[dict[str, int]], list[tuple[dict[str, int], bool]]]:
    """The requests of a pod resized in place, as component-helpers' ``PodRequests`` reads
    them with ``UseStatusResources``: per container, the largest of the desired (spec), the
    allocated (``allocatedResources``) and the actual (``resources.requests``) requests, or,
    while the resize is Infeasible, of the allocated and actual only (it will not happen)."""
    known: dict[str, Mapping[str, Any]] = {}
    for section in ("containerStatuses", "initContainerStatuses"):
        for entry in status.get(section) or ():
            if "allocatedResources" in entry or "resources" in entry:
                known[entry.get("name", "")] = entry
    if not known:
        return containers, inits
    infeasible = any(
        c.get("type") == "PodResizePending" and c.get("reason") == "Infeasible"
        for c in status.get("conditions") or ()
    )

    def adjusted(container: Mapping[str, Any], requests: dict[str, int]) -> dict[str, int]:
        entry = known.get(container.get("name", ""))
        if entry is None:
            return requests
        out = {} if infeasible else dict(requests)
        for held in (
            _resource_dict(entry.get("allocatedResources")),
            _resource_dict((entry.get("resources") or {}).get("requests")),
        ):
            for name, amount in held.items():
                out[name] = max(out.get(name, 0), amount)
        return out

    regular = [
        adjusted(c, reqs) for c, reqs in zip(spec.get("containers") or (), containers, strict=True)
    ]
    init = [
        (adjusted(c, reqs), sidecar)
        for c, (reqs, sidecar) in zip(spec.get("initContainers") or (), inits, strict=True)
    ]
    return regular, init


def _aggregate_requests(
    containers: list[dict[str, int]],
    init_containers: list[tuple[dict[str, int], bool]],
    non_missing: Mapping[str, int] | None,
) -> dict[str, int]:
    """component-helpers ``AggregateContainerRequests`` on integer resource maps."""

    def apply(reqs: dict[str, int]) -> dict[str, int]:
        if not non_missing:
            return reqs
        out = dict(reqs)
        for name, default in non_missing.items():
            out.setdefault(name, default)
        return out

    total: dict[str, int] = {}
    for reqs in containers:
        for name, amount in apply(reqs).items():
            total[name] = total.get(name, 0) + amount
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for reqs, restartable in init_containers:
        reqs = apply(reqs)
        if restartable:
            for name, amount in reqs.items():
                total[name] = total.get(name, 0) + amount
                sidecars[name] = sidecars.get(name, 0) + amount
            current = sidecars
        else:
            current = dict(reqs)
            for name, amount in sidecars.items():
                current[name] = current.get(name, 0) + amount
        for name, amount in current.items():
            if amount > init_max.get(name, 0):
                init_max[name] = amount
    for name, amount in init_max.items():
        if amount > total.get(name, 0):
            total[name] = amount
    return total


def _host_ports(spec: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    ports: list[tuple[str, str, int]] = []
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            host_port = port.get("hostPort") or 0
            if host_port > 0:
                ports.append(
                    (port.get("protocol") or "TCP", port.get("hostIP") or "0.0.0.0", host_port)
                )
    return tuple(ports)


class PodInfo:
    """Everything the scheduling plugins read from one pod, precomputed."""

    __slots__ = (
        "cpu",
        "deleting",
        "fit_requests",
        "host_ports",
        "key",
        "labels",
        "memory",
        "name",
        "namespace",
        "node_name",
        "node_selector",
        "non_zero_cpu",
        "non_zero_memory",
        "preemption_policy",
        "preferred_affinity_terms",
        "preferred_anti_affinity_terms",
        "preferred_node_terms",
        "priority",
        "requests",
        "required_affinity_terms",
        "required_anti_affinity_terms",
        "required_node_terms",
        "scalar_requests",
        "spread_constraints",
        "start_time",
        "tolerations",
        "uid",
    )

    def __init__(
        self,
        *,
        namespace: str = "default",
        name: str = "",
        uid: str = "",
        labels: Mapping[str, str] | None = None,
        requests: Mapping[str, int] | None = None,
        non_zero_cpu: int | None = None,
        non_zero_memory: int | None = None,
        host_ports: tuple[tuple[str, str, int], ...] = (),
        node_selector: Mapping[str, str] | None = None,
        required_node_terms: tuple[NodeSelectorTerm, ...] | None = None,
        preferred_node_terms: tuple[tuple[int, NodeSelectorTerm], ...] = (),
        tolerations: tuple[PodToleration, ...] = (),
        priority: int = 0,
        spread_constraints: tuple[SpreadConstraint, ...] = (),
        required_affinity_terms: tuple[AffinityTerm, ...] = (),
        required_anti_affinity_terms: tuple[AffinityTerm, ...] = (),
        preferred_affinity_terms: tuple[tuple[int, AffinityTerm], ...] = (),
        preferred_anti_affinity_terms: tuple[tuple[int, AffinityTerm], ...] = (),
        node_name: str = "",
        deleting: bool = False,
        preemption_policy: str = "PreemptLowerPriority",
        start_time: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.uid = uid
        self.labels: dict[str, str] = dict(labels or {})
        self.requests: dict[str, int] = {k: v for k, v in (requests or {}).items() if v}
        cpu = self.requests.get("cpu", 0)
        memory = self.requests.get("memory", 0)
        self.cpu = cpu
        """Actual cpu request in millicores (0 when none)."""
        self.memory = memory
        """Actual memory request in bytes (0 when none)."""
        self.non_zero_cpu = (
            cpu or DEFAULT_MILLI_CPU_REQUEST if non_zero_cpu is None else (non_zero_cpu)
        )
        self.non_zero_memory = (
            memory or DEFAULT_MEMORY_REQUEST if non_zero_memory is None else (non_zero_memory)
        )
        self.fit_requests: tuple[tuple[str, int], ...] = tuple(
            (k, v) for k, v in self.requests.items() if v > 0 and k != "pods"
        )
        """What NodeResourcesFit checks: positive requests, pods excluded."""
        self.scalar_requests: tuple[tuple[str, int], ...] = tuple(
            (k, v) for k, v in self.requests.items() if k not in ("cpu", "memory", "pods")
        )
        self.host_ports = host_ports
        self.node_selector: dict[str, str] = dict(node_selector or {})
        self.required_node_terms = required_node_terms
        self.preferred_node_terms = preferred_node_terms
        self.tolerations = tolerations
        self.priority = priority
        self.spread_constraints = spread_constraints
        self.required_affinity_terms = required_affinity_terms
        self.required_anti_affinity_terms = required_anti_affinity_terms
        self.preferred_affinity_terms = preferred_affinity_terms
        self.preferred_anti_affinity_terms = preferred_anti_affinity_terms
        self.node_name = node_name
        self.deleting = deleting
        self.preemption_policy = preemption_policy
        """``spec.preemptionPolicy``: ``Never`` keeps the pod from preempting others."""
        self.start_time = start_time
        """POSIX seconds of ``status.startTime`` (else ``metadata.creationTimestamp``), None when
        neither is known; preemption prefers victims that started later."""

    @property
    def has_pod_affinity(self) -> bool:
        """Any (anti-)affinity term at all: such pods are indexed on their node for scoring."""
        return bool(
            self.required_affinity_terms
            or self.required_anti_affinity_terms
            or self.preferred_affinity_terms
            or self.preferred_anti_affinity_terms
        )

    @property
    def has_node_constraints(self) -> bool:
        return bool(self.node_selector) or self.required_node_terms is not None

    def matches_node_affinity(self, node: NodeInfo) -> bool:
        return node_matches_required_affinity(self, node.name, node.labels)

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, features: FeatureGates = DEFAULT_FEATURES
    ) -> PodInfo:
        """A stored pod manifest, its tolerations read with ``features``' gates."""
        comparison = features.taint_toleration_comparison_operators
        meta = manifest.get("metadata") or {}
        spec = manifest.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        labels: dict[str, str] = dict(meta.get("labels") or {})

        containers = [_container_requests(c) for c in spec.get("containers") or ()]
        inits = [
            (_container_requests(c), c.get("restartPolicy") == "Always")
            for c in spec.get("initContainers") or ()
        ]
        status = manifest.get("status")
        if status:
            containers, inits = _resized_requests(spec, status, containers, inits)
        overhead = _resource_dict(spec.get("overhead"))
        pod_level = _resource_dict((spec.get("resources") or {}).get("requests"))

        def finish(reqs: dict[str, int]) -> dict[str, int]:
            for name in ("cpu", "memory"):
                if name in pod_level:
                    reqs[name] = pod_level[name]
            for name, amount in overhead.items():
                reqs[name] = reqs.get(name, 0) + amount
            return reqs

        requests = finish(_aggregate_requests(containers, inits, None))
        non_zero = finish(
            _aggregate_requests(
                containers,
                inits,
                {"cpu": DEFAULT_MILLI_CPU_REQUEST, "memory": DEFAULT_MEMORY_REQUEST},
            )
        )

        affinity = spec.get("affinity") or {}
        node_affinity = affinity.get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        required_terms = (
            None
            if required is None
            else tuple(
                NodeSelectorTerm.from_manifest(t) for t in required.get("nodeSelectorTerms") or ()
            )
        )
        preferred_terms = tuple(
            (int(t.get("weight") or 0), NodeSelectorTerm.from_manifest(t.get("preference") or {}))
            for t in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
        )

        def terms(section: str) -> tuple[AffinityTerm, ...]:
            block = affinity.get(section) or {}
            return tuple(
                AffinityTerm.from_manifest(t, namespace, labels)
                for t in block.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
            )

        def weighted(section: str) -> tuple[tuple[int, AffinityTerm], ...]:
            block = affinity.get(section) or {}
            return tuple(
                (
                    int(t.get("weight") or 0),
                    AffinityTerm.from_manifest(t["podAffinityTerm"], namespace, labels),
                )
                for t in block.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
            )

        return cls(
            namespace=namespace,
            name=meta.get("name") or "",
            uid=meta.get("uid") or "",
            labels=labels,
            requests=requests,
            non_zero_cpu=non_zero.get("cpu", 0),
            non_zero_memory=non_zero.get("memory", 0),
            host_ports=_host_ports(spec),
            node_selector=spec.get("nodeSelector"),
            required_node_terms=required_terms,
            preferred_node_terms=preferred_terms,
            tolerations=tuple(
                PodToleration.from_manifest(raw, comparison_operators=comparison)
                for raw in spec.get("tolerations") or ()
            ),
            priority=int(spec.get("priority") or 0),
            spread_constraints=tuple(
                SpreadConstraint.from_manifest(c, labels)
                for c in spec.get("topologySpreadConstraints") or ()
            ),
            required_affinity_terms=terms("podAffinity"),
            required_anti_affinity_terms=terms("podAntiAffinity"),
            preferred_affinity_terms=weighted("podAffinity"),
            preferred_anti_affinity_terms=weighted("podAntiAffinity"),
            node_name=spec.get("nodeName") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            preemption_policy=spec.get("preemptionPolicy") or "PreemptLowerPriority",
            start_time=_seconds(
                parse_stamp(
                    (manifest.get("status") or {}).get("startTime") or meta.get("creationTimestamp")
                )
            ),
        )

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


def node_matches_required_affinity(pod: PodInfo, node_name: str, labels: Mapping[str, str]) -> bool:
    """``RequiredNodeAffinity.Match``: nodeSelector AND (any required term)."""
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = pod.required_node_terms
    if terms is None:
        return True
    return any(term.matches(node_name, labels) for term in terms)


# --------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------


class NodeInfo:
    """A node plus the pods on it and their aggregated requests (kube-scheduler's NodeInfo).

    Mutated in place by :meth:`add_pod` / :meth:`remove_pod` / :meth:`set_node`; plugins only
    read it.
    """

    __slots__ = (
        "alloc_cpu",
        "alloc_memory",
        "allocatable",
        "hard_taints",
        "labels",
        "name",
        "non_zero_cpu",
        "non_zero_memory",
        "on_change",
        "plain",
        "pods",
        "pods_with_affinity",
        "pods_with_required_anti_affinity",
        "prefer_taints",
        "requested",
        "requested_cpu",
        "requested_memory",
        "taints",
        "unschedulable",
        "used_ports",
    )

    def __init__(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        taints: Iterable[NodeTaint] = (),
        allocatable: Mapping[str, int] | None = None,
        unschedulable: bool = False,
        pods: Iterable[PodInfo] = (),
    ) -> None:
        self.name = name
        self.labels: dict[str, str] = {}
        self.taints: tuple[NodeTaint, ...] = ()
        self.hard_taints: tuple[NodeTaint, ...] = ()
        self.prefer_taints: tuple[NodeTaint, ...] = ()
        self.allocatable: dict[str, int] = {}
        self.alloc_cpu = 0
        self.alloc_memory = 0
        self.unschedulable = False
        self.plain = True
        self.on_change: Callable[[NodeInfo], None] | None = None
        """Called after every change (a :class:`NodeColumns` keeps its arrays in step)."""
        self._set(labels or {}, tuple(taints), allocatable or {}, unschedulable)
        self.pods: dict[str, PodInfo] = {}
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.requested: dict[str, int] = {}
        self.requested_cpu = 0
        self.requested_memory = 0
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.used_ports: dict[tuple[str, str, int], int] = {}
        for pod in pods:
            self.add_pod(pod)

    def _set(
        self,
        labels: Mapping[str, str],
        taints: tuple[NodeTaint, ...],
        allocatable: Mapping[str, int],
        unschedulable: bool,
    ) -> None:
        self.labels = dict(labels)
        self.taints = taints
        self.hard_taints = tuple(t for t in taints if t.effect in ("NoSchedule", "NoExecute"))
        self.prefer_taints = tuple(t for t in taints if t.effect == "PreferNoSchedule")
        self.allocatable = dict(allocatable)
        self.alloc_cpu = self.allocatable.get("cpu", 0)
        self.alloc_memory = self.allocatable.get("memory", 0)
        self.unschedulable = unschedulable
        self.plain = not unschedulable and not self.hard_taints
        """Neither cordoned nor NoSchedule/NoExecute-tainted: those filters need not run."""

    @staticmethod
    def _parse_node(manifest: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        meta = manifest.get("metadata") or {}
        spec = manifest.get("spec") or {}
        status = manifest.get("status") or {}
        raw_alloc = status.get("allocatable")
        if raw_alloc is None:
            raw_alloc = status.get("capacity")
        return meta.get("name") or "", {
            "labels": meta.get("labels") or {},
            "taints": tuple(NodeTaint.from_manifest(t) for t in spec.get("taints") or ()),
            "allocatable": _resource_dict(raw_alloc),
            "unschedulable": bool(spec.get("unschedulable")),
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], pods: Iterable[PodInfo] = ()) -> NodeInfo:
        """Build from a Node manifest; ``status.allocatable`` (else ``capacity``) is read."""
        name, fields = cls._parse_node(manifest)
        return cls(name, pods=pods, **fields)

    def set_node(self, manifest: Mapping[str, Any]) -> None:
        """Take a new version of the Node object, keeping the pods."""
        _, fields = self._parse_node(manifest)
        self._set(
            fields["labels"], fields["taints"], fields["allocatable"], fields["unschedulable"]
        )
        if self.on_change is not None:
            self.on_change(self)

    def add_pod(self, pod: PodInfo) -> None:
        if pod.key in self.pods:
            self.remove_pod(pod.key)
        self.pods[pod.key] = pod
        requested = self.requested
        for name, amount in pod.requests.items():
            requested[name] = requested.get(name, 0) + amount
        self.requested_cpu += pod.cpu
        self.requested_memory += pod.memory
        self.non_zero_cpu += pod.non_zero_cpu
        self.non_zero_memory += pod.non_zero_memory
        for port in pod.host_ports:
            self.used_ports[port] = self.used_ports.get(port, 0) + 1
        if pod.has_pod_affinity:
            self.pods_with_affinity[pod.key] = pod
            if pod.required_anti_affinity_terms:
                self.pods_with_required_anti_affinity[pod.key] = pod
        if self.on_change is not None:
            self.on_change(self)

    def remove_pod(self, key: str) -> PodInfo | None:
        """Remove the pod ``namespace/name``; returns it, or None when it was not here."""
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        requested = self.requested
        for name, amount in pod.requests.items():
            left = requested.get(name, 0) - amount
            if left:
                requested[name] = left
            else:
                requested.pop(name, None)
        self.requested_cpu -= pod.cpu
        self.requested_memory -= pod.memory
        self.non_zero_cpu -= pod.non_zero_cpu
        self.non_zero_memory -= pod.non_zero_memory
        for port in pod.host_ports:
            left = self.used_ports.get(port, 0) - 1
            if left > 0:
                self.used_ports[port] = left
            else:
                self.used_ports.pop(port, None)
        self.pods_with_affinity.pop(key, None)
        self.pods_with_required_anti_affinity.pop(key, None)
        if self.on_change is not None:
            self.on_change(self)
        return pod

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)})"
