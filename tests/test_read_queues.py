"""read_queues (#19 item 3): several queues, one window, weighted fair demand.

Against the test PostgreSQL: weights over 5,000 deliveries, an idle queue's share going
to the other at once, no starvation, notification mode with one listener connection, acks
to each message's own queue, and queues on two databases in one read_queues.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import aclosing

import psycopg
import pytest
from _support import WAIT, Conn, count, wait_until, watch
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool
from reactivex import abc
from reactivex.scheduler import EventLoopScheduler

import rx_pgmq
from rx_pgmq.actions import Archive, Delete
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument, QueueNotFound
from rx_pgmq.message import Message

_opened: list[rx_pgmq.MultiQueueSource] = []  # sources subscribed by the running test


@pytest.fixture
def queues(pgmq_dsn: str) -> Iterator[Callable[[int], list[str]]]:
    """Make ``n`` fresh queues (dropped after the test, once the consumers of the sources
    it subscribed closed: a dispose returns at once and the close, which releases what was
    held, goes on in the background; dropping the queue under it would fail that release)."""
    made: list[str] = []

    def make(n: int) -> list[str]:
        names = [f"m_{uuid.uuid4().hex[:12]}" for _ in range(n)]
        with PGMQ(pgmq_dsn) as admin:
            for name in names:
                admin.create_queue(name)
        made.extend(names)
        return names

    yield make
    for source in _opened:
        source.wait_closed(15.0)
    _opened.clear()
    with PGMQ(pgmq_dsn) as admin:
        for name in made:
            admin.drop_queue(name)


class Deliveries:
    """An observer that counts deliveries per queue and settles each with ``action``
    (or holds them, with ``action=None``)."""

    def __init__(self, action: Delete | Archive | str | None = "delete") -> None:
        self.action: Delete | Archive | None = (
            Delete() if action == "delete" else None if isinstance(action, str) else action
        )
        self.lock = threading.Lock()
        self.by_queue: Counter[str] = Counter()
        self.order: list[str] = []
        self.held: list[Message] = []
        self.errors: list[Exception] = []
        self.stop_at: int | None = None
        self.stopped = threading.Event()
        self.in_flight = 0  # delivered, settle not yet committed
        self.peak = 0

    def on_next(self, message: Message) -> None:
        with self.lock:
            if self.stopped.is_set():
                self.held.append(message)
                return
            self.by_queue[message.queue] += 1
            self.order.append(message.queue)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.stop_at is not None and len(self.order) >= self.stop_at:
                self.stopped.set()
        if self.action is None:
            with self.lock:
                self.held.append(message)
        else:
            message.settle(self.action).add_done_callback(self._settled)

    def _settled(self, _future: object) -> None:
        with self.lock:
            self.in_flight -= 1

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    def total(self) -> int:
        with self.lock:
            return len(self.order)

    def count(self, queue: str) -> int:
        with self.lock:
            return self.by_queue[queue]


def _subscribe(source: rx_pgmq.MultiQueueSource, sink: Deliveries) -> abc.DisposableBase:
    _opened.append(source)  # closed before the queues are dropped (``queues``)
    return source.subscribe(on_next=sink.on_next, on_error=sink.on_error)


def _length(db: Conn, queue: str, prefix: str = "q") -> int:
    table = sql.Identifier("pgmq", f"{prefix}_{queue}")
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def test_deliveries_follow_the_weights_within_10_percent_over_5000(
    pgmq: PGMQ, pgmq_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: with both queues backlogged, 3:1 weights give 3:1 deliveries (within
    10%) over 5,000 messages."""
    high, low = queues(2)
    pgmq.send_batch(high, [{"i": i} for i in range(4500)])
    pgmq.send_batch(low, [{"i": i} for i in range(2500)])
    sink = Deliveries()
    sink.stop_at = 5000
    source = rx_pgmq.read_queues(
        {high: 3, low: 1}, pgmq_dsn, visibility_timeout=60, max_in_flight=40, batch_size=10
    )
    sub = _subscribe(source, sink)
    try:
        assert sink.stopped.wait(120), sink.by_queue
    finally:
        sub.dispose()
        sink.held.clear()  # dropped, so released at once (the close need not wait for them)
    assert not sink.errors
    assert sink.peak <= 40  # one window over both queues
    ratio = sink.by_queue[high] / sink.by_queue[low]
    assert 2.7 <= ratio <= 3.3, sink.by_queue
    assert sink.by_queue[high] < 4500 and sink.by_queue[low] < 2500  # both kept a backlog


def test_an_idle_queue_gives_its_share_to_the_other_at_once(
    pgmq: PGMQ, pgmq_dsn: str, db: Conn, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: the empty queue's first (short) read hands its share to the other:
    with nothing settled and no poll due (read_interval=600), the busy queue holds the
    whole window but the idle queue's one probe place (7 of 8, not its 4:4 share)."""
    busy, idle = queues(2)
    pgmq.send_batch(busy, [{"i": i} for i in range(100)])
    sink = Deliveries(action=None)
    source = rx_pgmq.read_queues(
        {busy: 1, idle: 1}, pgmq_dsn, visibility_timeout=60, max_in_flight=8, read_interval=600
    )
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: sink.count(busy) == 7), sink.by_queue
        watch()
        assert sink.count(busy) == 7 and sink.count(idle) == 0
        assert sink.peak == 7
        assert _length(db, busy) - (100 - 7) == 7  # 7 leased on the server, not more
        # A message sent now to the idle queue is read by its probe (the next poll is
        # 10 minutes away: the settle below makes its consumer read again at once).
        pgmq.send(idle, {"late": True})
        for m in list(sink.held)[:1]:
            m.settle(Delete()).result(10)
        assert wait_until(lambda: sink.count(idle) == 1 or sink.count(busy) == 8)
    finally:
        sub.dispose()
        sink.held.clear()  # dropped, so released at once (the close need not wait for them)
    assert not sink.errors


def test_wait_closed_waits_for_every_queue_consumer_to_close_and_release(
    pgmq: PGMQ, pgmq_dsn: str, db: Conn, queues: Callable[[int], list[str]]
) -> None:
    """#14 item 4 for read_queues: after dispose (which returns at once), ``wait_closed``
    returns once each queue's consumer closed; the messages the subscriber still held were
    released (visible again) in both queues by then, after their close_timeout."""
    a, b = queues(2)
    pgmq.send_batch(a, [{"i": i} for i in range(3)])
    pgmq.send_batch(b, [{"i": i} for i in range(3)])
    sink = Deliveries(action=None)  # holds every message: the close waits for them
    source = rx_pgmq.read_queues({a: 1, b: 1}, pgmq_dsn, visibility_timeout=60, close_timeout=3.0)
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: sink.count(a) == 3 and sink.count(b) == 3), sink.by_queue
    finally:
        sub.dispose()
    assert count(db, a, "vt <= clock_timestamp()") == 0  # still held: the close waits
    assert source.wait_closed(WAIT)
    assert count(db, a, "vt <= clock_timestamp()") == 3
    assert count(db, b, "vt <= clock_timestamp()") == 3
    assert not sink.errors
    assert source.wait_closed(0)  # nothing left closing


def test_a_weight_1_queue_does_not_starve(
    pgmq: PGMQ, pgmq_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: weights 10:1 and a busy queue with a deep backlog: messages that
    arrive on the idle weight-1 queue are all delivered while the busy one is still
    backlogged (and the weight-1 queue, backlogged, gets about 1 in 11)."""
    busy, slow = queues(2)
    pgmq.send_batch(busy, [{"i": i} for i in range(3000)])
    sink = Deliveries()
    source = rx_pgmq.read_queues(
        {busy: 10, slow: 1}, pgmq_dsn, visibility_timeout=60, max_in_flight=4, read_interval=0.2
    )
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: sink.count(busy) >= 100)
        pgmq.send_batch(slow, [{"i": i} for i in range(50)])
        assert wait_until(lambda: sink.count(slow) == 50, timeout=60), sink.by_queue
        assert sink.count(busy) < 3000  # the busy queue still had a backlog
    finally:
        sub.dispose()
    assert not sink.errors
    with sink.lock:
        first = sink.order.index(slow)
        window = sink.order[first : first + 330]
    # While both had a backlog, the weight-1 queue got about 1 in 11 (not less than half).
    assert window.count(slow) >= 15, Counter(window)


def test_notification_mode_uses_one_listener_connection_for_all_queues(
    pgmq: PGMQ, pgmq_dsn: str, db: Conn, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: listener=True and no polling: three queues share one LISTEN connection
    (counted in pg_stat_activity), and inserts on each wake its consumer."""
    names = queues(3)
    for name in names:
        pgmq.enable_notify(name, throttle_ms=0)
    sink = Deliveries()
    source = rx_pgmq.read_queues(
        dict.fromkeys(names, 1),
        pgmq_dsn,
        visibility_timeout=60,
        listener=True,
        read_interval=None,
    )

    def backends(app: str) -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = backends("rx_pgmq.listener")
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: backends("rx_pgmq.reader") >= 3)
        watch()  # every reader is idle, waiting for a notification
        for i, name in enumerate(names):
            pgmq.send_batch(name, [{"i": k} for k in range(i + 1)])
        assert wait_until(lambda: sink.total() == 6), sink.by_queue
        assert backends("rx_pgmq.listener") - before == 1
        assert [sink.count(n) for n in names] == [1, 2, 3]
    finally:
        sub.dispose()
    assert wait_until(lambda: backends("rx_pgmq.listener") == before)  # closed on dispose
    assert not sink.errors


def test_a_given_listener_serves_every_queue(
    pgmq: PGMQ, pgmq_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: an rx_pgmq.Listener passed in wakes every queue's consumer (no
    polling), and stays open after dispose (the caller owns it)."""
    names = queues(2)
    for name in names:
        pgmq.enable_notify(name, throttle_ms=0)
    sink = Deliveries()
    with rx_pgmq.Listener(pgmq_dsn) as listener:
        source = rx_pgmq.read_queues(
            dict.fromkeys(names, 1),
            pgmq_dsn,
            visibility_timeout=60,
            listener=listener,
            read_interval=None,
        )
        sub = _subscribe(source, sink)
        try:
            watch()
            for name in names:
                pgmq.send_batch(name, [{"i": 1}] * 2)
            assert wait_until(lambda: sink.total() == 4), sink.by_queue
        finally:
            sub.dispose()
        assert not listener.closed
    assert [sink.count(n) for n in names] == [2, 2]


def test_queues_read_through_a_pool_with_a_shared_listener(
    pgmq: PGMQ, pgmq_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: a ConnectionPool serves every queue's reader and acknowledger, and
    listener=True listens on the pool's database."""
    names = queues(2)
    for name in names:
        pgmq.enable_notify(name, throttle_ms=0)
    sink = Deliveries()
    with ConnectionPool(pgmq_dsn, min_size=1, max_size=6, open=True) as pool:
        source = rx_pgmq.read_queues(
            dict.fromkeys(names, 1), pool, visibility_timeout=60, listener=True, read_interval=None
        )
        sub = _subscribe(source, sink)
        try:
            watch()
            for name in names:
                pgmq.send_batch(name, [{"i": 1}] * 3)
            assert wait_until(lambda: sink.total() == 6), sink.by_queue
            assert wait_until(lambda: all(pgmq.metrics(n).queue_length == 0 for n in names))
        finally:
            sub.dispose()
    assert not sink.errors


def test_each_message_keeps_its_queue_and_is_acked_on_it(
    pgmq: PGMQ, pgmq_dsn: str, db: Conn, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: archiving every delivery moves each message to its own queue's
    archive, by its own id; the source counts per queue and in total."""
    a, b = queues(2)
    ids = {a: pgmq.send_batch(a, [{"q": "a"}] * 5), b: pgmq.send_batch(b, [{"q": "b"}] * 7)}
    seen: dict[str, set[int]] = {a: set(), b: set()}
    lock = threading.Lock()
    sink = Deliveries(action=Archive())
    original = sink.on_next

    def on_next(message: Message) -> None:
        with lock:
            seen[message.queue].add(message.msg_id)
        assert message.body == {"q": "a" if message.queue == a else "b"}
        original(message)

    sink.on_next = on_next  # type: ignore[method-assign]
    source = rx_pgmq.read_queues({a: 1, b: 2}, pgmq_dsn, visibility_timeout=60)
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: _length(db, a, "a") == 5 and _length(db, b, "a") == 7)
        assert wait_until(lambda: source.stats.settled.get("archive") == 12)
    finally:
        sub.dispose()
    assert [s.messages for s in source.queue_stats] == [5, 7]
    stats = source.stats
    assert (stats.messages, stats.consumers, stats.in_flight) == (12, 2, 0)
    assert seen == {a: set(ids[a]), b: set(ids[b])}
    assert _length(db, a) == 0 and _length(db, b) == 0
    for q in (a, b):
        rows = db.execute(
            sql.SQL("SELECT msg_id FROM {}").format(sql.Identifier("pgmq", f"a_{q}"))
        ).fetchall()
        assert {r[0] for r in rows} == set(ids[q])


@pytest.mark.parametrize("missing_first", [True, False])
def test_an_error_on_one_queue_ends_the_stream_and_stops_every_consumer(
    pgmq: PGMQ,
    pgmq_dsn: str,
    db: Conn,
    queues: Callable[[int], list[str]],
    missing_first: bool,
) -> None:
    """#19 item 3: a queue that does not exist reports QueueNotFound once to on_error,
    and the other queue's consumer closes too (its reader connection goes away)."""
    (real,) = queues(1)
    missing = f"m_{uuid.uuid4().hex[:12]}"
    sink = Deliveries()
    order = [missing, real] if missing_first else [real, missing]
    source = rx_pgmq.read_queues(dict.fromkeys(order, 1), pgmq_dsn, visibility_timeout=60)

    def readers() -> int:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rx_pgmq.reader'"
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = readers()
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: len(sink.errors) == 1)
        assert isinstance(sink.errors[0], QueueNotFound)
        assert wait_until(lambda: readers() == before)
        watch()
        assert len(sink.errors) == 1
    finally:
        sub.dispose()


def test_messages_arrive_on_the_given_scheduler(
    pgmq: PGMQ, pgmq_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: scheduler= delivers the merged stream on that scheduler's thread."""
    a, b = queues(2)
    pgmq.send_batch(a, [{"i": 1}] * 3)
    pgmq.send_batch(b, [{"i": 2}] * 3)
    threads: set[str] = set()
    sink = Deliveries()
    original = sink.on_next

    def on_next(message: Message) -> None:
        threads.add(threading.current_thread().name)
        original(message)

    sink.on_next = on_next  # type: ignore[method-assign]
    loop = EventLoopScheduler(
        thread_factory=lambda target: threading.Thread(
            target=target, name="the-scheduler", daemon=True
        )
    )
    source = rx_pgmq.read_queues({a: 1, b: 1}, pgmq_dsn, visibility_timeout=60, scheduler=loop)
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: sink.total() == 6)
    finally:
        sub.dispose()
        loop.dispose()
    assert threads == {"the-scheduler"}


@pytest.fixture
def second_dsn(pgmq_dsn: str) -> Iterator[str]:
    """A second database on the test server, with PGMQ installed (dropped after)."""
    name = f"rx_second_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(pgmq_dsn, dbname=name)
    rx_pgmq.install_pgmq(dsn)
    yield dsn
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_queues_on_two_databases_in_one_read_queues(
    pgmq: PGMQ, pgmq_dsn: str, second_dsn: str, queues: Callable[[int], list[str]]
) -> None:
    """#19 item 3: a list of (conninfo, queue, weight) reads queues on two databases
    (same queue name on both, one listener per database), each acked on its own
    database."""
    (name,) = queues(1)
    with PGMQ(second_dsn) as other:
        other.create_queue(name)
        other.enable_notify(name, throttle_ms=0)
        other.send_batch(name, [{"db": 2}] * 20)
    pgmq.enable_notify(name, throttle_ms=0)
    pgmq.send_batch(name, [{"db": 1}] * 10)
    bodies: Counter[int] = Counter()
    sink = Deliveries()
    original = sink.on_next

    def on_next(message: Message) -> None:
        with sink.lock:
            bodies[message.body["db"]] += 1
        original(message)

    sink.on_next = on_next  # type: ignore[method-assign]
    source = rx_pgmq.read_queues(
        [(pgmq_dsn, name, 1), (second_dsn, name, 1)],
        visibility_timeout=60,
        listener=True,
        max_in_flight=6,
    )
    sub = _subscribe(source, sink)
    try:
        assert wait_until(lambda: sink.total() == 30), bodies
        with PGMQ(second_dsn) as other:
            assert wait_until(lambda: other.metrics(name).queue_length == 0)
            other.drop_queue(name)
        assert wait_until(lambda: pgmq.metrics(name).queue_length == 0)
    finally:
        sub.dispose()
    assert bodies == {1: 10, 2: 20}
    assert not sink.errors
    assert conninfo_to_dict(second_dsn)["dbname"] != conninfo_to_dict(pgmq_dsn).get("dbname")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"queues": {}}, "queues"),
        ({"queues": {"a": 0}}, "queues"),
        ({"queues": {"a": True}}, "queues"),
        ({"queues": "a"}, "queues"),
        ({"queues": [("dsn", "a")]}, "queues"),
        ({"queues": [("dsn", "a", 1), ("dsn", "a", 2)]}, "queues"),
        ({"queues": {"a": 1}, "conninfo_or_pool": None}, "conninfo_or_pool"),
        ({"queues": [("dsn", "a", 1)], "conninfo_or_pool": "dsn"}, "conninfo_or_pool"),
        ({"queues": {"a": 1, "b": 1}, "max_in_flight": 1}, "max_in_flight"),
        ({"queues": {"a": 1}, "listener": "yes"}, "listener"),
        ({"queues": {"a-b": 1}}, "queue"),
        ({"queues": {"a": 1}, "visibility_timeout": 0}, "visibility_timeout"),
        (
            {"queues": [("host=x", "a", 1), ("host=y", "a", 1)], "listener": "L"},
            "listener",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], argument: str) -> None:
    """#19 item 3: read_queues checks its arguments when called (InvalidArgument)."""
    args: dict[str, object] = {"conninfo_or_pool": "dbname=x", "visibility_timeout": 30}
    args.update(kwargs)
    if isinstance(args["queues"], list) and "conninfo_or_pool" not in kwargs:
        args["conninfo_or_pool"] = None
    listener = rx_pgmq.Listener("host=x") if args.get("listener") == "L" else None
    if listener is not None:
        args["listener"] = listener
    try:
        with pytest.raises(InvalidArgument) as info:
            rx_pgmq.read_queues(**args)  # type: ignore[arg-type]
    finally:
        if listener is not None:
            listener.close()
    assert info.value.argument == argument or argument in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_for_over_read_queues_settles_on_each_queue(
    pgmq: PGMQ,
    pgmq_dsn: str,
    db: Conn,
    queues: Callable[[int], list[str]],
    anyio_backend: str,
) -> None:
    """#19 item 3: `async for` over read_queues yields both queues' messages and
    `asettle` deletes each from its own queue."""
    a, b = queues(2)
    pgmq.send_batch(a, [{"q": a}] * 3)
    pgmq.send_batch(b, [{"q": b}] * 2)
    seen: Counter[str] = Counter()
    source = rx_pgmq.read_queues({a: 1, b: 1}, pgmq_dsn, visibility_timeout=60)
    _opened.append(source)
    async with aclosing(aiter(source)) as messages:
        async for message in messages:
            assert message.body == {"q": message.queue}
            assert await message.asettle() == "acked"
            seen[message.queue] += 1
            if seen.total() == 5:
                break
    assert seen == {a: 3, b: 2}
    assert _length(db, a) == 0 and _length(db, b) == 0
