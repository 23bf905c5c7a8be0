"""The scheduler's configuration file: a ``KubeSchedulerConfiguration``
(``kubescheduler.config.k8s.io/v1``).

Why this exists: an operator tunes kube-scheduler with a file (``kube-scheduler --config``), and
fleetlog reads the same file (``fleetlog scheduler --config``, ``fleetlog up
--scheduler-config``): plugin weights, NodeResourcesFit's scoring strategy and ignored
resources, BalancedAllocation's resources, InterPodAffinity's hard weight, DefaultPreemption's
candidate sampling, ``percentageOfNodesToScore`` and the queue's back-off. A bad file is refused
before anything starts, with every problem listed at its path and in the words of
``pkg/scheduler/apis/config/validation`` (``resource weight of cpu not in valid range (0,
100]``, ``not in valid range [0-100]`` …); defaults are those of ``apis/config/v1/defaults.go``
(a resource weight of 0 means 1; omitted args take the plugin's defaults).

:func:`parse_scheduler_config` takes the parsed YAML document (reading the file is the caller's
business: this module is pure) and returns a :class:`SchedulerConfiguration`.

What fleetlog does not take from such a file, it refuses rather than ignores: more than one
profile (fleetlog runs one), extension points other than ``score`` and ``multiPoint`` (its
filters are fixed), disabling through ``multiPoint`` (that would disable a plugin's filter too;
``score.disabled`` disables its score), plugins it does not implement (ImageLocality, …), plugin
args it does not honour, and extenders. Fields a kube-scheduler file carries for the process
(``leaderElection``, ``clientConnection``, ``parallelism``, the profiling and address fields)
are checked for shape and otherwise not used. Kubernetes does not check a plugin's weight for
being negative; fleetlog refuses one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from pydantic import Field, ValidationError

from core.errors import FieldError, ValidationFailed
from core.meta.model import K8sModel, Loc, format_path, invalid, show, to_validation_failed
from core.meta.names import qualified_name_errors
from core.scheduling.framework import PreemptionConfig, SchedulerConfig
from core.scheduling.scores import DEFAULT_WEIGHTS, MAX_CUSTOM_PRIORITY_SCORE, FitStrategy

API_VERSION: Final = "kubescheduler.config.k8s.io/v1"
KIND: Final = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME: Final = "default-scheduler"
SCORING_STRATEGIES: Final = ("LeastAllocated", "MostAllocated", "RequestedToCapacityRatio")
INT32_MAX: Final = 2**31 - 1

KUBERNETES_SCORE_PLUGINS_NOT_IN_FLEETLOG: Final = frozenset({"ImageLocality", "VolumeBinding"})
"""Score plugins of Kubernetes' default profile that fleetlog does not implement."""

# --------------------------------------------------------------------------------------------
# The shape of the file (unknown fields refused, types strict)
# --------------------------------------------------------------------------------------------


class _Plugin(K8sModel):
    name: str
    weight: int | None = None


class _PluginSet(K8sModel):
    enabled: list[_Plugin] | None = None
    disabled: list[_Plugin] | None = None


class _Plugins(K8sModel):
    """``profiles[].plugins``: every extension point is known; only two may be configured."""

    multi_point: _PluginSet | None = None
    score: _PluginSet | None = None
    pre_enqueue: _PluginSet | None = None
    queue_sort: _PluginSet | None = None
    pre_filter: _PluginSet | None = None
    filter: _PluginSet | None = None
    post_filter: _PluginSet | None = None
    pre_score: _PluginSet | None = None
    reserve: _PluginSet | None = None
    permit: _PluginSet | None = None
    pre_bind: _PluginSet | None = None
    bind: _PluginSet | None = None
    post_bind: _PluginSet | None = None


class _PluginConfig(K8sModel):
    name: str
    args: dict[str, Any] | None = None


class _Profile(K8sModel):
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    percentage_of_nodes_to_score: int | None = None
    plugins: _Plugins | None = None
    plugin_config: list[_PluginConfig] | None = None


class _File(K8sModel):
    api_version: Literal["kubescheduler.config.k8s.io/v1"]
    kind: Literal["KubeSchedulerConfiguration"]
    percentage_of_nodes_to_score: int | None = None
    pod_initial_backoff_seconds: int = 1
    pod_max_backoff_seconds: int = 10
    profiles: list[_Profile] | None = None
    extenders: list[dict[str, Any]] | None = None
    # Process settings of kube-scheduler: accepted so that a real file loads, not used.
    parallelism: int = 16
    leader_election: dict[str, Any] | None = None
    client_connection: dict[str, Any] | None = None
    enable_profiling: bool | None = None
    enable_contention_profiling: bool | None = None
    healthz_bind_address: str | None = None
    metrics_bind_address: str | None = None
    delay_cache_until_active: bool | None = None


class _ArgsBase(K8sModel):
    """What every plugin's args may state about themselves."""

    api_version: Literal["kubescheduler.config.k8s.io/v1"] | None = None
    kind: str | None = None


class _ResourceSpec(K8sModel):
    name: str
    weight: int = 0


class _ShapePoint(K8sModel):
    utilization: int
    score: int


class _RequestedToCapacityRatio(K8sModel):
    shape: list[_ShapePoint] = Field(default_factory=list)


class _ScoringStrategy(K8sModel):
    type: str = ""
    resources: list[_ResourceSpec] | None = None
    requested_to_capacity_ratio: _RequestedToCapacityRatio | None = None


class _NodeResourcesFitArgs(_ArgsBase):
    ignored_resources: list[str] | None = None
    ignored_resource_groups: list[str] | None = None
    scoring_strategy: _ScoringStrategy | None = None


class _BalancedAllocationArgs(_ArgsBase):
    resources: list[_ResourceSpec] | None = None


class _InterPodAffinityArgs(_ArgsBase):
    hard_pod_affinity_weight: int = 1
    ignore_preferred_terms_of_existing_pods: bool = False


class _DefaultPreemptionArgs(_ArgsBase):
    min_candidate_nodes_percentage: int = 10
    min_candidate_nodes_absolute: int = 100


ARGS_MODELS: Final[Mapping[str, type[_ArgsBase]]] = {
    "NodeResourcesFit": _NodeResourcesFitArgs,
    "NodeResourcesBalancedAllocation": _BalancedAllocationArgs,
    "InterPodAffinity": _InterPodAffinityArgs,
    "DefaultPreemption": _DefaultPreemptionArgs,
}
"""The plugins whose args fleetlog honours."""

# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfiguration:
    """What a configuration file says: the profile, and the queue's back-off (seconds)."""

    profile: SchedulerConfig = field(default_factory=SchedulerConfig)
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0


# --------------------------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------------------------

M = TypeVar("M", bound=K8sModel)


class _Problems:
    """Field errors of the whole file, each at its full path."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, loc: Loc, message: str) -> None:
        self.errors.append(FieldError(format_path(loc) or None, message))

    def invalid(self, loc: Loc, value: object, reason: str) -> None:
        self.add(loc, invalid(value, reason))

    def parse(self, model: type[M], data: Mapping[str, Any], loc: Loc) -> M | None:
        """``data`` as ``model``. Where parts of it are malformed (an unknown or misspelt
        field, a wrong type), those are reported and the rest is still read, so that its own
        problems are reported in the same answer."""
        try:
            return model.model_validate(dict(data), strict=True, by_alias=True, by_name=False)
        except ValidationError as err:
            self.errors.extend(to_validation_failed(err, prefix=loc).errors)
            broken = {error["loc"][0] for error in err.errors() if error["loc"]}
        rest = {key: value for key, value in data.items() if key not in broken}
        try:
            return model.model_validate(rest, strict=True, by_alias=True, by_name=False)
        except ValidationError:
            return None  # what is missing now was reported as broken already


def parse_scheduler_config(doc: object) -> SchedulerConfiguration:
    """Read a ``KubeSchedulerConfiguration`` document (parsed YAML) into what it configures.

    Raises ``ValidationFailed`` listing every problem (``errors``) when the document is not a
    configuration fleetlog can run with.
    """
    found = _Problems()
    if not isinstance(doc, Mapping):
        raise ValidationFailed(
            f"a scheduler configuration must be a mapping (apiVersion: {API_VERSION}, kind: "
            f"{KIND}), not {show(doc)}"
        )
    parsed = found.parse(_File, doc, ())
    if parsed is None:
        _raise(found)
        raise AssertionError  # pragma: no cover - _raise always raises here
    pct = parsed.percentage_of_nodes_to_score
    _check_percentage(found, ("percentageOfNodesToScore",), pct)
    if parsed.pod_initial_backoff_seconds <= 0:
        found.invalid(
            ("podInitialBackoffSeconds",),
            parsed.pod_initial_backoff_seconds,
            "must be greater than 0",
        )
    if parsed.pod_max_backoff_seconds < parsed.pod_initial_backoff_seconds:
        found.invalid(
            ("podMaxBackoffSeconds",),
            parsed.pod_max_backoff_seconds,
            "must be greater than or equal to PodInitialBackoffSeconds",
        )
    if parsed.parallelism <= 0:
        found.invalid(
            ("parallelism",), parsed.parallelism, "should be an integer value greater than zero"
        )
    if parsed.extenders:
        found.add(("extenders",), "Forbidden: fleetlog has no scheduler extenders")
    profiles = parsed.profiles or [_Profile()]
    if len(profiles) > 1:
        found.add(
            ("profiles",),
            f"Forbidden: fleetlog runs one scheduling profile, the file has {len(profiles)}",
        )
    profile = _read_profile(found, profiles[0], ("profiles", 0), top_percentage=pct)
    _raise(found)
    assert profile is not None
    return SchedulerConfiguration(
        profile=profile,
        pod_initial_backoff_seconds=float(parsed.pod_initial_backoff_seconds),
        pod_max_backoff_seconds=float(parsed.pod_max_backoff_seconds),
    )


def _raise(found: _Problems) -> None:
    if found.errors:
        # Misspelt fields first (often the cause of the rest), then in the file's order.
        errors = sorted(found.errors, key=lambda e: not e.message.startswith("unknown field "))
        raise ValidationFailed(errors[0].message, field=errors[0].field, errors=errors)


def _check_percentage(found: _Problems, loc: Loc, value: int | None) -> None:
    if value is not None and not 0 <= value <= 100:
        found.invalid(loc, value, "not in valid range [0-100]")


def _read_profile(
    found: _Problems, profile: _Profile, loc: Loc, *, top_percentage: int | None
) -> SchedulerConfig | None:
    if not profile.scheduler_name:
        found.add((*loc, "schedulerName"), "Required value")
    _check_percentage(
        found, (*loc, "percentageOfNodesToScore"), profile.percentage_of_nodes_to_score
    )
    weights = _weights(found, profile.plugins, (*loc, "plugins"))
    settings: dict[str, Any] = {}
    seen: set[str] = set()
    for i, plugin_config in enumerate(profile.plugin_config or ()):
        where = (*loc, "pluginConfig", i)
        name = plugin_config.name
        if name in seen:
            found.add(where, f"Duplicate value {show(name)}")
            continue
        seen.add(name)
        model = ARGS_MODELS.get(name)
        if model is None:
            found.add(
                (*where, "name"),
                f"Unsupported value {show(name)}: fleetlog honours the args of "
                + ", ".join(f'"{n}"' for n in ARGS_MODELS),
            )
            continue
        args = found.parse(model, plugin_config.args or {}, (*where, "args"))
        if args is None:
            continue
        if args.kind is not None and args.kind != f"{name}Args":
            found.invalid((*where, "args"), args.kind, f"has to match plugin args ({name}Args)")
        settings.update(_read_args(found, args, (*where, "args")))
    percentage = profile.percentage_of_nodes_to_score
    if percentage is None:
        percentage = top_percentage
    if found.errors:
        return None
    return SchedulerConfig(
        scheduler_name=profile.scheduler_name,
        weights=weights,
        percentage_of_nodes_to_score=percentage or None,
        **settings,
    )


def _weights(found: _Problems, plugins: _Plugins | None, loc: Loc) -> dict[str, int]:
    """The score weights after ``multiPoint`` and ``score`` are merged over the defaults, as
    ``mergePlugins`` and the framework merge them: an enabled plugin without a weight (or with
    0) weighs 1; ``score.disabled`` (``*`` for all) sets a plugin's score aside."""
    weights = dict(DEFAULT_WEIGHTS)
    if plugins is None:
        return weights
    for point in type(plugins).model_fields:
        if point in ("multi_point", "score") or getattr(plugins, point) is None:
            continue
        alias = type(plugins).model_fields[point].alias or point
        found.add(
            (*loc, alias),
            "Forbidden: fleetlog's filters and binding are fixed; only the score and multiPoint "
            "extension points can be configured",
        )
    multi_point = plugins.multi_point or _PluginSet()
    if multi_point.disabled:
        found.add(
            (*loc, "multiPoint", "disabled"),
            "Forbidden: disabling a plugin at every extension point would disable its filter, "
            "which fleetlog does not do; disable its score in plugins.score.disabled",
        )
    for i, plugin in enumerate(multi_point.enabled or ()):
        weight = _enabled_weight(found, plugin, (*loc, "multiPoint", "enabled", i))
        if weight is not None:
            weights[plugin.name] = weight
    score = plugins.score or _PluginSet()
    for i, plugin in enumerate(score.disabled or ()):
        where = (*loc, "score", "disabled", i, "name")
        if plugin.name == "*":
            weights = dict.fromkeys(weights, 0)
        elif plugin.name in weights:
            weights[plugin.name] = 0
        elif plugin.name not in KUBERNETES_SCORE_PLUGINS_NOT_IN_FLEETLOG:
            found.add(where, _unknown_plugin(plugin.name))
    enabled: set[str] = set()
    for i, plugin in enumerate(score.enabled or ()):
        where = (*loc, "score", "enabled", i)
        if plugin.name in enabled:
            found.add((*where, "name"), f"Duplicate value {show(plugin.name)}")
            continue
        enabled.add(plugin.name)
        weight = _enabled_weight(found, plugin, where)
        if weight is not None:
            weights[plugin.name] = weight
    return weights


def _unknown_plugin(name: str) -> str:
    if name in KUBERNETES_SCORE_PLUGINS_NOT_IN_FLEETLOG:
        return f"Unsupported value {show(name)}: fleetlog does not implement this score plugin"
    supported = ", ".join(f'"{n}"' for n in DEFAULT_WEIGHTS)
    return f"Unsupported value {show(name)}: supported values: {supported}"


def _enabled_weight(found: _Problems, plugin: _Plugin, loc: Loc) -> int | None:
    if plugin.name not in DEFAULT_WEIGHTS:
        found.add((*loc, "name"), _unknown_plugin(plugin.name))
        return None
    weight = plugin.weight or 0
    if weight < 0:
        found.invalid((*loc, "weight"), weight, "must not be negative")
        return None
    if weight > INT32_MAX:
        found.invalid((*loc, "weight"), weight, f"must be no more than {INT32_MAX}")
        return None
    return weight or 1  # "a weight of zero is not permitted": the framework makes it 1


def _read_args(found: _Problems, args: _ArgsBase, loc: Loc) -> dict[str, Any]:
    """One plugin's args, validated as ``validation_pluginargs.go`` validates them, as the
    :class:`SchedulerConfig` fields they set."""
    if isinstance(args, _NodeResourcesFitArgs):
        return _fit_args(found, args, loc)
    if isinstance(args, _BalancedAllocationArgs):
        return _balanced_args(found, args, loc)
    if isinstance(args, _InterPodAffinityArgs):
        if not 0 <= args.hard_pod_affinity_weight <= 100:
            found.invalid(
                (*loc, "hardPodAffinityWeight"),
                args.hard_pod_affinity_weight,
                "not in valid range [0, 100]",
            )
        if args.ignore_preferred_terms_of_existing_pods:
            found.add(
                (*loc, "ignorePreferredTermsOfExistingPods"),
                "Forbidden: fleetlog always scores existing pods' preferred terms",
            )
        return {"hard_pod_affinity_weight": args.hard_pod_affinity_weight}
    assert isinstance(args, _DefaultPreemptionArgs)
    return _preemption_args(found, args, loc)


def _fit_args(found: _Problems, args: _NodeResourcesFitArgs, loc: Loc) -> dict[str, Any]:
    for i, name in enumerate(args.ignored_resources or ()):
        for message in qualified_name_errors(name):
            found.invalid((*loc, "ignoredResources", i), name, message)
    for i, group in enumerate(args.ignored_resource_groups or ()):
        if "/" in group:
            found.invalid(
                (*loc, "ignoredResourceGroups", i), group, "resource group name can't contain '/'"
            )
        for message in qualified_name_errors(group):
            found.invalid((*loc, "ignoredResourceGroups", i), group, message)
    out: dict[str, Any] = {
        "ignored_resources": frozenset(args.ignored_resources or ()),
        "ignored_resource_groups": frozenset(args.ignored_resource_groups or ()),
    }
    strategy = args.scoring_strategy
    if strategy is None:
        return out  # defaulted: LeastAllocated on cpu and memory, weight 1 each
    where = (*loc, "scoringStrategy")
    if strategy.type not in SCORING_STRATEGIES:
        supported = ", ".join(f'"{s}"' for s in SCORING_STRATEGIES)
        found.add(
            (*where, "type"),
            f"Unsupported value {show(strategy.type)}: supported values: {supported}",
        )
    resources = _resources(found, strategy.resources, (*where, "resources"))
    shape: list[tuple[int, int]] = []
    ratio = strategy.requested_to_capacity_ratio
    if strategy.type == "RequestedToCapacityRatio":
        if ratio is None:
            found.add(
                (*where, "requestedToCapacityRatio"),
                "Required value: must be specified when type is RequestedToCapacityRatio",
            )
        else:
            shape = _shape(found, ratio.shape, (*where, "requestedToCapacityRatio", "shape"))
    elif ratio is not None:
        found.add(
            (*where, "requestedToCapacityRatio"),
            "Forbidden: must be nil when type is not RequestedToCapacityRatio",
        )
    if not found.errors:
        out["fit_strategy"] = FitStrategy(
            type=strategy.type,
            resources=tuple(resources),
            **({"shape": tuple(shape)} if shape else {}),
        )
    return out


def _resources(
    found: _Problems, specs: Sequence[_ResourceSpec] | None, loc: Loc
) -> list[tuple[str, int]]:
    """``validateResources``: weights 1..100 (0 defaults to 1); none given means cpu and
    memory, 1 each."""
    if not specs:
        return [("cpu", 1), ("memory", 1)]
    out: list[tuple[str, int]] = []
    for i, spec in enumerate(specs):
        weight = spec.weight or 1
        if not 0 < weight <= 100:
            found.invalid(
                (*loc, i, "weight"),
                weight,
                f"resource weight of {spec.name} not in valid range (0, 100]",
            )
        out.append((spec.name, weight))
    return out


def _shape(found: _Problems, points: Sequence[_ShapePoint], loc: Loc) -> list[tuple[int, int]]:
    """``validateFunctionShape``: at least one point, utilization increasing in 0..100, scores
    in 0..10."""
    if not points:
        found.add(loc, "Required value: at least one point must be specified")
        return []
    for i in range(1, len(points)):
        if points[i - 1].utilization >= points[i].utilization:
            found.invalid(
                (*loc, i, "utilization"),
                points[i].utilization,
                "values must be sorted in increasing order",
            )
            break
    for i, point in enumerate(points):
        if not 0 <= point.utilization <= 100:
            found.invalid(
                (*loc, i, "utilization"), point.utilization, "not in valid range [0, 100]"
            )
        if not 0 <= point.score <= MAX_CUSTOM_PRIORITY_SCORE:
            found.invalid(
                (*loc, i, "score"),
                point.score,
                f"not in valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]",
            )
    return [(point.utilization, point.score) for point in points]


def _balanced_args(found: _Problems, args: _BalancedAllocationArgs, loc: Loc) -> dict[str, Any]:
    """``ValidateNodeResourcesBalancedAllocationArgs``: distinct resources, each of weight 1."""
    names: list[str] = []
    for i, spec in enumerate(args.resources or ()):
        if spec.name in names:
            found.add((*loc, "resources", i, "name"), f"Duplicate value {show(spec.name)}")
        else:
            names.append(spec.name)
        weight = spec.weight or 1
        if weight != 1:
            found.invalid((*loc, "resources", i, "weight"), weight, "must be 1")
    return {"balanced_resources": tuple(names)} if names else {}


def _preemption_args(found: _Problems, args: _DefaultPreemptionArgs, loc: Loc) -> dict[str, Any]:
    """``ValidateDefaultPreemptionArgs``."""
    percentage = args.min_candidate_nodes_percentage
    absolute = args.min_candidate_nodes_absolute
    percentage_loc = (*loc, "minCandidateNodesPercentage")
    absolute_loc = (*loc, "minCandidateNodesAbsolute")
    bad = False
    if not 0 <= percentage <= 100:
        found.invalid(percentage_loc, percentage, "not in valid range [0, 100]")
        bad = True
    if absolute < 0:
        found.invalid(absolute_loc, absolute, "not in valid range [0, inf)")
        bad = True
    if percentage == 0 and absolute == 0:
        found.invalid(
            percentage_loc,
            percentage,
            "cannot be zero at the same time as minCandidateNodesAbsolute",
        )
        found.invalid(
            absolute_loc, absolute, "cannot be zero at the same time as minCandidateNodesPercentage"
        )
        bad = True
    if bad:
        return {}
    return {
        "preemption": PreemptionConfig(
            min_candidate_nodes_percentage=percentage, min_candidate_nodes_absolute=absolute
        )
    }
