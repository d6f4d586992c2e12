"""``rx-pgmq tail``: consume a queue live and print each message."""

from __future__ import annotations

import threading
import time

import click
from reactivex import abc

from rx_pgmq import operators as pgops
from rx_pgmq._consumer._source import read_queue
from rx_pgmq._values._outcome import Settled
from rx_pgmq.actions import Action, Archive, Delete, Nothing, SetVisibilityTimeout
from rx_pgmq.cli._common import (
    compact_json,
    conninfo_of,
    dsn_option,
    message_record,
    queue_arg,
    require_queue,
    stop_on_signals,
)
from rx_pgmq.client import PGMQ
from rx_pgmq.message import Message

__all__ = ["tail"]


_ACKS: dict[str, Action] = {"delete": Delete(), "archive": Archive(), "nothing": Nothing()}


@click.command()
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
    name = queue_arg(queue)
    conninfo = conninfo_of(ctx, dsn)
    with PGMQ(conninfo) as client:
        require_queue(client, name)
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
            click.echo(compact_json(message_record(message)))
        else:
            click.echo(f"{message.msg_id}\t{message.read_ct}\t{compact_json(message.body)}")
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
    with stop_on_signals():
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
