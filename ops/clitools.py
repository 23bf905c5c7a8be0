"""What every ``fleetlog`` command shares: expected failures as one ``error: …`` line and a
non-zero exit, and running an async command body.

Why this exists: the CLI is split into modules by topic (``ops/cli.py``, ``ops/audit_cli.py``);
they must fail the same way.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from core.errors import FleetError
from streams.connection import Unreachable
from streams.server import ServerError

T = TypeVar("T")


class Failure(click.ClickException):
    """An expected failure: printed as ``error: …`` with exit code 1."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def run(coroutine_fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body, turning expected errors into one readable line."""

    @functools.wraps(coroutine_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coroutine_fn(*args, **kwargs))
        except (FleetError, Unreachable, ServerError) as exc:
            raise Failure(str(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper
