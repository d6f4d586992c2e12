"""Errors of the ``rx-pgmq`` command: one line on stderr, no traceback.

``RX_PGMQ_DEBUG=1`` lets rx_pgmq and database errors through with their traceback.
"""

from __future__ import annotations

import os
from typing import Any

import click
import psycopg

from rx_pgmq._pg._dberrors import first_line
from rx_pgmq.errors import InvalidArgument, QueueNotFound, RxPgmqError

_DEBUG_ENV = "RX_PGMQ_DEBUG"

__all__ = ["CliError", "CommandGroup"]


class CliError(click.ClickException):
    """A failure reported as one line on stderr (exit status 1)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"rx-pgmq: error: {self.format_message()}", err=True)


class CliUsageError(CliError):
    """A bad option or argument, as one line (exit status 2, as click's own usage errors)."""

    exit_code = click.UsageError.exit_code


def _explain(exc: BaseException) -> str:
    if isinstance(exc, QueueNotFound):
        return f"queue {exc.queue!r} does not exist; create it with: rx-pgmq create {exc.queue}"
    if isinstance(exc, InvalidArgument) and exc.argument in ("queue", "name"):
        return first_line(exc).replace("name: ", "queue: ", 1)
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database: {first_line(exc)}"
    return first_line(exc)


class CommandGroup(click.Group):
    """Turns rx_pgmq and database errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option or argument: one line too
            where = exc.ctx.command_path if exc.ctx is not None else "rx-pgmq"
            raise CliUsageError(f"{exc.format_message()} (see: {where} --help)") from None
        except (RxPgmqError, psycopg.Error, OSError) as exc:
            if os.environ.get(_DEBUG_ENV):
                raise
            raise CliError(_explain(exc)) from exc
