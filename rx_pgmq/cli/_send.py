"""``rx-pgmq send``: messages from JSON arguments or stdin lines, to a queue or a topic."""

from __future__ import annotations

import sys
from typing import Any

import click

from rx_pgmq.cli._common import (
    conninfo_of,
    dsn_option,
    parse_json,
    queue_arg,
    require_queue,
)
from rx_pgmq.cli._errors import CliError
from rx_pgmq.client import PGMQ

__all__ = ["send"]


@click.command()
@click.argument("queue", required=False)
@click.argument("bodies", nargs=-1, metavar="[JSON]...")
@click.option("--header", "header", default=None, metavar="JSON", help="Headers (a JSON object).")
@click.option("--delay", type=click.IntRange(min=0), default=0, help="Seconds before visible.")
@click.option(
    "--topic",
    "routing_key",
    default=None,
    metavar="KEY",
    help="Send to every queue bound to a pattern KEY matches (then give no QUEUE).",
)
@dsn_option
@click.pass_context
def send(
    ctx: click.Context,
    queue: str | None,
    bodies: tuple[str, ...],
    header: str | None,
    delay: int,
    routing_key: str | None,
    dsn: str | None,
) -> None:
    """Send messages to QUEUE: one per JSON argument, or one per line of stdin.

    With --topic KEY there is no QUEUE: every queue bound to a pattern KEY matches gets
    the messages, and each line printed is "QUEUE MSG_ID".
    """
    if routing_key is not None:
        values, headers = _send_payload(bodies if queue is None else (queue, *bodies), header)
        with PGMQ(conninfo_of(ctx, dsn)) as client:
            _send_topic(client, routing_key, values, headers, delay)
        return
    if queue is None:
        raise CliError("give a QUEUE, or --topic KEY (see: rx-pgmq send --help)")
    name = queue_arg(queue)
    values, headers = _send_payload(bodies, header)
    with PGMQ(conninfo_of(ctx, dsn)) as client:
        require_queue(client, name)
        ids = client.send_batch(name, values, headers=headers, delay=delay)
    for msg_id in ids:
        click.echo(str(msg_id))


def _send_payload(
    bodies: tuple[str, ...], header: str | None
) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """The bodies (from the arguments, else stdin lines) and their headers, parsed."""
    if bodies:
        values = [parse_json(b, f"message {i}") for i, b in enumerate(bodies, 1)]
    else:
        stream = sys.stdin  # click swaps sys.stdin in CliRunner; get_text_stream is deprecated
        if stream.isatty():
            raise CliError("give message bodies as JSON arguments or as JSON lines on stdin")
        values = [
            parse_json(line, f"stdin line {i}")
            for i, line in enumerate(stream.read().splitlines(), 1)
            if line.strip()
        ]
        if not values:
            raise CliError("stdin held no messages (one JSON value per line)")
    headers = None
    if header is not None:
        parsed = parse_json(header, "--header")
        if not isinstance(parsed, dict):
            raise CliError(f"--header must be a JSON object, got {header!r}")
        headers = [parsed] * len(values)
    return values, headers


def _send_topic(
    client: PGMQ,
    routing_key: str,
    values: list[Any],
    headers: list[dict[str, Any]] | None,
    delay: int,
) -> None:
    """``send --topic``: print "QUEUE MSG_ID" per message sent; warn when nothing matched."""
    sent = client.send_batch_topic(routing_key, values, headers=headers, delay=delay)
    if not sent:
        click.echo(
            f"rx-pgmq: no queue is bound to a pattern matching {routing_key!r}: nothing sent "
            "(see: rx-pgmq topics list)",
            err=True,
        )
    for name, ids in sent.items():
        for msg_id in ids:
            click.echo(f"{name} {msg_id}")
