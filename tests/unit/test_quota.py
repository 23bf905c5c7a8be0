"""The ResourceQuota aggregate: a usage ledger that refuses a charge beyond ``hard`` with
Kubernetes' message, folds back from its events, and counts a pod as Kubernetes does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.api.manifests import dump_manifest, parse_manifest
from core.api.summaries import summarize
from core.errors import InvalidTransition, ValidationFailed
from core.policy.aggregates import ResourceQuota
from core.policy.quota import format_amount, pod_usage, reconcile_usage
from tests.unit.support import recorded

AT = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)


def quota(**hard: str) -> ResourceQuota:
    manifest = dump_manifest(
        parse_manifest(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "compute"},
                "spec": {"hard": hard},
            }
        )
    )
    created = ResourceQuota.create(
        None, agg_id="ResourceQuota/team/compute", manifest=manifest, uid="u", at=AT
    )
    assert isinstance(created, ResourceQuota)
    return created


def pod(cpu: str = "500m", memory: str = "128Mi", limit_cpu: str | None = "1") -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    if limit_cpu:
        resources["limits"] = {"cpu": limit_cpu}
    return {"spec": {"containers": [{"name": "main", "image": "x", "resources": resources}]}}


def charge(q: ResourceQuota, name: str, manifest: dict[str, Any]) -> None:
    q.charge(pod=f"team/{name}", usage=pod_usage(manifest), pod_manifest=manifest, at=AT)


def test_pod_usage_counts_containers_init_containers_and_overhead_like_kubernetes() -> None:
    manifest = {
        "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}},
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}
            ],
            "overhead": {"cpu": "10m"},
        }
    }
    assert pod_usage(manifest) == {
        "pods": 1,
        "requests.cpu": 1010,  # the init container asks for more than the containers together
        "requests.memory": 1024**3,
        "limits.cpu": 10,
        "limits.memory": 0,
    }


def test_charges_within_hard_are_recorded_and_shown_in_status() -> None:
    q = quota(**{"requests.cpu": "2", "pods": "3"})
    charge(q, "a", pod("500m"))
    charge(q, "b", pod("1500m"))
    assert q.manifest["status"] == {
        "hard": {"requests.cpu": "2", "pods": "3"},
        "used": {"requests.cpu": "2", "pods": "2"},
    }


def test_a_charge_beyond_hard_is_refused_with_kubernetes_wording_and_what_is_left() -> None:
    q = quota(**{"requests.cpu": "2"})
    charge(q, "a", pod("1800m"))
    q.collect_events()
    with pytest.raises(InvalidTransition) as refused:
        charge(q, "b", pod("500m"))
    assert refused.value.code == "forbidden"
    assert refused.value.message == (
        "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=1800m, "
        "limited: requests.cpu=2, left: requests.cpu=200m"
    )
    assert q.collect_events() == []
    assert list(q.charges) == ["team/a"]


def test_cpu_and_memory_mean_the_requests_and_only_exceeded_resources_are_named() -> None:
    q = quota(cpu="1", memory="1Gi", pods="1")
    charge(q, "a", pod("100m", "256Mi"))
    with pytest.raises(InvalidTransition) as refused:
        charge(q, "b", pod("100m", "256Mi"))
    assert refused.value.message.startswith(
        "exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1"
    )


def test_a_quota_on_limits_refuses_a_container_without_that_limit() -> None:
    q = quota(**{"limits.cpu": "4"})
    with pytest.raises(InvalidTransition) as refused:
        charge(q, "a", pod(limit_cpu=None))
    assert refused.value.message == "failed quota: compute: must specify limits.cpu for: main"


def test_release_gives_the_charge_back_and_an_unknown_pod_changes_nothing() -> None:
    q = quota(**{"requests.cpu": "1"})
    charge(q, "a", pod("1"))
    q.release(pod="team/a", reason="deleted", at=AT)
    q.release(pod="team/never", reason="deleted", at=AT)
    assert q.charges == {}
    assert q.manifest["status"]["used"] == {"requests.cpu": "0"}
    charge(q, "b", pod("1"))  # the freed cpu can be charged again


def test_a_recharge_of_the_same_pod_replaces_its_charge() -> None:
    q = quota(**{"requests.cpu": "1"})
    charge(q, "a", pod("800m"))
    charge(q, "a", pod("900m"))
    assert q.used["requests.cpu"] == 900


def test_the_ledger_folds_back_from_the_recorded_events() -> None:
    q = quota(**{"requests.cpu": "2", "requests.memory": "1Gi"})
    charge(q, "a", pod("500m", "256Mi"))
    charge(q, "b", pod("700m", "256Mi"))
    q.release(pod="team/a", reason="deleted", at=AT)
    events = recorded(q)
    assert [e.type for e in events] == [
        "ResourceQuotaCreated",
        "QuotaCharged",
        "QuotaCharged",
        "QuotaReleased",
    ]
    assert events[2].payload["used"]["requests.cpu"] == 1200  # the total, for the audit
    again = ResourceQuota.from_history(q.id, events)
    assert isinstance(again, ResourceQuota)
    assert again.charges == q.charges and again.manifest == q.manifest
    assert summarize("QuotaCharged", events[1].payload) == (
        "charged team/a (limits.cpu=1, limits.memory=0, requests.cpu=500m, requests.memory=256Mi)"
    )


def test_an_update_of_hard_keeps_the_ledger_and_the_status_follows() -> None:
    q = quota(**{"requests.cpu": "2"})
    charge(q, "a", pod("500m"))
    manifest = {**q.manifest, "spec": {"hard": {"requests.cpu": "4", "pods": "10"}}}
    manifest.pop("status")
    ResourceQuota.apply_manifest(q, agg_id=q.id, manifest=manifest, uid="u", at=AT)
    assert q.manifest["status"] == {
        "hard": {"requests.cpu": "4", "pods": "10"},
        "used": {"requests.cpu": "500m", "pods": "1"},
    }
    again = ResourceQuota.from_history(q.id, recorded(q))
    assert isinstance(again, ResourceQuota) and again.used == q.used


def test_unknown_quota_resources_are_refused_not_ignored() -> None:
    with pytest.raises(ValidationFailed, match="enforces only these quota resources"):
        parse_manifest(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "q"},
                "spec": {"hard": {"count/deployments.apps": "2"}},
            }
        )


def test_amounts_print_as_quantities() -> None:
    assert format_amount("requests.cpu", 1800) == "1800m"
    assert format_amount("cpu", 2000) == "2"
    assert format_amount("limits.memory", 256 * 1024**2) == "256Mi"
    assert format_amount("pods", 3) == "3"


def test_reconciling_usage_releases_finished_or_gone_pods_and_counts_uncharged_ones():
    charges = {"ns/running": {"pods": 1}, "ns/failed": {"pods": 1}, "ns/gone": {"pods": 1}}
    running = {"spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}
    failed = {**running, "status": {"phase": "Failed"}}
    early = {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}}}]}}
    done = {**early, "status": {"phase": "Succeeded"}}
    pods = {"ns/running": running, "ns/failed": failed, "ns/early": early, "ns/done": done}
    release, count = reconcile_usage(charges, pods)
    assert release == {"ns/failed": "pod Failed", "ns/gone": "pod no longer exists"}
    assert list(count) == ["ns/early"] and count["ns/early"]["requests.cpu"] == 250
    assert reconcile_usage({"ns/running": {"pods": 1}}, {"ns/running": running}) == ({}, {})
