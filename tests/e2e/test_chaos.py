"""Chaos on a real cluster of three NATS servers: fleetlog's streams at three replicas, a
1,000-pod workload, and processes killed (SIGKILL, by PID) at random while it rolls out,
compared with the same workload run undisturbed.

The workload: three servers clustered on loopback, ``up --replicas 3`` without a scheduler, two
``scheduler`` replicas, ``sim`` with 12 nodes; four deployments (950 pods) applied, ``d3``
scaled to 250 a few seconds later (1,000 pods), and a client sending 150 namespace applies
through the gateways meanwhile, each until it is acknowledged, recording what was
acknowledged to it (the sequences, under the command's correlation id). A try that gets no
outcome (a timeout, "unavailable", "no gateway", or "internal": the gateway failed after
deciding) is sent again with the same idempotency key, as a client learns an outcome.

Run twice: once undisturbed, once with, during the workload, one of the three nats-servers
(chosen at random), a ``scheduler`` replica, ``sim`` (the simulated nodes and their pods'
starts) and ``up`` itself (gateway, controllers, projections) killed, each then started again.
Both runs must end in the same state, compared by a digest of a canonical form of every
namespace, node, deployment, replica set and pod (see :func:`canonical`); in the chaos run,
every acknowledged command is in the log at the sequences acknowledged, no replica set has
more pods than its replicas (and no pod name appears twice), the log holds exactly one
``PodCreated`` per replica (no pod was created twice, even for a while), and ``audit verify``
finds the hash chains unbroken. The two runs take about 2 minutes together on this 2-core
host shared with other test runs (52 s undisturbed, 68 s with the chaos).
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.errors import FleetError
from streams.commandbus import CommandClient, NoGateway
from streams.connection import OUTAGE_ERRORS, connect
from streams.eventstore import EventStore
from streams.subjects import event_filter, event_subject
from tests.e2e.chaosfacts import (
    PodFact,
    created_by_app,
    describe_event,
    explain_extra_pods,
    pod_fact,
)
from tests.e2e.fleet import (
    Fleet,
    deployment,
    kill,
    nats_cluster,
    running_by_owner,
    start,
    stop,
    wait_for,
    wait_for_jetstream_cluster,
)

DEPLOYMENTS = {"d0": 250, "d1": 250, "d2": 250, "d3": 200}
FINAL = {**DEPLOYMENTS, "d3": 250}  # d3 is scaled to 250 during the workload: 1,000 pods
LEDGER = 150
"""Namespaces the acknowledging client applies during the workload, one after another."""
PACE_S = 0.2
"""Its pause between two of them: 150 take at least 30 s, the length of the chaos."""

VOLATILE = frozenset(
    {
        # Identity and bookkeeping that every run makes afresh.
        "uid", "resourceVersion", "managedFields",
        # When things happened (the chaos run is slower, by design).
        "creationTimestamp", "lastTransitionTime", "lastUpdateTime", "lastHeartbeatTime",
        "lastProbeTime", "startTime", "startedAt", "finishedAt", "renewTime",
        # Placement: two scheduler replicas race for the pods in either run, so which node a
        # pod lands on (and so its addresses) differs between any two runs; the nodes register
        # concurrently, so which range the node IPAM controller gives which node does too.
        "nodeName", "podIP", "podIPs", "hostIP", "hostIPs", "podCIDR", "podCIDRs",
        "containerID",
    }
)  # fmt: skip
"""Keys left out of the canonical state, wherever they appear (see :func:`canonical`)."""


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def canonical(objects: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What must be equal between two runs of the workload: every object with what
    legitimately differs left out (:data:`VOLATILE`). A pod's name ends in a random suffix, so
    pods are compared as a sorted list (a multiset) of their canonical forms, named by their
    replica set (``<rs>-*``); replica sets keep their names (``<deployment>-<hash of the
    template>`` is the same in every run). A node's resource accounting (``status.allocated``,
    if shown) follows placement, so nodes keep only their spec, labels, capacity and the
    type and status of their conditions."""
    state: dict[str, Any] = {}
    for plural, items in objects.items():
        forms = []
        for item in items:
            form = _strip(item)
            metadata = form.get("metadata", {})
            if plural == "pods":
                owners = [ref["name"] for ref in metadata.get("ownerReferences", [])]
                metadata["name"] = f"{owners[0]}-*" if owners else metadata["name"]
            if plural == "nodes":
                status = form.get("status", {})
                form["status"] = {
                    "capacity": status.get("capacity"),
                    "allocatable": status.get("allocatable"),
                    "conditions": sorted(
                        (c["type"], c["status"]) for c in status.get("conditions", [])
                    ),
                }
            forms.append(json.dumps(form, sort_keys=True))
        state[plural] = sorted(forms)
    return state


def digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


@dataclass
class Acked:
    """A command the gateway acknowledged to the client: what it applied, under which
    correlation id, at which sequences (after how many tries)."""

    name: str
    correlation_id: str
    seqs: list[int]
    tries: int


@dataclass
class AckingClient:
    """Applies :data:`LEDGER` namespaces through the gateways, one after another, each until
    acknowledged (one idempotency key per namespace, so a retry after a lost answer is not
    applied twice), in a thread of its own while the test runs the workload."""

    url: str
    acked: list[Acked] = field(default_factory=list)
    unanswered: Counter[str] = field(default_factory=Counter)
    """The tries that got no outcome, by what the client saw."""
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._main, name="acking-client", daemon=True)
        self.thread.start()

    def join(self, timeout: float) -> list[Acked]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the client was not acknowledged in {timeout:.0f}s"
        assert self.error is None, repr(self.error)
        return self.acked

    def _main(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:
            self.error = exc

    async def _send_all(self) -> None:
        nc = await connect(self.url, name="chaos-acking-client", wait=True)
        try:
            client = CommandClient(nc, actor="user:e2e")
            for index in range(LEDGER):
                name = f"ledger-{index:03d}"
                key = f"chaos-{name}-{time.time_ns()}"
                manifest = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": {"ledger": str(index)}},
                }
                tries = 0
                while True:
                    tries += 1
                    try:
                        outcome = await client.send(
                            "Namespace", "apply", {"manifest": manifest}, idempotency_key=key,
                            correlation_id=key, timeout=5, attempts=1,
                        )  # fmt: skip
                        break
                    except NoGateway:
                        self.unanswered["no gateway"] += 1  # `up` is being restarted
                    except FleetError as exc:
                        # No outcome known (an "internal" answer included: the gateway failed
                        # after deciding, perhaps after appending): the same key again learns it.
                        if exc.code not in ("timeout", "unavailable", "internal"):
                            raise
                        self.unanswered[f"{exc.code}: {exc.message}"] += 1
                    except OUTAGE_ERRORS as exc:
                        self.unanswered[type(exc).__name__] += 1
                    await asyncio.sleep(0.5)
                self.acked.append(Acked(name, key, list(outcome.seqs), tries))
                await asyncio.sleep(PACE_S)
        finally:
            await nc.close()


async def _log_facts(
    url: str, acked: list[Acked], *, began_ns: int, timeline: list[tuple[int, str]]
) -> tuple[list[str], dict[str, int], str]:
    """What the log says of ``acked`` (a line per acknowledged command not found where the
    client was told it is), how many pods were ever created, by deployment, and, if that is
    more than :data:`FINAL` for some, why (:func:`tests.e2e.chaosfacts.explain_extra_pods`)."""
    missing: list[str] = []
    facts: list[PodFact] = []
    nc = await connect(url, name="chaos-checker")
    try:
        async with EventStore(nc) as store:
            for ack in acked:
                events = await store.read_subject(event_subject("Namespace", "", ack.name))
                mine = {e.seq for e in events if e.envelope.correlation_id == ack.correlation_id}
                if not mine or not set(ack.seqs) <= mine:
                    missing.append(
                        f"{ack.name}: acknowledged at {ack.seqs}, in the log at {sorted(mine)}"
                    )

            def collect(event: Any) -> None:
                fact = pod_fact(event)
                if fact is not None:
                    facts.append(fact)

            await store.replay(collect, filter_subject=event_filter("Pod"))

            async def describe(seq: int) -> str:
                return describe_event(await store.get_event(seq), began_ns)

            why = await explain_extra_pods(
                facts, FINAL, began_ns=began_ns, timeline=timeline, describe=describe
            )
    finally:
        await nc.close()
    return missing, created_by_app(facts), why


@dataclass
class Ending:
    """How one run of the workload ended."""

    state: dict[str, Any]
    acked: list[Acked]
    unanswered: Counter[str]
    missing: list[str]
    created: dict[str, int]
    extra_pods: str
    """Why some deployment's pods were created more than once (empty if none was)."""
    seconds: float


NOTABLE = ("leading", "reconcile_failed", "projection.", "snapshot", "logreader", "outage",
           "lease", "create_refused", "starting", "nats_server")  # fmt: skip
"""Words of ``up``'s log lines worth showing beside duplicate pods (``replicaset.*`` and the
like are logged at debug or once per batch)."""


def _notable(text: str, limit: int = 60) -> str:
    lines = [line for line in text.splitlines() if any(word in line for word in NOTABLE)]
    return "\n".join(lines[-limit:])


def run_workload(base: Path, rng: random.Random | None) -> Ending:
    """The workload on a fresh cluster under ``base``; with ``rng``, the chaos too."""
    began = time.monotonic()
    base.mkdir()
    servers = nats_cluster(base / "nats")
    for server in servers:
        start(server)
    url = ",".join(server.url for server in servers)
    wait_for_jetstream_cluster(url)
    fleet = Fleet(base, url)
    roles = ("up", "scheduler-a", "scheduler-b", "sim")
    try:
        fleet.up("--replicas", "3", "--no-scheduler")
        for replica in ("scheduler-a", "scheduler-b"):
            fleet.spawn(replica, "scheduler", "--name", replica)
        fleet.spawn(
            "sim", "sim", "--nodes", "12", "--cpu", "64", "--start-delay", "0.2", "--heartbeat", "3"
        )
        wait_for(lambda: len(fleet.cli("get", "nodes").stdout.splitlines()) == 13, 90, "nodes")
        manifests = "---\n".join(deployment(name, n) for name, n in DEPLOYMENTS.items())
        fleet.cli("apply", "-f", "-", stdin=manifests)
        began_ns = time.time_ns()
        timeline: list[tuple[int, str]] = []  # what was done when, for a failure's report

        def note(what: str) -> None:
            timeline.append((time.time_ns(), what))
            print(f"chaos: {what}")

        client = AckingClient(url)
        client.start()

        if rng is None:
            time.sleep(5)
            fleet.cli_once_served("scale", "deployment/d3", "--replicas", str(FINAL["d3"]))
        else:
            victim = rng.choice(servers)
            time.sleep(rng.uniform(1, 4))
            note(f"killing nats-server {victim.name}")
            kill(victim)
            time.sleep(rng.uniform(2, 6))
            fleet.cli_once_served("scale", "deployment/d3", "--replicas", str(FINAL["d3"]))
            note("d3 scaled")
            start(victim)
            note(f"nats-server {victim.name} started again")
            for role in rng.sample(["scheduler-b", "sim", "up"], 3):
                time.sleep(rng.uniform(1, 4))
                note(f"killing {role}")
                fleet.kill(role)
                time.sleep(rng.uniform(0.5, 2))
                if role == "up":
                    fleet.up("--replicas", "3", "--no-scheduler")
                else:
                    fleet.restart(role)
                note(f"{role} started again")

        try:
            acked = client.join(300)
        except AssertionError as exc:
            text = fleet.log("up")
            at = text.find("command.failed")
            shown = text[at : at + 5000] if at >= 0 else text[-3000:]
            raise AssertionError(
                f"{exc}\nup's log, from its first failed command:\n{shown}"
            ) from None
        seen: dict[str, object] = {}

        def converged() -> bool:
            pods = fleet.pods()
            names = [pod["metadata"]["name"] for pod in pods]
            assert len(names) == len(set(names)), "a pod name appears twice"
            seen.update(pods=len(pods), running=running_by_owner(pods))
            stuck = Counter(
                (pod["spec"].get("nodeName") or "unbound", (pod.get("status") or {}).get("phase"))
                for pod in pods
                if (pod.get("status") or {}).get("phase") != "Running"
            )
            seen.update(not_running=dict(stuck.most_common(6)))
            return running_by_owner(pods) == FINAL and len(pods) == sum(FINAL.values())

        try:
            wait_for(converged, 600, "1,000 pods Running")
        except AssertionError as exc:
            nodes = fleet.cli("get", "nodes", "-o", "wide", check=False).stdout
            raise AssertionError(
                f"{exc}; last seen {seen}\nnodes:\n{nodes}\nsim's log (end):\n"
                f"{fleet.log('sim')[-3000:]}"
            ) from None

        objects = {
            plural: json.loads(fleet.cli("get", plural, "-A", "-o", "json").stdout)["items"]
            for plural in ("namespaces", "nodes", "deployments", "replicasets", "pods")
        }
        pods, replica_sets = objects["pods"], objects["replicasets"]
        assert all(pod["spec"]["nodeName"].startswith("sim-node-") for pod in pods)
        assert sorted(rs["metadata"]["name"].rsplit("-", 1)[0] for rs in replica_sets) == sorted(
            FINAL
        )
        per_owner = {rs["metadata"]["name"]: 0 for rs in replica_sets}
        for pod in pods:
            (owner,) = [ref["name"] for ref in pod["metadata"]["ownerReferences"]]
            per_owner[owner] += 1
        for rs in replica_sets:  # no duplicate pods: none beyond the replicas
            assert per_owner[rs["metadata"]["name"]] == rs["spec"]["replicas"], per_owner
        assert sorted(per_owner.values()) == sorted(FINAL.values())
        verified = fleet.cli("audit", "verify", check=False)
        assert verified.returncode == 0 and verified.stdout.splitlines()[-1] == "no breaks", (
            verified.stdout + verified.stderr
        )
        for role in roles:
            assert fleet.alive(role)
            assert "Traceback" not in fleet.log(role), fleet.log(role)
        missing, created, extra_pods = asyncio.run(
            _log_facts(url, acked, began_ns=began_ns, timeline=timeline)
        )
        if extra_pods:
            extra_pods += "\nup's log (controllers, projection):\n" + _notable(fleet.log("up"))
        return Ending(
            canonical(objects), acked, client.unanswered, missing, created, extra_pods,
            time.monotonic() - began,
        )  # fmt: skip
    finally:
        fleet.stop_all()
        for server in servers:
            stop(server)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_thousand_pods_end_as_undisturbed_through_killed_servers_and_handlers(
    tmp_path: Path,
) -> None:
    undisturbed = run_workload(tmp_path / "undisturbed", None)
    chaos = run_workload(tmp_path / "chaos", random.Random())
    print(
        f"undisturbed run {undisturbed.seconds:.0f}s, chaos run {chaos.seconds:.0f}s; "
        f"acknowledged after retries: {sum(a.tries > 1 for a in chaos.acked)} of {LEDGER} "
        f"(tries unanswered: {dict(chaos.unanswered)}); "
        f"pods created: {chaos.created} (undisturbed: {undisturbed.created})"
    )
    for ending in (undisturbed, chaos):
        assert len(ending.acked) == LEDGER
        assert ending.missing == [], ending.missing  # 0 acknowledged events lost
        # No duplicate pods, not even for a while: the log holds one PodCreated per replica.
        assert ending.created == FINAL, f"{ending.created}\n{ending.extra_pods}"
    if digest(chaos.state) != digest(undisturbed.state):
        lines = difflib.unified_diff(
            json.dumps(undisturbed.state, indent=1, sort_keys=True).splitlines(),
            json.dumps(chaos.state, indent=1, sort_keys=True).splitlines(),
            "undisturbed", "chaos", lineterm="", n=1,
        )  # fmt: skip
        raise AssertionError("the final states differ:\n" + "\n".join(list(lines)[:80]))


def test_the_canonical_state_leaves_out_only_what_two_runs_may_differ_in() -> None:
    def pod(suffix: str, node: str, phase: str = "Running") -> dict[str, Any]:
        return {
            "metadata": {
                "name": f"web-abc-{suffix}", "uid": suffix, "creationTimestamp": suffix,
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "uid": suffix}],
            },
            "spec": {"nodeName": node},
            "status": {"phase": phase, "podIP": f"10.0.0.{len(suffix)}"},
        }  # fmt: skip

    def node(name: str, cidr: str, ready: str = "True") -> dict[str, Any]:
        return {
            "metadata": {"name": name, "uid": cidr},
            "spec": {"podCIDR": cidr},
            "status": {"allocated": {"pods": cidr}, "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": cidr}
            ]},
        }  # fmt: skip

    one = {"pods": [pod("x1", "a"), pod("x2", "b")], "nodes": [node("a", "1"), node("b", "2")]}
    two = {"pods": [pod("y22", "b"), pod("y1", "b")], "nodes": [node("b", "3"), node("a", "4")]}
    assert digest(canonical(one)) == digest(canonical(two))
    for changed in (
        {**two, "pods": [*two["pods"], pod("z", "a")]},  # a duplicate pod
        {**two, "pods": [pod("y1", "a"), pod("y2", "a", phase="Pending")]},
        {**two, "nodes": [node("b", "3"), node("a", "4", ready="False")]},
    ):
        assert digest(canonical(one)) != digest(canonical(changed))


async def test_extra_pods_are_explained_by_owner_cause_and_ending() -> None:
    def fact(seq: int, kind: str, name: str, **fields: str) -> PodFact:
        return PodFact(
            seq=seq, type=kind, name=name, app=fields.get("app", ""),
            owner=fields.get("owner", ""), actor=fields.get("actor", "system:rs"),
            causation=fields.get("causation", ""), correlation="corr", stored_ns=seq * 10**9,
            reason=fields.get("reason", ""),
        )  # fmt: skip

    facts = [
        fact(1, "PodCreated", "d2-a", app="d2", owner="d2-x/uid1", causation="seq:7"),
        fact(2, "PodCreated", "d2-b", app="d2", owner="d2-x/uid1", causation="seq:9"),
        fact(3, "PodDeleted", "d2-b", reason="replica set d2-x has 2 pods and wants 1"),
        fact(4, "PodCreated", "d1-a", app="d1", owner="d1-x/uid2", causation="seq:7"),
    ]
    described: list[int] = []

    async def describe(seq: int) -> str:
        described.append(seq)
        return f"event {seq}"

    why = await explain_extra_pods(
        facts, {"d1": 1, "d2": 1}, began_ns=0, timeline=[(2 * 10**9, "killing up")],
        describe=describe,
    )  # fmt: skip
    assert "2.0s killing up" in why
    assert "d2: 2 PodCreated for 1 replicas" in why and "d1:" not in why
    assert "{'d2-x/uid1': 2}" in why
    assert "causation seq:9 [event 9]" in why
    assert "ended: {'system:rs (replica set d2-x has 2 pods and wants 1)': 1}" in why
    assert sorted(described) == [7, 9]
    assert await explain_extra_pods(
        facts, {"d1": 1, "d2": 2}, began_ns=0, timeline=[], describe=describe
    ) == ""  # fmt: skip
