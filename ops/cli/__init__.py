"""The ``fleetlog`` command line: start a cluster, send commands, read state and history.

Every subcommand is a thin shell over a :class:`ops.client.Session`: writes go through the
command gateway (so they get the same validation, idempotency and audit as any other client),
reads come from the cluster projection (``get``, ``describe``) or straight from the log
(``events``, ``history``). Expected failures print one line, ``error: …``, and exit non-zero.

This module holds the root group, whose options every command reads from its context, and adds
to it the commands, which live in modules by what they act on:

  ``cluster``     up, agent, sim, scheduler, gateway: run a part of the cluster in the foreground
  ``objects``     apply, delete, get, describe: objects of any kind
  ``workloads``   scale, rollout …: a deployment's replicas and rollouts
  ``nodes``       cordon, uncordon, drain
  ``mesh``        mesh status: the Envoy proxies and what they run
  ``metrics``     metrics publish, metrics load: workload metrics and simulated load by hand
  ``observe``     logs, top, history, events
  ``wait``        wait: until objects reach a state
  ``replay``      replay, diff: the cluster at a point of the log
  ``ops.cli.audit``  why, audit: causes and the audit trail
  ``access``      config, user: contexts and credentials, the users the server admits

Who a command is and where it connects come from the fleetlog config's current context
(``ops.fleetconfig``: server, user, default namespace), which ``--config``/``FLEETLOG_CONFIG``,
``--context``, ``--server``, ``--credentials`` and ``--tls-ca`` override.

What they share sits below them: names and arguments in ``ops.cliargs``, failures, running a
command and its session in ``ops.clitools``, output in ``ops.render``.

Only light modules are imported by all of these, so that ``fleetlog --help`` and a read command
start quickly: the NATS session comes from ``ops.clitools.open_session``, the time-travel folds
(``ops.timetravel``), the rollout rules (``ops.rollout``), the YAML parser, the write path's
errors and even ``asyncio`` (a good part of the time ``--help`` took) are imported by the
commands that use them, and ``tests/integration/test_cli_startup.py`` keeps it so.
"""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.access import auth_group, config_group, user_group
from ops.cli.audit import audit, why
from ops.cli.cluster import agent, gateway, scheduler, sim, up
from ops.cli.mesh import mesh
from ops.cli.metrics import metrics
from ops.cli.nodes import cordon, drain, uncordon
from ops.cli.objects import apply, delete, describe, get
from ops.cli.observe import events, history, logs, top
from ops.cli.replay import diff_command, replay_command
from ops.cli.wait import wait
from ops.cli.workloads import rollout, scale
from ops.cliargs import DEFAULT_SERVER, default_actor
from ops.clitools import Failure


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    envvar="FLEETLOG_SERVER",
    default=None,
    help=f"NATS URL of the cluster (or set FLEETLOG_SERVER) [default: the context's, else "
    f"{DEFAULT_SERVER}].",
)
@click.option(
    "--config",
    "config_file",
    envvar="FLEETLOG_CONFIG",
    default=None,
    help="The fleetlog config (or set FLEETLOG_CONFIG) [default: "
    "$XDG_CONFIG_HOME/fleetlog/config, else ~/.config/fleetlog/config].",
)
@click.option("--context", default=None, help="Use this context of the fleetlog config.")
@click.option(
    "--credentials",
    envvar="FLEETLOG_CREDENTIALS",
    default=None,
    help="Connect with the nkey seed in this file instead of the context's user.",
)
@click.option(
    "--as",
    "actor",
    default=None,
    help="Impersonate this user (allowed to callers with RBAC's `impersonate` on users; "
    "the admin may). Without it a command acts as the credentials' user (FLEETLOG_USER "
    "names the actor only on a server without authorization, where nothing is verified).",
)
@click.option(
    "--seal-key",
    envvar="FLEETLOG_SEAL_KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The cluster's seal key (pki/seal.key in the data directory of `fleetlog up`): "
    "roles that append need it; readers given it skip events no fleetlog writer sealed.",
)
@click.option(
    "--tls-ca",
    envvar="FLEETLOG_TLS_CA",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Verify the server's TLS certificate with this CA [default: the context's "
    "certificate-authority, which `fleetlog up --tls` writes; else the system's CAs].",
)
@click.option("--log-level", default="warning", show_default=True)
@click.pass_context
def main(
    ctx: click.Context,
    server: str | None,
    config_file: str | None,
    context: str | None,
    credentials: str | None,
    actor: str | None,
    seal_key: Path | None,
    tls_ca: Path | None,
    log_level: str,
) -> None:
    """fleetlog: a container orchestrator whose source of truth is an event log."""
    from ops.fleetconfig import ConfigError, config_path, load, target

    path = config_path(config_file)
    try:
        chosen = target(load(path), path=path, context=context)
    except ConfigError as exc:
        raise Failure(exc.message) from None
    if chosen.namespace and chosen.namespace != "default":
        ctx.default_map = _namespace_defaults(ctx.command, chosen.namespace)
    # Logging is set up by ``run`` when a command runs (not for --help), at this level.
    ctx.obj = {
        "server": server or chosen.server or DEFAULT_SERVER,
        "actor": actor or default_actor(),
        "impersonate": actor is not None,
        "log_level": log_level,
        "target": chosen,
        "credentials_file": credentials,
        "seal_key_path": seal_key,
        "tls_ca": tls_ca or chosen.certificate_authority,
    }
    if seal_key is None and ctx.invoked_subcommand != "up":
        # On the machine that ran `fleetlog up`, its key is found with no flag: the context's
        # cluster names it, or it is in the default data directory.
        from ops.cliargs import default_data_dir

        found = chosen.seal_key or default_data_dir() / "pki" / "seal.key"
        seal_key = found if found.exists() else None
    # `up` makes its key on the first start. A key given but not there yet only matters to a
    # role that appends to a sealed log: it is refused then, naming the path.
    if seal_key is not None:
        from streams import seal
        from streams.seal import SealKeyError, load_seal_key

        try:
            seal.use(load_seal_key(seal_key) if seal_key.exists() else None, given=seal_key)
        except SealKeyError as exc:
            raise click.UsageError(str(exc)) from None


def _namespace_defaults(command: click.Command, namespace: str) -> dict[str, object]:
    """Every ``-n/--namespace`` that defaults to ``default`` defaults to the context's
    namespace instead (kubectl's context namespace)."""
    defaults: dict[str, object] = {}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            nested = _namespace_defaults(sub, namespace)
            if nested:
                defaults[name] = nested
        return defaults
    for param in command.params:
        if param.name == "namespace" and param.default == "default":
            defaults["namespace"] = namespace
    return defaults


for _command in (
    *(up, agent, sim, scheduler, gateway),
    *(apply, delete, get, describe),
    *(scale, rollout),
    *(cordon, uncordon, drain),
    *(logs, top, history, events, wait),
    *(replay_command, diff_command),
    *(why, audit),
    *(auth_group, config_group, user_group),
    mesh,
    metrics,
):
    main.add_command(_command)
