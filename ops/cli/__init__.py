"""The ``fleetlog`` command line: start a cluster, send commands, read state and history.

Every subcommand is a thin shell over a :class:`ops.client.Session`: writes go through the
command gateway (so they get the same validation, idempotency and audit as any other client),
reads come from the cluster projection (``get``, ``describe``) or straight from the log
(``events``, ``history``). Expected failures print one line, ``error: …``, and exit non-zero.

Only light modules are imported here, so that ``fleetlog --help`` and a read command start
quickly: the NATS session comes from ``ops.clitools.open_session``, the time-travel folds
(``ops.timetravel``), the rollout rules (``ops.rollout``), the YAML parser, the write path's
errors and even ``asyncio`` (a good part of the time ``--help`` took) are imported by the
commands that use them, and ``tests/unit/test_cli_startup.py`` keeps it so.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from core.errors import FleetError, ValidationFailed
from ops import render
from ops.audit_cli import audit, why
from ops.cliargs import (
    DEFAULT_SERVER,
    POINT_HELP,
    default_actor,
    is_namespaced,
    parse_duration,
    parse_since,
    resolve_kind,
    split_ref,
)
from ops.clitools import Failure, open_session, run
from streams.subjects import event_filter

if TYPE_CHECKING:
    import asyncio

    from ops import timetravel
    from ops.client import Session

T = TypeVar("T")
OUTPUTS = click.Choice(["table", "wide", "yaml", "json"])
AT_OPTION = click.option(
    "--at", default=None, metavar="TIME|SEQ", help=f"As it was at {POINT_HELP}."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    envvar="FLEETLOG_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="NATS URL of the cluster (or set FLEETLOG_SERVER).",
)
@click.option(
    "--as",
    "actor",
    envvar="FLEETLOG_USER",
    default=None,
    help="Identity to act as (until authentication exists, the stated identity).",
)
@click.option("--log-level", default="warning", show_default=True)
@click.pass_context
def main(ctx: click.Context, server: str, actor: str | None, log_level: str) -> None:
    """fleetlog: a container orchestrator whose source of truth is an event log."""
    # Logging is set up by ``run`` when a command runs (not for --help), at this level.
    ctx.obj = {"server": server, "actor": actor or default_actor(), "log_level": log_level}


# -- up -------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the log and snapshots live [default: ~/.local/share/fleetlog].",
)
@click.option("--nats-url", default=None, help="Use this NATS server instead of an embedded one.")
@click.option("--port", default=4222, show_default=True, help="Port of the embedded server.")
@click.option(
    "--no-scheduler",
    is_flag=True,
    help="Run no scheduler here (run `fleetlog scheduler` replicas elsewhere).",
)
@click.option(
    "--node-grace",
    "node_grace",
    default=50.0,
    show_default=True,
    help="Seconds without a heartbeat before a node becomes NotReady (Unknown).",
)
@click.option(
    "--no-agent", is_flag=True, help="Run no node agent here (this machine is not a node)."
)
@click.option("--node-name", default=None, help="This machine's node name [default: hostname].")
@click.pass_context
def up(
    ctx: click.Context,
    data_dir: Path | None,
    nats_url: str | None,
    port: int,
    no_scheduler: bool,
    node_grace: float,
    no_agent: bool,
    node_name: str | None,
) -> None:
    """Run the control plane in the foreground (embedded nats-server unless --nats-url)."""
    from ops.up import UpOptions, default_data_dir
    from ops.up import up as run_up

    if ctx.parent and ctx.parent.params.get("log_level") == "warning":
        ctx.obj["log_level"] = "info"
    options = UpOptions(
        data_dir=data_dir or default_data_dir(),
        nats_url=nats_url,
        port=port,
        node_grace_seconds=node_grace,
        scheduler=not no_scheduler,
        agent=not no_agent,
        node_name=node_name,
    )
    click.echo(
        f"fleetlog up: data in {options.data_dir}, server {nats_url or f'nats://127.0.0.1:{port}'}",
        err=True,
    )
    run(run_up)(options)


@main.command()
@click.option("--name", default=None, help="Node name (default: this host's name).")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=None,
    help="Where containers' state and output live (default: ~/.fleetlog/agent/NAME).",
)
@click.option("--cpu", default=None, help="Declared cpu capacity (default: this machine's).")
@click.option("--memory", default=None, help="Declared memory (default: this machine's).")
@click.option("--pods", default="110", show_default=True)
@click.option("-l", "--label", "labels", multiple=True, help="Extra node label KEY=VALUE.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.pass_context
@run
async def agent(
    ctx: click.Context,
    name: str | None,
    root: Path | None,
    cpu: str | None,
    memory: str | None,
    pods: str,
    labels: tuple[str, ...],
    heartbeat: float,
) -> None:
    """Join this machine to a cluster as a node: run the pods bound to it as processes."""
    from handlers.agent.agent import NodeAgent
    from handlers.agent.node import NodeCapacity, default_node_name, machine_capacity
    from streams.connection import connect
    from streams.definitions import ensure_streams
    from streams.eventstore import EventStore

    node = name or default_node_name()
    machine = machine_capacity()
    capacity = NodeCapacity(cpu or machine.cpu, memory or machine.memory, pods)
    extra = dict(label.split("=", 1) for label in labels if "=" in label)
    nc = await connect(ctx.obj["server"], name=f"fleetlog-agent-{node}")
    await ensure_streams(nc)  # idempotent: an agent may start before any `fleetlog up`
    try:
        async with EventStore(nc) as store:
            node_agent = NodeAgent(
                nc, store, name=node, root=root or Path.home() / ".fleetlog" / "agent" / node,
                capacity=capacity, labels=extra, heartbeat_seconds=heartbeat,
            )  # fmt: skip
            await _until_signal(
                node_agent.run,
                f"agent for node {node} ready (Ctrl-C stops the agent, not its pods)",
            )
    finally:
        await nc.close()


async def _until_signal(
    role: Callable[[asyncio.Event], Awaitable[None]], ready_message: str
) -> None:
    """Run a long-lived role in the foreground: say ``ready_message`` once it is ready, stop it
    on SIGINT/SIGTERM, and let its own failure (before or after ready) end the process."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready = asyncio.Event()
    running = asyncio.create_task(role(ready))
    try:
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if running.done():
            running.result()
        click.echo(ready_message, err=True)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.done():
            running.result()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@main.command()
@click.option("--nodes", "count", default=10, show_default=True, help="How many nodes.")
@click.option("--prefix", default="sim-node", show_default=True, help="Node names: PREFIX-0 …")
@click.option("--cpu", default="4", show_default=True)
@click.option("--memory", default="32Gi", show_default=True)
@click.option("--pods", default="110", show_default=True)
@click.option("--zones", default=3, show_default=True, help="Spread over this many zone labels.")
@click.option("-l", "--label", "labels", multiple=True, help="Extra label KEY=VALUE.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.option(
    "--start-delay",
    default=1.0,
    show_default=True,
    help="Seconds after a pod is bound to one of these nodes before it is Running.",
)
@click.pass_context
@run
async def sim(
    ctx: click.Context,
    count: int,
    prefix: str,
    cpu: str,
    memory: str,
    pods: str,
    zones: int,
    labels: tuple[str, ...],
    heartbeat: float,
    start_delay: float,
) -> None:
    """Run simulated nodes (kwok-like) in the foreground: register them, keep them alive, and
    move the pods bound to them to Running after --start-delay."""
    import asyncio

    from handlers.simnodes import SimNodeSpec, SimulatedNodes, SimulatedPods
    from streams.connection import connect
    from streams.eventstore import EventStore

    extra = dict(label.split("=", 1) for label in labels if "=" in label)
    spec = SimNodeSpec(prefix=prefix, cpu=cpu, memory=memory, pods=pods, labels=extra, zones=zones)
    nc = await connect(ctx.obj["server"], name="fleetlog-sim")
    try:
        async with EventStore(nc) as store:
            nodes = await SimulatedNodes.create(nc, spec, count)
            await nodes.register()
            names = nodes.names
            runner = SimulatedPods(store, names.__contains__, start_delay=start_delay)
            click.echo(
                f"{count} simulated nodes {prefix}-0…{prefix}-{count - 1} registered; "
                f"heartbeating, bound pods Running after {start_delay:g}s (Ctrl-C to stop)",
                err=True,
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(nodes.keep_alive(heartbeat))
                tasks.create_task(runner.run())
    finally:
        await nc.close()


@main.command()
@click.option(
    "--name",
    "identity",
    default="default-scheduler",
    show_default=True,
    help="This replica's identity (recorded as the actor of its bindings).",
)
@click.pass_context
@run
async def scheduler(ctx: click.Context, identity: str) -> None:
    """Run one scheduler replica against the cluster (any number may run at once)."""
    from handlers.scheduler import Scheduler
    from streams.connection import connect
    from streams.eventstore import EventStore

    nc = await connect(ctx.obj["server"], name=f"fleetlog-scheduler-{identity}")
    try:
        async with EventStore(nc) as store:
            replica = Scheduler(nc, store, identity=identity)
            await _until_signal(replica.run, f"scheduler {identity} ready")
            click.echo(
                f"scheduler {identity} stats: bound={replica.bound} conflicts={replica.conflicts}",
                err=True,
            )
    finally:
        await nc.close()


# -- writes ---------------------------------------------------------------------------------------


def _read_documents(path: str) -> list[dict[str, Any]]:
    import yaml  # only ``apply`` reads YAML; the other commands should not pay for loading it

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ValidationFailed(f"cannot read {path}: {exc.strerror}") from exc
    try:
        loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{path} is not valid YAML: {exc}") from exc
    documents: list[dict[str, Any]] = []
    for index, doc in enumerate(loaded):
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            documents += doc["items"]
        elif isinstance(doc, dict):
            documents.append(doc)
        else:
            raise ValidationFailed(f"{path}: document {index + 1} is not a mapping")
    return documents


def _doc_name(doc: dict[str, Any]) -> str:
    kind = str(doc.get("kind", "?")).lower()
    name = (
        (doc.get("metadata") or {}).get("name", "?")
        if isinstance(doc.get("metadata"), dict)
        else "?"
    )
    return f"{kind}/{name}"


@main.command()
@click.option("-f", "--filename", "path", required=True, help="Manifest file, or - for stdin.")
@click.pass_context
@run
async def apply(ctx: click.Context, path: str) -> None:
    """Create or update objects from a (multi-document) YAML manifest."""
    documents = _read_documents(path)
    failures = 0
    async with open_session(ctx) as s:
        for doc in documents:
            try:
                kind = resolve_kind(str(doc.get("kind", "")))
                outcome = await s.commands.send(kind, "apply", {"manifest": doc})
            except FleetError as exc:
                failures += 1
                click.echo(f"error: {_doc_name(doc)}: {exc}", err=True)
                continue
            if outcome.unchanged:
                verb = "unchanged"
            elif any(e.endswith("Created") for e in outcome.events):
                verb = "created"
            else:
                verb = "configured"
            click.echo(f"{_doc_name(doc)} {verb}")
    if failures:
        raise Failure(f"{failures} of {len(documents)} objects were not applied")


CASCADE_POLICIES = {
    "background": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "true": "Background",
    "false": "Orphan",
}
"""kubectl delete's ``--cascade`` values and the propagation policy each one asks for."""


@main.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-f", "--filename", "path", default=None, help="Delete the objects in this manifest.")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--reason", default="", help="Recorded with the deletion.")
@click.option(
    "--cascade",
    type=click.Choice(sorted(CASCADE_POLICIES), case_sensitive=False),
    default="background",
    show_default=True,
    help="What becomes of dependents (objects whose ownerReferences name this one): "
    "background/foreground let the garbage collector delete them, orphan keeps them "
    "(true/false are kubectl's deprecated spellings of background/orphan).",
)
@click.pass_context
@run
async def delete(
    ctx: click.Context,
    kind: str | None,
    name: str | None,
    path: str | None,
    namespace: str,
    reason: str,
    cascade: str,
) -> None:
    """Delete an object (KIND NAME or KIND/NAME) or every object in a manifest (-f)."""
    from streams.commandbus import CommandFailed

    policy = CASCADE_POLICIES[cascade.lower()]
    targets: list[tuple[str, str, str]] = []
    if path:
        for doc in _read_documents(path):
            doc_kind = resolve_kind(str(doc.get("kind", "")))
            meta = doc.get("metadata") or {}
            targets.append((doc_kind, meta.get("namespace", namespace), meta.get("name", "")))
    elif kind and "/" in kind and not name:
        resolved, ref_name = split_ref(kind)
        targets.append((resolved, namespace, ref_name))
    elif kind and name:
        targets.append((resolve_kind(kind), namespace, name))
    else:
        raise ValidationFailed("say what to delete: KIND NAME, KIND/NAME or -f FILE")
    deleted_namespaces: set[str] = set()
    async with open_session(ctx) as s:
        for target_kind, target_ns, target_name in targets:
            body = {
                "name": target_name,
                "namespace": target_ns,
                "reason": reason,
                "propagationPolicy": policy,
            }
            try:
                await s.commands.send(target_kind, "delete", body)
            except CommandFailed as exc:
                # Deleting a namespace deletes what is in it (the garbage collector may have
                # got there first): an object of a namespace this command deleted is gone.
                if exc.code != "not_found" or target_ns not in deleted_namespaces:
                    raise
                click.echo(
                    f'{target_kind.lower()} "{target_name}" deleted (with namespace "{target_ns}")'
                )
                continue
            if target_kind == "Namespace":
                deleted_namespaces.add(target_name)
            click.echo(f'{target_kind.lower()} "{target_name}" deleted')


@main.command()
@click.argument("ref")
@click.option("--replicas", type=int, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--reason", default="", help="Recorded in the ScaledTo event.")
@click.pass_context
@run
async def scale(ctx: click.Context, ref: str, replicas: int, namespace: str, reason: str) -> None:
    """Set the replica count of a deployment (deployment/NAME)."""
    kind, name = split_ref(ref)
    async with open_session(ctx) as s:
        body = {"name": name, "namespace": namespace, "replicas": replicas, "reason": reason}
        outcome = await s.commands.send(kind, "scale", body)
    click.echo(f"{kind.lower()}/{name} {'unchanged' if outcome.unchanged else 'scaled'}")


# -- rollout (kubectl's client-side logic, in ops/rollout.py) -------------------------------------


@main.group()
def rollout() -> None:
    """Watch, list, undo, pause and resume a deployment's rollouts (deployment/NAME)."""


async def _deployment(s: Session, namespace: str, name: str) -> dict[str, Any]:
    from ops import rollout as rollout_ops

    items = await s.query("Deployment", namespace=namespace, name=name)
    if not items:
        raise rollout_ops.not_found(name)
    return items[0]


async def _owned_replica_sets(s: Session, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    from ops import rollout as rollout_ops

    return rollout_ops.controlled_by(
        await s.query("ReplicaSet", namespace=deployment["namespace"]), deployment["uid"]
    )


@rollout.command(name="status")
@click.argument("ref")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--watch/--no-watch", "-w", default=True, show_default=True, help="Keep printing until done."
)
@click.option(
    "--timeout",
    "timeout_text",
    default="0",
    show_default=True,
    help="Give up watching after this long (30s, 2m …); 0: never.",
)
@click.pass_context
@run
async def rollout_status(
    ctx: click.Context, ref: str, namespace: str, watch: bool, timeout_text: str
) -> None:
    """Show a deployment's rollout status; with --watch, until it completes."""
    import asyncio

    from ops import rollout as rollout_ops

    name = rollout_ops.deployment_name(ref)
    timeout = parse_duration(timeout_text)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    shown = None
    async with open_session(ctx) as s:
        while True:
            status = rollout_ops.rollout_status(
                (await _deployment(s, namespace, name))["manifest"], name
            )
            if status.message != shown:
                click.echo(status.message)
                shown = status.message
            if status.done or not watch:
                return
            if deadline is not None and time.monotonic() >= deadline:
                waited = f"{timeout:g}s"
                raise Failure(f'timed out after {waited} waiting for deployment "{name}" rollout')
            await asyncio.sleep(0.25)


@rollout.command(name="history")
@click.argument("ref")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--revision", type=int, default=0, help="Show this revision's pod template.")
@click.pass_context
@run
async def rollout_history(ctx: click.Context, ref: str, namespace: str, revision: int) -> None:
    """List a deployment's revisions (from its replica sets), or show one's pod template."""
    from ops import rollout as rollout_ops

    name = rollout_ops.deployment_name(ref)
    async with open_session(ctx) as s:
        history = rollout_ops.revision_history(
            await _owned_replica_sets(s, await _deployment(s, namespace, name))
        )
    if revision > 0:
        template = rollout_ops.revision_template(history, revision)
        click.echo(f"deployment.apps/{name} with revision #{revision}")
        click.echo(render.to_yaml([template]), nl=False)
    elif not history:
        click.echo(f"deployment.apps/{name}\nNo rollout history found.")
    else:
        headers = ["REVISION", "CHANGE-CAUSE"]
        click.echo(
            f"deployment.apps/{name}\n{render.table(headers, rollout_ops.history_rows(history))}"
        )


@rollout.command(name="undo")
@click.argument("ref")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--to-revision", type=int, default=0, show_default=True, help="0: the previous revision."
)
@click.pass_context
@run
async def rollout_undo(ctx: click.Context, ref: str, namespace: str, to_revision: int) -> None:
    """Roll a deployment back to an earlier revision's pod template."""
    from ops import rollout as rollout_ops

    name = rollout_ops.deployment_name(ref)
    async with open_session(ctx) as s:
        deployment = await _deployment(s, namespace, name)
        undo = rollout_ops.plan_undo(
            deployment, await _owned_replica_sets(s, deployment), to_revision
        )
        if undo.manifest is not None:
            await rollout_ops.apply_deployment(s.commands, deployment, undo.manifest)
    click.echo(undo.message(name))


def _pause_command(paused: bool) -> Any:
    verb = "pause" if paused else "resume"

    @click.argument("ref")
    @click.option("-n", "--namespace", default="default", show_default=True)
    @click.pass_context
    @run
    async def command(ctx: click.Context, ref: str, namespace: str) -> None:
        from ops import rollout as rollout_ops

        name = rollout_ops.deployment_name(ref)
        async with open_session(ctx) as s:
            deployment = await _deployment(s, namespace, name)
            await rollout_ops.apply_deployment(
                s.commands, deployment, rollout_ops.with_paused(deployment, paused)
            )
        click.echo(f"deployment.apps/{name} {verb}d")

    command.__doc__ = (
        "Pause a deployment: spec changes are not rolled out until it is resumed."
        if paused
        else "Resume a paused deployment's rollouts."
    )
    return rollout.command(name=verb)(command)


rollout_pause = _pause_command(True)
rollout_resume = _pause_command(False)


def _node_command(verb: str) -> Any:
    @click.argument("node")
    @click.option("--reason", default="", help="Recorded with the event.")
    @click.pass_context
    @run
    async def command(ctx: click.Context, node: str, reason: str) -> None:
        async with open_session(ctx) as s:
            outcome = await s.commands.send("Node", verb, {"name": node, "reason": reason})
        click.echo(f"node/{node} {'already ' if outcome.unchanged else ''}{verb}ed")

    if verb == "cordon":
        command.__doc__ = "Mark a node unschedulable (no new pods)."
    else:
        command.__doc__ = "Let a node take new pods again."
    return main.command(name=verb)(command)


cordon = _node_command("cordon")
uncordon = _node_command("uncordon")


@main.command()
@click.argument("node")
@click.option("--force", is_flag=True, help="Also delete pods that declare no controller.")
@click.option(
    "--ignore-daemonsets", is_flag=True, help="Leave DaemonSet-managed pods where they are."
)
@click.option(
    "--delete-emptydir-data", is_flag=True, help="Also delete pods with emptyDir volumes."
)
@click.option(
    "--grace-period",
    type=int,
    default=-1,
    show_default=True,
    help="Seconds each pod gets to stop (recorded in the deletion's reason); -1: the pod's own.",
)
@click.option(
    "--timeout",
    "timeout_text",
    default="60s",
    show_default=True,
    help="How long to wait for the pods to be gone (30s, 2m …).",
)
@click.pass_context
@run
async def drain(
    ctx: click.Context,
    node: str,
    force: bool,
    ignore_daemonsets: bool,
    delete_emptydir_data: bool,
    grace_period: int,
    timeout_text: str,
) -> None:
    """Cordon a node and delete its pods (kubectl drain's refusals apply: see --force)."""
    import asyncio

    from ops.drain import drain_reason, plan_drain, pods_on

    timeout = parse_duration(timeout_text)
    actor = ctx.obj["actor"]
    async with open_session(ctx) as s:
        if not await s.query("Node", namespace="", name=node):
            raise FleetError(f'nodes "{node}" not found', code="not_found")
        plan = plan_drain(
            pods_on(await s.query("Pod"), node),
            force=force,
            ignore_daemonsets=ignore_daemonsets,
            delete_emptydir_data=delete_emptydir_data,
        )
        if plan.errors:
            # Nothing has changed yet, not even the cordon.
            raise Failure(f'cannot drain node "{node}": ' + "; ".join(plan.errors))
        outcome = await s.commands.send(
            "Node", "cordon", {"name": node, "reason": f"drain by {actor}"}
        )
        click.echo(f"node/{node} {'already ' if outcome.unchanged else ''}cordoned")
        for warning in plan.warnings:
            click.echo(f"Warning: {warning}", err=True)
        reason = drain_reason(node, actor, grace_period)
        for item in plan.evict:
            click.echo(f"evicting pod {item['namespace']}/{item['name']}")
            body = {"name": item["name"], "namespace": item["namespace"], "reason": reason}
            try:
                await s.commands.send("Pod", "delete", body, idempotency_key=f"drain.{item['uid']}")
            except FleetError as exc:
                if exc.code != "not_found":  # already gone is what we want
                    raise
        evicted = {item["uid"] for item in plan.evict}
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p in pods_on(await s.query("Pod"), node) if p["uid"] in evicted]
            if not left:
                break
            if time.monotonic() > deadline:
                raise Failure(
                    f"drain did not complete within {timeout_text}: still on node {node}: "
                    + ", ".join(f"{p['namespace']}/{p['name']}" for p in left)
                )
            await asyncio.sleep(0.2)
    for item in plan.evict:
        click.echo(f"pod/{item['name']} evicted")
    click.echo(f"node/{node} drained")


# -- reads ----------------------------------------------------------------------------------------


@main.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=OUTPUTS, default="table", show_default=True)
@AT_OPTION
@click.pass_context
@run
async def get(
    ctx: click.Context,
    kind: str,
    name: str | None,
    namespace: str,
    all_namespaces: bool,
    output: str,
    at: str | None,
) -> None:
    """List objects of a kind, or show one (with --at: as it was then)."""
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    resolved = resolve_kind(kind)
    scope: str | None = (None if all_namespaces else namespace) if is_namespaced(resolved) else ""
    now_ns, when = time.time_ns(), ""
    async with open_session(ctx) as s:
        if at is None:
            items = await s.query(resolved, namespace=scope, name=name)
        else:
            from ops import timetravel

            point = await timetravel.position_of(s.nc, s.store, at, now_ns=now_ns)
            now_ns, when = point.time_ns or now_ns, f" at {point.label()}"
            if name:
                item, _ = await timetravel.object_at(
                    s.store, resolved, scope or "", name, point.seq, nc=s.nc
                )
                items = [item] if item else []
            else:
                items = await timetravel.list_at(s.store, point.seq, resolved, scope)
    if name and not items:
        raise FleetError(f'{resolved.lower()}s "{name}" not found{when}', code="not_found")
    if output in ("yaml", "json"):
        manifests = [render.full_manifest(item) for item in items]
        value: Any = (
            manifests[0] if name else {"apiVersion": "v1", "kind": "List", "items": manifests}
        )
        click.echo(render.to_yaml([value]) if output == "yaml" else render.to_json(value))
        return
    if not items:
        where = f" in {scope} namespace" if scope else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    output_table = render.object_table(
        resolved,
        items,
        now_ns=now_ns,
        wide=output == "wide",
        show_namespace=all_namespaces and is_namespaced(resolved),
    )
    click.echo(output_table)


@main.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@AT_OPTION
@click.pass_context
@run
async def describe(
    ctx: click.Context, kind: str, name: str | None, namespace: str, at: str | None
) -> None:
    """Show one object in detail, with its events (with --at: as it was then, and the events
    up to then)."""
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    if not name:
        raise ValidationFailed("say which object: describe KIND NAME")
    resolved = resolve_kind(kind)
    scope = namespace if is_namespaced(resolved) else ""
    now_ns, point = time.time_ns(), None
    if at is not None:  # a fold of the log up to then; without --at the projection answers
        from ops import timetravel
    async with open_session(ctx) as s:
        if at is not None:
            point = await timetravel.position_of(s.nc, s.store, at, now_ns=now_ns)
            now_ns = point.time_ns or now_ns
            item, history = await timetravel.object_at(
                s.store, resolved, scope, name, point.seq, nc=s.nc
            )
            items = [item] if item else []
        else:
            items = await s.query(resolved, namespace=scope, name=name)
        if not items:
            when = f" at {point.label()}" if point else ""
            raise FleetError(f'{resolved.lower()}s "{name}" not found{when}', code="not_found")
        if point is None:
            history = await s.history(resolved, scope, name)
        owned = []
        if resolved == "Deployment":
            from ops import rollout as rollout_ops

            replica_sets = (
                await s.query("ReplicaSet", namespace=scope)
                if point is None
                else await timetravel.list_at(s.store, point.seq, "ReplicaSet", scope)
            )
            owned = rollout_ops.controlled_by(replica_sets, items[0]["uid"])
    created_seq = next(
        (ev.seq for ev in reversed(history) if ev.envelope.type.endswith("Created")), 0
    )
    events = [ev for ev in history if ev.seq >= created_seq]
    click.echo(render.describe(items[0], events, now_ns, replica_sets=owned))


@main.command()
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", default=None, help="Which container (needed if several).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("-p", "--previous", is_flag=True, help="The previous (terminated) instance.")
@click.option(
    "--tail", type=int, default=-1, show_default=True, help="Lines of recent output; -1: all."
)
@click.pass_context
@run
async def logs(
    ctx: click.Context,
    pod: str,
    namespace: str,
    container: str | None,
    follow: bool,
    previous: bool,
    tail: int,
) -> None:
    """Print a container's output (POD or pod/POD); it travels on an age-limited stream, so
    this works from any machine that reaches NATS."""
    from ops.client import pick_container
    from streams.telemetry import read_logs

    if "/" in pod:
        kind, pod = split_ref(pod)
        if kind != "Pod":
            raise ValidationFailed(f"logs are read from pods, not {kind.lower()}s")
    async with open_session(ctx) as s:
        items = await s.query("Pod", namespace=namespace, name=pod)
        if not items:
            raise FleetError(f'pods "{pod}" not found', code="not_found")
        name, restarts = pick_container(items[0], container)
        chunks = read_logs(
            s.nc, namespace, pod, name,
            pod_uid=items[0]["uid"], restart_count=restarts,
            previous=previous, tail=tail if tail >= 0 else None, follow=follow,
        )  # fmt: skip
        try:
            async for chunk in chunks:
                click.echo(chunk, nl=False)
        finally:
            await chunks.aclose()


TOP_STALE_AFTER_S = 300.0


@main.command()
@click.argument("kind")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.pass_context
@run
async def top(ctx: click.Context, kind: str, namespace: str, all_namespaces: bool) -> None:
    """Current cpu and memory usage of nodes or pods (top nodes, top pods)."""
    from streams.telemetry import latest_usage

    resolved = resolve_kind(kind)
    if resolved not in ("Node", "Pod"):
        raise ValidationFailed(f"top shows nodes or pods, not {kind}")
    # Like metrics-server: only objects that still exist, and only recent samples.
    fresh_ns = time.time_ns() - int(TOP_STALE_AFTER_S * 1e9)
    async with open_session(ctx) as s:
        if resolved == "Node":
            live = {item["name"] for item in await s.query("Node")}
            samples = await latest_usage(s.nc, "node")
            nodes = [n for n in samples if n.name in live and n.at_ns >= fresh_ns]
            if not nodes:
                raise Failure("metrics not available yet")
            click.echo(render.top_nodes_table(nodes))
            return
        scope = None if all_namespaces else namespace
        live = {(i["namespace"], i["name"]) for i in await s.query("Pod", namespace=scope)}
        pods = [
            p
            for p in await latest_usage(s.nc, "pod", namespace=scope)
            if (p.namespace, p.name) in live and p.at_ns >= fresh_ns
        ]
        if not pods:
            if scope is not None and await latest_usage(s.nc, "pod"):
                click.echo(f"No resources found in {scope} namespace.", err=True)
                return
            raise Failure("metrics not available yet")
    click.echo(render.top_pods_table(pods, show_namespace=all_namespaces))


@main.command()
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


def _json_line(event: Any) -> str:
    return json.dumps(render.event_dict(event), default=str)


@main.command()
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

    def emit(event: Any) -> None:
        if event_type and event.envelope.type != event_type:
            return
        if output == "json":
            click.echo(_json_line(event))
        elif follow:
            click.echo("   ".join(render.event_row(event)))
        else:
            rows.append(render.event_row(event))

    async with open_session(ctx) as s:
        if follow:
            if output == "table":
                click.echo("   ".join(render.EVENT_HEADERS))
            sub = await s.store.subscribe(
                emit, filter_subject=subject, from_time=start, new_only=start is None
            )
            try:
                await asyncio.Future()
            finally:
                await sub.unsubscribe()
        await s.store.replay(emit, filter_subject=subject, from_time=start)
    if output == "table":
        if rows:
            click.echo(render.table(render.EVENT_HEADERS, rows))
        else:
            click.echo("No events found.", err=True)


# -- time travel (ops/timetravel.py) ------------------------------------------------------------


@main.command(name="replay")
@click.option("--to", "to", required=True, metavar="TIME|SEQ", help=POINT_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write to FILE.")
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default=None, help="[default: yaml]"
)
@click.pass_context
def replay_command(ctx: click.Context, to: str, out: Path | None, output: str | None) -> None:
    """The whole cluster state at a point: every object's manifest (YAML documents, or JSON
    with the position); the sequence and the state's digest go to stderr."""
    from ops import timetravel

    state = run(_replayed)(ctx, to)
    output = output or ("json" if out is not None and out.suffix == ".json" else "yaml")
    text = timetravel.render_state(state, output)
    if out is None:
        click.echo(text, nl=False)
    else:
        try:
            out.write_text(text)
        except OSError as exc:
            raise Failure(f"cannot write {out}: {exc.strerror}") from None
    click.echo(state.summary(), err=True)


async def _replayed(ctx: click.Context, to: str) -> timetravel.ClusterState:
    from ops import timetravel

    async with open_session(ctx) as s:
        point = await timetravel.position_of(
            s.nc, s.store, to, now_ns=time.time_ns(), option="--to"
        )
        projection = await timetravel.model_at(s.store, point.seq)
    return timetravel.cluster_state(point, projection.model)


@main.command(name="diff")
@click.option("--from", "start", required=True, metavar="TIME|SEQ", help=POINT_HELP)
@click.option("--to", "end", default="now", show_default=True, metavar="TIME|SEQ")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def diff_command(ctx: click.Context, start: str, end: str, output: str) -> None:
    """What changed between two points: objects created, deleted, changed (with the fields)."""
    from ops import timetravel

    now_ns = time.time_ns()
    async with open_session(ctx) as s:
        first = await timetravel.position_of(s.nc, s.store, start, now_ns=now_ns, option="--from")
        last = await timetravel.position_of(s.nc, s.store, end, now_ns=now_ns, option="--to")
        changes = await timetravel.diff_between(s.store, first, last)
    if output == "json":
        click.echo(render.to_json(timetravel.diff_document(first, last, changes)))
        return
    click.echo(timetravel.diff_summary(first, last, changes), err=True)
    if changes:
        click.echo(timetravel.diff_table(changes))


main.add_command(why)
main.add_command(audit)
