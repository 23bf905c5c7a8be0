"""What every ``fleetlog`` command shares: expected failures as one ``error: …`` line and a
non-zero exit, running an async command body (with logging set up first), and opening the
session a command talks to the cluster through.

Why this exists: the CLI is split into modules by topic (``ops/cli/``);
they must fail the same way. It is also where the CLI's start-up cost is kept down: the modules
that define commands import only this and other light modules, so ``fleetlog … --help`` loads
no NATS client, no structlog and no models; :func:`run` and :func:`open_session` load them when
a command actually runs.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from core.errors import FleetError

if TYPE_CHECKING:
    from ops.client import Session
    from streams.identity import Credentials

T = TypeVar("T")


class Failure(click.ClickException):
    """An expected failure: printed as ``error: …`` with exit code 1."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def run(coroutine_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body, turning expected errors into one readable line.

    Logging is configured here, at the level the root command was given (``--log-level``,
    kept in ``ctx.obj``), rather than when the root command's options are read: that happens
    for ``fleetlog COMMAND --help`` too, which logs nothing."""

    @functools.wraps(coroutine_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        # Loaded when a command runs, not when it is defined (see the module docstring).
        import asyncio

        from ops.logging import configure as configure_logging
        from streams.connection import Refused, Unreachable, Untrusted, trust
        from streams.identity import CredentialsError
        from streams.server import ServerError

        context = click.get_current_context(silent=True)
        root = (context.find_root().obj or {}) if context else {}
        level = root.get("log_level")
        if level:
            configure_logging(level)
        # Every connection of the command verifies the server's TLS with this CA.
        trust(root.get("tls_ca"))
        try:
            return asyncio.run(coroutine_fn(*args, **kwargs))
        except (FleetError, Unreachable, Refused, Untrusted, CredentialsError, ServerError) as exc:
            raise Failure(str(exc)) from None
        except TimeoutError as exc:
            # A request the server refused to this identity is never answered.
            from streams.connection import refusals

            if not refusals():
                raise
            raise Failure(
                f"the server refused a request to your identity ({refusals()[-1]}): reading "
                "the streams directly is for admins (group system:masters); other users read "
                "events, logs, usage and the past through `fleetlog up`'s services, which did "
                "not answer"
            ) from exc
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (``fleetlog events -o json | head``): stop quietly, as a
            # Unix filter does, and keep Python from reporting the pipe once more at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)

    return wrapper


def open_session(ctx: click.Context) -> AbstractAsyncContextManager[Session]:
    """The session of a command: the server, identity and actor the root command was given."""
    from ops.client import session  # the NATS client loads once a command connects

    return session(
        ctx.obj["server"],
        ctx.obj["actor"],
        credentials=credentials_for(ctx),
        impersonate=bool(ctx.obj.get("impersonate")),
    )


def credentials_for(ctx: click.Context, *, role: str | None = None) -> Credentials | None:
    """Who the command connects as: ``--credentials FILE``, else the context's user for
    ``role`` (a process run from this machine: ``agent``, ``scheduler``, ``sim``,
    ``gateway``) or its user, else nobody (a server without authorization)."""
    from pathlib import Path

    from ops.fleetconfig import target
    from streams.identity import read_seed_file

    obj = ctx.find_root().obj
    if obj.get("credentials_file"):
        return read_seed_file(Path(obj["credentials_file"]).expanduser())
    chosen = obj["target"]
    if role is not None and chosen.context is not None:
        from ops.fleetconfig import load

        chosen = target(load(chosen.path), path=chosen.path, context=chosen.context, role=role)
    credentials: Credentials | None = chosen.credentials()
    return credentials
