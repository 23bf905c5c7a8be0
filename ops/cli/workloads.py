"""``fleetlog scale`` and ``fleetlog rollout status|history|undo|pause|resume``: a deployment's
replicas and rollouts.

Why this exists: kubectl's rollout commands are client-side logic over a deployment and the
replica sets it controls. That logic is in ``ops.rollout`` (imported when a command runs);
these are its command-line shells, sharing how the deployment and its replica sets are read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from core.meta.durations import parse_duration
from ops import render
from ops.cliargs import split_command_ref
from ops.clitools import Failure, open_session, run

if TYPE_CHECKING:
    from ops.client import Session


@click.command()
@click.argument("ref")
@click.option("--replicas", type=int, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--reason", default="", help="Recorded in the ScaledTo event.")
@click.pass_context
@run
async def scale(ctx: click.Context, ref: str, replicas: int, namespace: str, reason: str) -> None:
    """Set the replica count of a deployment (deployment/NAME)."""
    kind, name = split_command_ref(ref)
    async with open_session(ctx) as s:
        body = {"name": name, "namespace": namespace, "replicas": replicas, "reason": reason}
        outcome = await s.commands.send(kind, "scale", body)
    click.echo(f"{kind.lower()}/{name} {'unchanged' if outcome.unchanged else 'scaled'}")


# -- rollout (kubectl's client-side logic, in ops/rollout.py) -------------------------------------


@click.group()
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

        async def attempt() -> rollout_ops.Undo:
            deployment = await _deployment(s, namespace, name)
            undo = rollout_ops.plan_undo(
                deployment, await _owned_replica_sets(s, deployment), to_revision
            )
            if undo.manifest is not None:
                await rollout_ops.apply_deployment(s.commands, deployment, undo.manifest)
            return undo

        undo = await rollout_ops.retry_on_conflict(attempt)
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

            async def attempt() -> None:
                deployment = await _deployment(s, namespace, name)
                await rollout_ops.apply_deployment(
                    s.commands, deployment, rollout_ops.with_paused(deployment, paused)
                )

            await rollout_ops.retry_on_conflict(attempt)
        click.echo(f"deployment.apps/{name} {verb}d")

    command.__doc__ = (
        "Pause a deployment: spec changes are not rolled out until it is resumed."
        if paused
        else "Resume a paused deployment's rollouts."
    )
    return rollout.command(name=verb)(command)


rollout_pause = _pause_command(True)
rollout_resume = _pause_command(False)
