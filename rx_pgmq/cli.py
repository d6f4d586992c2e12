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

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, NoReturn

import click
import psycopg
from psycopg import sql
from reactivex import Observable, abc

from rx_pgmq import _sql, embedded
from rx_pgmq import operators as pgops
from rx_pgmq._cli_server import running_note, server
from rx_pgmq._dberrors import first_line
from rx_pgmq._outcome import Settled
from rx_pgmq._source import read_queue
from rx_pgmq._validate import QUEUE_NAME_RULE, check_queue_name
from rx_pgmq.actions import Action, Archive, Delete, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument, QueueNotFound, RxPgmqError
from rx_pgmq.message import Message

__all__ = ["DemoResult", "cli", "main", "run_demo"]

_DEBUG_ENV = "RX_PGMQ_DEBUG"


# -- errors: one line, no traceback ------------------------------------------------------


class CliError(click.ClickException):
    """A failure reported as one line on stderr (exit status 1)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"rx-pgmq: error: {self.format_message()}", err=True)


class _CliUsageError(CliError):
    """A bad option or argument, as one line (exit status 2, as click's own usage errors)."""

    exit_code = click.UsageError.exit_code


def _one_line(exc: BaseException) -> str:
    return first_line(exc)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, QueueNotFound):
        return f"queue {exc.queue!r} does not exist; create it with: rx-pgmq create {exc.queue}"
    if isinstance(exc, InvalidArgument) and exc.argument in ("queue", "name"):
        return _one_line(exc).replace("name: ", "queue: ", 1)
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database: {_one_line(exc)}"
    return _one_line(exc)


class _Group(click.Group):
    """Turns rx_pgmq and database errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option or argument: one line too
            where = exc.ctx.command_path if exc.ctx is not None else "rx-pgmq"
            raise _CliUsageError(f"{exc.format_message()} (see: {where} --help)") from None
        except (RxPgmqError, psycopg.Error, OSError) as exc:
            if os.environ.get(_DEBUG_ENV):
                raise
            raise CliError(_explain(exc)) from exc


# -- shared helpers -----------------------------------------------------------------------


def _queue(name: str) -> str:
    """Validate a queue name given on the command line."""
    try:
        return check_queue_name(name)
    except InvalidArgument:
        raise CliError(f"invalid queue name {name!r}: it {QUEUE_NAME_RULE}") from None


def _uses_embedded(ctx: click.Context, dsn: str | None) -> bool:
    """Whether no DSN is given (option, group option or environment): embedded then."""
    explicit = dsn or (ctx.obj or {}).get("dsn")
    return not (explicit or os.environ.get("RX_PGMQ_DSN") or os.environ.get("DATABASE_URL"))


def _dsn(ctx: click.Context, dsn: str | None) -> str:
    """``--dsn`` of the command, else of the group, else the environment, else embedded."""
    explicit = dsn or (ctx.obj or {}).get("dsn")
    if _uses_embedded(ctx, dsn):
        click.echo(
            "rx-pgmq: no --dsn, RX_PGMQ_DSN or DATABASE_URL: using the embedded PostgreSQL "
            f"in {embedded.default_data_dir()} (its first start takes a few seconds)",
            err=True,
        )
    return embedded.resolve_dsn(explicit)


def _require_queue(client: PGMQ, queue: str) -> None:
    if not client.queue_exists(queue):
        raise QueueNotFound(queue)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
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


dsn_option = click.option(
    "--dsn",
    metavar="CONNINFO",
    default=None,
    help="PostgreSQL conninfo/URI (default: $RX_PGMQ_DSN, $DATABASE_URL, else embedded).",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@dsn_option
@click.version_option(package_name="rx-pgmq", prog_name="rx-pgmq")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None) -> None:
    """Consume PGMQ queues as RxPY streams: try `rx-pgmq demo`."""
    ctx.ensure_object(dict)
    ctx.obj["dsn"] = dsn


cli.add_command(server)


def main() -> None:
    """Entry point of the ``rx-pgmq`` console script."""
    cli(prog_name="rx-pgmq")


# -- queue administration -----------------------------------------------------------------


@cli.command()
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
    name = _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
        client.create_queue(name, unlogged=unlogged)
        if throttle_ms is not None:
            client.enable_notify(name, throttle_ms=throttle_ms)
    click.echo(f"created queue {name}")


@cli.command()
@click.argument("queue")
@click.option("--missing-ok", is_flag=True, help="Succeed if the queue does not exist.")
@dsn_option
@click.pass_context
def drop(ctx: click.Context, queue: str, missing_ok: bool, dsn: str | None) -> None:
    """Drop QUEUE and its archive."""
    name = _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
        dropped = client.drop_queue(name)
    if not dropped and not missing_ok:
        raise CliError(f"queue {name!r} does not exist (nothing dropped)")
    click.echo(f"dropped queue {name}" if dropped else f"queue {name} did not exist")


@cli.command()
@dsn_option
@click.pass_context
def queues(ctx: click.Context, dsn: str | None) -> None:
    """List the queues: metrics, kind, notification throttle and topic bindings."""
    from rich.box import SIMPLE
    from rich.table import Table

    with PGMQ(_dsn(ctx, dsn)) as client:
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
            _text(q.queue_name),
            str(m.queue_length),
            str(m.queue_visible_length),
            "-" if m.oldest_msg_age_sec is None else str(m.oldest_msg_age_sec),
            "-" if m.newest_msg_age_sec is None else str(m.newest_msg_age_sec),
            str(m.total_messages),
            q.kind,
            "off" if q.notify_throttle_ms is None else str(q.notify_throttle_ms),
            _text(" ".join(q.bindings)),
        )
    _console().print(table)


def _text(value: str) -> Any:
    from rich.text import Text

    return Text(value)


# -- producing and browsing ---------------------------------------------------------------


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise CliError(f"{where} is not valid JSON ({exc.msg}): {shown!r}") from None


@cli.command()
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
        with PGMQ(_dsn(ctx, dsn)) as client:
            _send_topic(client, routing_key, values, headers, delay)
        return
    if queue is None:
        raise CliError("give a QUEUE, or --topic KEY (see: rx-pgmq send --help)")
    name = _queue(queue)
    values, headers = _send_payload(bodies, header)
    with PGMQ(_dsn(ctx, dsn)) as client:
        _require_queue(client, name)
        ids = client.send_batch(name, values, headers=headers, delay=delay)
    for msg_id in ids:
        click.echo(str(msg_id))


def _send_payload(
    bodies: tuple[str, ...], header: str | None
) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """The bodies (from the arguments, else stdin lines) and their headers, parsed."""
    if bodies:
        values = [_parse_json(b, f"message {i}") for i, b in enumerate(bodies, 1)]
    else:
        stream = sys.stdin  # click swaps sys.stdin in CliRunner; get_text_stream is deprecated
        if stream.isatty():
            raise CliError("give message bodies as JSON arguments or as JSON lines on stdin")
        values = [
            _parse_json(line, f"stdin line {i}")
            for i, line in enumerate(stream.read().splitlines(), 1)
            if line.strip()
        ]
        if not values:
            raise CliError("stdin held no messages (one JSON value per line)")
    headers = None
    if header is not None:
        parsed = _parse_json(header, "--header")
        if not isinstance(parsed, dict):
            raise CliError(f"--header must be a JSON object, got {header!r}")
        headers = [parsed] * len(values)
    return values, headers


@cli.command()
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
    name = _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
        messages = client.peek(name, count, archive=archive)
    if as_json:
        for m in messages:
            click.echo(_compact(_record(m)))
        return
    from rich.table import Table

    from rx_pgmq._html import time_left

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
            _text(_compact(m.body)),
        )
    _console().print(table)


def _record(m: Message) -> dict[str, Any]:
    return {
        "msg_id": m.msg_id,
        "read_ct": m.read_ct,
        "enqueued_at": m.enqueued_at.isoformat(),
        "vt": m.vt.isoformat(),
        "headers": m.headers,
        "body": m.body,
    }


# -- topics ---------------------------------------------------------------------------------


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


@cli.group()
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
    name = _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
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
    name = _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
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
    name = None if queue is None else _queue(queue)
    with PGMQ(_dsn(ctx, dsn)) as client:
        bindings = client.list_topic_bindings(name)
    if as_json:
        for b in bindings:
            record = {"pattern": b.pattern, "queue": b.queue_name, "bound_at": b.bound_at}
            click.echo(_compact(record))
        return
    from rich.table import Table

    table = Table(title=f"{len(bindings)} binding(s)")
    for column in ("pattern", "queue", "bound at"):
        table.add_column(column)
    for b in bindings:
        when = b.bound_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(_text(b.pattern), _text(b.queue_name), when)
    _console().print(table)


@topics.command("test")
@click.argument("routing_key", metavar="KEY")
@dsn_option
@click.pass_context
def topics_test(ctx: click.Context, routing_key: str, dsn: str | None) -> None:
    """Show which bindings a routing KEY matches, one "PATTERN QUEUE" per line (no send)."""
    with PGMQ(_dsn(ctx, dsn)) as client:
        matches = client.test_routing(routing_key)
    if not matches:
        click.echo(f"rx-pgmq: {routing_key!r} matches no binding", err=True)
    for m in matches:
        click.echo(f"{m.pattern} {m.queue_name}")


# -- tail ---------------------------------------------------------------------------------

_ACKS: dict[str, Action] = {"delete": Delete(), "archive": Archive(), "nothing": Nothing()}


@cli.command()
@click.argument("queue")
@click.option(
    "--ack",
    type=click.Choice(sorted(_ACKS)),
    default="delete",
    show_default=True,
    help="What to do with each message once printed.",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most messages read and not yet acked.",
)
@click.option("--listen/--no-listen", default=False, help="Wake on insert notifications too.")
@click.option(
    "--vt",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Visibility timeout of read messages (s).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between polls while waiting for messages.",
)
@click.option("-n", "--count", type=click.IntRange(min=1), default=None, help="Stop after N.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Stop after this many seconds without a message.",
)
@click.option(
    "--pace",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Wait this many seconds after each message (to watch slowly).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@dsn_option
@click.pass_context
def tail(
    ctx: click.Context,
    queue: str,
    ack: str,
    window: int,
    listen: bool,
    vt: int,
    interval: float,
    count: int | None,
    idle_timeout: float | None,
    pace: float,
    as_json: bool,
    dsn: str | None,
) -> None:
    """Consume QUEUE live and print each message; Ctrl-C stops (in-flight ones are released)."""
    name = _queue(queue)
    conninfo = _dsn(ctx, dsn)
    with PGMQ(conninfo) as client:
        _require_queue(client, name)
        if listen and client.notify_throttle_ms(name) is None:
            click.echo(
                f"rx-pgmq: note: notifications are off for {name}; enable them with "
                f"`rx-pgmq create {name} --notify 0` (polling meanwhile)",
                err=True,
            )
    stop = threading.Event()
    state = {"printed": 0, "settled": 0, "last": time.monotonic()}
    lock = threading.Lock()
    failure: list[BaseException] = []

    def show(message: Message) -> None:
        if stop.is_set():
            raise RuntimeError("tail is stopping")  # fails: released, not acked
        if as_json:
            click.echo(_compact(_record(message)))
        else:
            click.echo(f"{message.msg_id}\t{message.read_ct}\t{_compact(message.body)}")
        with lock:
            state["printed"] += 1
            state["last"] = time.monotonic()
        if pace:
            stop.wait(pace)

    def settled(record: Settled) -> None:
        with lock:
            state["settled"] += 1
            done = count is not None and state["settled"] >= count
        if done:
            stop.set()

    def failed(error: Exception) -> None:
        failure.append(error)
        stop.set()

    action = _ACKS[ack]
    source = read_queue(
        conninfo,
        name,
        visibility_timeout=vt,
        read_interval=interval,
        listener=True if listen else None,
        batch_size=window,
        max_in_flight=window,
        extend_visibility=True,  # a slow --pace must not let messages time out
    )
    pipeline = source.pipe(
        pgops.process(show),
        # Only a message reaching `show` after the stop fails: release it (vt 0).
        pgops.ack(on_success=action, on_failure=SetVisibilityTimeout(0)),
    )
    interrupted = False
    with _stop_on_signals():
        subscription: abc.DisposableBase | None = None
        try:
            subscription = pipeline.subscribe(on_next=settled, on_error=failed)
            while not stop.wait(0.1):
                if idle_timeout is not None:
                    with lock:
                        idle = time.monotonic() - state["last"]
                    if idle >= idle_timeout:
                        break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stop.set()
            if subscription is not None:
                subscription.dispose()
                source.wait_closed()  # bounded by close_timeout: the release is counted
    stats = source.stats
    released = stats.settled.get("release", 0)
    if failure:
        raise failure[0]
    click.echo(
        f"rx-pgmq: {'interrupted' if interrupted else 'stopped'}: {state['printed']} printed, "
        f"{state['settled']} settled ({ack}), {released} released",
        err=True,
    )


# -- demo ---------------------------------------------------------------------------------


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


def _send_numbered(client: PGMQ, queue: str, numbers: range) -> None:
    """Send one message ``{"n": n}`` per number, 1,000 to a batch."""
    for start in range(0, len(numbers), 1000):
        client.send_batch(queue, [{"n": n} for n in numbers[start : start + 1000]])


def _run_until(
    pipeline: Observable[Settled], on_settled: Callable[[Settled], bool], timeout: float
) -> bool:
    """Subscribe ``pipeline`` until ``on_settled`` returns True, the pipeline fails, or
    ``timeout`` seconds pass; the subscription is disposed in every case.

    Returns:
        Whether ``on_settled`` returned True in time.

    Raises:
        Exception: The pipeline's error, if it failed.
    """
    done = threading.Event()
    errors: list[Exception] = []

    def on_next(record: Settled) -> None:
        if on_settled(record):
            done.set()

    def on_error(error: Exception) -> None:
        errors.append(error)
        done.set()

    subscription = pipeline.subscribe(on_next=on_next, on_error=on_error)
    try:
        finished = done.wait(timeout)
    finally:
        subscription.dispose()
    if errors:
        raise errors[0]
    return finished


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
        _send_numbered(client, queue, range(1, messages + 1))

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
    finished = _run_until(pipeline, on_settled, timeout)
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


@cli.command()
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    name = _queue(queue)
    conninfo = _dsn(ctx, dsn)
    console = _console()
    console.print(
        f"demo: {messages} messages on queue [bold]{name}[/]: windowed({window}) → "
        f"process(max_concurrency={concurrency}) → ack(Delete / max_attempts(3, "
        "then=Archive(), otherwise=backoff(1)))",
        markup=True,
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("retried {task.fields[retried]} · archived {task.fields[archived]}"),
        console=console,
        refresh_per_second=8,
    )
    task = progress.add_task("consuming", total=messages, retried=0, archived=0)

    def on_progress(r: DemoResult) -> None:
        progress.update(
            task, completed=r.processed + r.archived, retried=r.retried, archived=r.archived
        )

    with _stop_on_signals(), progress:
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
    note = running_note() if _uses_embedded(ctx, dsn) else None
    if note is not None:
        console.print(note, markup=False, soft_wrap=True)


# -- bench --------------------------------------------------------------------------------


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
            _send_numbered(client, queue, range(messages))
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
            if not _run_until(pipeline, on_settled, max(60.0, messages / 100)):
                raise RxPgmqError(f"bench: the queue did not drain ({count[0]}/{messages})")
            drained = time.monotonic() - t1
            source.wait_closed()  # closed before its queue is dropped
        finally:
            client.drop_queue(queue)
    return BenchResult(messages, sent, drained)


@cli.command()
@click.option("--messages", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=1000, show_default=True)
@dsn_option
@click.pass_context
def bench(ctx: click.Context, messages: int, batch_size: int, window: int, dsn: str | None) -> None:
    """Measure drain throughput (read + delete) on a scratch queue; prints msg/s."""
    conninfo = _dsn(ctx, dsn)
    with _stop_on_signals():
        result = run_bench(conninfo, messages=messages, batch_size=batch_size, window=window)
    click.echo(
        f"sent    {result.messages} messages in {result.send_seconds:.2f} s: "
        f"{result.send_rate:.0f} msg/s"
    )
    click.echo(
        f"drained {result.messages} messages in {result.drain_seconds:.2f} s: "
        f"{result.drain_rate:.0f} msg/s (batch_size={batch_size}, window={window})"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
