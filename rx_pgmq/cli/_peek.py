"""``rx-pgmq peek``: the first messages of a queue or its archive, not claimed."""

from __future__ import annotations

import click

from rx_pgmq.cli._common import (
    compact_json,
    conninfo_of,
    dsn_option,
    message_record,
    queue_arg,
    rich_console,
    rich_text,
)
from rx_pgmq.client import PGMQ

__all__ = ["peek"]


@click.command()
@click.argument("queue")
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--archive", is_flag=True, help="Browse the queue's archive instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@dsn_option
@click.pass_context
def peek(
    ctx: click.Context, queue: str, count: int, archive: bool, as_json: bool, dsn: str | None
) -> None:
    """Show the first messages of QUEUE without claiming them (no vt or read_ct change)."""
    name = queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        messages = client.peek(name, count, archive=archive)
    if as_json:
        for m in messages:
            click.echo(compact_json(message_record(m)))
        return
    from rich.table import Table

    from rx_pgmq._front._html import time_left

    where = f"pgmq.a_{name}" if archive else f"pgmq.q_{name}"
    table = Table(title=f"{where}: {len(messages)} message(s), not claimed")
    for column in ("msg_id", "read_ct", "enqueued_at", "vt in"):
        table.add_column(column, justify="right")
    table.add_column("body", overflow="fold")
    for m in messages:
        table.add_row(
            str(m.msg_id),
            str(m.read_ct),
            m.enqueued_at.strftime("%Y-%m-%d %H:%M:%S"),
            time_left(m.vt),
            rich_text(compact_json(m.body)),
        )
    rich_console().print(table)
