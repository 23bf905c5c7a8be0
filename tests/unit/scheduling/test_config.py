"""The scheduler reads a KubeSchedulerConfiguration file as kube-scheduler does: the same fields,
the same defaults, and a bad file refused with every problem in the words of
pkg/scheduler/apis/config/validation."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.errors import ValidationFailed
from core.scheduling import NodeResourcesFitFilter, SchedulerConfig, schedule
from core.scheduling.config import SchedulerConfiguration, parse_scheduler_config
from core.scheduling.scores import DEFAULT_WEIGHTS, FitStrategy
from tests.unit.scheduling.helpers import node, pod


def config(**top: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        **top,
    }


def profile(**fields: Any) -> dict[str, Any]:
    return config(profiles=[{"schedulerName": "default-scheduler", **fields}])


def fit_args(**args: Any) -> dict[str, Any]:
    return profile(pluginConfig=[{"name": "NodeResourcesFit", "args": args}])


def problems(doc: object) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationFailed) as info:
        parse_scheduler_config(doc)
    return [(e.field, e.message) for e in info.value.errors]


ARGS = "profiles[0].pluginConfig[0].args"


# --- what a file configures -------------------------------------------------------------------


def test_an_empty_configuration_is_kube_schedulers_defaults() -> None:
    read = parse_scheduler_config(config())
    assert read == SchedulerConfiguration(
        profile=read.profile, pod_initial_backoff_seconds=1.0, pod_max_backoff_seconds=10.0
    )
    default = SchedulerConfig()
    assert dict(read.profile.weights) == DEFAULT_WEIGHTS
    assert read.profile.fit_strategy == default.fit_strategy
    assert read.profile.percentage_of_nodes_to_score is None
    assert read.profile.preemption == default.preemption


def test_score_weights_merge_over_the_defaults_as_kubernetes_merges_them() -> None:
    read = parse_scheduler_config(
        profile(
            plugins={
                "multiPoint": {"enabled": [{"name": "PodTopologySpread", "weight": 7}]},
                "score": {
                    "enabled": [
                        {"name": "NodeResourcesFit", "weight": 5},
                        {"name": "TaintToleration"},  # no weight: 1
                    ],
                    "disabled": [{"name": "NodeResourcesBalancedAllocation"}],
                },
            }
        )
    )
    assert dict(read.profile.weights) == {
        **DEFAULT_WEIGHTS,
        "NodeResourcesFit": 5,
        "TaintToleration": 1,
        "PodTopologySpread": 7,
        "NodeResourcesBalancedAllocation": 0,
    }


def test_disabling_every_score_then_enabling_one() -> None:
    read = parse_scheduler_config(
        profile(
            plugins={
                "score": {
                    "disabled": [{"name": "*"}, {"name": "ImageLocality"}],
                    "enabled": [{"name": "NodeAffinity", "weight": 4}],
                }
            }
        )
    )
    assert {k: v for k, v in read.profile.weights.items() if v} == {"NodeAffinity": 4}


def test_plugin_args_set_the_profile() -> None:
    read = parse_scheduler_config(
        config(
            percentageOfNodesToScore=40,
            podInitialBackoffSeconds=2,
            podMaxBackoffSeconds=30,
            profiles=[
                {
                    "schedulerName": "default-scheduler",
                    "percentageOfNodesToScore": 20,
                    "pluginConfig": [
                        {
                            "name": "NodeResourcesFit",
                            "args": {
                                "apiVersion": "kubescheduler.config.k8s.io/v1",
                                "kind": "NodeResourcesFitArgs",
                                "scoringStrategy": {
                                    "type": "RequestedToCapacityRatio",
                                    "resources": [{"name": "cpu", "weight": 3}, {"name": "memory"}],
                                    "requestedToCapacityRatio": {
                                        "shape": [
                                            {"utilization": 0, "score": 10},
                                            {"utilization": 100, "score": 0},
                                        ]
                                    },
                                },
                                "ignoredResources": ["example.com/foo"],
                                "ignoredResourceGroups": ["gpu.example.com"],
                            },
                        },
                        {
                            "name": "NodeResourcesBalancedAllocation",
                            "args": {
                                "resources": [
                                    {"name": "cpu"},
                                    {"name": "memory", "weight": 1},
                                    {"name": "example.com/gpu"},
                                ]
                            },
                        },
                        {"name": "InterPodAffinity", "args": {"hardPodAffinityWeight": 5}},
                        {
                            "name": "DefaultPreemption",
                            "args": {
                                "minCandidateNodesPercentage": 20,
                                "minCandidateNodesAbsolute": 5,
                            },
                        },
                    ],
                }
            ],
        )
    )
    p = read.profile
    assert (read.pod_initial_backoff_seconds, read.pod_max_backoff_seconds) == (2.0, 30.0)
    assert p.percentage_of_nodes_to_score == 20  # the profile's own wins over the top level
    assert p.fit_strategy == FitStrategy(
        "RequestedToCapacityRatio", (("cpu", 3), ("memory", 1)), ((0, 10), (100, 0))
    )
    assert (p.ignored_resources, p.ignored_resource_groups) == (
        frozenset({"example.com/foo"}),
        frozenset({"gpu.example.com"}),
    )
    assert p.balanced_resources == ("cpu", "memory", "example.com/gpu")
    assert p.hard_pod_affinity_weight == 5
    assert (
        p.preemption.min_candidate_nodes_percentage,
        p.preemption.min_candidate_nodes_absolute,
    ) == (20, 5)


def test_ignored_extended_resources_are_not_checked_by_the_fit_filter() -> None:
    read = parse_scheduler_config(fit_args(ignoredResourceGroups=["example.com"]))
    wants_gpu = pod(cpu="100m", extra={"example.com/gpu": "1"})
    nodes = [node("n1")]  # offers no example.com/gpu at all
    assert schedule(wants_gpu, nodes, SchedulerConfig(), random.Random(0)).node_name is None
    assert schedule(wants_gpu, nodes, read.profile, random.Random(0)).node_name == "n1"
    fit = NodeResourcesFitFilter(ignored_resources=["example.com/gpu"])
    assert fit.ignores("example.com/gpu") and not fit.ignores("cpu")
    assert not NodeResourcesFitFilter(ignored_resource_groups=["kubernetes.io"]).ignores(
        "kubernetes.io/batch"
    )


# --- what a file may not say ------------------------------------------------------------------


def test_resource_weights_are_1_to_100_and_0_means_1() -> None:
    read = parse_scheduler_config(
        fit_args(
            scoringStrategy={"type": "MostAllocated", "resources": [{"name": "cpu", "weight": 0}]}
        )
    )
    assert read.profile.fit_strategy.resources == (("cpu", 1),)
    assert problems(
        fit_args(
            scoringStrategy={
                "type": "LeastAllocated",
                "resources": [{"name": "cpu", "weight": 101}, {"name": "memory", "weight": -1}],
            }
        )
    ) == [
        (
            f"{ARGS}.scoringStrategy.resources[0].weight",
            "Invalid value 101: resource weight of cpu not in valid range (0, 100]",
        ),
        (
            f"{ARGS}.scoringStrategy.resources[1].weight",
            "Invalid value -1: resource weight of memory not in valid range (0, 100]",
        ),
    ]


def test_scoring_strategy_type_and_shape() -> None:
    assert problems(fit_args(scoringStrategy={"type": "Cheapest"})) == [
        (
            f"{ARGS}.scoringStrategy.type",
            'Unsupported value "Cheapest": supported values: "LeastAllocated", "MostAllocated", '
            '"RequestedToCapacityRatio"',
        )
    ]
    assert problems(fit_args(scoringStrategy={"type": "RequestedToCapacityRatio"})) == [
        (
            f"{ARGS}.scoringStrategy.requestedToCapacityRatio",
            "Required value: must be specified when type is RequestedToCapacityRatio",
        )
    ]
    shape = [
        {"utilization": 50, "score": 11},
        {"utilization": 40, "score": 2},
        {"utilization": 101, "score": 0},
    ]
    assert problems(
        fit_args(
            scoringStrategy={
                "type": "RequestedToCapacityRatio",
                "requestedToCapacityRatio": {"shape": shape},
            }
        )
    ) == [
        (
            f"{ARGS}.scoringStrategy.requestedToCapacityRatio.shape[1].utilization",
            "Invalid value 40: values must be sorted in increasing order",
        ),
        (
            f"{ARGS}.scoringStrategy.requestedToCapacityRatio.shape[0].score",
            "Invalid value 11: not in valid range [0, 10]",
        ),
        (
            f"{ARGS}.scoringStrategy.requestedToCapacityRatio.shape[2].utilization",
            "Invalid value 101: not in valid range [0, 100]",
        ),
    ]
    assert problems(
        fit_args(
            scoringStrategy={"type": "MostAllocated", "requestedToCapacityRatio": {"shape": []}}
        )
    ) == [
        (
            f"{ARGS}.scoringStrategy.requestedToCapacityRatio",
            "Forbidden: must be nil when type is not RequestedToCapacityRatio",
        )
    ]


def test_ignored_resources_are_label_names_and_groups_have_no_slash() -> None:
    found = problems(fit_args(ignoredResources=["bad name"], ignoredResourceGroups=["a/b", "-x"]))
    assert [field for field, _ in found] == [
        f"{ARGS}.ignoredResources[0]",
        f"{ARGS}.ignoredResourceGroups[0]",
        f"{ARGS}.ignoredResourceGroups[1]",
    ]
    assert found[1][1] == "Invalid value \"a/b\": resource group name can't contain '/'"
    assert found[0][1].startswith('Invalid value "bad name": name part must consist of')


def test_percentage_of_nodes_to_score_is_0_to_100_wherever_it_is_set() -> None:
    doc = config(
        percentageOfNodesToScore=101,
        profiles=[{"schedulerName": "default-scheduler", "percentageOfNodesToScore": -1}],
    )
    assert problems(doc) == [
        ("percentageOfNodesToScore", "Invalid value 101: not in valid range [0-100]"),
        ("profiles[0].percentageOfNodesToScore", "Invalid value -1: not in valid range [0-100]"),
    ]


def test_other_plugin_args_are_checked_in_kubernetes_words() -> None:
    doc = profile(
        pluginConfig=[
            {"name": "InterPodAffinity", "args": {"hardPodAffinityWeight": 101}},
            {
                "name": "DefaultPreemption",
                "args": {"minCandidateNodesPercentage": 0, "minCandidateNodesAbsolute": 0},
            },
            {
                "name": "NodeResourcesBalancedAllocation",
                "args": {"resources": [{"name": "cpu", "weight": 2}, {"name": "cpu"}]},
            },
            {"name": "InterPodAffinity", "args": {}},
        ]
    )
    assert problems(doc) == [
        (
            "profiles[0].pluginConfig[0].args.hardPodAffinityWeight",
            "Invalid value 101: not in valid range [0, 100]",
        ),
        (
            "profiles[0].pluginConfig[1].args.minCandidateNodesPercentage",
            "Invalid value 0: cannot be zero at the same time as minCandidateNodesAbsolute",
        ),
        (
            "profiles[0].pluginConfig[1].args.minCandidateNodesAbsolute",
            "Invalid value 0: cannot be zero at the same time as minCandidateNodesPercentage",
        ),
        ("profiles[0].pluginConfig[2].args.resources[0].weight", "Invalid value 2: must be 1"),
        ("profiles[0].pluginConfig[2].args.resources[1].name", 'Duplicate value "cpu"'),
        ("profiles[0].pluginConfig[3]", 'Duplicate value "InterPodAffinity"'),
    ]


def test_queue_backoff_and_parallelism() -> None:
    assert problems(config(podInitialBackoffSeconds=0, podMaxBackoffSeconds=-1, parallelism=0)) == [
        ("podInitialBackoffSeconds", "Invalid value 0: must be greater than 0"),
        (
            "podMaxBackoffSeconds",
            "Invalid value -1: must be greater than or equal to PodInitialBackoffSeconds",
        ),
        ("parallelism", "Invalid value 0: should be an integer value greater than zero"),
    ]


def test_what_fleetlog_cannot_honour_is_refused_not_ignored() -> None:
    doc = config(
        extenders=[{"urlPrefix": "http://x"}],
        profiles=[
            {
                "schedulerName": "default-scheduler",
                "plugins": {
                    "filter": {"disabled": [{"name": "NodePorts"}]},
                    "multiPoint": {"disabled": [{"name": "TaintToleration"}]},
                    "score": {
                        "enabled": [{"name": "ImageLocality", "weight": 1}, {"name": "Mine"}]
                    },
                },
                "pluginConfig": [{"name": "PodTopologySpread", "args": {}}],
            },
            {"schedulerName": "other"},
        ],
    )
    found = problems(doc)
    assert [field for field, _ in found] == [
        "extenders",
        "profiles",
        "profiles[0].plugins.filter",
        "profiles[0].plugins.multiPoint.disabled",
        "profiles[0].plugins.score.enabled[0].name",
        "profiles[0].plugins.score.enabled[1].name",
        "profiles[0].pluginConfig[0].name",
    ]
    assert found[1][1] == "Forbidden: fleetlog runs one scheduling profile, the file has 2"
    assert (
        found[4][1]
        == 'Unsupported value "ImageLocality": fleetlog does not implement this score plugin'
    )
    assert found[5][1].startswith('Unsupported value "Mine": supported values: "TaintToleration"')


def test_negative_and_oversized_plugin_weights_are_refused() -> None:
    doc = profile(
        plugins={
            "score": {
                "enabled": [
                    {"name": "NodeAffinity", "weight": -1},
                    {"name": "TaintToleration", "weight": 2**31},
                ]
            }
        }
    )
    assert problems(doc) == [
        ("profiles[0].plugins.score.enabled[0].weight", "Invalid value -1: must not be negative"),
        (
            "profiles[0].plugins.score.enabled[1].weight",
            f"Invalid value {2**31}: must be no more than {2**31 - 1}",
        ),
    ]


def test_a_misspelt_field_comes_first_and_the_rest_is_still_checked() -> None:
    doc = config(percentageOfNodesToScore=300, profile=[{}], podInitialBackoffSecond=1)
    assert problems(doc) == [
        ("profile", 'unknown field "profile"'),
        ("podInitialBackoffSecond", 'unknown field "podInitialBackoffSecond"'),
        ("percentageOfNodesToScore", "Invalid value 300: not in valid range [0-100]"),
    ]


def test_the_wrong_kind_of_document_is_refused() -> None:
    assert problems({"apiVersion": "v1", "kind": "Pod"}) == [
        (
            "apiVersion",
            'Unsupported value "v1": supported values: "kubescheduler.config.k8s.io/v1"',
        ),
        ("kind", 'Unsupported value "Pod": supported values: "KubeSchedulerConfiguration"'),
    ]
    with pytest.raises(ValidationFailed, match="must be a mapping"):
        parse_scheduler_config(["not", "a", "mapping"])
    assert problems(fit_args(kind="NodeAffinityArgs")) == [
        (ARGS, 'Invalid value "NodeAffinityArgs": has to match plugin args (NodeResourcesFitArgs)')
    ]
