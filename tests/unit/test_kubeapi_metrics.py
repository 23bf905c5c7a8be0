"""metrics.k8s.io objects from usage samples: quantities, windows, freshness, discovery."""

from __future__ import annotations

from core.kubeapi import metrics
from core.kubeapi.resources import BY_PATH, NODE_METRICS, POD_METRICS, group_versions

S = 1_000_000_000


def test_quantities_are_millicores_and_kibibytes() -> None:
    assert metrics.cpu_quantity(250) == "250m"
    assert metrics.cpu_quantity(0) == "0"
    assert metrics.memory_quantity(10 * 1024 * 1024 + 100) == "10240Ki"


def test_window_is_a_go_duration() -> None:
    assert metrics.duration(10) == "10s"
    assert metrics.duration(0.5) == "500ms"
    assert metrics.duration(90) == "1m30s"
    assert metrics.duration(2.5) == "2.5s"
    assert metrics.duration(3600) == "1h0m0s"


def test_a_sample_is_shown_only_of_this_incarnation_and_while_recent() -> None:
    now = 10_000 * S
    assert metrics.fresh(sampled_ns=now - S, created_ns=now - 60 * S, now_ns=now)
    assert not metrics.fresh(sampled_ns=now - 120 * S, created_ns=now - 60 * S, now_ns=now)
    assert not metrics.fresh(sampled_ns=now - 301 * S, created_ns=None, now_ns=now)


def test_pod_metrics_is_what_metrics_server_answers() -> None:
    containers = metrics.ordered_containers(
        ["b", "a"], {"a": (5, 2048), "b": (120, 4096), "z": (1, 0)}
    )
    obj = metrics.pod_metrics(
        namespace="default", name="web", labels={"app": "web"}, created_ns=1_700_000_000 * S,
        sampled_ns=1_700_000_100 * S, window_s=10.0, containers=containers,
    )  # fmt: skip
    assert obj == {
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "web"},
        },
        "timestamp": "2023-11-14T22:15:00Z",
        "window": "10s",
        "containers": [
            {"name": "b", "usage": {"cpu": "120m", "memory": "4Ki"}},
            {"name": "a", "usage": {"cpu": "5m", "memory": "2Ki"}},
            {"name": "z", "usage": {"cpu": "1m", "memory": "0Ki"}},
        ],
    }


def test_node_metrics_has_no_namespace() -> None:
    obj = metrics.node_metrics(
        name="n1", labels={}, created_ns=None, sampled_ns=S, window_s=5, cpu_millicores=1500,
        memory_bytes=1 << 30,
    )  # fmt: skip
    assert obj["metadata"] == {"name": "n1", "creationTimestamp": None}
    assert obj["usage"] == {"cpu": "1500m", "memory": "1048576Ki"}
    assert obj["window"] == "5s"


def test_the_metrics_group_is_discovered_read_only() -> None:
    assert group_versions()["metrics.k8s.io"] == ["v1beta1"]
    assert BY_PATH[("metrics.k8s.io", "v1beta1", "pods")] is POD_METRICS
    assert BY_PATH[("metrics.k8s.io", "v1beta1", "nodes")] is NODE_METRICS
    assert POD_METRICS.verbs == NODE_METRICS.verbs == ("get", "list")
    assert POD_METRICS.namespaced and not NODE_METRICS.namespaced
