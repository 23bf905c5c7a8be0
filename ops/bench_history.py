"""Benchmark of the questions only the log can answer, on a generated log of a million events.

    python -m ops.bench_history [--events 1000000] [--keep DIR] [--nats-url URL]

Why this exists: issue 6 sets aims for replay, ``history``, ``audit --actor`` and ``--at`` on a
log of 1,000,000 events, and those costs only show on a log that large. Through the gateway,
scheduler and agents such a log takes the better part of an hour to make, so it is written
here directly, but as the event store writes it: realistic envelopes (the manifests, bindings,
statuses, causes and actors a ``fleetlog up`` with node agents records), each sealed into its
aggregate's hash chain with ``Envelope.seal`` exactly as ``streams/repository.py`` does (so
``fleetlog audit verify`` finds no break), appended with ``EventStore.append_many`` carrying an
optimistic-concurrency expectation and a Msg-Id on every write. Being the only writer, the
generator knows the sequence each event will get, so every write states the exact last
sequence of its subject while a thousand writes are in flight (each ack is checked against the
prediction), and ``seq:N`` causes point at the right events. Beside the events, one
``AuditRecord`` per command (about one event in four) goes to ``FLEET_AUDIT``, one in a hundred
followed by a rejected command, from a handful of actors.

The log: namespaces and nodes; deployments of 50 pods, each pod ``PodCreated``, ``PodBound`` +
the node's ``PodAllocated``, ``ContainerStarted``, ``PodReady``; replica-set and deployment
status records; one crash and restart for every fifth pod; then a scale-down (``ScaledTo`` and
ten ``PodDeleted`` + ``PodReleased``). What the scheduler and the gateway write as one atomic
batch (a binding and its allocation, a deletion and its release) is two plain writes here: a
batch commit costs ~2 ms on the server (a few hundred a second per stream), which would make
generation several times slower. Sixteen deployments progress at once, so subjects interleave
as in a real log. Three *target* objects are measured: a crash-looping pod and an autoscaled
deployment whose events are spread over the whole log (about 1,000 each), and an ordinary pod
written half-way through (4 events).

Then, each figure printed as it is measured:
  * the raw ordered-consumer read rate of ``FLEET`` with nats-py (callback only counts), the
    bulk reader's rate (``streams/logreader.py``, handler only counts) and the full replay into
    the cluster read model (``Projection.catch_up`` from zero, which reads through the bulk
    reader), alternated ``--rounds`` times (medians), and where a replay's time goes, from
    decoding and folding a sample apart;
  * the history index as ``fleetlog up`` builds it on an empty data directory (a projection
    caught up, then ``HistoryService`` filling ``history.sqlite3`` in the work directory);
  * ``history`` of each target: ``read_history`` answered by that service (what ``fleetlog
    history`` does while ``up`` runs) p50/p99, with the table, from the log alone
    (``EventStore.read_subject``, what it does without ``up``), and the CLI once (``python -m
    ops history …``: its start-up is mostly imports);
  * ``audit --actor``: ``read_audit`` plus the actor filter of ``ops/cli/audit.py``, and the CLI;
  * ``--at``: ``timetravel.position_of`` + ``object_at`` (``get pod X --at T``, the object's
    events from the index) at random instants, and the CLI once;
  * ``audit verify`` (``streams.integrity.verify_log``) events/s.

It starts its own nats-server in a temporary directory unless ``--nats-url`` is given (whose
``FLEET`` stream must then be empty). ``--keep DIR`` keeps the server's data in DIR, and a
later run with the same DIR measures the kept log instead of generating it again. Figures are
recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import hashlib
import inspect
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from nats.aio.client import Client
from nats.aio.msg import Msg

from core.api.catalog import AGGREGATES
from core.api.events import schema_version
from core.meta.aggregate import RecordedEvent, timestamp_from_ns
from ops import render, timetravel
from ops.bench_log import bench_raw_read, percentile, server_for
from ops.cli.audit import matches
from ops.up import HISTORY_FILE
from projections.cluster import ClusterModel
from projections.history import HistoryIndex
from projections.history_service import HistoryService, read_history
from projections.runtime import Projection
from streams import jsapi
from streams.audit import AUDIT_STREAM, AuditRecord, audit_filter, read_audit
from streams.connection import connect
from streams.definitions import FLEET_STREAM
from streams.envelope import GENESIS, Envelope, StoredEvent, decode_envelope
from streams.eventstore import EventStore, Write
from streams.integrity import verify_log
from streams.logreader import parse_ack_subject
from streams.subjects import event_subject

DESCRIPTION_FILE = "bench_history.json"
EVENT_ID_NAMESPACE = uuid.UUID("0b3c5c8e-6a8f-4f7e-9f60-3f0f5e1f2a77")
NAMESPACES = ["default", "payments", "search", "checkout", "identity", "data", "ml", "web"]
WORDS = ["api", "web", "worker", "cache", "gateway", "indexer", "billing", "auth", "feed", "mail"]
IMAGES = ["python:3.11", "nginx:1.27", "redis:7.2", "node:20", "golang:1.22", "postgres:16"]
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PODS_PER_DEPLOYMENT = 50
WAVE = 10
"""Pods created, bound, started and made ready together (the replica-set controller's
slow-start batches), with a status record of each workload after every wave."""
SCALE_DOWN = 10
LANES = 16
"""Deployments in progress at once, so their events interleave in the log."""
REJECTED_EVERY = 100
"""One command in this many is followed by a rejected one (in the audit trail only)."""
USERS = ["user:alice", "user:ci-deployer"]
SCALERS = ["user:bob", "user:carol"]
DEPLOYMENT_CONTROLLER = "system:deployment-controller"
REPLICASET_CONTROLLER = "system:replicaset-controller"
SCHEDULER = "system:scheduler/default-scheduler"
SOURCE = "bench/1"
WEIGHTS = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "NodeResourcesFit": 1,
    "PodTopologySpread": 2,
    "InterPodAffinity": 2,
    "NodeResourcesBalancedAllocation": 1,
}
REJECTIONS = [
    ("user:carol", "apply", "Pod", "default", "debug-shell", "invalid",
     'unknown field "bogus"', "spec.containers[0].bogus"),
    ("user:bob", "scale", "Deployment", "payments", "ledger", "not_found",
     'deployment "ledger" not found', ""),
    ("user:dave", "delete", "Namespace", "", "kube-system", "invalid",
     "namespace kube-system cannot be deleted", ""),
    ("user:alice", "apply", "Deployment", "web", "frontend", "conflict",
     "deployment/web/frontend changed since version 3", "metadata.resourceVersion"),
]  # fmt: skip
"""Commands refused by the gateway: (actor, verb, kind, namespace, name, code, message, field)."""


def stamp(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def token(seed: str, length: int) -> str:
    """A Kubernetes-looking random suffix, derived from ``seed`` (so names are reproducible)."""
    digest = hashlib.blake2b(seed.encode(), digest_size=16).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:length])


# -- writing the log ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Obj:
    """An aggregate: kind, namespace ("" when cluster-scoped), name, and its subject."""

    kind: str
    namespace: str
    name: str
    subject: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", event_subject(self.kind, self.namespace, self.name))


@dataclass(frozen=True, slots=True)
class By:
    """Who writes an event and why: the actor, the root command (the correlation id), and the
    direct cause (``seq:N`` or ``cmd:KEY``, see ``core/api/causation.py``)."""

    actor: str
    correlation: str
    cause: str


@dataclass
class Target:
    """An object whose history, and state at an instant, is measured."""

    label: str
    kind: str
    namespace: str
    name: str
    events: int = 0

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass
class Description:
    """What was generated (kept next to a ``--keep`` log, so a later run can measure it)."""

    events: int
    commands: int
    rejected: int
    pods: int
    nodes: int
    deployments: int
    generate_seconds: float
    targets: list[Target]
    types: dict[str, int] = field(default_factory=dict)
    audit_scheme: str = ""
    """The subject a reference audit record had when the log was written (see
    :func:`audit_scheme`): a kept log is only measured with the same scheme."""

    @classmethod
    def load(cls, path: Path) -> Description:
        data = json.loads(path.read_text())
        data["targets"] = [Target(**t) for t in data["targets"]]
        return cls(**data)


class LogWriter:
    """Seals events into their aggregates' chains and appends them, ``in_flight`` writes at a
    time, each expecting the exact last sequence of its subject (predicted: this is the only
    writer, and a single-replica stream stores one connection's messages in order)."""

    def __init__(self, nc: Client, store: EventStore, first_seq: int, in_flight: int) -> None:
        self._store = store
        self._js = jsapi.jetstream(nc, publish_async_max_pending=4000)
        self._in_flight = in_flight
        self.heads: dict[str, tuple[int, bytes, int]] = {}
        """subject -> (version, hash, stream sequence) of its last event."""
        self.next_seq = first_seq
        self._window: list[tuple[list[Write], str]] = []
        self._window_first = first_seq
        self._audit: list[AuditRecord] = []
        self.events = 0
        self.commands = 0
        self.rejected = 0
        self.types: collections.Counter[str] = collections.Counter()
        # Event ids: UUID-shaped, unique per run, cheaper than a uuid5 per event.
        self._id_prefix = str(uuid.uuid4())[:24]

    def emit(self, obj: Obj, event_type: str, by: By, payload: dict[str, Any]) -> int:
        """Queue one event; return the stream sequence it will be stored at."""
        subject = obj.subject
        version, previous, last_seq = self.heads.get(subject, (0, GENESIS, 0))
        seq = self.next_seq
        self.next_seq += 1
        event_id = f"{self._id_prefix}{seq:012x}"
        data, sealed = Envelope(
            event_id=event_id,
            type=event_type,
            schema_version=schema_version(event_type),
            kind=obj.kind,
            namespace=obj.namespace,
            name=obj.name,
            version=version + 1,
            timestamp_ns=time.time_ns(),
            actor=by.actor,
            correlation_id=by.correlation,
            causation_id=by.cause,
            payload=payload,
        ).seal(previous)
        self.heads[subject] = (version + 1, sealed, seq)
        self._window.append(([Write(subject, [data], last_seq)], event_id))
        self.events += 1
        self.types[event_type] += 1
        return seq

    def command(
        self, by: By, verb: str, obj: Obj, seqs: list[int], events: list[str], key: str = ""
    ) -> None:
        """The audit record of an accepted command (and now and then a rejected one)."""
        self._audit.append(
            AuditRecord(
                time_ns=time.time_ns(),
                outcome="accepted",
                actor=by.actor,
                verb=verb,
                kind=obj.kind,
                namespace=obj.namespace,
                name=obj.name,
                command_id=key or by.correlation,
                correlation_id=by.correlation,
                causation_id="" if by.cause.startswith("cmd:") else by.cause,
                source=SOURCE,
                events=events,
                seqs=seqs,
            )
        )
        self.commands += 1
        if self.commands % REJECTED_EVERY == 0:
            who, what, kind, namespace, name, code, message, error_field = REJECTIONS[
                (self.commands // REJECTED_EVERY) % len(REJECTIONS)
            ]
            self._audit.append(
                AuditRecord(
                    time_ns=time.time_ns(),
                    outcome="rejected",
                    actor=who,
                    verb=what,
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    command_id=uuid.uuid4().hex,
                    source=SOURCE,
                    code=code,
                    message=message,
                    error_field=error_field,
                )
            )
            self.rejected += 1

    @property
    def full(self) -> bool:
        return len(self._window) >= self._in_flight

    async def flush(self) -> None:
        if self._window:
            first = self._window_first
            results = await self._store.append_many(self._window)
            for offset, result in enumerate(results):
                if result != [first + offset]:
                    raise RuntimeError(
                        f"write {offset} of the window at sequence {first} was stored as "
                        f"{result!r}, not at sequence {first + offset}: another writer?"
                    )
            self._window = []
            self._window_first = self.next_seq
        for record in self._audit:
            await self._js.publish_async(record.subject, record.encode())
        self._audit = []

    async def finish(self) -> None:
        await self.flush()
        await self._js.publish_async_completed()


def pod_spec(image: str, index: int) -> dict[str, Any]:
    """A pod spec with the defaults the gateway fills in (as a real ``PodCreated`` holds)."""
    toleration = {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    return {
        "containers": [
            {
                "name": "main",
                "image": image,
                "command": ["/bin/app", "--port", "8080", f"--shard={index % 8}"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", **toleration},
            {"key": "node.kubernetes.io/unreachable", **toleration},
        ],
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }


def deployment_manifest(obj: Obj, replicas: int, spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": obj.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": obj.name, "namespace": obj.namespace, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "minReadySeconds": 0,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "paused": False,
        },
    }


def deployment_status(generation: int, replicas: int, wanted: int, rs_name: str) -> dict[str, Any]:
    """A ``DeploymentStatusUpdated`` payload, as the deployment controller writes it."""
    when = stamp(time.time_ns())
    done = replicas >= wanted
    available = (
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        if done
        else (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    )
    progressing = (
        ("NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        if done
        else ("ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
    )
    times = {"lastTransitionTime": when, "lastUpdateTime": when}
    return {
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": max(0, wanted - replicas),
            "conditions": [
                {"type": "Available", "status": available[0], "reason": available[1],
                 "message": available[2], **times},
                {"type": "Progressing", "status": "True", "reason": progressing[0],
                 "message": progressing[1], **times},
            ],
        },
        "annotations": {"deployment.kubernetes.io/revision": "1"},
    }  # fmt: skip


def replica_set_status(replicas: int, generation: int) -> dict[str, Any]:
    counts = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")
    status: dict[str, Any] = dict.fromkeys(counts, replicas)
    return {"status": {**status, "observedGeneration": generation}, "annotations": {}}


def bound_payload(node: str, rng: random.Random, nodes: int) -> dict[str, Any]:
    """A ``PodBound`` with the scheduler's score breakdown."""
    plugin_scores = {
        "TaintToleration": 100,
        "NodeAffinity": 0,
        "NodeResourcesFit": rng.randint(60, 99),
        "PodTopologySpread": rng.choice([0, 50, 100]),
        "InterPodAffinity": 0,
        "NodeResourcesBalancedAllocation": rng.randint(80, 100),
    }
    return {
        "node": node,
        "score": sum(WEIGHTS[name] * value for name, value in plugin_scores.items()),
        "feasible_nodes": nodes,
        "evaluated_nodes": min(nodes, 100),
        "plugin_scores": plugin_scores,
        "weights": WEIGHTS,
    }


@dataclass
class PodState:
    obj: Obj
    uid: str
    node: str = ""
    last_seq: int = 0
    restarts: int = 0

    @property
    def key(self) -> str:
        return f"{self.obj.namespace}/{self.obj.name}"

    def agent(self, what: str) -> By:
        """The pod's node agent, recording ``what`` after the pod's last event."""
        return By(
            f"system:node/{self.node}",
            f"agent.{self.node}.{what}.{self.uid}.{self.restarts}",
            f"seq:{self.last_seq}",
        )


class ClusterGenerator:
    """The generated cluster's story: generators that write one event per step."""

    def __init__(self, writer: LogWriter, total: int, seed: int = 7) -> None:
        self.w = writer
        self.rng = random.Random(seed)
        self.nodes = [f"node-{i:04d}" for i in range(max(10, total // 700))]
        self.node_objs = {node: Obj("Node", "", node) for node in self.nodes}
        self._node_cursor = 0
        self.targets: dict[str, Target] = {}
        self.pods = 0
        self.deployments = 0

    def bootstrap(self) -> Iterator[None]:
        """Namespaces, then nodes registering and turning Ready."""
        w = self.w
        for namespace in ["kube-system", *NAMESPACES]:
            obj = Obj("Namespace", "", namespace)
            by = root("system:bootstrap")
            manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            seq = w.emit(obj, "NamespaceCreated", by, {"manifest": manifest, "uid": uid_of(obj)})
            w.command(by, "apply", obj, [seq], ["NamespaceCreated"])
            yield
        for index, node in enumerate(self.nodes):
            obj = Obj("Node", "", node)
            by = root(f"system:node/{node}")
            capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
            labels = {
                "kubernetes.io/hostname": node,
                "topology.kubernetes.io/zone": f"zone-{index % 3}",
            }
            manifest = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": labels},
                "spec": {},
                "status": {"capacity": capacity, "allocatable": capacity},
            }
            seq = w.emit(obj, "NodeCreated", by, {"manifest": manifest, "uid": uid_of(obj)})
            w.command(by, "apply", obj, [seq], ["NodeCreated"])
            yield
            now = time.time_ns()
            by = By(
                "system:node-lifecycle-controller",
                f"node-lifecycle-controller.{node}.True.{now}",
                f"heartbeat at {stamp(now)}",
            )
            ready = {
                "status": "True",
                "reason": "KubeletReady",
                "message": "node is posting status",
                "last_heartbeat_ns": now,
                "grace_seconds": 50.0,
            }
            w.emit(obj, "NodeReady", by, ready)
            yield

    # -- pods ----------------------------------------------------------------------------------

    def create_pod(self, pod: PodState, manifest: dict[str, Any], by: By) -> None:
        payload = {"manifest": manifest, "uid": pod.uid}
        pod.last_seq = self.w.emit(pod.obj, "PodCreated", by, payload)
        if by.actor.startswith("user:"):
            self.w.command(by, "apply", pod.obj, [pod.last_seq], ["PodCreated"])
        else:
            key = f"replicaset-controller.create.{pod.uid}.{pod.obj.name}"
            self.w.command(by, "create", pod.obj, [pod.last_seq], ["PodCreated"], key)
        self.pods += 1

    def bind_pod(self, pod: PodState) -> Iterator[None]:
        """``PodBound`` and the node's ``PodAllocated`` (one atomic batch in the scheduler;
        two writes here)."""
        self._node_cursor += 1
        pod.node = self.nodes[self._node_cursor % len(self.nodes)]
        by = By(SCHEDULER, f"bind.default-scheduler.{uuid.uuid4().hex}", f"seq:{pod.last_seq}")
        payload = bound_payload(pod.node, self.rng, len(self.nodes))
        pod.last_seq = self.w.emit(pod.obj, "PodBound", by, payload)
        yield
        requests = {"cpu": 100, "memory": 134217728, "pods": 1}
        self.w.emit(
            self.node_objs[pod.node], "PodAllocated", by, {"pod": pod.key, "requests": requests}
        )
        yield

    def start_pod(self, pod: PodState) -> None:
        started = {"container": "main", "restart_count": pod.restarts, "node": pod.node}
        pod.last_seq = self.w.emit(pod.obj, "ContainerStarted", pod.agent("start"), started)

    def ready_pod(self, pod: PodState) -> None:
        ready = {"reason": "all containers are ready"}
        pod.last_seq = self.w.emit(pod.obj, "PodReady", pod.agent("ready"), ready)

    def restart_pod(self, pod: PodState) -> Iterator[None]:
        """A crash and its restart, as a node agent records them."""
        finished = time.time_ns()
        exited = {
            "container": "main",
            "exit_code": 1,
            "signal": None,
            "reason": "Error",
            "node": pod.node,
            "restart_count": pod.restarts,
            "started_at_ns": finished - 41_000_000_000,
            "finished_at_ns": finished,
            "message": "",
        }
        pod.last_seq = self.w.emit(pod.obj, "ContainerExited", pod.agent("exit"), exited)
        yield
        not_ready = {"reason": "container main is not ready"}
        pod.last_seq = self.w.emit(pod.obj, "PodNotReady", pod.agent("not-ready"), not_ready)
        yield
        restarted = {
            "container": "main",
            "restart_count": pod.restarts + 1,
            "backoff_seconds": min(300.0, 10.0 * 2 ** min(pod.restarts, 5)),
            "reason": "Error",
            "node": pod.node,
        }
        pod.last_seq = self.w.emit(pod.obj, "ContainerRestarted", pod.agent("restart"), restarted)
        pod.restarts += 1
        yield
        self.start_pod(pod)
        yield
        self.ready_pod(pod)
        yield

    def delete_pod(self, pod: PodState, by: By) -> Iterator[None]:
        """``PodDeleted`` and the node's ``PodReleased`` (one atomic batch in the gateway; two
        writes here), one command."""
        deleted = {"reason": "scaled down", "propagation_policy": "Background"}
        seq = self.w.emit(pod.obj, "PodDeleted", by, deleted)
        yield
        released = {"pod": pod.key, "reason": f"pod deleted by {by.actor}"}
        released_seq = self.w.emit(self.node_objs[pod.node], "PodReleased", by, released)
        key = f"replicaset-controller.delete.{pod.uid}"
        events = ["PodDeleted", "PodReleased"]
        self.w.command(by, "delete", pod.obj, [seq, released_seq], events, key)
        yield

    # -- workloads -----------------------------------------------------------------------------

    def deployment(self, index: int, mark_typical: bool) -> Iterator[None]:
        """One deployment's life: created, its pods run (every fifth restarts once), then it
        is scaled down."""
        w = self.w
        self.deployments += 1
        namespace = NAMESPACES[index % len(NAMESPACES)]
        obj = Obj("Deployment", namespace, f"{WORDS[index % len(WORDS)]}-{index // len(WORDS)}")
        spec = pod_spec(IMAGES[index % len(IMAGES)], index)
        by = root(USERS[index % len(USERS)])
        cmd = by.correlation
        dep_uid = uid_of(obj)
        manifest = deployment_manifest(obj, PODS_PER_DEPLOYMENT, spec)
        created = w.emit(obj, "DeploymentCreated", by, {"manifest": manifest, "uid": dep_uid})
        w.command(by, "apply", obj, [created], ["DeploymentCreated"])
        yield

        pod_hash = token(f"{namespace}/{obj.name}", 10)
        rs = Obj("ReplicaSet", namespace, f"{obj.name}-{pod_hash}")
        rs_uid = uid_of(rs)
        rs_labels = {"app": obj.name, "pod-template-hash": pod_hash}
        annotations = {
            "deployment.kubernetes.io/desired-replicas": str(PODS_PER_DEPLOYMENT),
            "deployment.kubernetes.io/max-replicas": str(PODS_PER_DEPLOYMENT * 5 // 4),
            "deployment.kubernetes.io/revision": "1",
        }
        owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": obj.name, "uid": dep_uid}
        rs_manifest = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs.name,
                "namespace": namespace,
                "labels": rs_labels,
                "annotations": annotations,
                "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
                "generation": 1,
            },
            "spec": {
                "replicas": PODS_PER_DEPLOYMENT,
                "minReadySeconds": 0,
                "selector": {"matchLabels": rs_labels},
                "template": {"metadata": {"labels": rs_labels}, "spec": spec},
            },
        }
        by = By(DEPLOYMENT_CONTROLLER, cmd, f"seq:{created}")
        rs_created = w.emit(rs, "ReplicaSetCreated", by, {"manifest": rs_manifest, "uid": rs_uid})
        key = f"deployment-controller.create.{dep_uid}.{rs.name}"
        w.command(by, "create", rs, [rs_created], ["ReplicaSetCreated"], key)
        yield
        self.status(obj, by, deployment_status(1, 0, PODS_PER_DEPLOYMENT, rs.name))
        yield

        pod_owner = {**owner, "kind": "ReplicaSet", "name": rs.name, "uid": rs_uid}
        pod_owner.update(controller=True, blockOwnerDeletion=True)
        pods: list[PodState] = []
        used: set[str] = set()
        for first in range(0, PODS_PER_DEPLOYMENT, WAVE):
            wave: list[PodState] = []
            for number in range(first, first + WAVE):
                suffix = token(f"{rs.name}/{number}", 5)
                while suffix in used:
                    suffix = token(f"{rs.name}/{number}/{suffix}", 5)
                used.add(suffix)
                pod_obj = Obj("Pod", namespace, f"{rs.name}-{suffix}")
                pod = PodState(pod_obj, uid_of(pod_obj))
                metadata = {
                    "name": pod.obj.name,
                    "namespace": namespace,
                    "labels": rs_labels,
                    "ownerReferences": [pod_owner],
                }
                manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
                self.create_pod(pod, manifest, By(REPLICASET_CONTROLLER, cmd, f"seq:{rs_created}"))
                if mark_typical and number == 1 and "typical" not in self.targets:
                    self.targets["typical"] = Target("ordinary pod", "Pod", namespace, pod.obj.name)
                wave.append(pod)
                yield
            for pod in wave:
                yield from self.bind_pod(pod)
            for pod in wave:
                self.start_pod(pod)
                yield
            for pod in wave:
                self.ready_pod(pod)
                yield
            pods += wave
            after = f"seq:{wave[-1].last_seq}"
            by = By(REPLICASET_CONTROLLER, cmd, after)
            self.status(rs, by, replica_set_status(len(pods), 1))
            yield
            by = By(DEPLOYMENT_CONTROLLER, cmd, after)
            self.status(obj, by, deployment_status(1, len(pods), PODS_PER_DEPLOYMENT, rs.name))
            yield
        for pod in pods[::5]:
            yield from self.restart_pod(pod)

        # Scaled down by a user: the deployment, its replica set, then the pods that go.
        by = root(SCALERS[index % len(SCALERS)])
        wanted = PODS_PER_DEPLOYMENT - SCALE_DOWN
        scale = {"replicas": wanted, "previous": PODS_PER_DEPLOYMENT, "reason": "traffic is down"}
        scaled = w.emit(obj, "ScaledTo", by, scale)
        w.command(by, "scale", obj, [scaled], ["ScaledTo"])
        yield
        by = By(DEPLOYMENT_CONTROLLER, by.correlation, f"seq:{scaled}")
        scale = {**scale, "reason": f"scaled to the deployment's {wanted} replicas"}
        rs_scaled = w.emit(rs, "ScaledTo", by, scale)
        w.command(by, "scale", rs, [rs_scaled], ["ScaledTo"])
        yield
        by = By(REPLICASET_CONTROLLER, by.correlation, f"seq:{rs_scaled}")
        for pod in pods[wanted:]:
            yield from self.delete_pod(pod, by)
        self.status(rs, by, replica_set_status(wanted, 2))
        yield
        by = By(DEPLOYMENT_CONTROLLER, by.correlation, f"seq:{scaled}")
        self.status(obj, by, deployment_status(2, wanted, wanted, rs.name))
        yield

    def status(self, obj: Obj, by: By, payload: dict[str, Any]) -> None:
        """A workload's status record, written through the gateway (a ``status`` command)."""
        event_type = f"{obj.kind}StatusUpdated"
        seq = self.w.emit(obj, event_type, by, payload)
        self.w.command(by, "status", obj, [seq], [event_type])

    # -- targets spread over the whole log -----------------------------------------------------

    def crashloop(self) -> Iterator[bool]:
        """A standalone pod that crashes again and again for the whole life of the log; yields
        True at the end of its start and of each restart cycle."""
        obj = Obj("Pod", "default", "target-crashloop")
        self.targets["crashloop"] = Target("crash-looping pod", obj.kind, obj.namespace, obj.name)
        pod = PodState(obj, uid_of(obj))
        metadata = {"name": obj.name, "namespace": obj.namespace, "labels": {"app": "flaky"}}
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": pod_spec("python:3.11", 0),
        }
        self.create_pod(pod, manifest, root("user:carol"))
        yield False
        for _ in self.bind_pod(pod):
            yield False
        self.start_pod(pod)
        yield False
        self.ready_pod(pod)
        yield True
        while True:
            for _ in self.restart_pod(pod):
                yield False
            yield True

    def autoscaled(self) -> Iterator[bool]:
        """A deployment whose replica count changes again and again for the whole life of the
        log (its pods are not generated); yields True after each change and its status."""
        obj = Obj("Deployment", "default", "target-autoscaled")
        self.targets["autoscaled"] = Target(
            "autoscaled deployment", obj.kind, obj.namespace, obj.name
        )
        replicas = 10
        by = root("user:alice")
        manifest = deployment_manifest(obj, replicas, pod_spec("nginx:1.27", 1))
        seq = self.w.emit(obj, "DeploymentCreated", by, {"manifest": manifest, "uid": uid_of(obj)})
        self.w.command(by, "apply", obj, [seq], ["DeploymentCreated"])
        yield True
        generation = 1
        rs_name = f"{obj.name}-{token(obj.name, 10)}"
        while True:
            previous = replicas
            replicas = max(2, min(60, replicas + self.rng.choice([-3, -2, -1, 1, 2, 3])))
            if replicas == previous:
                replicas = previous + 1
            by = root(SCALERS[generation % len(SCALERS)])
            scale = {"replicas": replicas, "previous": previous, "reason": "load changed"}
            scaled = self.w.emit(obj, "ScaledTo", by, scale)
            self.w.command(by, "scale", obj, [scaled], ["ScaledTo"])
            generation += 1
            yield False
            by = By(DEPLOYMENT_CONTROLLER, by.correlation, f"seq:{scaled}")
            self.status(obj, by, deployment_status(generation, replicas, replicas, rs_name))
            yield True


def root(actor: str) -> By:
    """A command issued by ``actor``: the root of its chain."""
    key = uuid.uuid4().hex
    return By(actor, key, f"cmd:{key}")


def uid_of(obj: Obj) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{obj.kind}/{obj.namespace}/{obj.name}"))


async def generate(url: str, total: int, in_flight: int) -> Description:
    """Write ``total`` events (and the audit trail of their commands) to an empty log."""
    nc = await connect(url, name="bench-history-generate")
    # The generator keeps one small entry per aggregate and forms no cycles: without the
    # collector re-scanning them all, it writes ~10 % faster.
    collecting = gc.isenabled()
    gc.disable()
    try:
        async with EventStore(nc) as store:
            last = await store.stream_last_seq()
            if last:
                raise SystemExit(
                    f"stream {FLEET_STREAM} already holds {last} events: bench_history writes "
                    "its own log and needs an empty one (or a --keep DIR it generated)"
                )
            writer = LogWriter(nc, store, 1, in_flight)
            cluster = ClusterGenerator(writer, total)
            crash_cycles = max(1, total // 5_000)
            scale_changes = max(1, total // 2_000)
            crash_every = total / (crash_cycles + 1)
            scale_every = total / (scale_changes + 1)
            crash_next, scale_next = crash_every, scale_every
            crash, scale = cluster.crashloop(), cluster.autoscaled()
            start = time.perf_counter()
            reported = 0

            def run_target(target: Iterator[bool]) -> None:
                while writer.events < total and not next(target):
                    pass

            async def advance(steps: Iterator[None]) -> bool:
                """One step of a generator; False when it is done."""
                try:
                    next(steps)
                except StopIteration:
                    return False
                if writer.full:
                    await writer.flush()
                return True

            bootstrap = cluster.bootstrap()
            while writer.events < total and await advance(bootstrap):
                pass
            run_target(crash)
            run_target(scale)
            lanes: list[Iterator[None]] = []
            index = 0
            while writer.events < total:
                while len(lanes) < LANES:
                    lanes.append(cluster.deployment(index, writer.events >= total // 2))
                    index += 1
                for lane in list(lanes):
                    if writer.events >= total:
                        break
                    if not await advance(lane):
                        lanes.remove(lane)
                    if writer.events >= crash_next:
                        crash_next += crash_every
                        run_target(crash)
                    if writer.events >= scale_next:
                        scale_next += scale_every
                        run_target(scale)
                if writer.events - reported >= 100_000:
                    reported = writer.events
                    elapsed = time.perf_counter() - start
                    print(
                        f"  {writer.events:>9,} events, {writer.commands:,} commands "
                        f"({writer.events / elapsed:,.0f} events/s)",
                        flush=True,
                    )
            await writer.finish()
            elapsed = time.perf_counter() - start
            if "typical" not in cluster.targets:
                # The ordinary pod is the first of a deployment started half-way through; in a
                # log this small the first sixteen deployments outlast the whole of it.
                raise SystemExit(
                    f"--events {total:,} is too small: no deployment started half-way through "
                    "the log to take the ordinary pod from (10,000 events are enough)"
                )
            for target in cluster.targets.values():
                subject = event_subject(target.kind, target.namespace, target.name)
                target.events = writer.heads[subject][0]
            return Description(
                events=writer.events,
                commands=writer.commands,
                rejected=writer.rejected,
                pods=cluster.pods,
                nodes=len(cluster.nodes),
                deployments=cluster.deployments,
                generate_seconds=elapsed,
                targets=[cluster.targets[k] for k in ("typical", "crashloop", "autoscaled")],
                types=dict(writer.types.most_common()),
                audit_scheme=audit_scheme(),
            )
    finally:
        await nc.close()
        if collecting:
            gc.enable()


# -- measuring ---------------------------------------------------------------------------------


async def bench_replay(url: str) -> tuple[float, int, int]:
    """(events/s, events applied, objects) of a full replay into the cluster read model."""
    nc = await connect(url, name="bench-history-replay")
    try:
        async with EventStore(nc) as store:
            projection = Projection(ClusterModel(), store)
            start = time.perf_counter()
            await projection.catch_up()
            elapsed = time.perf_counter() - start
            applied = projection.model.events_applied
            objects = len(projection.model.objects)
    finally:
        await nc.close()
    del projection
    gc.collect()
    return applied / elapsed, applied, objects


async def bench_bulk_read(url: str) -> float:
    """Events/s of the bulk reader (``streams/logreader.py``, what replays use) over the whole
    log, its handler only counting."""
    nc = await connect(url, name="bench-history-bulk")
    seen = 0

    def on_stored(seq: int, subject: str, stored_ns: int, data: bytes, _seal: bytes | None) -> None:
        nonlocal seen
        seen += 1

    try:
        async with EventStore(nc) as store:
            start = time.perf_counter()
            await store.replay_raw(on_stored)
            elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    return seen / elapsed


async def sample_messages(url: str, count: int) -> list[tuple[str, str, bytes]]:
    """The first ``count`` stored messages (subject, reply, data), as an ordered consumer
    delivers them."""
    nc = await connect(url, name="bench-history-sample")
    sample: list[tuple[str, str, bytes]] = []
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        if len(sample) < count:
            sample.append((msg.subject, msg.reply, msg.data))
            if len(sample) == count:
                done.set()

    try:
        async with EventStore(nc) as store:
            sub = await store.subscribe_raw(on_message)
            await done.wait()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        await nc.close()
    return sample


def replay_costs(sample: list[tuple[str, str, bytes]]) -> dict[str, float]:
    """Microseconds per event of each step of a replay after delivery, on a sample held in
    memory: the reply-subject parse, the envelope decode (msgspec into ``Envelope``, upcast),
    the ``StoredEvent`` and the fold into a ``ClusterModel``. Measured as a replay runs them,
    one event through every step before the next (decoded events are not kept, which would
    measure the allocator instead): each step's cost is the difference between two passes
    that stop before and after it; the collector is paused as in a replay."""
    n = len(sample)

    def parse_only() -> None:
        for _, reply, _ in sample:
            parse_ack_subject(reply)

    def decode() -> None:
        for _, reply, data in sample:
            parse_ack_subject(reply)
            decode_envelope(data)

    def wrap() -> None:
        for subject, reply, data in sample:
            seq, stored_ns, _ = parse_ack_subject(reply)
            StoredEvent(seq, subject, stored_ns, decode_envelope(data), data)

    def fold() -> None:
        apply = ClusterModel().apply
        for subject, reply, data in sample:
            seq, stored_ns, _ = parse_ack_subject(reply)
            apply(StoredEvent(seq, subject, stored_ns, decode_envelope(data), data))

    seconds = {}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for step in (parse_only, decode, wrap, fold):
            start = time.perf_counter()
            step()
            seconds[step.__name__] = time.perf_counter() - start
            gc.collect()
    finally:
        if enabled:
            gc.enable()
    return {
        "parse": 1e6 * seconds["parse_only"] / n,
        "decode": 1e6 * (seconds["decode"] - seconds["parse_only"]) / n,
        "wrap": 1e6 * (seconds["wrap"] - seconds["decode"]) / n,
        "fold": 1e6 * (seconds["fold"] - seconds["wrap"]) / n,
    }


def ms_stats(values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return f"p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms"


async def run_cli(url: str, *args: str) -> tuple[float, int, str]:
    """Wall time, exit code and stdout of ``python -m ops ARGS`` against the server."""
    env = {**os.environ, "FLEETLOG_SERVER": url}
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    elapsed = time.perf_counter() - start
    if process.returncode:
        print(f"  (exit {process.returncode}: {err.decode(errors='replace').strip()[:200]})")
    return elapsed, process.returncode or 0, out.decode(errors="replace")


def check_aggregate(target: Target, events: list[StoredEvent]) -> str:
    """Rebuild the target's aggregate from its history (as the gateway would before deciding
    on it): the generated events must obey the domain's rules."""
    aggregate = AGGREGATES[target.kind].from_history(
        f"{target.kind}/{target.namespace}/{target.name}",
        (
            RecordedEvent(
                type=e.envelope.type,
                version=e.envelope.version,
                timestamp=timestamp_from_ns(e.envelope.timestamp_ns),
                payload=e.envelope.payload,
            )
            for e in events
        ),
    )
    return "ok" if aggregate is not None and aggregate.version == len(events) else "MISMATCH"


class Summary:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, measurement: str, figure: str, aim: str = "") -> None:
        self.rows.append((measurement, figure, aim))

    def print(self) -> None:
        print("\nsummary")
        print(render.table(["MEASUREMENT", "FIGURE", "AIM"], [list(r) for r in self.rows]))


async def measure(
    url: str, description: Description, args: argparse.Namespace, workdir: Path
) -> None:
    summary = Summary()
    total = description.events
    summary.add(
        "log generated",
        f"{total:,} events, {description.commands + description.rejected:,} "
        f"audit records in {description.generate_seconds:.0f} s",
    )

    # Replay against the raw read rates, alternated: the machine is noisy.
    raw_reads, bulk_reads, replays = [], [], []
    objects = 0
    for round_ in range(args.rounds):
        raw_reads.append(await bench_raw_read(url, total))
        print(f"raw ordered consumer read, round {round_ + 1}: {raw_reads[-1]:,.0f} events/s")
        bulk_reads.append(await bench_bulk_read(url))
        print(f"bulk reader, round {round_ + 1}: {bulk_reads[-1]:,.0f} events/s")
        rate, applied, objects = await bench_replay(url)
        assert applied == total, f"replayed {applied} events of {total}"
        replays.append(rate)
        print(
            f"replay into the cluster model, round {round_ + 1}: {rate:,.0f} events/s "
            f"({objects:,} objects)"
        )
    raw_read, replay = statistics.median(raw_reads), statistics.median(replays)
    bulk_read = statistics.median(bulk_reads)
    print(
        f"raw ordered consumer read (callback)  : {raw_read:10,.0f} events/s "
        f"(median of {args.rounds})\n"
        f"bulk reader (handler counts)          : {bulk_read:10,.0f} events/s\n"
        f"replay (decode + fold, catch_up)      : {replay:10,.0f} events/s "
        f"= {100 * replay / raw_read:.0f}% of the raw ordered-consumer read, "
        f"{100 * replay / bulk_read:.0f}% of the bulk read (aim >= 100,000 events/s)",
        flush=True,
    )
    summary.add("raw ordered-consumer read (nats-py)", f"{raw_read:,.0f} events/s", "-")
    summary.add("bulk reader (streams/logreader.py)", f"{bulk_read:,.0f} events/s", "-")
    summary.add(
        "full replay into ClusterModel",
        f"{replay:,.0f} events/s = {100 * replay / raw_read:.0f}% of raw ordered, "
        f"{100 * replay / bulk_read:.0f}% of bulk; {total / replay:.1f} s for the log",
        ">= 100,000 events/s",
    )

    sample = await sample_messages(url, min(args.sample, total))
    costs = replay_costs(sample)
    del sample
    gc.collect()
    delivery = 1e6 / bulk_read
    accounted = delivery + costs["decode"] + costs["wrap"] + costs["fold"]
    print(
        f"replay cost per event on the first {min(args.sample, total):,} events (µs): delivery "
        f"{delivery:.1f} (the bulk read, of which the reply parse {costs['parse']:.1f}), decode "
        f"{costs['decode']:.1f}, StoredEvent {costs['wrap']:.2f}, fold {costs['fold']:.1f}; "
        f"sum {accounted:.1f} = {1e6 / accounted:,.0f} events/s, measured {1e6 / replay:.1f}",
        flush=True,
    )
    summary.add(
        "replay µs/event: delivery / decode / fold",
        f"{delivery:.1f} / {costs['decode']:.1f} / {costs['fold']:.1f}; replay {1e6 / replay:.1f}",
        "-",
    )

    nc = await connect(url, name="bench-history-queries")
    try:
        async with EventStore(nc) as store:
            # The history index as `fleetlog up` builds it on an empty data directory: its
            # projection caught up, then the index filled from the log in bulk.
            remove_history_index(workdir)
            projection = Projection(ClusterModel(), store)
            await projection.catch_up()
            await projection.follow()
            service = HistoryService(nc, store, HistoryIndex(workdir / HISTORY_FILE), projection)
            ready = asyncio.Event()
            start = time.perf_counter()
            serving = asyncio.create_task(service.run(ready))
            await ready.wait()
            built = time.perf_counter() - start
            size = history_index_bytes(workdir)
            print(
                f"history index built from the log: {total:,} events in {built:.1f} s = "
                f"{total / built:,.0f} events/s; {size / 1e6:,.0f} MB on disk",
                flush=True,
            )
            summary.add(
                "history index build (empty index, whole log)",
                f"{built:.1f} s = {total / built:,.0f} events/s; {size / 1e6:,.0f} MB",
                "-",
            )
            try:
                born = await measure_history(nc, store, description, args, url, summary)
                await measure_at(nc, store, description, args, url, summary, born)
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                service.close()
                await projection.stop()
                del projection
                gc.collect()

            # audit --actor, as the CLI asks: its subject filter, then the actor compared on
            # every record read.
            actor_subject = cli_audit_filter(args.actor)
            times, read_count, chosen = await time_audit(nc, actor_subject, args)
            cli, _, out = await run_cli(url, "audit", "--actor", args.actor)
            rows = max(0, len(out.splitlines()) - 1)
            print(
                f"audit --actor {args.actor} (subject {actor_subject}): {chosen:,} of "
                f"{read_count:,} records read; in process p50 {statistics.median(times):.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in times)}); CLI {cli:.2f} s "
                f"({rows:,} rows)",
                flush=True,
            )
            summary.add(
                f"audit --actor ({chosen:,} of {read_count:,} records read)",
                f"p50 {statistics.median(times):.2f} s; CLI {cli:.2f} s",
                "< 2 s",
            )
            everything = audit_filter(None, None, None)
            if everything != actor_subject:
                # A query the subject cannot narrow (by name, by --type …) reads them all.
                times, read_count, _ = await time_audit(nc, everything, args)
                print(
                    f"audit, every record read ({everything}): {read_count:,} records; p50 "
                    f"{statistics.median(times):.2f} s (runs: "
                    f"{', '.join(f'{t:.2f}' for t in times)})",
                    flush=True,
                )
                summary.add(
                    f"audit reading every record ({read_count:,})",
                    f"p50 {statistics.median(times):.2f} s",
                    "-",
                )

            # audit verify
            start = time.perf_counter()
            report = await verify_log(store)
            elapsed = time.perf_counter() - start
            print(
                f"audit verify: {report.events:,} events of {report.aggregates:,} aggregates in "
                f"{elapsed:.1f} s = {report.events / elapsed:,.0f} events/s, "
                f"{len(report.breaks)} break(s), {report.sealed:,} sealed",
                flush=True,
            )
            summary.add(
                "audit verify (verify_log)",
                f"{report.events / elapsed:,.0f} events/s, {len(report.breaks)} breaks",
                "-",
            )
    finally:
        await nc.close()

    startup, _, _ = await run_cli(url, "--help")
    print(f"CLI start-up alone (python -m ops --help): {1000 * startup:.0f} ms")
    summary.add("CLI start-up (python -m ops --help)", f"{1000 * startup:.0f} ms", "-")
    summary.print()


def remove_history_index(workdir: Path) -> None:
    for leftover in workdir.glob(f"{HISTORY_FILE}*"):
        leftover.unlink()


def history_index_bytes(workdir: Path) -> int:
    return sum(f.stat().st_size for f in workdir.glob(f"{HISTORY_FILE}*"))


async def measure_history(
    nc: Client,
    store: EventStore,
    description: Description,
    args: argparse.Namespace,
    url: str,
    summary: Summary,
) -> dict[str, int]:
    """``history`` of each target from the index (``read_history``, what ``fleetlog history``
    does with ``up`` running), from the log alone (``read_subject``, without ``up``) and from
    the CLI; returns when each target was first stored."""
    born: dict[str, int] = {}
    for target in description.targets:
        subject = event_subject(target.kind, target.namespace, target.name)
        reads, rendered, from_log = [], [], []
        events: list[StoredEvent] = []
        for _ in range(args.history_runs):
            start = time.perf_counter()
            events = await read_history(nc, store, subject)
            reads.append(time.perf_counter() - start)
            render.table(render.HISTORY_HEADERS, render.history_rows(events))
            rendered.append(time.perf_counter() - start)
        for _ in range(args.log_history_runs):
            start = time.perf_counter()
            logged = await store.read_subject(subject)
            from_log.append(time.perf_counter() - start)
            assert [e.seq for e in logged] == [e.seq for e in events]
        assert len(events) == target.events, (target, len(events))
        born[target.label] = events[0].stored_ns
        check = check_aggregate(target, events)
        namespace = ["-n", target.namespace] if target.namespace != "default" else []
        cli, code, out = await run_cli(url, "history", target.ref, *namespace)
        rows = max(0, len(out.splitlines()) - 1)
        print(
            f"history of the {target.label} {target.ref} ({len(events):,} events, aggregate "
            f"rebuild {check}): from the index {ms_stats(reads)}; with the table "
            f"{ms_stats(rendered)}; from the log alone {ms_stats(from_log)}; CLI "
            f"{1000 * cli:.0f} ms ({rows:,} rows, exit {code})",
            flush=True,
        )
        summary.add(
            f"history {target.label} ({len(events):,} events)",
            f"index {ms_stats(reads)}; +table p50 {1000 * statistics.median(rendered):.1f} ms; "
            f"log alone p50 {1000 * statistics.median(from_log):.0f} ms; CLI {1000 * cli:.0f} ms",
            "< 100 ms",
        )
    return born


async def measure_at(
    nc: Client,
    store: EventStore,
    description: Description,
    args: argparse.Namespace,
    url: str,
    summary: Summary,
    born: dict[str, int],
) -> None:
    """``get --at`` of each target at random instants (the object's events from the index)."""
    # --at: one object at a random instant of the log's life.
    first = await store.get_event(1)
    last = await store.get_event(await store.stream_last_seq())
    assert first is not None and last is not None
    rng = random.Random(11)
    for target in description.targets:
        times: list[float] = []
        found = 0
        for _ in range(args.at_runs):
            at_ns = rng.randint(first.stored_ns, last.stored_ns)
            start = time.perf_counter()
            point = await timetravel.position_of(
                nc, store, timetravel.format_ns(at_ns), now_ns=time.time_ns()
            )
            item, _ = await timetravel.object_at(
                store, target.kind, target.namespace, target.name, point.seq, nc=nc
            )
            times.append(time.perf_counter() - start)
            found += item is not None
        # The CLI at an instant when the object existed (else it answers "not found").
        at_ns = rng.randint(born[target.label], last.stored_ns)
        namespace = ["-n", target.namespace] if target.namespace != "default" else []
        cli, code, _ = await run_cli(
            url,
            "get",
            target.kind.lower(),
            target.name,
            *namespace,
            "--at",
            timetravel.format_ns(at_ns),
            "-o",
            "yaml",
        )
        print(
            f"--at of the {target.label} at {args.at_runs} random instants "
            f"(existed at {found}): {ms_stats(times)}; CLI get --at "
            f"{1000 * cli:.0f} ms (exit {code})",
            flush=True,
        )
        summary.add(
            f"--at {target.label} ({target.events:,} events)",
            f"{ms_stats(times)}; CLI {1000 * cli:.0f} ms",
            "-",
        )


def audit_scheme() -> str:
    """The subject ``streams/audit.py`` gives a reference record today."""
    return AuditRecord(0, "accepted", "user:bob", "scale", "Deployment").subject


def cli_audit_filter(actor: str) -> str:
    """The subject ``fleetlog audit --actor A`` reads: with the actor in it where the audit
    subjects carry one (``audit_filter`` then takes it), else every record's."""
    if "actor" in inspect.signature(audit_filter).parameters:
        return cast(Any, audit_filter)(None, None, None, actor)
    return audit_filter(None, None, None)


async def time_audit(
    nc: Client, subject: str, args: argparse.Namespace
) -> tuple[list[float], int, int]:
    """Seconds of each ``read_audit`` + actor filter (as ``ops/cli/audit.py`` does), how many
    records were read, and how many are the actor's."""
    times: list[float] = []
    read_count = chosen = 0
    for _ in range(args.audit_runs):
        start = time.perf_counter()
        try:
            records = await read_audit(nc, subject=subject)
        except TimeoutError:  # read_audit gives up after 30 s
            print(f"  audit read timed out after {time.perf_counter() - start:.1f} s")
            times.append(float("inf"))
            continue
        filters: dict[str, Any] = {"name": None, "namespace": None, "event_type": None}
        chosen = sum(1 for r in records if matches(r, actor=args.actor, until_ns=None, **filters))
        times.append(time.perf_counter() - start)
        read_count = len(records)
        del records
        gc.collect()
    return times, read_count, chosen


async def audit_count(url: str) -> int:
    nc = await connect(url, name="bench-history-info")
    try:
        info = await jsapi.jetstream(nc).stream_info(AUDIT_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def main_async(args: argparse.Namespace) -> None:
    if args.keep and args.nats_url:
        raise SystemExit("--keep keeps the embedded server's data; it cannot go with --nats-url")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fleetlog-hist-"))
    described = workdir / DESCRIPTION_FILE
    try:
        async with server_for(args.nats_url, workdir / "nats") as url:
            print(
                f"server {url}, python {sys.version.split()[0]}, {os.cpu_count()} cores "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            if args.keep and described.exists():
                description = Description.load(described)
                if description.audit_scheme != audit_scheme():
                    raise SystemExit(
                        f"the audit trail kept in {workdir} has subjects like "
                        f"{description.audit_scheme or 'unknown'}, streams/audit.py now writes "
                        f"{audit_scheme()}: generate the log again (another --keep DIR)"
                    )
                print(f"measuring the log kept in {workdir} ({description.events:,} events)")
            else:
                print(
                    f"generating {args.events:,} events (append_many, {args.in_flight} in flight, "
                    "an expectation on every write)",
                    flush=True,
                )
                description = await generate(url, args.events, args.in_flight)
                if args.keep:
                    described.write_text(json.dumps(asdict(description), indent=1))
            audits = await audit_count(url)
            print(
                f"log: {description.events:,} events ({description.pods:,} pods, "
                f"{description.deployments:,} deployments, {description.nodes:,} nodes) "
                f"generated in {description.generate_seconds:.1f} s = "
                f"{description.events / description.generate_seconds:,.0f} events/s; "
                f"{audits:,} audit records ({description.rejected:,} rejected)"
            )
            print("  by type: " + ", ".join(f"{k} {v:,}" for k, v in description.types.items()))
            for target in description.targets:
                print(
                    f"  target {target.label}: {target.ref} in {target.namespace}, "
                    f"{target.events:,} events"
                )
            await measure(url, description, args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    parser.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="keep the server's data here; reuse a log generated in DIR before",
    )
    parser.add_argument("--nats-url", default=None, help="an existing server (empty FLEET)")
    parser.add_argument("--in-flight", type=int, default=1000, help="writes per append_many")
    parser.add_argument("--rounds", type=int, default=2, help="raw read / replay alternations")
    parser.add_argument(
        "--sample",
        type=int,
        default=200_000,
        help="events decoded and folded apart to split a replay's cost",
    )
    parser.add_argument("--history-runs", type=int, default=50)
    parser.add_argument(
        "--log-history-runs", type=int, default=5, help="history reads from the log alone"
    )
    parser.add_argument("--at-runs", type=int, default=30)
    parser.add_argument("--audit-runs", type=int, default=3)
    parser.add_argument("--actor", default="user:bob", help="the actor of the audit query")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
