"""``fleetlog logs``, ``top``, ``history`` and ``events``: watching what the cluster does.

Why this exists: these commands only read, from two kinds of source. ``logs`` and ``top`` read
the age-limited telemetry streams (``streams.telemetry``, imported when they run); ``history``
and ``events`` read the event log itself, as a table or as JSON lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import click

from core.errors import FleetError, ValidationFailed
from core.kubeapi.metrics import STALE_AFTER_S
from ops import render
from ops.cliargs import is_namespaced, labels_of, parse_since, resolve_kind, split_ref
from ops.clitools import Failure, open_session, run
from streams.subjects import event_filter

SIMULATED_NODE_LABEL = ("type", "simulated")
"""The label ``fleetlog sim`` gives its nodes (``handlers.simnodes.SimNodeSpec``; a test keeps
the two in agreement): no container runs on them, so their pods have no output."""


def _simulated(node: dict[str, Any]) -> bool:
    key, value = SIMULATED_NODE_LABEL
    return ((node["manifest"].get("metadata") or {}).get("labels") or {}).get(key) == value


SELECTOR_TAIL = 10
"""kubectl's ``--tail`` when ``-l`` picks the pods: the last ten lines of each."""


@click.command()
@click.argument("pod", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", default=None, help="Which container (needed if several).")
@click.option("-l", "--selector", default=None, help="The pods whose labels match (app=web).")
@click.option("--prefix", is_flag=True, help="Begin each line with [pod/NAME/CONTAINER].")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("-p", "--previous", is_flag=True, help="The previous (terminated) instance.")
@click.option(
    "--tail",
    type=int,
    default=None,
    help="Lines of recent output; -1: all [default: all, or 10 a pod with -l].",
)
@click.pass_context
@run
async def logs(
    ctx: click.Context,
    pod: str | None,
    namespace: str,
    container: str | None,
    selector: str | None,
    prefix: bool,
    follow: bool,
    previous: bool,
    tail: int | None,
) -> None:
    """Print a container's output (POD or pod/POD, or every pod ``-l`` selects); it travels on
    an age-limited stream, so this works from any machine that reaches NATS."""
    import asyncio

    from core.meta.labels import parse_selector_text

    if (pod is None) == (selector is None):
        raise ValidationFailed("say which pods: logs POD, or logs -l SELECTOR")
    if pod is not None and "/" in pod:
        kind, pod = split_ref(pod)
        if kind != "Pod":
            raise ValidationFailed(f"logs are read from pods, not {kind.lower()}s")
    if tail is None:
        tail = SELECTOR_TAIL if selector is not None else -1
    async with open_session(ctx) as s:
        if pod is not None:
            items = await s.query("Pod", namespace=namespace, name=pod)
            if not items:
                raise FleetError(f'pods "{pod}" not found', code="not_found")
        else:
            chosen = parse_selector_text(selector or "")
            every = await s.query("Pod", namespace=namespace)
            items = sorted(
                (i for i in every if chosen.matches(labels_of(i))), key=lambda i: i["name"]
            )
            if not items:
                click.echo(f"No resources found in {namespace} namespace.", err=True)
                return
        readers = []
        for item in items:
            reader = await _log_reader(s, item, container, strict=pod is not None)
            if reader is not None:
                readers.append(reader)

        async def show(item: dict[str, Any], name: str, restarts: int | None) -> None:
            mark = f"[pod/{item['name']}/{name}] " if prefix else ""
            chunks = _log_chunks(
                s, namespace=namespace, pod=item["name"], container=name,
                pod_uid=item["uid"], restart_count=restarts,
                previous=previous, tail=tail if tail >= 0 else None, follow=follow,
            )  # fmt: skip
            try:
                async for chunk in chunks:
                    if mark:
                        lines = chunk.decode(errors="replace").splitlines(keepends=True)
                        click.echo("".join(mark + line for line in lines), nl=False)
                    else:
                        click.echo(chunk, nl=False)
            finally:
                await chunks.aclose()

        if follow and len(readers) > 1:
            async with asyncio.TaskGroup() as group:
                for reader in readers:
                    group.create_task(show(*reader))
        else:
            for reader in readers:
                await show(*reader)


def _acting_as(s: Any) -> str | None:
    """Whom the session's reads act as when it is not its own identity (``--as``)."""
    return s.commands.actor if s.commands.impersonate else None


async def _log_chunks(
    s: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    pod_uid: str,
    restart_count: int | None,
    previous: bool,
    tail: int | None,
    follow: bool,
) -> AsyncIterator[bytes]:
    """A container's output: through ``up``'s stream read service (RBAC's ``get pods/log``)
    when the session signs its reads, else (or when no service answers) from the logs stream
    itself."""
    from projections.streamreads import NoService, read_stream, serves_signed_reads
    from streams.telemetry import read_logs

    if serves_signed_reads(s.nc):
        request = {
            "op": "logs", "namespace": namespace, "pod": pod, "container": container,
            "pod_uid": pod_uid, "restart_count": restart_count, "previous": previous,
            "tail": tail, "follow": follow,
        }  # fmt: skip
        served = read_stream(s.nc, request, impersonate=_acting_as(s))
        try:
            async for _, data in served:
                yield data
            return
        except NoService:
            pass
        finally:
            await served.aclose()
    direct = read_logs(
        s.nc, namespace, pod, container, pod_uid=pod_uid, restart_count=restart_count,
        previous=previous, tail=tail, follow=follow,
    )  # fmt: skip
    try:
        async for data in direct:
            yield data
    finally:
        await direct.aclose()


async def _log_reader(
    s: Any, item: dict[str, Any], container: str | None, *, strict: bool
) -> tuple[dict[str, Any], str, int | None] | None:
    """What to read of one pod: it, its container and restart count. A pod on a simulated node
    has no output: refused when it was asked for by name, skipped with a note otherwise."""
    from ops.client import pick_container

    name, restarts = pick_container(item, container)
    node_name = (item["manifest"].get("spec") or {}).get("nodeName")
    if node_name:
        try:
            nodes = await s.query("Node", name=node_name)
        except FleetError as exc:
            if exc.code != "forbidden":
                raise
            nodes = []  # a reader who may not see nodes reads what the pod shipped, if anything
        if nodes and _simulated(nodes[0]):
            why = (
                f'pod "{item["name"]}" is on node "{node_name}", a simulated node (fleetlog sim): '
                f'it runs no containers, so container "{name}" has no logs'
            )
            if strict:
                raise FleetError(why, code="bad_request")
            click.echo(f"note: {why}", err=True)
            return None
    return item, name, restarts


TOP_STALE_AFTER_S = STALE_AFTER_S
"""metrics-server's horizon, kept by the Kubernetes door too (``core.kubeapi.metrics``)."""


@click.command()
@click.argument("kind")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.pass_context
@run
async def top(ctx: click.Context, kind: str, namespace: str, all_namespaces: bool) -> None:
    """Current cpu and memory usage of nodes or pods (top nodes, top pods)."""
    resolved = resolve_kind(kind)
    if resolved not in ("Node", "Pod"):
        raise ValidationFailed(f"top shows nodes or pods, not {kind}")
    scope = None if all_namespaces else namespace
    async with open_session(ctx) as s:
        served = await _served_usage(s, "node" if resolved == "Node" else "pod", scope)
        if resolved == "Node":
            nodes = served if served is not None else await _direct_node_usage(s)
            if not nodes:
                raise Failure("metrics not available yet")
            click.echo(render.top_nodes_table(nodes))
            return
        pods = served if served is not None else await _direct_pod_usage(s, scope)
        if not pods:
            if scope is not None and await _any_pod_usage(s, scope, served=served is not None):
                click.echo(f"No resources found in {scope} namespace.", err=True)
                return
            raise Failure("metrics not available yet")
    click.echo(render.top_pods_table(pods, show_namespace=all_namespaces))


async def _served_usage(s: Any, kind: str, namespace: str | None) -> list[Any] | None:
    """The live objects' recent samples through ``up``'s stream read service (RBAC's ``list``
    on ``pods``/``nodes.metrics.k8s.io``), or None when the session reads the stream itself."""
    from projections.streamreads import NoService, read_stream, serves_signed_reads
    from streams.telemetry import ContainerUsage, NodeUsage, PodUsage

    if not serves_signed_reads(s.nc):
        return None
    request = {"op": "usage", "kind": kind, "namespace": namespace}
    try:
        items = [item async for item in read_stream(s.nc, request, impersonate=_acting_as(s))]
    except NoService:
        return None
    if kind == "node":
        return [NodeUsage(**item) for item in items]
    return [
        PodUsage(**{
            **item,
            "containers": {n: ContainerUsage(**c) for n, c in item["containers"].items()},
        })
        for item in items
    ]  # fmt: skip


async def _direct_node_usage(s: Any) -> list[Any]:
    from streams.telemetry import latest_usage

    # Like metrics-server: only objects that still exist, and only recent samples.
    fresh_ns = time.time_ns() - int(TOP_STALE_AFTER_S * 1e9)
    live = {item["name"] for item in await s.query("Node")}
    samples = await latest_usage(s.nc, "node")
    return [n for n in samples if n.name in live and n.at_ns >= fresh_ns]


async def _direct_pod_usage(s: Any, scope: str | None) -> list[Any]:
    from streams.telemetry import latest_usage

    fresh_ns = time.time_ns() - int(TOP_STALE_AFTER_S * 1e9)
    live = {(i["namespace"], i["name"]) for i in await s.query("Pod", namespace=scope)}
    return [
        p
        for p in await latest_usage(s.nc, "pod", namespace=scope)
        if (p.namespace, p.name) in live and p.at_ns >= fresh_ns
    ]


async def _any_pod_usage(s: Any, scope: str, *, served: bool) -> bool:
    """Whether there is usage to wait for beside the empty namespace ``scope``: any pod's
    samples at all (read directly), or, through the service (which shows a reader only what it
    may list), any pod in ``scope``."""
    from streams.telemetry import latest_usage

    if served:
        return not await s.query("Pod", namespace=scope)
    return bool(await latest_usage(s.nc, "pod"))


@click.command()
@click.argument("ref")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def history(ctx: click.Context, ref: str, namespace: str, output: str) -> None:
    """Every event of one object (KIND/NAME), oldest first, across deletes and re-creates."""
    kind, name = split_ref(ref)
    scope = namespace if is_namespaced(kind) else ""
    async with open_session(ctx) as s:
        events = await s.history(kind, scope, name)
    if not events:
        raise FleetError(f"no events for {render.object_name(kind, scope, name)}", code="not_found")
    if output == "json":
        for ev in events:
            click.echo(_json_line(ev))
        return
    click.echo(render.table(render.HISTORY_HEADERS, render.history_rows(events)))


async def _served_events(s: Any, request: dict[str, Any], emit: Any) -> bool:
    """Feed ``emit`` the events ``up``'s stream read service answers (RBAC's ``list events``),
    until the end of the log or, following, until interrupted; False when the session reads
    the log itself (no credentials, or no service answers)."""
    from projections.streamreads import NoService, read_stream, serves_signed_reads

    if not serves_signed_reads(s.nc):
        return False
    served = read_stream(s.nc, request, impersonate=_acting_as(s))
    try:
        async for seq, subject, stored_ns, data in served:
            event = s.store.decoded(seq, subject, stored_ns, data)
            if event is not None:
                emit(event)
    except NoService:
        return False
    finally:
        await served.aclose()
    return True


def _json_line(event: Any) -> str:
    return json.dumps(render.event_dict(event), default=str)


@click.command()
@click.option("--kind", "kind", default=None, help="Only this kind.")
@click.option("--name", default=None, help="Only objects with this name.")
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option("--type", "event_type", default=None, help="Only this event type (e.g. PodCreated).")
@click.option("--since", default=None, help="Start at a duration ago (10m, 2h) or a time.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def events(
    ctx: click.Context,
    kind: str | None,
    name: str | None,
    namespace: str | None,
    event_type: str | None,
    since: str | None,
    follow: bool,
    output: str,
) -> None:
    """Events from the log, filtered; with --follow, as they happen."""
    import asyncio

    resolved = resolve_kind(kind) if kind else None
    if resolved and not is_namespaced(resolved) and namespace is None:
        namespace = ""
    subject = event_filter(resolved, namespace, name)
    start = parse_since(since, datetime.now(tz=UTC)) if since else None
    rows: list[list[str]] = []
    printer = render.event_row_printer()  # rows printed as they come line up

    def emit(event: Any) -> None:
        if event_type and event.envelope.type != event_type:
            return
        if output == "json":
            click.echo(_json_line(event))
        elif follow:
            click.echo(printer.line(render.event_row(event)))
        else:
            rows.append(render.event_row(event))

    async with open_session(ctx) as s:
        if follow and output == "table":
            click.echo(printer.header())
        request = {
            "op": "events", "kind": resolved, "namespace": namespace, "name": name,
            # Seconds as a float: a far-off --since in ns would not fit msgpack's 64 bits.
            "since_s": start.timestamp() if start is not None else None,
            "follow": follow,
        }  # fmt: skip
        if await _served_events(s, request, emit):
            pass
        elif follow:
            sub = await s.store.subscribe(
                emit, filter_subject=subject, from_time=start, new_only=start is None
            )
            try:
                await asyncio.Future()
            finally:
                await sub.unsubscribe()
        else:
            await s.store.replay(emit, filter_subject=subject, from_time=start)
    if output == "table":
        if rows:
            click.echo(render.table(render.EVENT_HEADERS, rows))
        else:
            click.echo("No events found.", err=True)
