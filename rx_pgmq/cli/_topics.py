"""``rx-pgmq topics``: bind queues to routing patterns, list and test the bindings."""

from __future__ import annotations

import click

from rx_pgmq.cli._common import (
    compact_json,
    conninfo_of,
    dsn_option,
    queue_arg,
    rich_console,
    rich_text,
)
from rx_pgmq.cli._errors import CliError
from rx_pgmq.client import PGMQ

__all__ = ["topics"]


@click.group()
def topics() -> None:
    """Topic routing (PGMQ 1.11+): bind queues to patterns, list and test bindings.

    A pattern's `*` matches one dot-separated segment, `#` any number: a message sent with
    `rx-pgmq send --topic orders.eu.created` reaches queues bound to `orders.#` or
    `orders.*.created`.
    """


@topics.command("bind")
@click.argument("pattern")
@click.argument("queue")
@dsn_option
@click.pass_context
def topics_bind(ctx: click.Context, pattern: str, queue: str, dsn: str | None) -> None:
    """Route messages whose routing key matches PATTERN to QUEUE."""
    name = queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        client.bind_topic(pattern, name)
    click.echo(f"bound {pattern} -> {name}")


@topics.command("unbind")
@click.argument("pattern")
@click.argument("queue")
@click.option("--missing-ok", is_flag=True, help="Succeed if there is no such binding.")
@dsn_option
@click.pass_context
def topics_unbind(
    ctx: click.Context, pattern: str, queue: str, missing_ok: bool, dsn: str | None
) -> None:
    """Remove the binding of PATTERN to QUEUE."""
    name = queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        removed = client.unbind_topic(pattern, name)
    if not removed and not missing_ok:
        raise CliError(f"{pattern} is not bound to {name} (see: rx-pgmq topics list)")
    click.echo(f"unbound {pattern} -> {name}" if removed else f"{pattern} was not bound")


@topics.command("list")
@click.argument("queue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@dsn_option
@click.pass_context
def topics_list(ctx: click.Context, queue: str | None, as_json: bool, dsn: str | None) -> None:
    """List the bindings (of QUEUE only, if given), newest first."""
    name = None if queue is None else queue_arg(queue)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        bindings = client.list_topic_bindings(name)
    if as_json:
        for b in bindings:
            record = {"pattern": b.pattern, "queue": b.queue_name, "bound_at": b.bound_at}
            click.echo(compact_json(record))
        return
    from rich.table import Table

    table = Table(title=f"{len(bindings)} binding(s)")
    for column in ("pattern", "queue", "bound at"):
        table.add_column(column)
    for b in bindings:
        when = b.bound_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(rich_text(b.pattern), rich_text(b.queue_name), when)
    rich_console().print(table)


@topics.command("test")
@click.argument("routing_key", metavar="KEY")
@dsn_option
@click.pass_context
def topics_test(ctx: click.Context, routing_key: str, dsn: str | None) -> None:
    """Show which bindings a routing KEY matches, one "PATTERN QUEUE" per line (no send)."""
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        matches = client.test_routing(routing_key)
    if not matches:
        click.echo(f"rx-pgmq: {routing_key!r} matches no binding", err=True)
    for m in matches:
        click.echo(f"{m.pattern} {m.queue_name}")
