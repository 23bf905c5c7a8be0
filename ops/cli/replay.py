"""``fleetlog replay`` and ``fleetlog diff``: the whole cluster as it was at a point of the log,
and what changed between two points.

Why this exists: they are the command-line shells of time travel. The folds themselves are in
``ops.timetravel``, which loads the read model's fold and is imported only when one of these
commands runs (``get --at`` and ``describe --at`` use it too, from ``ops.cli.objects``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ops import render
from ops.cliargs import POINT_HELP
from ops.clitools import Failure, open_session, run

if TYPE_CHECKING:
    from ops import timetravel


@click.command(name="replay")
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
        log = await timetravel.log_of(s)
        point = await timetravel.position_of(s.nc, log, to, now_ns=time.time_ns(), option="--to")
        projection = await timetravel.model_at(log, point.seq)
    return timetravel.cluster_state(point, projection.model)


@click.command(name="diff")
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
        log = await timetravel.log_of(s)
        first = await timetravel.position_of(s.nc, log, start, now_ns=now_ns, option="--from")
        last = await timetravel.position_of(s.nc, log, end, now_ns=now_ns, option="--to")
        changes = await timetravel.diff_between(log, first, last)
    if output == "json":
        click.echo(render.to_json(timetravel.diff_document(first, last, changes)))
        return
    click.echo(timetravel.diff_summary(first, last, changes), err=True)
    if changes:
        click.echo(timetravel.diff_table(changes))
