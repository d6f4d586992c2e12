"""What the ``rx-pgmq`` commands share: the ``--dsn`` option, argument checks, output helpers."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

import click

from rx_pgmq import embedded
from rx_pgmq._values._validate import QUEUE_NAME_RULE, check_queue_name
from rx_pgmq.cli._errors import CliError
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument, QueueNotFound
from rx_pgmq.message import Message

__all__ = [
    "compact_json",
    "conninfo_of",
    "dsn_option",
    "message_record",
    "parse_json",
    "progress_bar",
    "queue_arg",
    "require_queue",
    "rich_console",
    "rich_text",
    "stop_on_signals",
    "uses_embedded",
]


dsn_option = click.option(
    "--dsn",
    metavar="CONNINFO",
    default=None,
    help="PostgreSQL conninfo/URI (default: $RX_PGMQ_DSN, $DATABASE_URL, else embedded).",
)


def queue_arg(name: str) -> str:
    """Validate a queue name given on the command line."""
    try:
        return check_queue_name(name)
    except InvalidArgument:
        raise CliError(f"invalid queue name {name!r}: it {QUEUE_NAME_RULE}") from None


def uses_embedded(ctx: click.Context, dsn: str | None) -> bool:
    """Whether no DSN is given (option, group option or environment): embedded then."""
    explicit = dsn or (ctx.obj or {}).get("dsn")
    return not (explicit or os.environ.get("RX_PGMQ_DSN") or os.environ.get("DATABASE_URL"))


def conninfo_of(ctx: click.Context, dsn: str | None) -> str:
    """``--dsn`` of the command, else of the group, else the environment, else embedded."""
    explicit = dsn or (ctx.obj or {}).get("dsn")
    if uses_embedded(ctx, dsn):
        click.echo(
            "rx-pgmq: no --dsn, RX_PGMQ_DSN or DATABASE_URL: using the embedded PostgreSQL "
            f"in {embedded.default_data_dir()} (its first start takes a few seconds)",
            err=True,
        )
    return embedded.resolve_dsn(explicit)


def require_queue(client: PGMQ, queue: str) -> None:
    if not client.queue_exists(queue):
        raise QueueNotFound(queue)


def rich_console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def progress_bar(console: Any, *columns: str) -> Any:
    """The commands' rich progress bar: the task's description, the bar, done of total,
    then one text column per template in ``columns`` (e.g. ``"{task.fields[retried]}"``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(template) for template in columns),
        console=console,
        refresh_per_second=8,
    )


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def rich_text(value: str) -> Any:
    from rich.text import Text

    return Text(value)


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise CliError(f"{where} is not valid JSON ({exc.msg}): {shown!r}") from None


def message_record(m: Message) -> dict[str, Any]:
    return {
        "msg_id": m.msg_id,
        "read_ct": m.read_ct,
        "enqueued_at": m.enqueued_at.isoformat(),
        "vt": m.vt.isoformat(),
        "headers": m.headers,
        "body": m.body,
    }


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``KeyboardInterrupt`` while the block runs.

    SIGINT is handled even when the process started with it ignored (a background job).
    """

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    previous: list[tuple[int, Any]] = []
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous.append((signum, signal.signal(signum, handler)))
    except ValueError:  # not the main thread (e.g. a test runner thread)
        pass
    try:
        yield
    finally:
        for number, old in previous:
            signal.signal(number, old)
