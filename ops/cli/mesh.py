"""``fleetlog mesh status``: every Envoy proxy the mesh-push handler serves, what it runs, how far
behind it is and what it refused — ``istioctl proxy-status`` for fleetlog.

Why this exists: a pushed config is only applied once Envoy ACKs it, and a refused one (a NACK)
leaves the proxy on its previous config with nothing visible in the log; operators need to see
both per proxy. The handler reports to the ``fleet_mesh_status`` bucket (``handlers.mesh.status``);
this reads it. Heavy modules are imported when the command runs (``fleetlog --help`` stays fast).
"""

from __future__ import annotations

import json
import time

import click

from ops.clitools import open_session, run


@click.group()
def mesh() -> None:
    """The service mesh: Envoy proxies and what they run."""


@mesh.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@run
async def status(ctx: click.Context, output: str) -> None:
    """One row per proxy: CDS/LDS/EDS/RDS as SYNCED, STALE, NACKED or NOT SENT (as istioctl
    proxy-status), the lag of its oldest unanswered push and Envoy's last refusal."""
    from core.mesh.push import STATUS_COLUMNS, status_row
    from handlers.mesh.status import read_statuses
    from ops.render.text import table

    async with open_session(ctx) as s:
        statuses = await read_statuses(s.nc)
    if output == "json":
        click.echo(json.dumps([st.as_dict() for st in statuses], indent=2))
        return
    if not statuses:
        click.echo("No proxies found.", err=True)
        return
    now = time.time_ns()
    click.echo(table(STATUS_COLUMNS, (status_row(st, now_ns=now) for st in statuses)))
