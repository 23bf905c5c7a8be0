"""``fleetlog config`` and ``fleetlog user``: contexts and credentials, and who may connect.

Why this exists: the embedded server admits only the identities ``fleetlog up`` writes into
its configuration (``streams.natsauth``). ``config`` reads and switches the contexts of the
fleetlog config (``ops.fleetconfig``) as ``kubectl config`` does; ``user`` manages the User
objects in the log through the gateway (``create`` and ``rotate`` make the nkey here, send
only its public key, and write the seed to a file only the caller may read, with a context
that uses it). The server refuses ``fleet.cmd.user.>`` from anyone outside ``system:masters``,
so only an admin's commands reach the gateway.

The Kubernetes door admits the same users: ``create`` (and ``rotate``) also mint a bearer
token here, send only its hash (``spec.tokenHash``) and keep the token beside the seed;
``user kubeconfig NAME`` writes a kubeconfig for kubectl with that token (or, on the machine
that ran ``fleetlog up``, with a client certificate its CA signs: ``--client-certificate``).
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


def _new_token(ctx: click.Context, name: str) -> tuple[str, Path]:
    """A fresh bearer token for the Kubernetes door, kept (0600) beside the user's seed; the
    log gets only its hash."""
    import secrets

    from streams.identity import write_private

    token = secrets.token_urlsafe(32)
    path, _ = _config(ctx)
    file = _credentials_dir(path) / f"{name}.token"
    write_private(file, token + "\n")
    return token, file


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
    """Create a user with a new nkey and a Kubernetes bearer token; write its seed, its token
    and a context that uses them."""
    from core.access.users import token_hash
    from streams.identity import Credentials, generate_seed

    credentials = Credentials(generate_seed())
    spec = {"publicKey": credentials.public_key, "groups": list(groups), "revoked": False}
    async with open_session(ctx) as s:
        if await s.query("User", name=name):
            raise Failure(f'users.auth.fleetlog.dev "{name}" already exists (rotate its key?)')
        token, token_file = _new_token(ctx, name)
        spec["tokenHash"] = token_hash(token)
        await s.commands.send("User", "apply", {"manifest": _user_manifest(name, spec)})
    file, context = _write_user_credentials(ctx, name=name, seed=credentials.seed, output=output)
    click.echo(f"user.auth.fleetlog.dev/{name} created")
    click.echo(f"credentials: {file} (context {context}: fleetlog --context {context} ...)")
    click.echo(f"kubernetes token: {token_file} (fleetlog user kubeconfig {name})")


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
    """Give a user a new nkey and Kubernetes token (the old ones are refused from now on) and
    write them."""
    from core.access.users import token_hash
    from streams.identity import Credentials, generate_seed

    credentials = Credentials(generate_seed())
    async with open_session(ctx) as s:
        manifest = await _stored_user(s, name)
        spec = {**(manifest.get("spec") or {}), "publicKey": credentials.public_key}
        spec["revoked"] = False
        token, _ = _new_token(ctx, name)
        spec["tokenHash"] = token_hash(token)
        await s.commands.send("User", "apply", {"manifest": _user_manifest(name, spec)})
    file, context = _write_user_credentials(ctx, name=name, seed=credentials.seed, output=output)
    click.echo(f"user.auth.fleetlog.dev/{name} rotated")
    click.echo(f"credentials: {file} (context {context})")


@user_group.command(name="kubeconfig")
@click.argument("name")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write it [default: credentials/NAME.kubeconfig beside the config].",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The data directory of the fleetlog up whose Kubernetes API to use (its kubeconfig "
    "gives the server and CA) [default: fleetlog up's].",
)
@click.option(
    "--client-certificate",
    "certificate",
    is_flag=True,
    help="Authenticate with a client certificate the API's CA signs now (CN NAME, O each "
    "--group), instead of the user's token; only where fleetlog up keeps its CA.",
)
@click.option("--group", "groups", multiple=True, help="A group of the certificate (repeatable).")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.pass_context
def user_kubeconfig(
    ctx: click.Context,
    name: str,
    output: Path | None,
    data_dir: Path | None,
    certificate: bool,
    groups: tuple[str, ...],
    namespace: str,
) -> None:
    """Write a kubeconfig for user NAME: kubectl then acts as NAME through the Kubernetes API,
    under the same RBAC and audit as the NATS door."""
    import base64

    import yaml

    from handlers.apiserver.certs import PKI, issue_client_certificate, user_kubeconfig
    from ops.cliargs import default_data_dir

    data = data_dir or default_data_dir()
    try:
        admin = yaml.safe_load((data / "kubeconfig").read_text())
        cluster = admin["clusters"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise Failure(
            f"cannot read the Kubernetes API's kubeconfig in {data} ({exc}): --data-dir?"
        ) from None
    server = cluster["cluster"]["server"]
    ca_pem = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    path, _ = _config(ctx)
    if certificate:
        try:
            cert, key = issue_client_certificate(PKI(data / "pki"), user=name, groups=groups)
        except (OSError, ValueError) as exc:
            raise Failure(str(exc)) from None
        credentials = {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
    else:
        token_file = _credentials_dir(path) / f"{name}.token"
        try:
            token = token_file.read_text().strip()
        except OSError:
            raise Failure(
                f"no token for {name} in {token_file}: tokens are kept where `fleetlog user "
                "create|rotate` ran (rotate gives a new one), or use --client-certificate"
            ) from None
        credentials = {"token": token}
    file = output or _credentials_dir(path) / f"{name}.kubeconfig"
    user_kubeconfig(
        file, server=server, ca_pem=ca_pem, cluster=str(cluster["name"]), user=name,
        credentials=credentials, namespace=namespace,
    )  # fmt: skip
    click.echo(f"kubeconfig: {file} (KUBECONFIG={file} kubectl ...)")


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
