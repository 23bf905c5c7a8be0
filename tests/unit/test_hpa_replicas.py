"""The replica calculator, rule by rule, against the cases of Kubernetes'
``pkg/controller/podautoscaler/replica_calculator_test.go`` (expectations worked out by hand
from its rules; each test names the Go test it follows). Kubernetes' tests give each pod two
containers; here each pod has one container with the pod's whole request, which leaves every
percentage and replica count the same."""

from __future__ import annotations

import pytest

from core.autoscaling.replicas import (
    ContainerRequests,
    MetricError,
    PodInfo,
    Sample,
    Timing,
    Tolerances,
    average_value_replicas,
    external_average_replicas,
    external_value_replicas,
    group_pods,
    object_average_replicas,
    object_value_replicas,
    pod_requests,
    resource_utilization_replicas,
)

NOW = 1_800_000_000.0
COOL = NOW - 3600.0
"""A start time well past the CPU initialisation period (``coolCPUCreationTime``)."""
HOT = NOW - 60.0
"""A start time inside the CPU initialisation period (``hotCPUCreationTime``)."""
TIMING = Timing(now=NOW)
TOL = Tolerances()


def pods(
    requests: list[int],
    *,
    ready: list[str] | None = None,
    phase: list[str] | None = None,
    deleting: list[bool] | None = None,
    start: list[float] | None = None,
) -> tuple[PodInfo, ...]:
    """Pods ``test-pod-<i>`` with one container requesting ``requests[i]`` millicores, ready
    since long ago unless said otherwise."""
    out = []
    for i, request in enumerate(requests):
        out.append(
            PodInfo(
                name=f"test-pod-{i}",
                phase=(phase or [])[i] if phase and i < len(phase) else "Running",
                ready=(ready[i] if ready else "True"),  # type: ignore[arg-type]
                ready_since=COOL + 10,
                start_time=(start[i] if start else COOL),
                deleting=(deleting[i] if deleting else False),
                containers=(ContainerRequests("app", {"cpu": request, "memory": request}),),
            )
        )
    return tuple(out)


def samples(
    levels: list[int], *, timestamp: float = NOW, window: float = 30.0
) -> dict[str, Sample]:
    return {f"test-pod-{i}": Sample(v, timestamp, window) for i, v in enumerate(levels)}


def cpu(current: int, target: int, the_pods: tuple[PodInfo, ...], levels: list[int], **kw: object):
    return resource_utilization_replicas(
        current=current,
        target_utilization=target,
        resource="cpu",
        pods=the_pods,
        samples=samples(levels),
        tolerances=kw.pop("tolerances", TOL),  # type: ignore[arg-type]
        timing=TIMING,
    )


# -- Resource utilisation ------------------------------------------------------------------


def test_scale_up_from_the_integer_percentage_of_summed_requests() -> None:
    """TestReplicaCalcScaleUp: 3 pods at 300/500/700m of 1 cpu, target 30 % -> 5 (50 %)."""
    result = cpu(3, 30, pods([1000] * 3), [300, 500, 700])
    assert (result.replicas, result.utilization, result.usage) == (5, 50, 500)
    assert result.outcome == "scaled" and result.ready == 3


def test_scale_down() -> None:
    """TestReplicaCalcScaleDown: 5 pods at 100/300/500/250/250m, target 50 % -> 3 (28 %)."""
    result = cpu(5, 50, pods([1000] * 5), [100, 300, 500, 250, 250])
    assert (result.replicas, result.utilization, result.usage) == (3, 28, 280)


def test_within_tolerance_keeps_the_count() -> None:
    """TestReplicaCalcTolerance: requests .9/1/1.1 cpu, usage 1010/1030/1020m, target 100 %
    -> 102 %, within 10 %: stays 3."""
    result = cpu(3, 100, pods([900, 1000, 1100]), [1010, 1030, 1020])
    assert (result.replicas, result.utilization, result.outcome) == (3, 102, "within-tolerance")


def test_a_custom_tolerance_is_honoured_per_direction() -> None:
    """The HPAConfigurableTolerance cases (TestReplicaCalcScaleUp with tolerances): 102 % is
    outside an up-tolerance of 1 %, and 97 % inside a down-tolerance of 5 %."""
    up = cpu(3, 100, pods([900, 1000, 1100]), [1010, 1030, 1020], tolerances=Tolerances(0.1, 0.01))
    assert up.replicas == 4  # ceil(1.02 * 3)
    down = cpu(3, 100, pods([1000] * 3), [970, 970, 970], tolerances=Tolerances(0.05, 0.1))
    assert down.replicas == 3 and down.outcome == "within-tolerance"


def test_samples_of_pods_the_selector_did_not_match_are_skipped() -> None:
    """TestReplicaCalcSuperfluousMetrics: 4 pods, 6 samples -> 587 %, 24 replicas."""
    result = cpu(4, 100, pods([1000] * 4), [4000, 9500, 3000, 7000, 3200, 2000])
    assert (result.replicas, result.utilization, result.usage) == (24, 587, 5875)


def test_missing_pods_count_as_their_whole_request_on_a_scale_down() -> None:
    """TestReplicaCalcMissingMetrics: 4 pods, samples for 2 (400m, 95m) -> 24 %; the 2 missing
    counted at 100 % -> 62 % -> ceil(.62 * 4) = 3."""
    result = cpu(4, 100, pods([1000] * 4), [400, 95])
    assert (result.replicas, result.utilization) == (3, 24)
    assert result.missing == ("test-pod-2", "test-pod-3")
    assert result.per_pod["test-pod-2"] == 1000


def test_missing_pods_count_as_the_target_when_it_is_above_100_percent() -> None:
    """The fallback of ``GetResourceReplicas``: max(100, target) % of the request."""
    result = cpu(4, 150, pods([1000] * 4), [400, 95])
    assert result.per_pod["test-pod-2"] == 1500


@pytest.mark.parametrize(
    ("level", "utilization"),
    [(1000, 100), (1900, 190), (600, 60)],
    ids=["TestReplicaCalcMissingMetricsNoChangeEq", "NoChangeGt", "NoChangeLt"],
)
def test_missing_pods_can_cancel_the_change(level: int, utilization: int) -> None:
    """TestReplicaCalcMissingMetricsNoChange{Eq,Gt,Lt}: 2 pods, one sample; filling in the
    missing pod brings the ratio back within tolerance (or it was already 1.0)."""
    result = cpu(2, 100, pods([1000] * 2), [level])
    assert (result.replicas, result.utilization) == (2, utilization)


def test_an_unready_pod_with_a_missing_one_cancels_a_direction_flip() -> None:
    """TestReplicaCalcMissingMetricsUnreadyChange: pod 0 unready (100m), pod 1 450m, pod 2
    missing, target 50 % -> 45 %, within tolerance: stays 3."""
    result = cpu(3, 50, pods([1000] * 3, ready=["False", "True", "True"]), [100, 450])
    assert (result.replicas, result.utilization) == (3, 45)
    assert result.unready == ("test-pod-0",) and result.missing == ("test-pod-2",)


def test_missing_and_unready_pods_count_as_zero_on_a_scale_up() -> None:
    """TestReplicaCalcMissingMetricsUnreadyScaleUp: 200 % on the one ready pod; unready and
    missing at 0 -> 2000/3000 = 66 % -> ceil(1.32 * 3) = 4."""
    result = cpu(3, 50, pods([1000] * 3, ready=["False", "True", "True"]), [100, 2000])
    assert (result.replicas, result.utilization) == (4, 200)
    assert result.per_pod == {"test-pod-0": 0, "test-pod-1": 2000, "test-pod-2": 0}


def test_hot_cpu_pod_is_unready_during_initialisation() -> None:
    """TestReplicaCalcMissingMetricsHotCpuScaleUp: a pod started a minute ago whose sample does
    not yet cover a window since it became ready is set aside like an unready one -> 4."""
    hot = PodInfo("test-pod-0", ready="True", ready_since=NOW - 10, start_time=HOT,
                  containers=(ContainerRequests("app", {"cpu": 1000}),))  # fmt: skip
    result = cpu(3, 50, (hot, *pods([1000] * 3)[1:]), [100, 2000])
    assert result.unready == ("test-pod-0",)
    assert result.replicas == 4


def test_unready_pods_do_not_block_a_scale_down() -> None:
    """TestReplicaCalcMissingMetricsUnreadyScaleDown: 4 pods, pod 0 unready, samples for pods
    0-2 at 100m, pod 3 missing, target 50 % -> 10 % on the ready pods; the missing pod at its
    whole request, the unready one left out: 1200/3000 = 40 % -> ceil(.8 * 3) = 3."""
    result = cpu(4, 50, pods([1000] * 4, ready=["False", "True", "True", "True"]), [100, 100, 100])
    assert (result.replicas, result.utilization) == (3, 10)


def test_surge_pod_without_sample_during_a_rolling_update() -> None:
    """TestReplicaCalcDuringRollingUpdateWithMaxSurge: 3 running pods, 2 samples at 100m,
    current 2, target 50 % -> 10 %; the missing pod at 100 % -> 40 % -> ceil(.8 * 3) = 3, more
    than the current 2 on a ratio below 1: the count stays 2."""
    result = cpu(2, 50, pods([1000] * 3), [100, 100])
    assert (result.replicas, result.utilization, result.outcome) == (2, 10, "replica-count-flipped")


def test_scale_up_with_unready_pods_counts_them_as_zero() -> None:
    """TestReplicaCalcScaleUpUnreadyLessScale: pod 0 unready at 300m, 500/700m ready, target
    30 % -> 60 % on the ready; with pod 0 at 0: 40 % -> 4."""
    result = cpu(3, 30, pods([1000] * 3, ready=["False", "True", "True"]), [300, 500, 700])
    assert (result.replicas, result.utilization, result.usage) == (4, 60, 600)


def test_scale_up_with_unready_pods_can_end_within_tolerance() -> None:
    """TestReplicaCalcScaleUpUnreadyNoScale: 400/500/700m with pods 0 and 2 unready, target
    40 % -> 50 % on the ready one; with the unready at 0: 500/3000 = 16 %: the direction flips,
    the count stays."""
    result = cpu(3, 40, pods([1000] * 3, ready=["False", "True", "False"]), [400, 500, 700])
    assert (result.replicas, result.outcome) == (3, "direction-flipped")


def test_pending_failed_and_deleting_pods() -> None:
    """TestReplicaCalcScaleUpPending / ...IgnoresFailedPods / ...IgnoresDeletionPods: a pending
    pod is unready (0 on a scale-up); failed and deleting pods are left out entirely."""
    the_pods = pods(
        [1000] * 5,
        phase=["Running", "Running", "Pending", "Failed", "Running"],
        deleting=[False, False, False, False, True],
    )
    result = cpu(2, 30, the_pods, [500, 700])
    assert result.ignored == ("test-pod-3", "test-pod-4")
    assert result.unready == ("test-pod-2",)
    # 60 % on the two ready pods; the pending one at 0: 1200/3000 = 40 % -> ceil(1.33 * 3) = 4.
    assert (result.replicas, result.utilization) == (4, 60)


def test_a_container_metric_uses_only_that_containers_request() -> None:
    """TestReplicaCalcScaleUpContainer: ContainerResource sums one container's request."""
    the_pods = tuple(
        PodInfo(f"test-pod-{i}", ready_since=COOL + 10, start_time=COOL,
                containers=(ContainerRequests("app", {"cpu": 1000}),
                            ContainerRequests("sidecar", {"cpu": 9000})))
        for i in range(3)
    )  # fmt: skip
    result = resource_utilization_replicas(
        current=3, target_utilization=30, resource="cpu", container="app", pods=the_pods,
        samples=samples([300, 500, 700]), tolerances=TOL, timing=TIMING,
    )  # fmt: skip
    assert (result.replicas, result.utilization) == (5, 50)


def test_a_missing_request_is_kubernetes_error() -> None:
    """TestReplicaCalcEmptyCPURequest: "missing request for cpu ..."."""
    no_request = (PodInfo("test-pod-0", ready_since=COOL, start_time=COOL,
                          containers=(ContainerRequests("app", {}),)),)  # fmt: skip
    with pytest.raises(
        MetricError, match=r"^missing request for cpu in container app of Pod test-pod-0$"
    ):
        cpu(1, 100, no_request, [200])
    with pytest.raises(MetricError, match=r"container web not found in Pod test-pod-0"):
        pod_requests(pods([1000]), "cpu", "web")


def test_no_pods_and_no_usable_samples_are_errors() -> None:
    """TestReplicaCalcEmptyMetrics-like errors: no pods, and no sample of a ready pod."""
    with pytest.raises(MetricError, match="no pods returned by selector"):
        cpu(1, 100, (), [])
    with pytest.raises(MetricError, match="did not receive metrics for targeted pods"):
        cpu(1, 100, pods([1000], ready=["False"]), [100])


def test_computed_tolerance_regression() -> None:
    """TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150m asking ~300m each;
    a target just past the tolerance scales 10 -> 8, one just inside keeps 10."""
    requests = [400, 200, 310, 290, 302, 298, 301, 299, 300, 300]
    target = int((1 / (2 * 0.9) + 0.01) * 100)  # 56
    result = cpu(10, target, pods(requests), [150] * 10)
    assert result.utilization == 50
    assert result.replicas == 9  # ceil(50 / 56 * 10)
    inside = int((1 / (2 * 0.9) + 0.004) * 100)  # 55: 50/55 = .909, within tolerance
    assert cpu(10, inside, pods(requests), [150] * 10).replicas == 10


# -- readiness and the CPU initialisation period (TestGroupPods) ---------------------------


def group(pod: PodInfo, sample: Sample | None, resource: str = "cpu"):
    return group_pods([pod], {pod.name: sample} if sample else {}, resource, TIMING)


def test_group_pods_memory_ignores_readiness() -> None:
    """TestGroupPods "count in a ready pod - memory"."""
    pod = PodInfo("bentham", ready=None)
    assert group(pod, Sample(1, NOW, 60), "memory").ready == 1


def test_group_pods_cpu_without_ready_condition_is_unready() -> None:
    """TestGroupPods "ignore a pod without ready condition - CPU"."""
    assert group(PodInfo("lucretius", ready=None, start_time=NOW), Sample(1)).unready == {
        "lucretius"
    }


def test_group_pods_cpu_initialisation_period() -> None:
    """TestGroupPods "count in a ready pod with fresh metrics during initialization period"
    and "ignore a ready pod without fresh metrics during initialization period"."""
    pod = PodInfo("bentham", ready="True", ready_since=NOW - 30, start_time=NOW - 60)
    assert group(pod, Sample(1, NOW, 30)).ready == 1
    assert group(pod, Sample(1, NOW, 60)).unready == {"bentham"}


def test_group_pods_cpu_after_initialisation() -> None:
    """TestGroupPods "count in a ready pod without fresh metrics after initialization period",
    "ignore an unready pod that has never been ready", "count in an unready pod that was ready"."""
    ready = PodInfo("bentham", ready="True", ready_since=NOW - 3 * 60, start_time=NOW - 3600)
    assert group(ready, Sample(1, NOW - 3600, 60)).ready == 1
    never = PodInfo("lucretius", ready="False", ready_since=NOW - 3600 + 20, start_time=NOW - 3600)
    assert group(never, Sample(1, NOW, 60)).unready == {"lucretius"}
    was = PodInfo("lucretius", ready="False", ready_since=NOW - 3600 + 60, start_time=NOW - 3600)
    assert group(was, Sample(1, NOW, 60)).ready == 1


def test_group_pods_terminal_pending_and_missing() -> None:
    """TestGroupPods "ignore pod that has failed", "count in pod that is pending as unready",
    "ignore pod that has been deleted", "pods missing metrics"."""
    assert group(PodInfo("x", phase="Failed"), Sample(1)).ignored == {"x"}
    assert group(PodInfo("x", phase="Succeeded"), Sample(1)).ignored == {"x"}
    assert group(PodInfo("x", deleting=True), Sample(1)).ignored == {"x"}
    assert group(PodInfo("x", phase="Pending"), Sample(1)).unready == {"x"}
    assert group(PodInfo("x"), None).missing == {"x"}


# -- Pods metrics and resource AverageValue ------------------------------------------------


def avg(
    current: int, target: int, the_pods: tuple[PodInfo, ...], levels: list[int], resource: str = ""
):
    return average_value_replicas(
        current=current, target=target, pods=the_pods, samples=samples(levels),
        tolerances=TOL, timing=TIMING, resource=resource,
    )  # fmt: skip


def test_pods_metric_scale_up_and_down() -> None:
    """TestReplicaCalcScaleUpCM (qps 20/10/30 vs 15 -> 4) and TestReplicaCalcScaleDownCM
    (12/12/12/12/12 vs 20 -> 3)."""
    up = avg(3, 15000, pods([1000] * 3), [20000, 10000, 30000])
    assert (up.replicas, up.usage) == (4, 20000)
    down = avg(5, 20000, pods([1000] * 5), [12000] * 5)
    assert (down.replicas, down.usage) == (3, 12000)


def test_pods_metric_tolerance() -> None:
    """TestReplicaCalcToleranceCM: 20/21/21 qps vs 20 -> 20666, stays 3."""
    result = avg(3, 20000, pods([1000] * 3), [20000, 21000, 21000])
    assert (result.replicas, result.usage) == (3, 20666)


def test_pods_metric_missing_pods_count_as_the_target_on_a_scale_down() -> None:
    """calcPlainMetricReplicas: 4 pods, 2 samples at 5 vs 20 -> ratio .25; the missing pods at
    the target: (5+5+20+20)/4 = 12.5 -> ceil(.625 * 4) = 3."""
    result = avg(4, 20000, pods([1000] * 4), [5000, 5000])
    assert result.replicas == 3 and result.per_pod["test-pod-3"] == 20000


def test_pods_metric_ignores_readiness_but_cpu_average_value_does_not() -> None:
    """TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness only matters for CPU."""
    the_pods = pods([1000] * 3, ready=["False", "True", "False"])
    assert avg(3, 15000, the_pods, [50000, 10000, 30000]).replicas == 6
    cpu_avg = avg(3, 300, the_pods, [400, 500, 700], resource="cpu")
    assert cpu_avg.unready == ("test-pod-0", "test-pod-2")


# -- Object and External -------------------------------------------------------------------


def test_object_value_scales_the_ready_pods() -> None:
    """TestReplicaCalcScaleUpCMObject: 50 qps vs 15 over 3 ready pods -> 10;
    TestReplicaCalcToleranceCMObject: 20.666 vs 20 stays 3."""
    result = object_value_replicas(
        current=3, value=50000, target=15000, pods=pods([1000] * 3), tolerances=TOL
    )
    assert (result.replicas, result.usage) == (10, 50000)
    same = object_value_replicas(
        current=3, value=20666, target=20000, pods=pods([1000] * 3), tolerances=TOL
    )
    assert same.replicas == 3


def test_object_value_counts_only_running_ready_pods() -> None:
    """TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods: 50 qps vs 15, one ready pod -> 4."""
    the_pods = pods([1000] * 3, ready=["False", "True", "False"])
    result = object_value_replicas(
        current=3, value=50000, target=15000, pods=the_pods, tolerances=TOL
    )
    assert result.replicas == 4


def test_object_and_external_scale_from_zero_on_the_ratio_alone() -> None:
    """TestReplicaCalcScaleUpFromZeroCMObject / ...External: from 0 replicas, ceil(ratio)."""
    assert (
        object_value_replicas(
            current=0, value=50000, target=15000, pods=(), tolerances=TOL
        ).replicas
        == 4
    )
    assert (
        external_value_replicas(
            current=0, values=[0], target=15000, pods=(), tolerances=TOL
        ).replicas
        == 0
    )


def test_object_average_value() -> None:
    """TestReplicaCalcScaleUpPerPodCMObject (20 vs 5 per pod, 3 replicas -> 4, 6667) and
    TestReplicaCalcTolerancePerPodCMObject (20.166 vs 5, 4 replicas -> stays 4, 5042)."""
    up = object_average_replicas(status_replicas=3, value=20000, target=5000, tolerances=TOL)
    assert (up.replicas, up.usage) == (4, 6667)
    same = object_average_replicas(status_replicas=4, value=20166, target=5000, tolerances=TOL)
    assert (same.replicas, same.usage) == (4, 5042)


def test_external_value_and_average() -> None:
    """TestReplicaCalcScaleUpCMExternal (8.6 vs 4.4 over 3 -> 6), TestReplicaCalcToleranceCMExternal
    (8.6 vs 8.888 stays 3), TestReplicaCalcScaleUpPerPodCMExternal (8.6 vs 2.15 -> 4, 2867)."""
    ready = pods([1000] * 3)
    assert (
        external_value_replicas(
            current=3, values=[8600], target=4400, pods=ready, tolerances=TOL
        ).replicas
        == 6
    )
    assert (
        external_value_replicas(
            current=3, values=[8600], target=8888, pods=ready, tolerances=TOL
        ).replicas
        == 3
    )
    per_pod = external_average_replicas(
        status_replicas=3, values=[8600], target=2150, tolerances=TOL
    )
    assert (per_pod.replicas, per_pod.usage) == (4, 2867)
    same = external_average_replicas(status_replicas=3, values=[8600], target=2900, tolerances=TOL)
    assert (same.replicas, same.usage) == (3, 2867)
