"""``rx-pgmq bench``: drain throughput (read + delete) on a scratch queue."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import click

from rx_pgmq import operators as pgops
from rx_pgmq._consumer._source import read_queue
from rx_pgmq._front._scalebench import bench_queue
from rx_pgmq._values._outcome import Settled
from rx_pgmq.actions import Delete
from rx_pgmq.cli._common import (
    conninfo_of,
    dsn_option,
    progress_bar,
    rich_console,
    stop_on_signals,
)
from rx_pgmq.cli._errors import CliError
from rx_pgmq.cli._runs import run_until, send_numbered
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import RxPgmqError

__all__ = ["BenchResult", "bench", "run_bench"]


@dataclass
class BenchResult:
    """What ``rx-pgmq bench`` measured."""

    messages: int
    send_seconds: float
    drain_seconds: float

    @property
    def drain_rate(self) -> float:
        """Messages drained (read + deleted) per second."""
        return self.messages / self.drain_seconds if self.drain_seconds > 0 else 0.0

    @property
    def send_rate(self) -> float:
        """Messages sent per second (``send_batch``)."""
        return self.messages / self.send_seconds if self.send_seconds > 0 else 0.0


def run_bench(
    conninfo: str, *, messages: int = 10_000, batch_size: int = 100, window: int = 1000
) -> BenchResult:
    """Send ``messages`` to a scratch queue, then time draining it (read + delete).

    Args:
        conninfo: Where to run.
        messages: How many messages.
        batch_size: Messages per read.
        window: Messages in flight at most.

    Returns:
        The timings.
    """
    queue = f"rx_pgmq_bench_{uuid.uuid4().hex[:8]}"
    with PGMQ(conninfo) as client:
        client.create_queue(queue)
        try:
            t0 = time.monotonic()
            send_numbered(client, queue, range(messages))
            sent = time.monotonic() - t0
            count = [0]

            def on_settled(_record: Settled) -> bool:
                count[0] += 1
                return count[0] >= messages

            source = read_queue(
                conninfo,
                queue,
                visibility_timeout=60,
                read_interval=0.05,
                batch_size=batch_size,
                max_in_flight=window,
                ack_batch_size=batch_size,
            )
            pipeline = source.pipe(pgops.ack_with(Delete()))
            t1 = time.monotonic()
            if not run_until(pipeline, on_settled, max(60.0, messages / 100)):
                raise RxPgmqError(f"bench: the queue did not drain ({count[0]}/{messages})")
            drained = time.monotonic() - t1
            source.wait_closed()  # closed before its queue is dropped
        finally:
            client.drop_queue(queue)
    return BenchResult(messages, sent, drained)


@click.command()
@click.option("--messages", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--consumers",
    type=click.IntRange(1, 64),
    default=None,
    help="Drain with this many consumer processes (read_queue -> process -> ack each, "
    "window 4 x batch size) and report msg/s, duplicates and messages lost.",
)
@dsn_option
@click.pass_context
def bench(
    ctx: click.Context,
    messages: int,
    batch_size: int,
    window: int,
    consumers: int | None,
    dsn: str | None,
) -> None:
    """Measure drain throughput (read + delete) on a scratch queue; prints msg/s."""
    conninfo = conninfo_of(ctx, dsn)
    if consumers is not None:
        _bench_consumers(conninfo, consumers, messages, batch_size)
        return
    with stop_on_signals():
        result = run_bench(conninfo, messages=messages, batch_size=batch_size, window=window)
    click.echo(
        f"sent    {result.messages} messages in {result.send_seconds:.2f} s: "
        f"{result.send_rate:.0f} msg/s"
    )
    click.echo(
        f"drained {result.messages} messages in {result.drain_seconds:.2f} s: "
        f"{result.drain_rate:.0f} msg/s (batch_size={batch_size}, window={window})"
    )


def _bench_consumers(conninfo: str, consumers: int, messages: int, batch_size: int) -> None:
    """``bench --consumers N``: the scaled drain (``rx_pgmq._front._scalebench``), with progress."""
    progress = progress_bar(rich_console())
    tasks = {
        "send": progress.add_task("sending", total=messages),
        "drain": progress.add_task(f"draining with {consumers} consumers", total=messages),
    }

    def on_progress(phase: str, done: int) -> None:
        progress.update(tasks[phase], completed=done)

    with stop_on_signals(), progress:
        result = bench_queue(
            conninfo,
            consumers=consumers,
            messages=messages,
            batch_size=batch_size,
            on_progress=on_progress,
        )
    click.echo(
        f"drained {result.sent} messages with {consumers} consumer processes in "
        f"{result.seconds:.2f} s: {result.rate:.0f} msg/s (batch_size={batch_size}, "
        f"window={4 * batch_size}); per consumer {list(result.per_consumer)}"
    )
    click.echo(f"duplicates {result.duplicates}, lost {result.lost}")
    if result.duplicates or result.lost:
        raise CliError(
            f"{result.duplicates} messages were handled twice and {result.lost} never: "
            "is another consumer reading the queue, or the visibility timeout too short?"
        )
