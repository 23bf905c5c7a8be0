"""Container logs and resource usage: high-volume, age-limited streams beside the log of record.

Why this exists: ``fleetlog logs`` and ``fleetlog top`` must work from any machine that reaches
NATS, so a node's container output and its usage samples leave the node. They are not facts of
the cluster's history (nobody replays a log line to rebuild state), so they never go into
``FLEET``: they live on two streams of their own that forget by age (defined, with their
limits, and set up in :mod:`streams.definitions`; optional there: a server that refuses them is
logged, and the control plane works without logs and usage).

* ``FLEET_LOGS`` (file storage, 24 h, a per-subject cap): one subject per container,
  ``fleet.logs.<ns>.<pod>.<container>`` (tokens encoded by :func:`encode_token`), shared by every
  instance of that container; each message is a chunk of complete lines of one output file with
  headers naming the instance (``Fleet-Pod-Uid``, ``Fleet-Restart``), the file (``Fleet-Stream``:
  stdout or stderr), its byte offset in that file (``Fleet-Offset``), its newline count
  (``Fleet-Lines``) and whether it ends inside a line too long for one message
  (``Fleet-Partial``). The node side that publishes them is ``handlers/agent/logship.py``.
* ``FLEET_METRICS`` (memory storage, 1 h, 360 samples per subject): the latest usage of every
  pod (``fleet.metrics.pod.<ns>.<pod>``) and node (``fleet.metrics.node.<node>``) as msgpack.
  Memory, because samples are cheap to lose: a server restart costs at most an hour of history
  that ``top`` never shows and the next sample replaces (metrics-server keeps its samples in
  memory too), while file storage would write to disk for every sample of every pod.

Readers never scan more than they need: ``latest_usage`` asks for the last message per subject
(an ordered consumer with ``DeliverPolicy.LAST_PER_SUBJECT``), and ``open_logs`` first indexes
the container's subject with a headers-only ordered consumer, picks the instance and the tail
from the headers, and only then fetches message bodies from the first chunk it will print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, overload

import msgpack
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from core.errors import FleetError
from core.meta.quantity import parse_quantity
from core.meta.timestamps import format_stamp, parse_stamp
from streams import jsapi
from streams.definitions import (
    CUSTOM_METRICS_PREFIX,
    CUSTOM_SAMPLE_MAX_BYTES,
    EXTERNAL_METRICS_PREFIX,
    LOGS_PREFIX,
    LOGS_STREAM,
    MAX_CHUNK_BYTES,
    METRICS_PREFIX,
    METRICS_STREAM,
)
from streams.subjects import decode_token, encode_token

log = structlog.get_logger(__name__)

HDR_POD_UID = "Fleet-Pod-Uid"
HDR_RESTART = "Fleet-Restart"
HDR_STREAM = "Fleet-Stream"
HDR_OFFSET = "Fleet-Offset"
HDR_LINES = "Fleet-Lines"
HDR_PARTIAL = "Fleet-Partial"
OUTPUT_STREAMS = ("stdout", "stderr")
USAGE_PERIOD_S = 10.0
"""How often a node agent samples usage by default: the window a sample without one covers."""


class LogsNotFound(FleetError):
    """There are no logs of the container instance asked for."""

    code = "not_found"


# -- subjects ------------------------------------------------------------------------------------


def log_subject(namespace: str, pod: str, container: str) -> str:
    return f"{LOGS_PREFIX}.{encode_token(namespace)}.{encode_token(pod)}.{encode_token(container)}"


def pod_metrics_subject(namespace: str, pod: str) -> str:
    return f"{METRICS_PREFIX}.pod.{encode_token(namespace)}.{encode_token(pod)}"


def node_metrics_subject(node: str) -> str:
    return f"{METRICS_PREFIX}.node.{encode_token(node)}"


# -- usage ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    cpu_millicores: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class PodUsage:
    namespace: str
    name: str
    at_ns: int
    containers: dict[str, ContainerUsage]
    window_s: float = USAGE_PERIOD_S
    """The period the cpu figures are averaged over (the agent's sample period)."""

    @property
    def cpu_millicores(self) -> int:
        return sum(c.cpu_millicores for c in self.containers.values())

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers.values())


@dataclass(frozen=True, slots=True)
class NodeUsage:
    name: str
    at_ns: int
    cpu_millicores: int
    memory_bytes: int
    cpu_capacity_millicores: int
    memory_capacity_bytes: int
    pods: int
    window_s: float = USAGE_PERIOD_S


async def publish_pod_usage(
    nc: Client,
    namespace: str,
    pod: str,
    containers: Mapping[str, ContainerUsage],
    *,
    at_ns: int | None = None,
    window_s: float = USAGE_PERIOD_S,
    timeout: float = 2.0,
) -> None:
    """Record one usage sample of a pod (every container's cpu and memory, averaged over
    ``window_s``)."""
    payload = {
        "at_ns": at_ns if at_ns is not None else time.time_ns(),
        "window_s": float(window_s),
        "containers": {
            name: {"cpu_millicores": int(u.cpu_millicores), "memory_bytes": int(u.memory_bytes)}
            for name, u in containers.items()
        },
    }
    await jsapi.jetstream(nc).publish(
        pod_metrics_subject(namespace, pod), msgpack.packb(payload), timeout=timeout
    )


async def publish_node_usage(
    nc: Client,
    node: str,
    *,
    cpu_millicores: int,
    memory_bytes: int,
    cpu_capacity_millicores: int,
    memory_capacity_bytes: int,
    pods: int,
    at_ns: int | None = None,
    window_s: float = USAGE_PERIOD_S,
    timeout: float = 2.0,
) -> None:
    """Record one usage sample of a node, with the capacity its percentages are taken of."""
    payload = {
        "at_ns": at_ns if at_ns is not None else time.time_ns(),
        "window_s": float(window_s),
        "cpu_millicores": int(cpu_millicores),
        "memory_bytes": int(memory_bytes),
        "cpu_capacity_millicores": int(cpu_capacity_millicores),
        "memory_capacity_bytes": int(memory_capacity_bytes),
        "pods": int(pods),
    }
    await jsapi.jetstream(nc).publish(
        node_metrics_subject(node), msgpack.packb(payload), timeout=timeout
    )


def decode_pod_usage(msg: Msg) -> PodUsage | None:
    """One pod sample as published on ``fleet.metrics.pod.<ns>.<pod>`` (None, logged: a
    sample that cannot be read, which the next one replaces)."""
    try:
        _, _, _, ns, name = msg.subject.split(".")
        data = msgpack.unpackb(msg.data, raw=False)
        containers = {
            cname: ContainerUsage(int(c["cpu_millicores"]), int(c["memory_bytes"]))
            for cname, c in data["containers"].items()
        }
        return PodUsage(
            decode_token(ns),
            decode_token(name),
            int(data["at_ns"]),
            containers,
            window_s=float(data.get("window_s", USAGE_PERIOD_S)),
        )
    except (ValueError, KeyError, TypeError, AttributeError, FleetError) as exc:
        log.warning("metrics.unreadable", subject=msg.subject, error=str(exc))
        return None


def pod_metrics_filter(namespace: str | None = None) -> str:
    """The subjects of every pod's samples (of ``namespace``, or all)."""
    return f"{METRICS_PREFIX}.pod.{'*' if namespace is None else encode_token(namespace)}.*"


@overload
async def latest_usage(
    nc: Client, kind: Literal["pod"], *, namespace: str | None = None
) -> list[PodUsage]: ...


@overload
async def latest_usage(
    nc: Client, kind: Literal["node"], *, namespace: str | None = None
) -> list[NodeUsage]: ...


async def latest_usage(
    nc: Client, kind: Literal["pod", "node"], *, namespace: str | None = None
) -> list[PodUsage] | list[NodeUsage]:
    """The latest sample of every pod (of ``namespace``, or all) or of every node, by name."""
    if kind == "pod":
        ns_token = "*" if namespace is None else encode_token(namespace)
        messages = await _read_to_end(
            nc,
            METRICS_STREAM,
            f"{METRICS_PREFIX}.pod.{ns_token}.*",
            ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )
        pods = [usage for msg in messages if (usage := decode_pod_usage(msg)) is not None]
        return sorted(pods, key=lambda p: (p.namespace, p.name))
    if kind == "node":
        messages = await _read_to_end(
            nc,
            METRICS_STREAM,
            f"{METRICS_PREFIX}.node.*",
            ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )
        nodes: list[NodeUsage] = []
        for msg in messages:
            try:
                data = msgpack.unpackb(msg.data, raw=False)
                nodes.append(
                    NodeUsage(
                        name=decode_token(msg.subject.rsplit(".", 1)[-1]),
                        at_ns=int(data["at_ns"]),
                        cpu_millicores=int(data["cpu_millicores"]),
                        memory_bytes=int(data["memory_bytes"]),
                        cpu_capacity_millicores=int(data["cpu_capacity_millicores"]),
                        memory_capacity_bytes=int(data["memory_capacity_bytes"]),
                        pods=int(data.get("pods", 0)),
                        window_s=float(data.get("window_s", USAGE_PERIOD_S)),
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError, FleetError) as exc:
                log.warning("metrics.unreadable", subject=msg.subject, error=str(exc))
        return sorted(nodes, key=lambda n: n.name)
    raise ValueError(f"usage is kept for pods and nodes, not {kind!r}")


# -- workload-published metrics (custom.metrics.k8s.io and external.metrics.k8s.io) -------------

MetricSource = Literal["pods", "objects", "external"]
MAX_SAMPLE_LABELS = 16
MAX_LABEL_TEXT = 256
MAX_FUTURE_S = 60.0
"""How far ahead of its arrival a sample's timestamp may be (clock skew); later is refused."""
MAX_SAMPLE_WINDOW_S = 3600.0


class BadMetricSample(ValueError):
    """A published metric sample its readers refuse (the reason says why)."""


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One value of a workload-published metric series, as the custom and external metrics
    APIs return one: the object it describes (a pod; an object's kind and name; nothing for
    an External metric), the metric's name and labels, the value in milli-units, and the
    window ending at ``at_ns`` it covers."""

    source: MetricSource
    namespace: str
    kind: str
    name: str
    metric: str
    milli_value: int
    labels: tuple[tuple[str, str], ...] = ()
    at_ns: int = 0
    window_s: float = USAGE_PERIOD_S

    @property
    def series(self) -> tuple[str, str, str, str, str, tuple[tuple[str, str], ...]]:
        """What identifies the series this sample belongs to (a newer sample replaces it)."""
        return (self.source, self.namespace, self.kind, self.name, self.metric, self.labels)


def custom_pod_metric_subject(namespace: str, pod: str, metric: str) -> str:
    """A Pods metric of one pod (``fleet.metrics.custom.<ns>.pods.<pod>.<metric>``)."""
    return (
        f"{CUSTOM_METRICS_PREFIX}.{encode_token(namespace)}.pods.{encode_token(pod)}."
        f"{encode_token(metric)}"
    )


def custom_object_metric_subject(namespace: str, kind: str, name: str, metric: str) -> str:
    """An Object metric describing one object
    (``fleet.metrics.custom.<ns>.objects.<kind>.<name>.<metric>``)."""
    return (
        f"{CUSTOM_METRICS_PREFIX}.{encode_token(namespace)}.objects.{encode_token(kind)}."
        f"{encode_token(name)}.{encode_token(metric)}"
    )


def external_metric_subject(namespace: str, metric: str) -> str:
    """An External metric of a namespace (``fleet.metrics.external.<ns>.<metric>``)."""
    return f"{EXTERNAL_METRICS_PREFIX}.{encode_token(namespace)}.{encode_token(metric)}"


CUSTOM_METRIC_FILTERS = (f"{CUSTOM_METRICS_PREFIX}.>", f"{EXTERNAL_METRICS_PREFIX}.>")
"""Every workload-published metric's subjects."""


def metric_sample_body(
    *,
    value: str | int | float,
    labels: Mapping[str, str] | None = None,
    at_ns: int | None = None,
    window_s: float | None = None,
) -> bytes:
    """A sample as published (JSON: what ``nats pub`` or any client can write by hand)."""
    body: dict[str, object] = {"value": value if isinstance(value, str) else str(value)}
    if labels:
        body["labels"] = dict(labels)
    if at_ns is not None:
        body["timestamp"] = format_stamp(at_ns)
    if window_s is not None:
        body["windowSeconds"] = window_s
    return json.dumps(body, separators=(",", ":")).encode()


def _parts_of(subject: str) -> tuple[MetricSource, str, str, str, str]:
    """(source, namespace, kind, name, metric) named by a custom or external subject."""
    tokens = subject.split(".")
    try:
        if tokens[:3] == ["fleet", "metrics", "external"] and len(tokens) == 5:
            return "external", decode_token(tokens[3]), "", "", decode_token(tokens[4])
        if tokens[:3] == ["fleet", "metrics", "custom"]:
            if len(tokens) == 7 and tokens[4] == "pods":
                ns, pod, metric = (decode_token(t) for t in (tokens[3], tokens[5], tokens[6]))
                return "pods", ns, "Pod", pod, metric
            if len(tokens) == 8 and tokens[4] == "objects":
                ns, kind, name, metric = (
                    decode_token(t) for t in (tokens[3], tokens[5], tokens[6], tokens[7])
                )
                return "objects", ns, kind, name, metric
    except FleetError as exc:
        raise BadMetricSample(f"subject {subject!r}: {exc}") from exc
    raise BadMetricSample(
        f"subject {subject!r} is not fleet.metrics.custom.<ns>.pods.<pod>.<metric>, "
        "fleet.metrics.custom.<ns>.objects.<kind>.<name>.<metric> nor "
        "fleet.metrics.external.<ns>.<metric>"
    )


def _labels_of(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise BadMetricSample("labels must be an object of strings")
    if len(raw) > MAX_SAMPLE_LABELS:
        raise BadMetricSample(f"more than {MAX_SAMPLE_LABELS} labels")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise BadMetricSample("labels must be an object of strings")
        if len(key) > MAX_LABEL_TEXT or len(value) > MAX_LABEL_TEXT:
            raise BadMetricSample(f"a label longer than {MAX_LABEL_TEXT} characters")
    return tuple(sorted(raw.items()))


def decode_metric_sample(subject: str, data: bytes, *, received_ns: int) -> MetricSample:
    """A published sample read from ``subject``: a JSON (or msgpack) object ``{"value":
    quantity, "labels": {...}, "timestamp": RFC 3339, "windowSeconds": n, "metric": name}``,
    all but ``value`` optional (the time defaults to ``received_ns``, the window to the usage
    period; ``metric``, when given, must be the subject's). Raises :class:`BadMetricSample`."""
    source, namespace, kind, name, metric = _parts_of(subject)
    if len(data) > CUSTOM_SAMPLE_MAX_BYTES:
        raise BadMetricSample(f"{len(data)} bytes, more than {CUSTOM_SAMPLE_MAX_BYTES}")
    try:
        body = json.loads(data) if data[:1] == b"{" else msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError) as exc:
        raise BadMetricSample(f"neither JSON nor msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise BadMetricSample("a sample is an object")
    if not namespace or (not name and source != "external") or not metric:
        raise BadMetricSample("an empty namespace, object or metric name in the subject")
    if body.get("metric", metric) != metric:
        raise BadMetricSample(f"metric {body.get('metric')!r} published on {metric!r}'s subject")
    raw = body.get("value")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise BadMetricSample('value must be a quantity ("250m", "12", 0.5)')
    try:
        quantity = parse_quantity(raw if isinstance(raw, str) else repr(raw))
    except (FleetError, ValueError) as exc:
        raise BadMetricSample(f"value {raw!r} is not a quantity") from exc
    milli = quantity.milli_value()
    if milli < 0:
        raise BadMetricSample(f"value {raw!r} is negative")
    at_ns = received_ns
    if body.get("timestamp") is not None:
        stamp = parse_stamp(body["timestamp"])
        if stamp is None:
            raise BadMetricSample(f"timestamp {body['timestamp']!r} is not RFC 3339")
        if stamp > received_ns + int(MAX_FUTURE_S * 1e9):
            raise BadMetricSample(f"timestamp {body['timestamp']!r} is in the future")
        at_ns = stamp
    window = body.get("windowSeconds", USAGE_PERIOD_S)
    if isinstance(window, bool) or not isinstance(window, int | float):
        raise BadMetricSample("windowSeconds must be a number")
    if not 0 < window <= MAX_SAMPLE_WINDOW_S:
        raise BadMetricSample(f"windowSeconds must be in (0, {MAX_SAMPLE_WINDOW_S:g}]")
    return MetricSample(
        source=source, namespace=namespace, kind=kind, name=name, metric=metric,
        milli_value=milli, labels=_labels_of(body.get("labels")), at_ns=at_ns,
        window_s=float(window),
    )  # fmt: skip


# -- reading a subject to its end ------------------------------------------------------------------


async def _read_to_end(
    nc: Client,
    stream: str,
    subject: str,
    config: ConsumerConfig,
    on_message: Callable[[Msg], None] | None = None,
    *,
    timeout: float = 30.0,
) -> list[Msg]:
    """Every message an ordered consumer with ``config`` delivers up to the end of the stream
    as of now (kept in a list unless ``on_message`` takes them)."""
    out: list[Msg] = []
    done = asyncio.Event()
    delivered = 0

    async def handle(msg: Msg) -> None:
        nonlocal delivered
        if done.is_set():
            return
        delivered += 1
        if on_message is None:
            out.append(msg)
        else:
            on_message(msg)
        if msg.metadata.num_pending == 0:
            done.set()

    sub = await jsapi.jetstream(nc).subscribe(
        subject, stream=stream, cb=handle, ordered_consumer=True, config=config
    )
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and delivered >= (info.delivered.consumer_seq or 0):
            done.set()
        async with asyncio.timeout(timeout):
            await done.wait()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out


# -- logs ------------------------------------------------------------------------------------------


def log_headers(
    *, pod_uid: str, restart: int, stream: str, offset: int, data: bytes, partial: bool
) -> dict[str, str]:
    headers = {
        HDR_POD_UID: pod_uid,
        HDR_RESTART: str(restart),
        HDR_STREAM: stream,
        HDR_OFFSET: str(offset),
        HDR_LINES: str(data.count(b"\n")),
    }
    if partial:
        headers[HDR_PARTIAL] = "1"
    return headers


def plan_chunks(data: bytes, *, limit: int = MAX_CHUNK_BYTES, final: bool = False) -> list[int]:
    """Where to cut ``data`` (the unshipped bytes of an output file) into messages: the end of
    each chunk, relative to ``data``. Chunks hold complete lines up to ``limit`` bytes; a line
    longer than ``limit`` is cut into ``limit``-sized pieces; an unfinished last line waits for
    its newline unless ``final`` (the container has exited)."""
    ends: list[int] = []
    start, size = 0, len(data)
    while start < size:
        window = min(start + limit, size)
        cut = data.rfind(b"\n", start, window)
        if cut != -1:
            end = cut + 1
        elif window - start == limit:
            end = window
        elif final:
            end = size
        else:
            break
        ends.append(end)
        start = end
    return ends


@dataclass(slots=True)
class _Chunk:
    seq: int
    uid: str
    restart: int
    stream: str
    offset: int
    lines: int
    partial: bool
    at_ns: int = 0
    """When the chunk was stored on the stream (ns since the epoch)."""


def _chunk_info(msg: Msg) -> _Chunk | None:
    headers = msg.headers or {}
    try:
        return _Chunk(
            seq=msg.metadata.sequence.stream,
            uid=headers[HDR_POD_UID],
            restart=int(headers[HDR_RESTART]),
            stream=headers.get(HDR_STREAM, "stdout"),
            offset=int(headers.get(HDR_OFFSET, "-1")),
            lines=int(headers.get(HDR_LINES, "0")),
            partial=headers.get(HDR_PARTIAL) == "1",
            at_ns=_shipped_ns(msg),
        )
    except (KeyError, ValueError) as exc:
        log.warning("logs.unreadable_chunk", subject=msg.subject, error=str(exc))
        return None


@dataclass
class _Dedup:
    """Drops a chunk resent after an agent restart (same file, offset already seen) even when
    it came after JetStream's duplicate window: a resend repeats the original's boundaries."""

    seen: dict[tuple[str, int, str], int] = field(default_factory=dict)

    def fresh(self, chunk: _Chunk) -> bool:
        key = (chunk.uid, chunk.restart, chunk.stream)
        if chunk.offset < 0:
            return True
        if chunk.offset <= self.seen.get(key, -1):
            return False
        self.seen[key] = chunk.offset
        return True


async def read_logs(
    nc: Client,
    namespace: str,
    pod: str,
    container: str,
    *,
    pod_uid: str | None = None,
    restart_count: int | None = None,
    previous: bool = False,
    tail: int | None = None,
    follow: bool = False,
) -> AsyncIterator[bytes]:
    """The output of one container instance as chunks of lines (stdout and stderr interleaved
    in the order they were shipped): :func:`open_logs` without the times."""
    chunks = await open_logs(
        nc, namespace, pod, container, pod_uid=pod_uid, restart_count=restart_count,
        previous=previous, tail=tail, follow=follow,
    )  # fmt: skip
    try:
        async for _, data in chunks:
            yield data
    finally:
        await chunks.aclose()


async def open_logs(
    nc: Client,
    namespace: str,
    pod: str,
    container: str,
    *,
    pod_uid: str | None = None,
    restart_count: int | None = None,
    previous: bool = False,
    tail: int | None = None,
    follow: bool = False,
    since_ns: int | None = None,
) -> AsyncIterator[tuple[int, bytes]]:
    """The output of one container instance as (time shipped in ns, chunk of lines).

    The instance is the current one of pod ``pod_uid`` (the uid of the newest chunk if not
    given): the highest of ``restart_count`` (the pod's status, if known) and the restart
    counts present; with ``previous``, the one before it (``LogsNotFound`` if there is none,
    raised here, before anything is read). ``since_ns`` drops chunks shipped before it;
    ``tail`` then keeps the last N lines (None: all). ``follow`` keeps yielding new output
    until that instance is replaced by a newer one (or the caller stops iterating).
    """
    subject = log_subject(namespace, pod, container)
    index: list[_Chunk] = []

    def add(msg: Msg) -> None:
        chunk = _chunk_info(msg)
        if chunk is not None:
            index.append(chunk)

    await _read_to_end(
        nc,
        LOGS_STREAM,
        subject,
        ConsumerConfig(deliver_policy=DeliverPolicy.ALL, headers_only=True),
        add,
    )
    last_seq = max((c.seq for c in index), default=0)
    uid = pod_uid if pod_uid is not None else (index[-1].uid if index else None)
    present = {c.restart for c in index if c.uid == uid}
    known = [*present, *([restart_count] if restart_count is not None else [])]
    current = max(known, default=0)
    if previous:
        if not known or current < 1:
            raise LogsNotFound(
                f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        target = current - 1
    else:
        target = current
    # Without anything known, follow the first instance of the pod that shows up.
    locked = bool(known) or previous

    dedup = _Dedup()
    selected = [
        c
        for c in index
        if c.uid == uid
        and c.restart == target
        and dedup.fresh(c)
        and (since_ns is None or c.at_ns >= since_ns)
    ]
    start, skip = _tail_start(selected, tail)
    wanted = {c.seq for c in selected[start:]}
    last_wanted = max(wanted, default=0)
    first_seq = selected[start].seq if start < len(selected) else last_seq + 1

    async def stream() -> AsyncIterator[tuple[int, bytes]]:
        nonlocal uid, target, locked, skip
        if not follow and not wanted:
            return
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def deliver(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await jsapi.jetstream(nc).subscribe(
            subject,
            stream=LOGS_STREAM,
            cb=deliver,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, first_seq)
            ),
        )
        try:
            while True:
                msg = await queue.get()
                seq = msg.metadata.sequence.stream
                if seq <= last_seq:
                    if seq in wanted:
                        data = msg.data
                        if skip:
                            data = _drop_lines(data, skip)
                            skip = 0
                        if data:
                            yield _shipped_ns(msg), data
                    if not follow and seq >= last_wanted:
                        return
                    continue
                chunk = _chunk_info(msg)
                if chunk is None:
                    continue
                if uid is None:
                    uid = chunk.uid
                if chunk.uid != uid:
                    if pod_uid is None:
                        return  # the pod was re-created: what was followed has ended
                    continue
                if not locked:
                    target, locked = chunk.restart, True
                if chunk.restart > target:
                    return  # the instance followed was replaced by a newer one
                if chunk.restart == target and dedup.fresh(chunk):
                    yield chunk.at_ns, msg.data
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    return stream()


def _shipped_ns(msg: Msg) -> int:
    """When JetStream stored ``msg`` (ns since the epoch): the time of its lines."""
    stamp = msg.metadata.timestamp
    return int(stamp.timestamp() * 1_000_000) * 1000


def _tail_start(chunks: list[_Chunk], tail: int | None) -> tuple[int, int]:
    """(index of the first chunk to print, lines to drop from its start) for the last ``tail``
    lines of ``chunks``."""
    if tail is None or tail < 0:
        return 0, 0
    if tail == 0:
        return len(chunks), 0
    count = 0
    for i in range(len(chunks) - 1, -1, -1):
        count += chunks[i].lines
        if count >= tail:
            start, skip = i, count - tail
            break
    else:
        return 0, 0
    if skip == 0:
        # The first line printed may have begun in earlier pieces of the same file.
        while start > 0:
            earlier = [c for c in chunks[:start] if c.stream == chunks[start].stream]
            if not earlier or not earlier[-1].partial:
                break
            start = chunks.index(earlier[-1])
    return start, skip


def _drop_lines(data: bytes, count: int) -> bytes:
    pos = 0
    for _ in range(count):
        found = data.find(b"\n", pos)
        if found == -1:
            return b""
        pos = found + 1
    return data[pos:]
