"""``fleetlog cordon``, ``uncordon`` and ``drain``: taking a node out of service and back.

Why this exists: draining is kubectl's client-side procedure over several commands. What may be
evicted (kubectl's refusals and warnings) is planned in ``ops.drain``; here the plan is carried
out: cordon the node, evict each pod through the gateway's ``evict`` command (all at once, as
kubectl's goroutines do; an eviction a PodDisruptionBudget refuses is retried every 5 s with
kubectl's message until the timeout), wait until they are gone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from core.errors import FleetError
from core.meta.durations import parse_duration
from ops.clitools import Failure, open_session, run

if TYPE_CHECKING:
    from streams.commandbus import CommandClient


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


EVICTION_RETRY_S = 5.0
"""How long kubectl drain waits before asking again for an eviction a budget refused."""


async def evict_politely(
    commands: CommandClient,
    item: dict[str, Any],
    *,
    reason: str,
    deadline: float,
    timeout_text: str,
) -> None:
    """Evict one pod as ``kubectl drain`` does: a refusal by its disruption budget (429) is
    said on stderr in kubectl's words and asked again after 5 s, until ``deadline``; a pod
    already gone is what was wanted; any other refusal ends the drain."""
    import asyncio

    name, namespace = item["name"], item["namespace"]
    click.echo(f"evicting pod {namespace}/{name}")
    body = {"name": name, "namespace": namespace, "reason": reason}
    attempt = 0
    while True:
        try:
            await commands.send(
                "Pod", "evict", body, idempotency_key=f"drain.{item['uid']}.{attempt}"
            )
            return
        except FleetError as exc:
            if exc.code == "not_found":
                return
            if exc.code != "too_many_requests":
                raise Failure(
                    f'error when evicting pods/"{name}" -n "{namespace}": {exc.message}'
                ) from None
            if time.monotonic() + EVICTION_RETRY_S > deadline:
                raise Failure(
                    f'error when evicting pods/"{name}" -n "{namespace}": global timeout '
                    f"reached: {timeout_text}"
                ) from None
            click.echo(
                f'error when evicting pods/"{name}" -n "{namespace}" (will retry after 5s): '
                f"{exc.message}",
                err=True,
            )
            attempt += 1
            await asyncio.sleep(EVICTION_RETRY_S)


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
    help="How long to wait for the evictions and for the pods to be gone (30s, 2m …).",
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
    """Cordon a node and evict its pods, honouring PodDisruptionBudgets (kubectl drain's
    refusals apply: see --force)."""
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
        deadline = time.monotonic() + timeout
        evictions = [
            asyncio.create_task(evict_politely(
                s.commands, item, reason=reason, deadline=deadline, timeout_text=timeout_text,
            ))
            for item in plan.evict
        ]  # fmt: skip
        try:
            await asyncio.gather(*evictions)
        except BaseException:
            # One refusal ends the drain, as in kubectl: the other evictions stop asking.
            for task in evictions:
                task.cancel()
            await asyncio.gather(*evictions, return_exceptions=True)
            raise
        evicted = {item["uid"] for item in plan.evict}
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
