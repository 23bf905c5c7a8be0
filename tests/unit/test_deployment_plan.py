"""The deployment controller's plan, driven against a small simulated cluster: replica sets get
their pods at once, new pods become available one tick later. Every rollout must keep within
the surge and unavailability bounds at every step and finish with only the new template."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.workloads.deployment import (
    MAX_REPLICAS_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    AnnotateReplicaSet,
    CreateReplicaSet,
    DeleteReplicaSet,
    OwnedReplicaSet,
    ScaleReplicaSet,
    plan_deployment,
    pod_template_hash,
    template_without_hash,
)
from core.workloads.replicaset import PodCounts
from core.workloads.rollout import resolve_fenceposts

S = 1_000_000_000


def deployment(
    replicas: int = 3,
    image: str = "app:1",
    *,
    strategy: dict[str, Any] | None = None,
    history: int = 10,
    deadline: int = 600,
    paused: bool = False,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": strategy
            or {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "revisionHistoryLimit": history,
            "progressDeadlineSeconds": deadline,
            "paused": paused,
        },
    }


@dataclass
class Sim:
    """Replica sets with pods: ``pods[name] = [ticks since created, ...]``."""

    manifest: dict[str, Any]
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)
    pods: dict[str, list[int]] = field(default_factory=dict)
    now: int = 1_000 * S
    log: list[str] = field(default_factory=list)

    def owned(self) -> list[OwnedReplicaSet]:
        out = []
        for name, manifest in self.sets.items():
            ages = self.pods.get(name, [])
            ready = sum(1 for age in ages if age >= 1)
            out.append(
                OwnedReplicaSet(
                    name,
                    f"uid-{name}",
                    manifest,
                    self.created[name],
                    PodCounts(len(ages), len(ages), ready, ready),
                )
            )
        return out

    def sync(self) -> Any:
        plan = plan_deployment("web", "default", "d-uid", self.manifest, self.owned(), self.now)
        for action in plan.actions:
            if isinstance(action, CreateReplicaSet):
                name = action.manifest["metadata"]["name"]
                self.sets[name] = copy.deepcopy(action.manifest)
                self.created[name] = self.now
                self.log.append(f"create {name} {action.manifest['spec']['replicas']}")
            elif isinstance(action, ScaleReplicaSet):
                rs = self.sets[action.name]
                rs["spec"]["replicas"] = action.replicas
                rs["metadata"]["annotations"].update(action.annotations)
                self.log.append(f"scale {action.name} {action.replicas}")
            elif isinstance(action, AnnotateReplicaSet):
                self.sets[action.name]["metadata"]["annotations"].update(action.annotations)
            elif isinstance(action, DeleteReplicaSet):
                del self.sets[action.name]
                self.pods.pop(action.name, None)
        self.manifest = {
            **self.manifest,
            "metadata": {
                **self.manifest["metadata"],
                "annotations": {
                    **self.manifest["metadata"].get("annotations", {}),
                    **plan.annotations,
                },
            },
            "status": plan.status,
        }
        return plan

    def tick(self) -> None:
        """The replica-set controller and the pods: counts follow the targets, pods age."""
        self.now += S
        for name, rs in self.sets.items():
            ages = [age + 1 for age in self.pods.get(name, [])]
            want = rs["spec"]["replicas"]
            if len(ages) < want:
                ages += [0] * (want - len(ages))
            else:
                ages.sort()  # the youngest (not ready) go first
                ages = ages[len(ages) - want :]
            self.pods[name] = ages

    def total(self) -> int:
        return sum(len(p) for p in self.pods.values())

    def available(self) -> int:
        return sum(1 for ages in self.pods.values() for age in ages if age >= 1)

    def change(self, **spec: Any) -> None:
        meta = self.manifest["metadata"]
        self.manifest = {
            **self.manifest,
            "metadata": {**meta, "generation": meta["generation"] + 1},
            "spec": {**self.manifest["spec"], **spec},
        }

    def run(self, *, steps: int = 200, check: Any = None) -> Any:
        for _ in range(steps):
            plan = self.sync()
            if check is not None:
                check(self)
            if plan.complete and not plan.actions:
                return plan
            self.tick()
            if check is not None:
                check(self)
        raise AssertionError(f"rollout did not finish: {self.log[-10:]}")


def template(image: str) -> dict[str, Any]:
    return deployment(image=image)["spec"]["template"]


def test_first_rollout_creates_one_replica_set_with_the_template_hash():
    sim = Sim(deployment(replicas=3))
    plan = sim.run()
    [(name, rs)] = sim.sets.items()
    pod_hash = pod_template_hash(template("app:1"))
    assert name == f"web-{pod_hash}"
    assert rs["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] == pod_hash
    assert rs["spec"]["selector"]["matchLabels"] == {
        "app": "web",
        POD_TEMPLATE_HASH_LABEL: pod_hash,
    }
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
    assert rs["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    assert template_without_hash(rs["spec"]["template"]) == template("app:1")
    assert plan.status["availableReplicas"] == 3
    assert plan.annotations == {REVISION_ANNOTATION: "1"}
    progressing = next(c for c in plan.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(0, 12),
    surge=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"])),
    unavailable=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"])),
)
def test_a_rolling_update_stays_within_surge_and_unavailability(replicas, surge, unavailable):
    sim = Sim(deployment(replicas=replicas))
    sim.run()
    strategy = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }
    sim.change(strategy=strategy)
    sim.run()
    most, fewest = resolve_fenceposts(surge, unavailable, replicas)

    def check(s: Sim) -> None:
        assert s.total() <= replicas + most, s.log[-4:]
        assert s.available() >= replicas - min(fewest, replicas), s.log[-4:]

    sim.change(template=template("app:2"))
    plan = sim.run(check=check)
    assert plan.status["updatedReplicas"] == replicas
    new = [n for n, rs in sim.sets.items() if rs["spec"]["replicas"] == replicas]
    assert all(len(sim.pods[n]) == 0 for n in sim.sets if n not in new) or replicas == 0


def test_rollback_reuses_the_old_replica_set_with_the_next_revision():
    sim = Sim(deployment(replicas=2))
    sim.run()
    sim.change(template=template("app:2"))
    sim.run()
    assert sim.manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    sim.change(template=template("app:1"))
    sim.run()
    assert len(sim.sets) == 2
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"][
            REVISION_ANNOTATION
        ]
        for rs in sim.sets.values()
    }
    assert revisions == {"app:1": "3", "app:2": "2"}
    assert sim.manifest["metadata"]["annotations"][REVISION_ANNOTATION] == "3"


def test_recreate_removes_every_old_pod_before_the_first_new_one():
    sim = Sim(deployment(replicas=3, strategy={"type": "Recreate"}))
    sim.run()

    def check(s: Sim) -> None:
        live = {n for n, pods in s.pods.items() if pods}
        assert len(live) <= 1, s.log[-4:]

    sim.change(template=template("app:2"))
    sim.run(check=check)


def test_revision_history_limit_deletes_the_oldest_unused_replica_sets():
    sim = Sim(deployment(replicas=1, history=1))
    for image in ("app:1", "app:2", "app:3", "app:4"):
        sim.change(template=template(image))
        sim.run()
    images = sorted(
        rs["spec"]["template"]["spec"]["containers"][0]["image"] for rs in sim.sets.values()
    )
    assert images == ["app:3", "app:4"]


def test_a_stalled_rollout_reports_progress_deadline_exceeded():
    sim = Sim(deployment(replicas=2, deadline=30))
    sim.run()
    sim.change(template=template("app:broken"))
    plan = sim.sync()
    created = next(a for a in plan.actions if isinstance(a, CreateReplicaSet))
    name = created.manifest["metadata"]["name"]
    # New pods never become ready.
    for _ in range(40):
        sim.now += S
        sim.pods[name] = [-1000] * sim.sets[name]["spec"]["replicas"]
        plan = sim.sync()
    progressing = next(c for c in plan.status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert progressing["message"] == f'ReplicaSet "{name}" has timed out progressing.'
    assert plan.recheck_at_ns is None


def test_before_the_deadline_the_plan_says_when_to_look_again():
    sim = Sim(deployment(replicas=2, deadline=30))
    sim.run()
    sim.change(template=template("app:2"))
    plan = sim.sync()
    assert plan.recheck_at_ns is not None
    assert 30 * S <= plan.recheck_at_ns - sim.now <= 32 * S


def test_paused_deployment_does_not_roll_out_but_scales():
    sim = Sim(deployment(replicas=2))
    sim.run()
    sim.change(template=template("app:2"), paused=True)
    sim.sync()
    assert len(sim.sets) == 1
    sim.change(replicas=4)
    for _ in range(3):
        plan = sim.sync()
        sim.tick()
    [rs] = sim.sets.values()
    assert rs["spec"]["replicas"] == 4
    progressing = next(c for c in plan.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "DeploymentPaused"
    sim.change(paused=False)
    sim.run()
    assert len(sim.sets) == 2


def test_scaling_during_a_rollout_is_proportional():
    sim = Sim(
        deployment(
            replicas=10,
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2},
            },
        )
    )
    sim.run()
    sim.change(template=template("app:2"))
    sim.sync()  # new replica set created with 3 (the surge)
    sizes = sorted(rs["spec"]["replicas"] for rs in sim.sets.values())
    assert sizes == [3, 10]
    sim.change(replicas=20)
    plan = sim.sync()
    scaled = {a.name: a.replicas for a in plan.actions if isinstance(a, ScaleReplicaSet)}
    # 13 before for a max of 13; now 23 allowed: 10 -> round(10*23/13) = 18, 3 -> 5.
    assert sorted(scaled.values()) == [5, 18]
    for rs in sim.sets.values():
        assert rs["metadata"]["annotations"][MAX_REPLICAS_ANNOTATION] == "23"


@pytest.mark.parametrize("replicas", [0, 1, 5])
def test_status_counts_follow_the_pods(replicas):
    sim = Sim(deployment(replicas=replicas))
    plan = sim.run()
    assert plan.status == {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "unavailableReplicas": 0,
        "conditions": plan.status["conditions"],
    }
    available = next(c for c in plan.status["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"


def test_a_name_taken_by_another_replica_set_bumps_the_collision_count():
    sim = Sim(deployment(replicas=1))
    name = f"web-{pod_template_hash(template('app:1'))}"
    plan = plan_deployment(
        "web", "default", "d-uid", sim.manifest, [], sim.now, names_taken=frozenset({name})
    )
    assert not any(isinstance(a, CreateReplicaSet) for a in plan.actions)
    assert plan.status["collisionCount"] == 1
    sim.manifest = {**sim.manifest, "status": plan.status}
    plan = plan_deployment(
        "web", "default", "d-uid", sim.manifest, [], sim.now, names_taken=frozenset({name})
    )
    [created] = [a for a in plan.actions if isinstance(a, CreateReplicaSet)]
    assert created.manifest["metadata"]["name"] == f"web-{pod_template_hash(template('app:1'), 1)}"
