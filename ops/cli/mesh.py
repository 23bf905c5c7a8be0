"""``fleetlog mesh status``: every Envoy proxy the mesh-push handler serves, what it runs, how far
behind it is and what it refused — ``istioctl proxy-status`` for fleetlog.

Why this exists: a pushed config is only applied once Envoy ACKs it, and a refused one (a NACK)
leaves the proxy on its previous config with nothing visible in the log; operators need to see
both per proxy. The handler reports to the ``fleet_mesh_status`` bucket (``handlers.mesh.status``);
this reads it. ``fleetlog mesh analyze`` (and a section below ``mesh status``) reports the
problems across Istio objects as ``istioctl analyze`` does (``core.mesh.analyze``): they leave
no trace in Envoy's ACKs. ``fleetlog mesh rotate-ca`` starts a root transition of the mesh CA
(``handlers.mesh.ca``) where ``fleetlog up`` keeps it: like the other keys' operations it is
done on the data directory (0700, its owner's), not over NATS, and the running handler reads
the new root from there. Heavy modules are imported when the command runs (``fleetlog --help``
stays fast).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.errors import FleetError
from ops.clitools import open_session, run

if TYPE_CHECKING:
    from core.mesh.analyze import Message

ANALYZED: dict[str, str] = {
    "VirtualService": "virtual_services",
    "DestinationRule": "destination_rules",
    "Gateway": "gateways",
    "ServiceEntry": "service_entries",
    "Service": "services",
    "Pod": "pods",
}
"""The kinds the analyzers read, every namespace (a route may cross namespaces)."""


async def analysis(session: Any) -> list[Message]:
    """Every cross-object problem in the cluster, as the projection holds it now."""
    from core.mesh.analyze import Objects, analyze

    fetched: dict[str, Any] = {
        field: [item["manifest"] for item in await session.query(kind)]
        for kind, field in ANALYZED.items()
    }
    try:
        # Only their names are read (a Gateway's credentialName); a reader who may not list
        # Secrets gets the other checks.
        fetched["secrets"] = [item["manifest"] for item in await session.query("Secret")]
    except FleetError:
        fetched["secrets"] = None
    return analyze(Objects(**fetched))


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
    from core.errors import FleetError
    from core.mesh.push import STATUS_COLUMNS, status_row
    from handlers.mesh.status import read_statuses
    from ops.render.text import table

    async with open_session(ctx) as s:
        statuses = await read_statuses(s.nc)
        try:
            messages: list[Message] | None = await analysis(s)
        except FleetError:  # no projection answers queries: the proxies are still shown
            messages = None
    if output == "json":
        click.echo(json.dumps([st.as_dict() for st in statuses], indent=2))
        return
    if not statuses:
        click.echo("No proxies found.", err=True)
    else:
        now = time.time_ns()
        click.echo(table(STATUS_COLUMNS, (status_row(st, now_ns=now) for st in statuses)))
    if messages:
        click.echo("\nAnalysis (istioctl analyze):")
        for message in messages:
            click.echo(f"  {message}")


@mesh.command()
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", type=click.Choice(["log", "json"]), default="log")
@click.pass_context
@run
async def analyze(ctx: click.Context, namespace: str, all_namespaces: bool, output: str) -> None:
    """Problems across VirtualServices, DestinationRules, Gateways and ServiceEntries, as
    ``istioctl analyze`` reports them (codes, levels, wording); exit 79 when one is an Error,
    as istioctl's default failure threshold."""
    from core.mesh.analyze import EXIT_ISSUES, has_errors, in_namespace, no_issues_line

    scope = None if all_namespaces else namespace
    async with open_session(ctx) as s:
        messages = in_namespace(await analysis(s), scope)
    if output == "json":
        click.echo(json.dumps([m.as_dict() for m in messages], indent=2))
    elif not messages:
        click.echo(no_issues_line(scope))
    else:
        for message in messages:
            click.echo(str(message))
    if has_errors(messages):
        ctx.exit(EXIT_ISSUES)


@mesh.command(name="rotate-ca")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The data directory of the fleetlog up whose mesh CA to rotate [default: fleetlog up's].",
)
@click.option(
    "--overlap",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds the old root stays trusted [default: the workload certificates' lifetime, "
    "fleetlog up's --mesh-cert-ttl].",
)
def rotate_ca(data_dir: Path | None, overlap: float | None) -> None:
    """Make a new mesh root (Istio's root transition): the proxies trust both roots, get
    certificates from the new one, and stop trusting the old one when the overlap is over.
    ``fleetlog up``'s mesh handler carries it out (it need not be running now)."""
    import datetime

    from handlers.mesh.ca import MeshCA
    from ops.cliargs import default_data_dir

    directory = (data_dir or default_data_dir()) / "pki" / "mesh"
    if not (directory / "ca.pem").exists():
        raise click.ClickException(f"no mesh CA in {directory} (has fleetlog up run there?)")
    ca = MeshCA(directory)
    old = ca.root
    ca.rotate(
        now=datetime.datetime.now(datetime.UTC),
        overlap=datetime.timedelta(seconds=overlap) if overlap is not None else None,
    )
    click.echo(
        f"mesh root rotated: {ca.root.subject.rfc4514_string()} (serial {ca.root.serial_number:x}) "
        f"replaces serial {old.serial_number:x}, trusted until "
        + (f"{overlap:g}s from now" if overlap is not None else "one workload certificate lifetime")
    )
