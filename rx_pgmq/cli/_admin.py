"""``rx-pgmq create``, ``drop`` and ``queues``: queue administration."""

from __future__ import annotations

import click

from rx_pgmq.cli._common import (
    conninfo_of,
    dsn_option,
    queue_arg,
    rich_console,
    rich_text,
)
from rx_pgmq.cli._errors import CliError
from rx_pgmq.client import PGMQ

__all__ = ["create", "drop", "queues"]


@click.command()
@click.argument("queue")
@click.option("--unlogged", is_flag=True, help="Create an UNLOGGED queue (faster, not durable).")
@click.option(
    "--notify",
    "throttle_ms",
    type=click.IntRange(min=0),
    default=None,
    metavar="MS",
    help="Enable insert notifications, at most one per MS milliseconds (0 = every insert).",
)
@dsn_option
@click.pass_context
def create(
    ctx: click.Context, queue: str, unlogged: bool, throttle_ms: int | None, dsn: str | None
) -> None:
    """Create QUEUE (a no-op if it exists)."""
    name = queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        client.create_queue(name, unlogged=unlogged)
        if throttle_ms is not None:
            client.enable_notify(name, throttle_ms=throttle_ms)
    click.echo(f"created queue {name}")


@click.command()
@click.argument("queue")
@click.option("--missing-ok", is_flag=True, help="Succeed if the queue does not exist.")
@dsn_option
@click.pass_context
def drop(ctx: click.Context, queue: str, missing_ok: bool, dsn: str | None) -> None:
    """Drop QUEUE and its archive."""
    name = queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        dropped = client.drop_queue(name)
    if not dropped and not missing_ok:
        raise CliError(f"queue {name!r} does not exist (nothing dropped)")
    click.echo(f"dropped queue {name}" if dropped else f"queue {name} did not exist")


@click.command()
@dsn_option
@click.pass_context
def queues(ctx: click.Context, dsn: str | None) -> None:
    """List the queues: metrics, kind, notification throttle and topic bindings."""
    from rich.box import SIMPLE
    from rich.table import Table

    with PGMQ(conninfo_of(ctx, dsn)) as client:
        details = client.queues()
    table = Table(
        title=f"{len(details)} queue(s); ages in s, notify throttle in ms",
        box=SIMPLE,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("queue", no_wrap=True)
    for column in ("length", "visible", "oldest", "newest", "sent"):
        table.add_column(column, justify="right")
    table.add_column("kind", no_wrap=True)
    table.add_column("notify", justify="right", no_wrap=True)
    table.add_column("topics", overflow="fold")
    for q in details:
        m = q.metrics
        table.add_row(
            rich_text(q.queue_name),
            str(m.queue_length),
            str(m.queue_visible_length),
            "-" if m.oldest_msg_age_sec is None else str(m.oldest_msg_age_sec),
            "-" if m.newest_msg_age_sec is None else str(m.newest_msg_age_sec),
            str(m.total_messages),
            q.kind,
            "off" if q.notify_throttle_ms is None else str(q.notify_throttle_ms),
            rich_text(" ".join(q.bindings)),
        )
    rich_console().print(table)
