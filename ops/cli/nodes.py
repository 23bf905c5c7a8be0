"""``fleetlog cordon``, ``uncordon`` and ``drain``: taking a node out of service and back.

Why this exists: draining is kubectl's client-side procedure over several commands. What may be
evicted (kubectl's refusals and warnings) is planned in ``ops.drain``; here the plan is carried
out: cordon the node, delete each pod through the gateway, wait until they are gone.
"""

from __future__ import annotations

import time
from typing import Any

import click

from core.errors import FleetError
from core.meta.durations import parse_duration
from ops.clitools import Failure, open_session, run


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
    return click.command(name=verb)(command)


cordon = _node_command("cordon")
uncordon = _node_command("uncordon")


@click.command()
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
