"""process with async handlers, fatal exceptions and failing subscribers (#16 items 1 and 4,
#14 item 5), on a real PostgreSQL unless the test says otherwise."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from _support import WAIT, Conn, Sink, Subscribe, count, leased, source_of, wait_until
from reactivex import Observable
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler, AsyncIOThreadSafeScheduler

import rx_pgmq
from rx_pgmq import Message, Outcome, Settled
from rx_pgmq import operators as pgops
from rx_pgmq._front._fakes import RecordingAcknowledger, make_message
from rx_pgmq.errors import InvalidArgument


def visible(db: Conn, queue: str) -> int:
    """Messages whose visibility timeout has passed."""
    return count(db, queue, "vt <= clock_timestamp()")


def process_all(
    handle: Callable[[Message], Any], count: int, limit: int, acker: Any = None
) -> list[Outcome]:
    """Run ``count`` fake messages (bodies ``{"n": i}``) through ``process(handle,
    max_concurrency=limit)`` with no database; return the outcomes once it completed."""
    messages = [make_message({"n": i}, msg_id=i + 1, acknowledger=acker) for i in range(count)]
    done = threading.Event()
    outcomes: list[Outcome] = []
    reactivex.from_iterable(messages).pipe(pgops.process(handle, max_concurrency=limit)).subscribe(
        outcomes.append, on_completed=done.set
    )
    assert done.wait(WAIT), f"no completion; outcomes so far: {[o.value for o in outcomes]}"
    return outcomes


# -- async handlers (#16 item 1) -------------------------------------------------------------


def test_async_handlers_run_concurrently_up_to_max_concurrency(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#16 item 1: with max_concurrency=50, 50 handlers awaiting one Event all start before
    any finishes (on one event loop thread, not 50 threads); every message is then acked."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(50)])
    log: list[str] = []
    threads: set[str] = set()
    release = asyncio.Event()

    async def handle(message: Message) -> int:
        log.append("start")
        threads.add(threading.current_thread().name)
        if log.count("start") == 50:
            release.set()
        await release.wait()
        log.append("end")
        return int(message.body["n"])

    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=50, batch_size=50)
    sink = subscribe(source.pipe(pgops.process(handle, max_concurrency=50), pgops.ack()))
    settled = sink.collect(50)
    assert log[:50] == ["start"] * 50
    assert len(threads) == 1
    assert all(isinstance(s, Settled) and s.ok and s.status == "acked" for s in settled)
    assert sorted(s.outcome.value for s in settled) == list(range(50))
    assert wait_until(lambda: count(db, pgmq_queue) == 0)


def test_async_handlers_never_exceed_max_concurrency() -> None:
    """#16 item 1: at most max_concurrency handlers run at once; the limit is reached."""
    running = 0
    most = 0

    async def handle(message: Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    outcomes = process_all(handle, 40, 7)
    assert len(outcomes) == 40 and most == 7


def test_handlers_that_finish_at_once_and_that_suspend_mix_within_the_limit() -> None:
    """#16 item 1: handlers finishing without awaiting anything and handlers that suspend
    (some then raising) mix on one loop: every message gets its outcome once, a failure
    for those that raised, never more than max_concurrency run at once, and each handler
    runs inside a task (``asyncio.timeout`` works, before and after suspending)."""
    running = 0
    most = 0
    tasks: list[bool] = []

    async def handle(message: Message) -> int:
        nonlocal running, most
        n = int(message.body["n"])
        running += 1
        most = max(most, running)
        tasks.append(asyncio.current_task() is not None)
        try:
            if n % 3:  # two in three suspend; one in three finish at once
                async with asyncio.timeout(WAIT):
                    await asyncio.sleep(0.001 * (n % 4))
                tasks.append(asyncio.current_task() is not None)
                if n % 5 == 0:
                    raise ValueError(f"bad {n}")
            return n
        finally:
            running -= 1

    outcomes = process_all(handle, 60, 4)
    assert sorted(o.message.msg_id for o in outcomes) == list(range(1, 61))
    bad = sorted(str(o.error) for o in outcomes if not o.ok)
    assert bad == sorted(f"bad {n}" for n in range(60) if n % 3 and n % 5 == 0)
    assert all(o.value == o.message.body["n"] for o in outcomes if o.ok)
    assert all(tasks) and len(tasks) == 60 + sum(1 for n in range(60) if n % 3)
    assert 1 < most <= 4


def test_a_handler_cancelling_itself_releases_its_message_and_the_rest_go_on() -> None:
    """#16 item 1: a handler that raises ``CancelledError`` by itself (its task was not
    cancelled: no dispose) is not a failure: its message is released, its slot frees, the
    messages waiting for it still run, and the stream completes (before: they never
    started and the stream hung)."""
    acker = RecordingAcknowledger()

    async def handle(message: Message) -> int:
        n = int(message.body["n"])
        await asyncio.sleep(0)
        if n in (0, 3):
            raise asyncio.CancelledError(f"handler {n} gave up")
        return n

    outcomes = process_all(handle, 6, 1, acker)
    assert [o.value for o in outcomes] == [1, 2, 4, 5]
    assert all(o.ok for o in outcomes)
    released = [r.message.msg_id for r in acker.requests if r.action.name == "set_vt"]
    assert released == [1, 4]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_sync_handler_on_the_loop_returning_a_future_has_it_awaited(
    anyio_backend: str,
) -> None:
    """#16 item 1: with an asyncio scheduler, a sync handler may return any awaitable (here
    a future of the loop, resolved later): it is awaited and its result is the value."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[int]] = []

    def handle(message: Message) -> asyncio.Future[int]:
        future: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, future.set_result, int(message.body["n"]) * 10)
        futures.append(future)
        return future

    messages = [make_message({"n": i}, msg_id=i + 1) for i in range(6)]
    done: asyncio.Future[None] = loop.create_future()
    values: list[Any] = []
    reactivex.from_iterable(messages).pipe(
        pgops.process(handle, max_concurrency=3, scheduler=AsyncIOThreadSafeScheduler(loop))
    ).subscribe(lambda o: values.append(o.value), on_completed=lambda: done.set_result(None))
    await asyncio.wait_for(done, WAIT)
    assert sorted(values) == [0, 10, 20, 30, 40, 50] and len(futures) == 6


def test_an_async_handler_raising_gives_a_failed_outcome(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#16 item 1 (done-when): an exception in an async handler is a failed Outcome carrying
    it (archived by the default policy); the stream goes on."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(4)])

    async def handle(message: Message) -> int:
        await asyncio.sleep(0)
        if message.body["n"] % 2:
            raise ValueError(f"odd {message.body['n']}")
        return int(message.body["n"])

    source = source_of(pgmq_dsn, pgmq_queue)
    sink = subscribe(source.pipe(pgops.process(handle, max_concurrency=4), pgops.ack()))
    settled: list[Settled] = sink.collect(4)
    failed = sorted((s for s in settled if not s.ok), key=lambda s: s.message.msg_id)
    assert [str(s.error) for s in failed] == ["odd 1", "odd 3"]
    assert all(isinstance(s.error, ValueError) and s.action.name == "archive" for s in failed)
    assert wait_until(lambda: count(db, pgmq_queue, prefix="a") == 2)
    assert not sink.errors


@pytest.mark.parametrize("limit", [1, 3])
def test_a_sync_handler_returning_an_awaitable_is_awaited(limit: int) -> None:
    """#16 item 1: a handler that returns a coroutine (a lambda around an async function)
    has it awaited; its result is the outcome's value (inline and on a pool)."""

    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    messages = [make_message({"n": i}, msg_id=i + 1) for i in range(5)]
    done = threading.Event()
    values: list[Any] = []
    reactivex.from_iterable(messages).pipe(
        pgops.process(lambda m: double(m.body["n"]), max_concurrency=limit)
    ).subscribe(lambda o: values.append(o.value), on_completed=done.set)
    assert done.wait(WAIT)
    assert sorted(values) == [0, 2, 4, 6, 8]


def test_disposing_cancels_async_handlers_and_releases_their_messages(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, subscribe: Subscribe
) -> None:
    """#16 item 1: dispose cancels running handlers; a cancelled handler is no failure (no
    outcome) and its message is visible again within a second."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    started = threading.Semaphore(0)
    cancelled: list[int] = []

    async def handle(message: Message) -> None:
        started.release()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(message.msg_id)
            raise

    source = source_of(pgmq_dsn, pgmq_queue)
    sink = subscribe(source.pipe(pgops.process(handle, max_concurrency=3), pgops.ack()))
    for _ in range(3):
        assert started.acquire(timeout=WAIT)
    at = time.monotonic()
    sink.subscription.dispose()
    assert wait_until(lambda: visible(db, pgmq_queue) == 3, timeout=5)
    assert time.monotonic() - at < 1.0 + 5.0  # dispose itself waits for the consumer's close
    assert wait_until(lambda: len(cancelled) == 3)
    assert not sink.messages and not sink.errors


# -- schedulers (#16 item 4) ------------------------------------------------------------------


def test_a_plain_asyncio_scheduler_is_rejected_naming_the_thread_safe_one() -> None:
    """#16 item 4 (done-when): RxPY's AsyncIOScheduler (not thread-safe) given to read_queue
    or process raises InvalidArgument naming AsyncIOThreadSafeScheduler; an async handler
    with a scheduler that has no event loop is rejected too."""
    loop = asyncio.new_event_loop()
    try:
        plain = AsyncIOScheduler(loop)
        with pytest.raises(InvalidArgument, match="AsyncIOThreadSafeScheduler"):
            rx_pgmq.read_queue("dbname=x", "q", visibility_timeout=30, scheduler=plain)
        with pytest.raises(InvalidArgument, match="AsyncIOThreadSafeScheduler"):
            pgops.process(lambda m: None, scheduler=plain)

        async def handle(message: Message) -> None:
            return None

        with pytest.raises(InvalidArgument, match="AsyncIOThreadSafeScheduler"):
            pgops.process(handle, scheduler=ThreadPoolScheduler(2))
    finally:
        loop.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_with_an_asyncio_scheduler_everything_lands_on_the_loop_thread(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, anyio_backend: str
) -> None:
    """#16 item 4: with AsyncIOThreadSafeScheduler(loop), deliveries, the handler, outcomes
    and Settled records all run on the loop's thread."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(5)])
    loop = asyncio.get_running_loop()
    scheduler = AsyncIOThreadSafeScheduler(loop)
    me = threading.current_thread()
    where: dict[str, set[threading.Thread]] = {"deliver": set(), "handle": set(), "record": set()}
    done: asyncio.Future[None] = loop.create_future()
    records: list[Settled] = []

    def delivered(message: Message) -> Message:
        where["deliver"].add(threading.current_thread())
        return message

    async def handle(message: Message) -> None:
        where["handle"].add(threading.current_thread())

    def record(settled: Settled) -> None:
        where["record"].add(threading.current_thread())
        records.append(settled)
        if len(records) == 5 and not done.done():
            done.set_result(None)

    source = source_of(pgmq_dsn, pgmq_queue, scheduler=scheduler)
    subscription = source.pipe(
        reactivex.operators.map(delivered),
        pgops.process(handle, max_concurrency=2, scheduler=scheduler),
        pgops.ack(),
    ).subscribe(record)
    try:
        await asyncio.wait_for(done, WAIT)
    finally:
        await asyncio.to_thread(subscription.dispose)
    assert where == {"deliver": {me}, "handle": {me}, "record": {me}}
    assert count(db, pgmq_queue) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_a_user_loop_the_records_of_one_flush_come_back_in_one_wake_up(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn, anyio_backend: str
) -> None:
    """#16 item 4: with AsyncIOThreadSafeScheduler(loop), the acker thread hands the Settled
    records of a flush back to the loop at once (at most one call_soon_threadsafe per
    flush, not one per message); they all land on the loop's thread, in the same number."""
    n = 50
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(n)])
    loop = asyncio.get_running_loop()
    scheduler = AsyncIOThreadSafeScheduler(loop)
    me = threading.current_thread()
    from_acker = [0]
    real_call = loop.call_soon_threadsafe

    def counting_call(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("rx_pgmq-acker"):
            from_acker[0] += 1
        return real_call(callback, *args, **kwargs)

    done: asyncio.Future[None] = loop.create_future()
    threads: set[threading.Thread] = set()
    records: list[Settled] = []

    def record(settled: Settled) -> None:
        threads.add(threading.current_thread())
        records.append(settled)
        if len(records) == n and not done.done():
            done.set_result(None)

    async def handle(message: Message) -> None:
        await asyncio.sleep(0)

    # flushes by size (10 settles each), long before the age bound
    source = source_of(pgmq_dsn, pgmq_queue, scheduler=scheduler, batch_size=10, ack_max_age=1.0)
    loop.call_soon_threadsafe = counting_call  # type: ignore[method-assign,assignment]
    try:
        subscription = source.pipe(
            pgops.process(handle, max_concurrency=4, scheduler=scheduler), pgops.ack()
        ).subscribe(record)
        try:
            await asyncio.wait_for(done, WAIT)
        finally:
            await asyncio.to_thread(subscription.dispose)
    finally:
        del loop.call_soon_threadsafe  # the loop's own method again
    flushes = source.stats.ack_flushes
    assert len(records) == n and all(r.status == "acked" for r in records)
    assert threads == {me}
    assert 1 <= from_acker[0] <= flushes < n, (from_acker[0], flushes)
    assert count(db, pgmq_queue) == 0


# -- fatal exceptions (#14 item 5) ------------------------------------------------------------

FATAL_CASES = [KeyboardInterrupt, SystemExit, GeneratorExit]


def _handler(engine: str, error: BaseException) -> tuple[Callable[[Message], Any], int]:
    """A handler raising ``error`` on the message with n == 1, and its max_concurrency."""
    if engine == "async":

        async def handle_async(message: Message) -> int:
            await asyncio.sleep(0)
            if message.body["n"] == 1:
                raise error
            return 0

        return handle_async, 2

    def handle(message: Message) -> int:
        if message.body["n"] == 1:
            raise error
        return 0

    return handle, (1 if engine == "inline" else 2)


@pytest.mark.parametrize("engine", ["inline", "pool", "async"])
@pytest.mark.parametrize("kind", FATAL_CASES)
def test_a_fatal_exception_from_a_handler_ends_the_stream_and_releases(
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
    engine: str,
    kind: type[BaseException],
) -> None:
    """#14 item 5: KeyboardInterrupt, SystemExit and GeneratorExit raised by a handler (inline,
    on a pool, async) end the stream with on_error carrying that very exception, and the
    unsettled messages are released; a KeyboardInterrupt on a thread that is not the main
    one also interrupts the main thread (the program still stops)."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(4)])
    error = kind()
    fn, limit = _handler(engine, error)
    source = source_of(pgmq_dsn, pgmq_queue, batch_size=4)
    pipeline = source.pipe(pgops.process(fn, max_concurrency=limit), pgops.ack())
    sink: Sink[Settled]
    if kind is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            sink = subscribe(pipeline)
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                threading.Event().wait(0.02)  # the main thread's interrupt lands here
    else:
        sink = subscribe(pipeline)
    assert sink.wait_error()
    assert sink.errors[0] is error
    # Nothing stays hidden: what was not acked before the error is visible again.
    assert wait_until(lambda: leased(db, pgmq_queue) == 0)
    assert count(db, pgmq_queue, "(message->>'n')::int = 1 AND vt <= clock_timestamp()") == 1


@pytest.mark.parametrize("kind", FATAL_CASES)
def test_a_fatal_exception_on_the_main_thread_is_raised_again(kind: type[BaseException]) -> None:
    """#14 item 5: on the main thread, after on_error carried it, KeyboardInterrupt and
    SystemExit propagate to the caller (the program stops); GeneratorExit does not."""
    error = kind()
    errors: list[BaseException] = []

    def handle(message: Message) -> None:
        raise error

    messages: Observable[Message] = reactivex.from_iterable([make_message({"n": 0})])
    pipeline = messages.pipe(pgops.process(handle))
    if kind is GeneratorExit:
        pipeline.subscribe(on_error=errors.append)
    else:
        with pytest.raises(kind) as raised:
            pipeline.subscribe(on_error=errors.append)
        assert raised.value is error
    assert errors == [error]


# -- a subscriber's on_next raising (#14 item 5) ---------------------------------------------


async def _async_ok(message: Message) -> int:
    return 0


STAGES: dict[str, Callable[[Observable[Message]], Observable[Any]]] = {
    "source": lambda source: source,
    "process inline": lambda source: source.pipe(pgops.process(lambda m: 0)),
    "process pool": lambda source: source.pipe(pgops.process(lambda m: 0, max_concurrency=2)),
    "process async": lambda source: source.pipe(pgops.process(_async_ok)),
    "ack": lambda source: source.pipe(pgops.process(lambda m: 0), pgops.ack()),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_subscriber_raising_in_on_next_ends_the_stream_the_same_way_at_every_stage(
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
    stage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """#14 item 5: whatever the stage (raw source, process inline/pool/async, after ack), an
    exception raised by the subscriber's on_next reaches its on_error, the stream ends and
    nothing stays hidden; no "settle callback raised" log."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    boom = RuntimeError("subscriber failed")

    def fail(value: object) -> None:
        raise boom

    sink = subscribe(STAGES[stage](source_of(pgmq_dsn, pgmq_queue)), fail)
    assert sink.wait_error()
    assert sink.errors == [boom]
    assert wait_until(lambda: leased(db, pgmq_queue) == 0)
    assert "settle callback" not in caplog.text


@pytest.mark.parametrize("stage", ["process pool", "process async", "ack"])
def test_a_subscriber_raising_system_exit_on_another_thread_reaches_on_error(
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
    stage: str,
) -> None:
    """#14 item 5: SystemExit raised by the subscriber's on_next on a pool, loop or
    acknowledger thread is not lost there: on_error carries it and nothing stays hidden."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    stop = SystemExit(3)

    def fail(value: object) -> None:
        raise stop

    sink = subscribe(STAGES[stage](source_of(pgmq_dsn, pgmq_queue)), fail)
    assert sink.wait_error()
    errors: list[object] = list(sink.errors)  # Sink types them as Exception
    assert errors == [stop]
    assert wait_until(lambda: leased(db, pgmq_queue) == 0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_sync_handler_returning_an_awaitable_on_a_loop_thread_fails_clearly(
    anyio_backend: str,
) -> None:
    """#16 item 1: a sync handler returning an awaitable on a thread that runs an event loop
    gives a failed Outcome saying to declare it async (blocking the loop could deadlock)."""

    async def work() -> int:
        return 1

    outcomes: list[Outcome] = []
    messages: Observable[Message] = reactivex.from_iterable([make_message({"n": 0})])
    messages.pipe(pgops.process(lambda m: work())).subscribe(outcomes.append)
    [outcome] = outcomes
    assert not outcome.ok and isinstance(outcome.error, InvalidArgument)
    assert "async def" in str(outcome.error)
