"""asyncio (#16 items 2, 3, 5): ``async for`` over sources, ``asettle``, and ``AsyncPGMQ``.

Async tests run with anyio's pytest plugin (``@pytest.mark.anyio``, asyncio backend).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

import psycopg
import pytest
import reactivex
from _support import WAIT, Conn, count, leased, source_of, wait_until
from psycopg_pool import AsyncConnectionPool
from reactivex import operators as ops

import rx_pgmq
from rx_pgmq._front._fakes import RecordingAcknowledger, make_message
from rx_pgmq.actions import Archive, SetVisibilityTimeout
from rx_pgmq.aio import AsyncPGMQ, iterate
from rx_pgmq.errors import BodyMismatch, DecodeError, InvalidArgument, QueueNotFound
from rx_pgmq.message import Message

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: rx_pgmq bridges to asyncio."""
    return "asyncio"


def vt_passed(db: Conn, queue: str) -> int:
    """Messages whose visibility timeout has passed (visible to every reader)."""
    return count(db, queue, "vt <= clock_timestamp()")


# -- async for (#16 item 2) -------------------------------------------------------------


async def test_async_for_over_a_source_reads_and_asettle_deletes(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn
) -> None:
    """#16 item 2: `async for` over read_queue yields messages on the loop's thread;
    `await message.asettle()` returns 'acked' once the delete committed."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(5)])
    loop_thread = threading.current_thread()
    seen: list[int] = []
    async with aclosing(aiter(source_of(pgmq_dsn, pgmq_queue))) as messages:
        async for message in messages:
            assert threading.current_thread() is loop_thread
            assert await message.asettle() == "acked"
            seen.append(message.body["n"])
            if len(seen) == 5:
                break
    assert seen == [0, 1, 2, 3, 4]
    assert count(db, pgmq_queue) == 0


async def test_cancelling_the_consuming_task_releases_unsettled_within_a_second(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn
) -> None:
    """#16 item 2 (done-when): cancelling the task mid-batch releases the messages it did not
    settle (vt set back to now) within 1 s; the settled ones stay deleted."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(10)])
    got_three = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for message in source_of(pgmq_dsn, pgmq_queue, batch_size=10):
            n += 1
            if n <= 2:
                await message.asettle()
            if n == 3:
                got_three.set()
                await asyncio.Event().wait()  # mid-batch: never returns

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_three.wait(), WAIT)
    assert leased(db, pgmq_queue) == 8
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while vt_passed(db, pgmq_queue) < 8 and time.monotonic() - cancelled_at < 5:
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - cancelled_at
    assert vt_passed(db, pgmq_queue) == 8 and count(db, pgmq_queue) == 8
    assert elapsed < 1.0, f"released after {elapsed:.2f}s"


async def test_break_and_an_exception_in_the_loop_release_what_is_not_settled(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn
) -> None:
    """#16 item 2: leaving the loop by break or by an exception disposes the subscription
    and releases the unsettled messages."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(4)])
    async for _message in source_of(pgmq_dsn, pgmq_queue):
        break
    assert await asyncio.to_thread(wait_until, lambda: vt_passed(db, pgmq_queue) == 4)
    with pytest.raises(ZeroDivisionError):
        async for _message in source_of(pgmq_dsn, pgmq_queue):
            raise ZeroDivisionError
    assert await asyncio.to_thread(wait_until, lambda: vt_passed(db, pgmq_queue) == 4)


async def test_the_window_bounds_what_waits_in_the_iterator(
    pgmq: rx_pgmq.PGMQ, pgmq_queue: str, pgmq_dsn: str, db: Conn
) -> None:
    """#16 item 2: demand holds end to end: with max_in_flight=5 a consumer that does not
    settle gets 5 messages and no more are read while it waits; releasing one (arelease)
    returns its room, and the next read brings exactly one message."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(20)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5, batch_size=5)
    held = []
    async with aclosing(aiter(source)) as messages:
        async for message in messages:
            held.append(message)
            if len(held) == 5:
                break
        await asyncio.sleep(0.5)
        assert leased(db, pgmq_queue) == 5
        assert await held[0].arelease() == "acked"
        # Its room returned: one more read, of the oldest visible message (the released one).
        again = await asyncio.wait_for(anext(messages), WAIT)
        assert (again.msg_id, again.read_ct) == (held[0].msg_id, 2)
        assert leased(db, pgmq_queue) == 5


def _double(value: int) -> int:
    return value * 2


async def test_iterate_any_observable_and_its_error() -> None:
    """#16 item 2: iterate() works on any Observable; an error is raised after the values
    that came before it."""
    numbers: reactivex.Observable[int] = reactivex.from_iterable([1, 2, 3])
    values = [v async for v in iterate(numbers.pipe(ops.map(_double)))]
    assert values == [2, 4, 6]
    got: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        async for v in iterate(
            reactivex.concat(reactivex.of(1), reactivex.throw(ValueError("boom")))
        ):
            got.append(v)
    assert got == [1]
    with pytest.raises(InvalidArgument, match="max_buffer"):
        await anext(iterate(reactivex.of(1), max_buffer=0))


async def test_a_producer_thread_waits_for_room_in_the_buffer() -> None:
    """#16 item 2: a producer on another thread waits while max_buffer values wait."""
    produced: list[int] = []
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()

    def produce() -> None:
        for i in range(10):
            subject.on_next(i)
            produced.append(i)
        subject.on_completed()

    iterator = iterate(subject, max_buffer=3)
    first = asyncio.ensure_future(anext(iterator))
    await asyncio.sleep(0)  # subscribed
    thread = threading.Thread(target=produce)
    thread.start()
    assert await first == 0
    await asyncio.sleep(0.3)
    assert len(produced) <= 4  # 3 waiting, at most one more handed over since
    rest = [v async for v in iterator]
    assert rest == list(range(1, 10))
    thread.join(WAIT)


async def test_asettle_requests_at_once_and_carries_the_acknowledgers_result() -> None:
    """#16 item 2: asettle/arelease make the request when called (awaiting is optional) and
    resolve with the acknowledger's status, or raise its error, on the running loop."""
    acker = RecordingAcknowledger(auto=False)
    first = make_message({"n": 1}, acknowledger=acker)
    second = make_message({"n": 2}, acknowledger=acker)
    settled = first.asettle(Archive(), reason="bad")
    released = second.arelease()
    assert [(r.action, r.reason) for r in acker.requests] == [
        (Archive(), "bad"),
        (SetVisibilityTimeout(0), None),
    ]
    acker.requests[1].future.set_exception(RuntimeError("acker failed"))
    threading.Thread(target=acker.resolve, args=("acked",)).start()  # from another thread
    assert await asyncio.wait_for(settled, WAIT) == "acked"
    with pytest.raises(RuntimeError, match="acker failed"):
        await asyncio.wait_for(released, WAIT)


def test_asettle_does_not_keep_its_event_loop_alive() -> None:
    """#16 item 2: the inbox that brings asettle's statuses onto a loop does not keep the
    loop alive once it is closed and dropped (each asyncio.run would leave one behind)."""

    def run_one() -> weakref.ref[asyncio.AbstractEventLoop]:
        acker = RecordingAcknowledger(auto=False)
        message = make_message({"n": 1}, acknowledger=acker)

        async def settle() -> str:
            future = message.asettle()
            poster = threading.Thread(target=acker.resolve, args=("acked",))  # posts a result
            poster.start()
            status = await asyncio.wait_for(future, WAIT)
            poster.join(WAIT)
            return status

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(settle()) == "acked"
        finally:
            loop.close()
        return weakref.ref(loop)

    gone = run_one()
    gc.collect()
    assert gone() is None


# -- AsyncPGMQ (#16 item 3) --------------------------------------------------------------


async def test_async_client_in_a_rolled_back_transaction_sends_nothing(
    pgmq_dsn: str, pgmq_queue: str, db: Conn
) -> None:
    """#16 item 3 (done-when): AsyncPGMQ on the caller's connection joins its transaction:
    a rollback leaves nothing sent; a commit sends."""
    async with await psycopg.AsyncConnection.connect(pgmq_dsn) as conn:
        client = AsyncPGMQ(conn)
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await client.send(pgmq_queue, {"id": 1})
                await client.send_batch(pgmq_queue, [{"id": 2}, {"id": 3}])
                assert count(db, pgmq_queue) == 0  # not committed yet
                raise ZeroDivisionError
        assert count(db, pgmq_queue) == 0
        async with conn.transaction():
            await client.send(pgmq_queue, {"id": 4})
        assert count(db, pgmq_queue) == 1


async def test_async_client_core_methods(apgmq: AsyncPGMQ, pgmq_queue: str) -> None:
    """#16 items 3 and 5: the apgmq fixture's client creates, sends, reads, acks and
    reports like PGMQ."""
    name = pgmq_queue + "_b"
    await apgmq.create_queue(name)
    try:
        assert await apgmq.queue_exists(name)
        assert name in [q.queue_name for q in await apgmq.list_queues()]
        ids = await apgmq.send_batch(
            name, [{"n": 1}, {"n": 2}, {"n": 3}], headers=[{"h": 1}, None, None]
        )
        one = await apgmq.send(name, {"n": 4}, headers={"k": "v"})
        assert (await apgmq.metrics(name)).queue_length == 4
        read = await apgmq.read(name, vt=30, qty=2)
        assert [m.msg_id for m in read] == ids[:2] and read[0].headers == {"h": 1}
        assert await apgmq.delete(name, ids[0]) is True
        assert await apgmq.archive(name, [ids[1]]) == [ids[1]]
        moved = await apgmq.set_vt(name, ids[2], 0)
        assert moved is not None and moved.msg_id == ids[2]
        popped = await apgmq.pop(name, 5)
        assert sorted(m.msg_id for m in popped) == [ids[2], one]
        await apgmq.send(name, {"n": 5})
        assert await apgmq.purge_queue(name) == 1
        await apgmq.enable_notify(name, 0)
        await apgmq.disable_notify(name)
        assert any(m.queue_name == name for m in await apgmq.metrics_all())
    finally:
        assert await apgmq.drop_queue(name) is True


async def test_async_client_checks_arguments_and_names_errors(
    apgmq: AsyncPGMQ, pgmq_dsn: str
) -> None:
    """#16 item 3: the same validation (before any SQL) and named errors as PGMQ."""
    with pytest.raises(InvalidArgument, match="name"):
        await apgmq.send("Bad-Name", {})
    with pytest.raises(InvalidArgument, match="body"):
        await apgmq.send("t_x", {"a": float("nan")})
    with pytest.raises(InvalidArgument, match="bodies"):
        await apgmq.send_batch("t_x", [])
    with pytest.raises(InvalidArgument, match="msg_id"):
        await apgmq.delete("t_x", 0)
    with pytest.raises(QueueNotFound):
        await apgmq.send("t_no_such_queue_zz", {"a": 1})
    with pytest.raises(QueueNotFound):
        await apgmq.metrics("t_no_such_queue_zz")
    with pytest.raises(InvalidArgument, match="conninfo"):
        AsyncPGMQ(42)  # type: ignore[arg-type]


async def test_async_client_on_a_pool_and_closed(pgmq_dsn: str, pgmq_queue: str) -> None:
    """#16 item 3: an AsyncConnectionPool is borrowed (left open); `async with` closes the
    client, which then refuses calls."""
    async with AsyncConnectionPool(pgmq_dsn, open=False) as pool:
        async with AsyncPGMQ(pool) as client:
            assert await client.send(pgmq_queue, {"id": 1}) >= 1
        with pytest.raises(InvalidArgument, match="closed"):
            await client.send(pgmq_queue, {"id": 2})
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT 1")).fetchone()
            assert row == (1,)
    client2 = AsyncPGMQ(pgmq_dsn)
    assert await client2.queue_exists(pgmq_queue)
    await client2.close()
    with pytest.raises(InvalidArgument, match="closed"):
        await client2.list_queues()


async def test_async_client_reads_raise_a_decode_error_and_claim_nothing(
    apgmq: AsyncPGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 7 on the async client: a body Python cannot decode makes read, pop and set_vt
    raise DecodeError naming the message, with their statement rolled back (nothing claimed
    or popped), and good messages come back decoded (JSON text columns, not strings)."""
    good = await apgmq.send(pgmq_queue, {"ok": 1}, headers={"h": 1})
    deep = "[" * 5000 + "]" * 5000  # valid jsonb, deeper than Python's recursion limit
    row = db.execute("SELECT * FROM pgmq.send(%s, %s::jsonb)", (pgmq_queue, deep)).fetchone()
    assert row is not None
    bad = int(row[0])
    for call in (
        apgmq.read(pgmq_queue, 30, qty=5),
        apgmq.pop(pgmq_queue, 5),
        apgmq.set_vt(pgmq_queue, [good, bad], 0),
    ):
        with pytest.raises(DecodeError) as info:
            await call
        assert (info.value.msg_id, info.value.part) == (bad, "body")
        assert count(db, pgmq_queue, "read_ct = 0") == 2
    assert await apgmq.archive(pgmq_queue, bad)
    (message,) = await apgmq.read(pgmq_queue, 30, qty=5)
    assert (message.msg_id, message.body, message.headers) == (good, {"ok": 1}, {"h": 1})


# -- AsyncPGMQ: every PGMQ method (#16 item 3) -------------------------------------------
# The client tests (test_client*.py, test_bodytype.py) run each method on both clients
# through their ``client`` fixture; these are the asyncio-only properties.


@dataclass
class Order:
    """A typed body."""

    id: int


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in vars_of(cls).items() if not n.startswith("_")}


def vars_of(cls: type) -> dict[str, Callable[..., Any]]:
    """Every method of ``cls`` and its bases (the mixins' methods too)."""
    found: dict[str, Callable[..., Any]] = {}
    for base in reversed(cls.__mro__):
        found.update({n: f for n, f in vars(base).items() if callable(f)})
    return found


def test_async_client_has_every_method_of_pgmq_with_the_same_parameters() -> None:
    """#16 item 3: every public method of PGMQ is on AsyncPGMQ with the same parameters
    (names, kinds, defaults, annotations), as a coroutine function where PGMQ's does I/O."""
    sync, coros = _public(rx_pgmq.PGMQ), _public(AsyncPGMQ)
    assert set(sync) - set(coros) == set()
    for name, signature in sync.items():
        assert list(coros[name].parameters.values()) == list(signature.parameters.values()), name
        if name not in {"dsn"}:
            assert inspect.iscoroutinefunction(getattr(AsyncPGMQ, name)), name


async def test_async_read_with_poll_waits_in_the_server_and_returns_when_a_message_arrives(
    apgmq: AsyncPGMQ, pgmq_queue: str, pgmq_dsn: str
) -> None:
    """#16 item 3: AsyncPGMQ.read_with_poll waits in the server without blocking the loop
    (the sender below runs on the same loop while it waits) and returns the message sent
    0.5 s in, long before max_poll_seconds=20."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reading = asyncio.create_task(
        apgmq.read_with_poll(pgmq_queue, vt=30, qty=5, max_poll_seconds=20, poll_interval_ms=50)
    )
    await asyncio.sleep(0.5)  # one pause for the read to start waiting; no polling loop
    assert not reading.done(), "an empty queue's read_with_poll must wait for a message"
    async with AsyncPGMQ(pgmq_dsn) as other:
        msg_id = await other.send(pgmq_queue, {"late": True})
    messages = await asyncio.wait_for(reading, WAIT)
    assert [(m.msg_id, m.body) for m in messages] == [(msg_id, {"late": True})]
    assert loop.time() - started < 10


async def test_async_fifo_poll_returns_typed_bodies_and_a_mismatch_claims_nothing(
    apgmq: AsyncPGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#16 item 3: the FIFO reads (with poll too) decode body_type like PGMQ's, typed
    for mypy; a body that does not fit raises BodyMismatch and claims nothing."""
    groups = [{"x-pgmq-group": "a"}, {"x-pgmq-group": "b"}]
    await apgmq.send_batch(pgmq_queue, [{"id": 1}, {"id": 2}], headers=groups)
    got = await apgmq.read_grouped_rr_with_poll(pgmq_queue, 30, 2, 1, 50, body_type=Order)
    assert_type(got, list[Message[Order]])
    assert [m.body for m in got] == [Order(1), Order(2)]
    await apgmq.send(pgmq_queue, {"id": "x"}, headers={"x-pgmq-group": "c"})
    with pytest.raises(BodyMismatch):
        await apgmq.read_grouped_head(pgmq_queue, 30, 5, body_type=Order)
    assert count(db, pgmq_queue, "read_ct = 0") == 1


async def test_async_topic_sends_in_a_rolled_back_transaction_send_nothing(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str, db: Conn
) -> None:
    """#16 item 3 (done-when), for the send-like methods AsyncPGMQ gained: bind_topic,
    send_topic, send_batch_topic and a send at a datetime, on the caller's AsyncConnection,
    are undone by its rollback (no binding, nothing sent) and kept by its commit."""
    when = datetime.now(UTC) + timedelta(seconds=1)
    async with await psycopg.AsyncConnection.connect(pgmq_dsn) as conn:
        client = AsyncPGMQ(conn)
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await client.bind_topic("orders.*", pgmq_queue)
                assert await client.send_topic("orders.eu", {"id": 1}) == 1
                assert await client.send_batch_topic("orders.us", [{"id": 2}, {"id": 3}])
                await client.send(pgmq_queue, {"id": 4}, delay=when)
                assert count(db, pgmq_queue) == 0  # not committed yet
                raise ZeroDivisionError
        assert count(db, pgmq_queue) == 0
        assert pgmq.list_topic_bindings(pgmq_queue) == []
        async with conn.transaction():
            await client.bind_topic("orders.*", pgmq_queue)
            await client.send_topic("orders.eu", {"id": 5})
        assert count(db, pgmq_queue) == 1
        assert [b.pattern for b in pgmq.list_topic_bindings(pgmq_queue)] == ["orders.*"]
    pgmq.unbind_topic("orders.*", pgmq_queue)


async def test_async_client_dsn_and_routing_key_validation(apgmq: AsyncPGMQ, pgmq_dsn: str) -> None:
    """#16 item 3: AsyncPGMQ.dsn() gives a conninfo for the same database (as PGMQ.dsn);
    validate_routing_key passes a good key through the server's check and refuses a bad
    one with InvalidArgument naming the argument."""
    assert apgmq.dsn() == pgmq_dsn
    async with await psycopg.AsyncConnection.connect(pgmq_dsn) as conn:
        assert "dbname" in AsyncPGMQ(conn).dsn()
    await apgmq.validate_routing_key("orders.eu")
    with pytest.raises(InvalidArgument, match="routing_key"):
        await apgmq.validate_routing_key("orders..eu")
