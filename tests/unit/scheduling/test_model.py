"""PodInfo / NodeInfo read manifests the way kube-scheduler reads pods and nodes."""

from __future__ import annotations

from core.api.manifests import dump_manifest, parse_manifest
from core.scheduling import NodeInfo, PodInfo
from tests.unit.scheduling.helpers import node, node_manifest, pod, pod_manifest

MI = 1024 * 1024
GI = 1024 * MI


def test_effective_requests_take_max_of_containers_sum_and_each_init_container_plus_overhead():
    manifest = pod_manifest("p")
    manifest["spec"]["containers"] = [
        {"name": "a", "image": "x", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}},
        {"name": "b", "image": "x", "resources": {"requests": {"cpu": "300m"}}},
    ]
    manifest["spec"]["initContainers"] = [
        {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "100Mi"}}},
        {"name": "i2", "image": "x", "resources": {"requests": {"memory": "2Gi"}}},
    ]
    manifest["spec"]["overhead"] = {"cpu": "50m", "memory": "10Mi"}
    info = PodInfo.from_manifest(manifest)
    # cpu: max(200+300, 1000, 0) + 50 = 1050; memory: max(1Gi, 100Mi, 2Gi) + 10Mi
    assert info.requests["cpu"] == 1050
    assert info.requests["memory"] == 2 * GI + 10 * MI


def test_sidecar_init_containers_add_to_the_running_sum_and_to_later_init_containers():
    manifest = pod_manifest("p")
    manifest["spec"]["containers"] = [
        {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m"}}}
    ]
    manifest["spec"]["initContainers"] = [
        {
            "name": "side",
            "image": "x",
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "200m"}},
        },
        {"name": "init", "image": "x", "resources": {"requests": {"cpu": "500m"}}},
    ]
    # running: 100 + 200 (sidecar) = 300; init phase: 500 + 200 (sidecar started before) = 700
    assert PodInfo.from_manifest(manifest).requests["cpu"] == 700


def test_non_zero_requests_default_100m_and_200mi_per_container_without_request():
    manifest = pod_manifest("p")
    manifest["spec"]["containers"] = [
        {"name": "a", "image": "x", "resources": {"requests": {"cpu": "250m"}}},
        {"name": "b", "image": "x"},
    ]
    info = PodInfo.from_manifest(manifest)
    assert info.requests == {"cpu": 250}
    # cpu: 250 + 100 (b defaulted); memory: 200Mi + 200Mi
    assert info.non_zero_cpu == 350
    assert info.non_zero_memory == 400 * MI


def test_pod_info_reads_a_dumped_pod_model():
    model = parse_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "hostPort": 8080}],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "256Mi", "example.com/gpu": "2"}
                        },
                    }
                ],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "priority": 1000,
                "nodeName": "n1",
            },
        }
    )
    info = PodInfo.from_manifest(dump_manifest(model))
    assert (info.namespace, info.name, info.labels) == ("shop", "web", {"app": "web"})
    assert info.requests == {"cpu": 500, "memory": 256 * MI, "example.com/gpu": 2}
    assert info.host_ports == (("TCP", "0.0.0.0", 8080),)
    assert info.node_selector == {"disk": "ssd"}
    assert info.priority == 1000
    assert info.node_name == "n1"
    assert info.tolerations[0].operator == "Exists"


def test_node_info_aggregates_pods_and_supports_incremental_add_and_remove():
    a = pod("a", cpu="500m", memory="1Gi")
    b = pod("b")  # best effort: contributes only non-zero defaults
    info = node("n1", pods=[a, b])
    assert info.allocatable == {"cpu": 4000, "memory": 32 * GI, "pods": 110}
    assert info.requested == {"cpu": 500, "memory": GI}
    assert (info.non_zero_cpu, info.non_zero_memory) == (600, GI + 200 * MI)
    info.remove_pod("default/a")
    assert info.requested == {}
    assert (info.non_zero_cpu, info.non_zero_memory) == (100, 200 * MI)
    assert list(info.pods) == ["default/b"]
    assert info.remove_pod("default/missing") is None


def test_node_info_tracks_host_ports_and_taints():
    manifest = pod_manifest("web")
    manifest["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80, "hostPort": 80, "protocol": "UDP", "hostIP": "10.0.0.1"}
    ]
    info = NodeInfo.from_manifest(
        node_manifest(
            "n1",
            taints=[
                {"key": "a", "effect": "NoSchedule"},
                {"key": "b", "value": "v", "effect": "PreferNoSchedule"},
            ],
        ),
        [PodInfo.from_manifest(manifest)],
    )
    assert info.used_ports == {("UDP", "10.0.0.1", 80): 1}
    assert [t.key for t in info.hard_taints] == ["a"]
    assert [t.value for t in info.prefer_taints] == ["v"]
    info.remove_pod("default/web")
    assert info.used_ports == {}


def test_set_node_keeps_pods_and_takes_new_labels():
    info = node("n1", pods=[pod("a", cpu="1")])
    info.set_node(node_manifest("n1", labels={"zone": "z1"}, unschedulable=True))
    assert info.labels["zone"] == "z1"
    assert info.unschedulable
    assert info.requested == {"cpu": 1000}


def test_scheduling_constraints_survive_the_pod_model_round_trip():
    model = parse_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web", "rev": "7"}},
            "spec": {
                "containers": [{"name": "c", "image": "nginx:1.27"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
                            ]
                        },
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 7,
                                "preference": {
                                    "matchExpressions": [
                                        {"key": "disk", "operator": "In", "values": ["ssd"]}
                                    ]
                                },
                            }
                        ],
                    },
                    "podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "labelSelector": {"matchLabels": {"app": "web"}},
                                "topologyKey": "kubernetes.io/hostname",
                                "matchLabelKeys": ["rev"],
                            }
                        ]
                    },
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 2,
                        "topologyKey": "zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app": "web"}},
                    }
                ],
            },
        }
    )
    info = PodInfo.from_manifest(dump_manifest(model))
    assert info.required_node_terms is not None and len(info.required_node_terms) == 1
    assert info.preferred_node_terms[0][0] == 7
    (term,) = info.required_anti_affinity_terms
    assert term.topology_key == "kubernetes.io/hostname"
    assert term.namespaces == frozenset({"default"})
    # matchLabelKeys merged: only pods of the same revision match
    assert term.selector.matches({"app": "web", "rev": "7"})
    assert not term.selector.matches({"app": "web", "rev": "6"})
    (constraint,) = info.spread_constraints
    assert (constraint.max_skew, constraint.when_unsatisfiable) == (2, "ScheduleAnyway")
    assert (constraint.node_affinity_policy, constraint.node_taints_policy) == ("Honor", "Ignore")


def test_node_info_reads_a_dumped_node_model():
    model = parse_manifest(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
                "allocatable": {
                    "cpu": "7500m",
                    "memory": "60Gi",
                    "pods": "110",
                    "example.com/gpu": "2",
                },
            },
        }
    )
    info = NodeInfo.from_manifest(dump_manifest(model))
    assert info.allocatable == {"cpu": 7500, "memory": 60 * GI, "pods": 110, "example.com/gpu": 2}
    assert info.labels == {"zone": "a"}
    assert [(t.key, t.value, t.effect) for t in info.taints] == [("gpu", "yes", "NoSchedule")]
    assert not info.plain
