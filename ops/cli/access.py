"""``fleetlog config`` and ``fleetlog user``: contexts and credentials, and who may connect.

Why this exists: the embedded server admits only the identities ``fleetlog up`` writes into
its configuration (``streams.natsauth``). ``config`` reads and switches the contexts of the
fleetlog config (``ops.fleetconfig``) as ``kubectl config`` does; ``user`` manages the User
objects in the log through the gateway (``create`` and ``rotate`` make the nkey here, send
only its public key, and write the seed to a file only the caller may read, with a context
that uses it). The server refuses ``fleet.cmd.user.>`` from anyone outside ``system:masters``,
so only an admin's commands reach the gateway.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ops.clitools import Failure, open_session, run


def _config(ctx: click.Context) -> tuple[Path, Any]:
    from ops.fleetconfig import load

    path: Path = ctx.find_root().obj["target"].path
    return path, load(path)


@click.group(name="config")
def config_group() -> None:
    """Show or switch the contexts of the fleetlog config (server, user, namespace)."""


@config_group.command(name="current-context")
@click.pass_context
def current_context(ctx: click.Context) -> None:
    """Print the current context's name."""
    path, config = _config(ctx)
    if not config.current_context:
        raise Failure(f"current-context is not set in {path}")
    click.echo(config.current_context)


@config_group.command(name="get-contexts")
@click.pass_context
def get_contexts(ctx: click.Context) -> None:
    """List the contexts (* marks the current one)."""
    from ops.render.text import tabulated

    _, config = _config(ctx)
    rows = [
        [
            "*" if name == config.current_context else "",
            name,
            (config.clusters.get(entry.get("cluster", "")) or {}).get("server", ""),
            entry.get("user", ""),
            entry.get("namespace", ""),
        ]
        for name, entry in sorted(config.contexts.items())
    ]
    headers = ["CURRENT", "NAME", "SERVER", "USER", "NAMESPACE"]
    click.echo(tabulated(rows, headers=headers, tablefmt="plain"))


@config_group.command(name="use-context")
@click.argument("name")
@click.pass_context
def use_context(ctx: click.Context, name: str) -> None:
    """Make NAME the current context."""
    from ops.fleetconfig import save

    path, config = _config(ctx)
    if name not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise Failure(f"no context exists with the name {name!r} in {path} (contexts: {known})")
    config.current_context = name
    save(path, config)
    click.echo(f'Switched to context "{name}".')


@config_group.command(name="view")
@click.pass_context
def view(ctx: click.Context) -> None:
    """Print the fleetlog config, seeds left out."""
    import yaml

    _, config = _config(ctx)
    click.echo(yaml.safe_dump(config.redacted(), sort_keys=False), nl=False)


@click.group(name="user")
def user_group() -> None:
    """Manage who may connect to the cluster (admins only)."""


def _credentials_dir(config_path: Path) -> Path:
    return config_path.parent / "credentials"


def _write_user_credentials(
    ctx: click.Context, *, name: str, seed: str, output: Path | None
) -> tuple[Path, str]:
    """The new seed in a file of its own (0600) and a context ``NAME@CLUSTER`` using it."""
    from ops.fleetconfig import save
    from streams.identity import write_private

    path, config = _config(ctx)
    target = ctx.find_root().obj["target"]
    file = output or _credentials_dir(path) / f"{name}.nk"
    write_private(file, seed + "\n")
    cluster = (config.contexts.get(target.context or "") or {}).get("cluster")
    context = f"{name}@{cluster}" if cluster else name
    config.users[context] = {"seed-file": str(file.resolve())}
    entry: dict[str, Any] = {"user": context, "namespace": "default"}
    if cluster:
        entry["cluster"] = cluster
    config.contexts[context] = entry
    save(path, config)
    return file, context


async def _stored_user(session: Any, name: str) -> dict[str, Any]:
    items = await session.query("User", name=name)
    if not items:
        raise Failure(f'users.auth.fleetlog.dev "{name}" not found')
    manifest: dict[str, Any] = items[0]["manifest"]
    return manifest


def _user_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "auth.fleetlog.dev/v1",
        "kind": "User",
        "metadata": {"name": name},
        "spec": spec,
    }


@user_group.command(name="create")
@click.argument("name")
@click.option("--group", "groups", multiple=True, help="A group of the user (repeatable).")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the user's nkey seed [default: credentials/NAME.nk beside the config].",
)
@click.pass_context
@run
async def create_user(
    ctx: click.Context, name: str, groups: tuple[str, ...], output: Path | None
) -> None:
    """Create a user with a new nkey; write its seed and a context that uses it."""
    from streams.identity import Credentials, generate_seed

    credentials = Credentials(generate_seed())
    spec = {"publicKey": credentials.public_key, "groups": list(groups), "revoked": False}
    async with open_session(ctx) as s:
        if await s.query("User", name=name):
            raise Failure(f'users.auth.fleetlog.dev "{name}" already exists (rotate its key?)')
        await s.commands.send("User", "apply", {"manifest": _user_manifest(name, spec)})
    file, context = _write_user_credentials(ctx, name=name, seed=credentials.seed, output=output)
    click.echo(f"user.auth.fleetlog.dev/{name} created")
    click.echo(f"credentials: {file} (context {context}: fleetlog --context {context} ...)")


@user_group.command(name="list")
@click.pass_context
@run
async def list_users(ctx: click.Context) -> None:
    """List the users, their groups and whether they are revoked."""
    from ops.render.text import age, tabulated

    now_ns = time.time_ns()
    async with open_session(ctx) as s:
        items = await s.query("User")
    rows = []
    for item in sorted(items, key=lambda i: i["name"]):
        spec = item["manifest"].get("spec") or {}
        rows.append(
            [
                item["name"],
                ",".join(spec.get("groups") or []) or "<none>",
                "yes" if spec.get("revoked") else "no",
                spec.get("publicKey", ""),
                age(item.get("created_ns"), now_ns),
            ]
        )
    headers = ["NAME", "GROUPS", "REVOKED", "PUBLIC-KEY", "AGE"]
    click.echo(tabulated(rows, headers=headers, tablefmt="plain"))


@user_group.command(name="revoke")
@click.argument("name")
@click.pass_context
@run
async def revoke_user(ctx: click.Context, name: str) -> None:
    """Revoke a user: the server closes its connections and refuses new ones."""
    async with open_session(ctx) as s:
        manifest = await _stored_user(s, name)
        spec = {**(manifest.get("spec") or {}), "revoked": True}
        await s.commands.send("User", "apply", {"manifest": _user_manifest(name, spec)})
    click.echo(f"user.auth.fleetlog.dev/{name} revoked")


@user_group.command(name="rotate")
@click.argument("name")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the new seed [default: credentials/NAME.nk beside the config].",
)
@click.pass_context
@run
async def rotate_user(ctx: click.Context, name: str, output: Path | None) -> None:
    """Give a user a new nkey (the old one is refused from now on) and write its seed."""
    from streams.identity import Credentials, generate_seed

    credentials = Credentials(generate_seed())
    async with open_session(ctx) as s:
        manifest = await _stored_user(s, name)
        spec = {**(manifest.get("spec") or {}), "publicKey": credentials.public_key}
        spec["revoked"] = False
        await s.commands.send("User", "apply", {"manifest": _user_manifest(name, spec)})
    file, context = _write_user_credentials(ctx, name=name, seed=credentials.seed, output=output)
    click.echo(f"user.auth.fleetlog.dev/{name} rotated")
    click.echo(f"credentials: {file} (context {context})")


@click.group(name="auth")
def auth_group() -> None:
    """Who the cluster takes you for, and what it would let you do (as kubectl auth)."""


@auth_group.command(name="whoami")
@click.pass_context
@run
async def whoami(ctx: click.Context) -> None:
    """Who the gateway verifies you to be (user, groups; the impersonator with --as)."""
    from streams.commandbus import WHOAMI_SUBJECT

    async with open_session(ctx) as s:
        answer = (await s.commands.review(WHOAMI_SUBJECT, {})).extra
    rows = [["Username", answer.get("user", "")]]
    rows.append(["Groups", "[" + " ".join(answer.get("groups") or []) + "]"])
    if answer.get("impersonator"):
        rows.append(["Impersonated by", answer["impersonator"]])
    if not answer.get("verified"):
        rows.append(["Verified", "no (unsigned, on a server without authorization)"])
    click.echo("ATTRIBUTE\tVALUE")
    for name, value in rows:
        click.echo(f"{name}\t{value}")


@auth_group.command(name="can-i")
@click.argument("verb")
@click.argument("resource")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--subresource", default="", help="A subresource (scale, status, log, ...).")
@click.option("--as", "as_user", default=None, help="Ask for this user (impersonation).")
@click.pass_context
@run
async def can_i(
    ctx: click.Context,
    verb: str,
    resource: str,
    namespace: str,
    subresource: str,
    as_user: str | None,
) -> None:
    """Would RBAC allow VERB on RESOURCE (``pods``, ``deployment``, ``pods/NAME``)? Prints
    yes or no; exits 0 for yes, 1 for no (as kubectl)."""
    from streams.commandbus import ACCESS_REVIEW_SUBJECT, CommandClient

    kind, _, name = resource.partition("/")
    if subresource:
        kind = f"{kind}/{subresource}"
    body = {"verb": verb, "resource": kind, "namespace": namespace, "name": name}
    async with open_session(ctx) as s:
        commands = CommandClient(s.nc, actor=as_user, impersonate=True) if as_user else s.commands
        answer = (await commands.review(ACCESS_REVIEW_SUBJECT, body)).extra
    allowed = bool(answer.get("allowed"))
    click.echo("yes" if allowed else "no")
    if not allowed:
        raise click.exceptions.Exit(1)
