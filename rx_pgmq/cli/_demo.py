"""``rx-pgmq demo``: a pipeline with retries and archiving, checked against the database."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import psycopg
from psycopg import sql

from rx_pgmq import operators as pgops
from rx_pgmq._consumer._source import read_queue
from rx_pgmq._pg import _sql
from rx_pgmq._values._outcome import Settled
from rx_pgmq._values._validate import check_queue_name
from rx_pgmq.actions import Archive, Delete
from rx_pgmq.cli._common import (
    conninfo_of,
    dsn_option,
    progress_bar,
    queue_arg,
    rich_console,
    stop_on_signals,
    uses_embedded,
)
from rx_pgmq.cli._errors import CliError
from rx_pgmq.cli._runs import run_until, send_numbered
from rx_pgmq.cli._server import running_note
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import RxPgmqError
from rx_pgmq.message import Message

__all__ = ["DemoResult", "demo", "demo_fails", "run_demo"]


@dataclass
class DemoResult:
    """What ``rx-pgmq demo`` measured, and what the database says afterwards.

    Attributes:
        queue: The demo queue.
        messages: Messages produced.
        processed: Messages that succeeded (deleted).
        retried: Retries scheduled (``set_vt`` actions).
        retried_messages: Distinct messages retried at least once.
        archived: Messages archived after their last attempt.
        deliveries: Messages read, retries included.
        seconds: Wall time of the consumption.
        db_queue_rows: Rows left in ``pgmq.q_<queue>`` at the end.
        db_archive_rows: Rows in ``pgmq.a_<queue>`` at the end.
        actions: Settled records by action name.
    """

    queue: str
    messages: int
    processed: int = 0
    retried: int = 0
    retried_messages: int = 0
    archived: int = 0
    deliveries: int = 0
    seconds: float = 0.0
    db_queue_rows: int = -1
    db_archive_rows: int = -1
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages produced per second of consumption."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def consistent(self) -> bool:
        """Whether the counts add up and match the database."""
        return (
            self.processed + self.archived == self.messages
            and self.db_queue_rows == 0
            and self.db_archive_rows == self.archived
        )


def demo_fails(body: Any, read_ct: int, *, every: int, poison: int) -> bool:
    """Whether the demo's handler fails a message (deterministic, no I/O).

    Every ``every``-th message fails on its first attempt only (retried, then succeeds);
    every ``poison``-th fails on every attempt (archived after the last one).
    """
    n = body.get("n", 0) if isinstance(body, dict) else 0
    if poison and n % poison == 0:
        return True
    return bool(every) and n % every == 0 and read_ct == 1


def _table_rows(conninfo: str, queue: str) -> tuple[int, int]:
    query = sql.SQL("SELECT (SELECT count(*) FROM {q}), (SELECT count(*) FROM {a})").format(
        q=_sql.queue_table(queue, "q"), a=_sql.queue_table(queue, "a")
    )
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_demo(
    conninfo: str,
    *,
    queue: str = "rx_pgmq_demo",
    messages: int = 500,
    window: int = 50,
    concurrency: int = 4,
    attempts: int = 3,
    every: int = 7,
    poison: int = 23,
    timeout: float = 50.0,
    on_progress: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo pipeline on ``queue`` (dropped and recreated) and check the database.

    Produces ``messages`` messages ``{"n": 1..messages}``, then consumes them through
    ``windowed(window)`` → ``process(handler, max_concurrency=concurrency)`` →
    ``ack(on_success=Delete(), on_failure=max_attempts(attempts, then=Archive(),
    otherwise=backoff(1)))``. The handler fails as :func:`demo_fails` says.

    Args:
        conninfo: Where to run.
        queue: The demo queue (dropped first if it exists; kept afterwards).
        messages: How many messages to produce, >= 1.
        window: Messages in flight at most.
        concurrency: Handler calls running at once.
        attempts: Reads before a failing message is archived.
        every: Every n-th message fails once (0: none).
        poison: Every n-th message always fails (0: none).
        timeout: Longest wait for the queue to drain, seconds.
        on_progress: Called (from a pipeline thread) after each settled message.

    Returns:
        The counts, the wall time and the database's row counts.

    Raises:
        RxPgmqError: If the pipeline fails or the queue does not drain in time.
    """
    check_queue_name(queue)
    result = DemoResult(queue=queue, messages=messages)
    with PGMQ(conninfo) as client:
        client.drop_queue(queue)
        client.create_queue(queue)
        send_numbered(client, queue, range(1, messages + 1))

    def handler(message: Message) -> Any:
        if demo_fails(message.body, message.read_ct, every=every, poison=poison):
            raise RuntimeError(f"message n={message.body['n']} failed (attempt {message.read_ct})")
        return message.body["n"]

    lock = threading.Lock()
    retried: set[int] = set()
    actions: Counter[str] = Counter()
    policy = pgops.max_attempts(attempts, then=Archive(), otherwise=pgops.backoff(1))

    def on_settled(record: Settled) -> bool:
        with lock:
            result.deliveries += 1
            name = record.action.name
            actions[name] += 1
            if record.status == "acked":
                if name == "delete":
                    result.processed += 1
                elif name == "archive":
                    result.archived += 1
                elif name == "set_vt":
                    result.retried += 1
                    retried.add(record.message.msg_id)
            finished = result.processed + result.archived >= messages
        if on_progress is not None:
            on_progress(result)
        return finished

    source = read_queue(
        conninfo,
        queue,
        visibility_timeout=30,
        read_interval=0.1,
        batch_size=min(window, 50),
        max_in_flight=window,
    )
    pipeline = source.pipe(
        pgops.windowed(window),
        pgops.process(handler, max_concurrency=concurrency),
        pgops.ack(on_success=Delete(), on_failure=policy),
    )
    started = time.monotonic()
    finished = run_until(pipeline, on_settled, timeout)
    result.seconds = time.monotonic() - started
    source.wait_closed()  # dispose returns at once; the tables are read after the close
    if not finished:
        raise RxPgmqError(
            f"the demo did not drain {queue!r} within {timeout:.0f}s "
            f"({result.processed + result.archived}/{messages} done)"
        )
    result.retried_messages = len(retried)
    result.actions = dict(actions)
    result.db_queue_rows, result.db_archive_rows = _table_rows(conninfo, queue)
    return result


@click.command()
@click.option("--queue", default="rx_pgmq_demo", show_default=True, help="Recreated each run.")
@click.option("--messages", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=50.0, show_default=True)
@dsn_option
@click.pass_context
def demo(
    ctx: click.Context,
    queue: str,
    messages: int,
    window: int,
    concurrency: int,
    timeout: float,
    dsn: str | None,
) -> None:
    """Produce messages and consume them through a pipeline with retries and archiving.

    Every 7th message fails on its first attempt (retried after 1 s); every 23rd always
    fails (retried after 1 s and 2 s, then archived after its 3rd attempt).
    """
    from rich.table import Table

    name = queue_arg(queue)
    conninfo = conninfo_of(ctx, dsn)
    console = rich_console()
    console.print(
        f"demo: {messages} messages on queue [bold]{name}[/]: windowed({window}) → "
        f"process(max_concurrency={concurrency}) → ack(Delete / max_attempts(3, "
        "then=Archive(), otherwise=backoff(1)))",
        markup=True,
    )
    progress = progress_bar(
        console, "retried {task.fields[retried]} · archived {task.fields[archived]}"
    )
    task = progress.add_task("consuming", total=messages, retried=0, archived=0)

    def on_progress(r: DemoResult) -> None:
        progress.update(
            task, completed=r.processed + r.archived, retried=r.retried, archived=r.archived
        )

    with stop_on_signals(), progress:
        result = run_demo(
            conninfo,
            queue=name,
            messages=messages,
            window=window,
            concurrency=concurrency,
            timeout=timeout,
            on_progress=on_progress,
        )
        on_progress(result)
    table = Table(title=f"demo summary ({name})")
    table.add_column("")
    table.add_column("pipeline", justify="right")
    table.add_column("database", justify="right")
    table.add_row("messages produced", str(result.messages), "")
    table.add_row("processed (deleted)", str(result.processed), "")
    table.add_row(
        "retried",
        f"{result.retried} retries of {result.retried_messages} messages",
        "",
    )
    table.add_row("archived", str(result.archived), f"{result.db_archive_rows} rows in archive")
    left = result.messages - result.processed - result.archived
    table.add_row("left in queue", str(left), f"{result.db_queue_rows} rows")
    table.add_row("deliveries (reads)", str(result.deliveries), "")
    table.add_row("wall time", f"{result.seconds:.2f} s", "")
    table.add_row("msg/s", f"{result.rate:.0f} (retry waits included)", "")
    console.print(table)
    if not result.consistent:
        raise CliError(
            f"the pipeline's counts disagree with the database: processed {result.processed} + "
            f"archived {result.archived} of {result.messages}, archive rows "
            f"{result.db_archive_rows}, queue rows {result.db_queue_rows}"
        )
    console.print(
        f"database check: OK. Look around: rx-pgmq peek {name} --archive · rx-pgmq queues",
        markup=False,
        soft_wrap=True,
    )
    note = running_note() if uses_embedded(ctx, dsn) else None
    if note is not None:
        console.print(note, markup=False, soft_wrap=True)
