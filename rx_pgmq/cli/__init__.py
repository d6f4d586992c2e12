"""The ``rx-pgmq`` command: a demo, queue administration, peeking, tailing and a benchmark.

Every command connects to ``--dsn``, else ``$RX_PGMQ_DSN``, else ``$DATABASE_URL``, else the
embedded PostgreSQL (started on first use, see :mod:`rx_pgmq.embedded`). Bad input prints
one line on stderr and exits with a non-zero status.

Example:
    $ rx-pgmq demo
    $ rx-pgmq create orders && rx-pgmq send orders '{"id": 1}' '{"id": 2}'
    $ rx-pgmq peek orders
    $ rx-pgmq tail orders --ack delete --listen
"""

from __future__ import annotations

import click

from rx_pgmq.cli._admin import create, drop, queues
from rx_pgmq.cli._bench import BenchResult, bench, run_bench
from rx_pgmq.cli._common import dsn_option
from rx_pgmq.cli._demo import DemoResult, demo, demo_fails, run_demo
from rx_pgmq.cli._errors import CommandGroup
from rx_pgmq.cli._peek import peek
from rx_pgmq.cli._send import send
from rx_pgmq.cli._server import server
from rx_pgmq.cli._tail import tail
from rx_pgmq.cli._topics import topics

__all__ = ["BenchResult", "DemoResult", "cli", "demo_fails", "main", "run_bench", "run_demo"]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@dsn_option
@click.version_option(package_name="rx-pgmq", prog_name="rx-pgmq")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None) -> None:
    """Consume PGMQ queues as RxPY streams: try `rx-pgmq demo`."""
    ctx.ensure_object(dict)
    ctx.obj["dsn"] = dsn


for _command in (demo, create, drop, queues, send, peek, topics, tail, bench, server):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``rx-pgmq`` console script."""
    cli(prog_name="rx-pgmq")
