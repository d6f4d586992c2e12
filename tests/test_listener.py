"""rx_pgmq.Listener: one shared LISTEN connection, against a real PostgreSQL with PGMQ."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from rx_pgmq._core._backoff import Backoff
from rx_pgmq._pg._listener import (
    APPLICATION_NAME,
    Listener,
    ListenerEvent,
    channel_name,
    queue_of_channel,
)
from rx_pgmq.errors import ConnectionLost, InvalidArgument, RxPgmqError

WAIT = 5.0  # generous bound for anything that normally takes milliseconds
LOGGER = "rx_pgmq._pg._listener"


# -- fixtures (the database comes from the rx_pgmq.testing plugin's ``pgmq_dsn``) ---------


@pytest.fixture
def make_queue(pgmq_dsn: str) -> Iterator[Callable[[], str]]:
    """Create uniquely named queues with insert notifications (throttle 0); drop them after."""
    created: list[str] = []

    def make() -> str:
        name = f"lst_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute("select pgmq.create(%s)", (name,))
            conn.execute("select pgmq.enable_notify_insert(%s, 0)", (name,))
        created.append(name)
        return name

    yield make
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute("select pgmq.drop_queue(%s)", (name,))


@pytest.fixture
def send(pgmq_dsn: str) -> Iterator[Callable[[str], None]]:
    """Send one message to a queue (its insert notification is delivered on commit)."""
    conn = psycopg.connect(pgmq_dsn, autocommit=True)

    def send_one(name: str) -> None:
        conn.execute("select pgmq.send(%s, '{}'::jsonb)", (name,))

    yield send_one
    conn.close()


@pytest.fixture
def listener(pgmq_dsn: str) -> Iterator[Listener]:
    with Listener(pgmq_dsn) as lst:
        yield lst


class Inbox:
    """A callback that records events; ``get`` waits with a timeout."""

    def __init__(self) -> None:
        self.events: queue.Queue[ListenerEvent] = queue.Queue()

    def __call__(self, event: ListenerEvent) -> None:
        self.events.put(event)

    def get(self, timeout: float = WAIT) -> ListenerEvent:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no listener event within {timeout} s") from None

    def pending(self) -> list[ListenerEvent]:
        out: list[ListenerEvent] = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


class OutageProxy:
    """A TCP proxy to the test server that can simulate an outage.

    ``down()`` cuts every proxied connection and makes new ones fail at once (accepted,
    then closed: libpq reports "server closed the connection unexpectedly"); ``up()``
    forwards again. Lets a test take "the database" away without touching the real server.
    """

    def __init__(self, dsn: str) -> None:
        with psycopg.connect(dsn) as conn:
            host, port = conn.info.host, conn.info.port
        if host.startswith("/"):
            self._upstream: tuple[int, Any] = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._upstream = (socket.AF_INET, (host, port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._down = False
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def conninfo(self, dsn: str) -> str:
        return make_conninfo(dsn, host="127.0.0.1", port=self.port, sslmode="disable")

    def down(self) -> None:
        with self._lock:
            self._down = True
            doomed, self._open = self._open, []
        for sock in doomed:
            self._kill(sock)

    def up(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self.down()
        self._kill(self._server)  # shutdown() wakes the blocked accept()
        self._accepter.join(WAIT)
        for thread in self._threads:
            thread.join(WAIT)

    @staticmethod
    def _kill(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                down = self._down
            if down:
                self._kill(client)
                continue
            upstream = socket.socket(self._upstream[0], socket.SOCK_STREAM)
            upstream.connect(self._upstream[1])
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            pair = [s for s in (src, dst) if s in self._open]
            self._open = [s for s in self._open if s not in pair]
        for sock in pair:
            self._kill(sock)


def _pids_of(dsn: str, application_name: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where application_name = %s", (application_name,)
        ).fetchall()
    return [row[0] for row in rows]


# -- pure helpers -------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.from_regex(r"[a-z_][a-z0-9_]{0,46}", fullmatch=True))
def test_channel_name_round_trips_to_the_queue(name: str) -> None:
    """Every valid queue maps to PGMQ's ``pgmq.q_<queue>.INSERT`` channel and back."""
    channel = channel_name(name)
    assert channel == f"pgmq.q_{name}.INSERT"
    assert len(channel.encode()) <= 63  # fits PostgreSQL's identifier limit
    assert queue_of_channel(channel) == name


def test_foreign_channels_map_to_no_queue() -> None:
    """Channels that are not PGMQ insert channels are ignored."""
    assert queue_of_channel("other") is None
    assert queue_of_channel("pgmq.q_.INSERT") is None
    assert queue_of_channel("pgmq.q_orders.UPDATE") is None


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    """Reconnect delays grow exponentially from initial, cap at max, restart after reset."""
    backoff = Backoff(initial=0.05, maximum=0.3)  # the listener's schedule (#15 item 5)
    assert [backoff.next_delay() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next_delay() == 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"conninfo": ""},
        {"conninfo": "host='unterminated"},
        {"reconnect_initial": 0},
        {"reconnect_initial": 1.0, "reconnect_max": 0.5},
        {"connect_timeout": -1},
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    """Malformed conninfo, non-positive delays or max < initial raise InvalidArgument."""
    args: dict[str, Any] = {"conninfo": "dbname=x"} | kwargs
    with pytest.raises(InvalidArgument):
        Listener(**args)


@pytest.mark.parametrize("name", ["Orders", "", "1abc", "a" * 48, "a-b", 42])
def test_subscribe_rejects_bad_queue_names(name: Any) -> None:
    """An invalid queue name raises InvalidArgument before any connection is made."""
    with Listener("dbname=unused") as lst:
        with pytest.raises(InvalidArgument):
            lst.subscribe(name, lambda event: None)
        with pytest.raises(InvalidArgument):
            lst.notifications(name)
        assert lst.backend_pid is None  # nothing connected


def test_subscribe_rejects_a_non_callable() -> None:
    """The callback must be callable."""
    with Listener("dbname=unused") as lst, pytest.raises(InvalidArgument):
        lst.subscribe("orders", "not callable")  # type: ignore[arg-type]


def test_closed_listener_refuses_subscriptions() -> None:
    """subscribe() on a closed listener raises RxPgmqError; notifications() sends on_error."""
    lst = Listener("dbname=unused")
    lst.close()
    with pytest.raises(RxPgmqError, match="closed"):
        lst.subscribe("orders", lambda event: None)
    errors: list[Exception] = []
    lst.notifications("orders").subscribe(on_error=errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0], RxPgmqError)
    assert "closed" in str(errors[0])


# -- against the database -------------------------------------------------------------------


def test_sent_message_notifies_its_queue_and_not_another(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """A message sent to queue A gives A's subscriber one notify event and B's none."""
    qa, qb = make_queue(), make_queue()
    inbox_a, inbox_b = Inbox(), Inbox()
    listener.subscribe(qa, inbox_a)
    listener.subscribe(qb, inbox_b)
    before = time.monotonic()
    send(qa)
    event = inbox_a.get()
    assert event.queue == qa
    assert event.kind == "notify"
    assert before <= event.at <= time.monotonic()
    # Notifications arrive in commit order on the one connection: once B's own
    # notification is in, anything A's message caused for B would have arrived first.
    send(qb)
    assert inbox_b.get().queue == qb
    assert inbox_b.pending() == []
    assert inbox_a.pending() == []
    assert listener.notifications_received == 2


def test_many_queues_share_one_connection(
    pgmq_dsn: str, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """Three queues and four subscribers use a single backend (one pg_stat_activity row)."""
    app = f"rx_pgmq_lst_{uuid.uuid4().hex[:8]}"
    queues = [make_queue() for _ in range(3)]
    inboxes = [Inbox() for _ in range(4)]
    with Listener(make_conninfo(pgmq_dsn, application_name=app)) as lst:
        for name, inbox in zip([*queues, queues[0]], inboxes, strict=True):
            lst.subscribe(name, inbox)
        assert lst.queues == sorted(queues)
        assert _pids_of(pgmq_dsn, app) == [lst.backend_pid]
        for name in queues:
            send(name)
        assert [inbox.get().queue for inbox in inboxes] == [*queues, queues[0]]
        assert _pids_of(pgmq_dsn, app) == [lst.backend_pid]


def test_connection_is_tagged_with_the_listener_application_name(
    pgmq_dsn: str, listener: Listener, make_queue: Callable[[], str]
) -> None:
    """Without application_name in the conninfo, the backend shows 'rx_pgmq.listener'."""
    listener.subscribe(make_queue(), lambda event: None)
    assert listener.backend_pid in _pids_of(pgmq_dsn, APPLICATION_NAME)


def test_dispose_stops_delivery_and_unlistens(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """A disposed callback gets nothing; when a queue has none left it is UNLISTENed."""
    qa, qb = make_queue(), make_queue()
    first, second, other = Inbox(), Inbox(), Inbox()
    sub_first = listener.subscribe(qa, first)
    sub_second = listener.subscribe(qa, second)
    listener.subscribe(qb, other)

    sub_first.dispose()
    sub_first.dispose()  # idempotent
    send(qa)
    assert second.get().queue == qa
    # Callbacks run in subscription order, so `first` would have been called already.
    assert first.pending() == []

    sub_second.dispose()
    assert listener.queues == [qb]
    # UNLISTEN is applied by the listener thread; a later subscribe() returns only once
    # the thread has applied every change requested before it, the UNLISTEN included.
    listener.subscribe(make_queue(), lambda event: None)
    received = listener.notifications_received
    send(qa)  # nobody listens to qa any more ...
    send(qb)  # ... and qb's notification arrives after anything qa could still cause
    assert other.get().queue == qb
    assert listener.notifications_received == received + 1
    assert second.pending() == []


def test_several_callbacks_on_one_queue_all_receive(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """Each callback registered for a queue receives every event of that queue."""
    name = make_queue()
    inboxes = [Inbox() for _ in range(3)]
    for inbox in inboxes:
        listener.subscribe(name, inbox)
    send(name)
    send(name)
    for inbox in inboxes:
        assert [inbox.get().kind, inbox.get().kind] == ["notify", "notify"]


def test_callback_exception_is_logged_and_delivery_continues(
    listener: Listener,
    make_queue: Callable[[], str],
    send: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising callback is logged at ERROR; other callbacks and later events still work."""
    name = make_queue()

    def boom(event: ListenerEvent) -> None:
        raise RuntimeError("callback failed")

    inbox = Inbox()
    listener.subscribe(name, boom)
    listener.subscribe(name, inbox)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        send(name)
        inbox.get()
        send(name)
        inbox.get()
    failures = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


def test_subscribe_and_dispose_are_prompt_while_the_listener_waits(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """LISTEN/UNLISTEN requests don't wait for a notification: each subscribe takes ms."""
    queues = [make_queue() for _ in range(4)]
    listener.subscribe(queues[0], lambda event: None)  # connected, thread now waiting
    durations = []
    for _ in range(5):
        for name in queues[1:]:
            start = time.monotonic()
            sub = listener.subscribe(name, lambda event: None)
            durations.append(time.monotonic() - start)
            sub.dispose()
    assert statistics.median(durations) < 0.1
    assert max(durations) < 2.0
    inbox = Inbox()
    listener.subscribe(queues[3], inbox)
    send(queues[3])
    assert inbox.get().queue == queues[3]


def test_notification_latency_is_low(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """From send() returning to the event being received takes milliseconds (median)."""
    name = make_queue()
    inbox = Inbox()
    listener.subscribe(name, inbox)
    latencies = []
    for _ in range(20):
        send(name)
        sent = time.monotonic()
        event = inbox.get()
        latencies.append(max(0.0, event.at - sent))
    # Typically ~1 ms here; the bound is generous for a busy 2-core machine.
    assert statistics.median(latencies) < 0.05


def test_subscribe_from_a_callback_does_not_deadlock(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """A callback (on the listener thread) may subscribe; the new LISTEN starts right after."""
    qa, qb = make_queue(), make_queue()
    inbox_b = Inbox()
    subscribed = threading.Event()

    def on_a(event: ListenerEvent) -> None:
        if not subscribed.is_set():
            listener.subscribe(qb, inbox_b)
            subscribed.set()

    inbox_a = Inbox()
    listener.subscribe(qa, on_a)
    listener.subscribe(qa, inbox_a)
    send(qa)
    inbox_a.get()
    assert subscribed.wait(WAIT)
    # Subscribing again from this thread waits until qb's LISTEN is active.
    listener.subscribe(qb, lambda event: None)
    send(qb)
    assert inbox_b.get().queue == qb


def test_concurrent_subscribe_and_dispose_keep_a_consistent_state(
    listener: Listener, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """Subscribing and disposing from many threads at once leaves exactly the live ones."""
    queues = [make_queue() for _ in range(3)]
    errors: list[BaseException] = []

    def churn(index: int) -> None:
        try:
            for round_ in range(10):
                sub = listener.subscribe(queues[(index + round_) % 3], lambda event: None)
                sub.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert listener.queues == []
    inbox = Inbox()
    listener.subscribe(queues[1], inbox)
    send(queues[1])
    assert inbox.get().queue == queues[1]


def test_notifications_observable_emits_events_and_completes_on_close(
    pgmq_dsn: str, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """notifications(queue) is hot: events after subscribing, on_completed at close()."""
    name = make_queue()
    events: queue.Queue[ListenerEvent] = queue.Queue()
    completed = threading.Event()
    lst = Listener(pgmq_dsn)
    observable = lst.notifications(name)
    assert lst.backend_pid is None  # nothing happens until someone subscribes
    sub = observable.subscribe(on_next=events.put, on_completed=completed.set)
    late: list[ListenerEvent] = []
    send(name)
    first = events.get(timeout=WAIT)
    assert (first.queue, first.kind) == (name, "notify")
    observable.subscribe(on_next=late.append)  # a late subscriber sees only later events
    assert late == []
    send(name)
    assert events.get(timeout=WAIT).kind == "notify"
    lst.close()
    assert completed.wait(WAIT)
    assert len(late) == 1
    sub.dispose()


def test_close_is_idempotent_and_fast(pgmq_dsn: str, make_queue: Callable[[], str]) -> None:
    """close() returns quickly, twice, and closes the backend connection."""
    app = f"rx_pgmq_lst_{uuid.uuid4().hex[:8]}"
    lst = Listener(make_conninfo(pgmq_dsn, application_name=app))
    lst.subscribe(make_queue(), lambda event: None)
    assert len(_pids_of(pgmq_dsn, app)) == 1
    start = time.monotonic()
    lst.close()
    lst.close()
    assert time.monotonic() - start < 1.0
    assert lst.closed
    assert lst.backend_pid is None
    deadline = time.monotonic() + WAIT
    while _pids_of(pgmq_dsn, app) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server removes the backend asynchronously
    assert _pids_of(pgmq_dsn, app) == []


def test_close_before_any_subscription() -> None:
    """A listener that never connected closes at once (no thread was started)."""
    lst = Listener("dbname=unused")
    start = time.monotonic()
    lst.close()
    lst.close()
    assert time.monotonic() - start < 0.5


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.faults
def test_terminated_backend_reconnects_and_wakes_every_subscriber(
    pgmq_dsn: str,
    listener: Listener,
    make_queue: Callable[[], str],
    send: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pg_terminate_backend: WARNING, one reconnect, 'reconnected' to all, notifies resume."""
    qa, qb = make_queue(), make_queue()
    inboxes = {"a1": Inbox(), "a2": Inbox(), "b": Inbox()}
    listener.subscribe(qa, inboxes["a1"])
    listener.subscribe(qa, inboxes["a2"])
    listener.subscribe(qb, inboxes["b"])
    old_pid = listener.backend_pid
    assert old_pid is not None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute("select pg_terminate_backend(%s)", (old_pid,))
        for key, inbox in inboxes.items():
            event = inbox.get()
            assert event.kind == "reconnected", key
            assert event.queue == (qb if key == "b" else qa)
    assert listener.reconnects == 1
    assert listener.backend_pid not in (None, old_pid)
    assert any("lost its connection" in r.getMessage() for r in caplog.records)
    send(qa)
    send(qb)
    assert inboxes["a1"].get().kind == "notify"
    assert inboxes["a2"].get().kind == "notify"
    assert inboxes["b"].get().kind == "notify"


class _Counter(logging.Handler):
    """Counts log records whose message contains ``text``; sets ``reached`` at ``target``."""

    def __init__(self, text: str, target: int) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.target, self.count = text, target, 0
        self.reached = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            if self.count >= self.target:
                self.reached.set()


@pytest.mark.faults
def test_outage_backs_off_then_reconnects_once_and_wakes_subscribers(
    pgmq_dsn: str, make_queue: Callable[[], str], send: Callable[[str], None]
) -> None:
    """Database away: retries back off (no busy loop); back: one reconnect, 'reconnected'."""
    name = make_queue()
    proxy = OutageProxy(pgmq_dsn)
    failures = _Counter("cannot connect", target=3)
    lost = _Counter("lost its connection", target=1)
    log = logging.getLogger(LOGGER)
    log.addHandler(failures)
    log.addHandler(lost)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with Listener(proxy.conninfo(pgmq_dsn), reconnect_initial=0.05, reconnect_max=0.2) as lst:
            inbox = Inbox()
            lst.subscribe(name, inbox)
            send(name)
            assert inbox.get().kind == "notify"

            outage = time.monotonic()
            proxy.down()
            assert lost.reached.wait(WAIT)
            assert failures.reached.wait(WAIT)  # >= 3 failed attempts: 0.05 + 0.1 + 0.2 s
            send(name)  # its notification is lost: nobody is listening
            proxy.up()
            event = inbox.get()
            outage = time.monotonic() - outage
            assert event.kind == "reconnected"
            assert lst.reconnects == 1
            # Delays 0.05, 0.1, then 0.2 s: about 5 attempts a second, never a busy loop.
            assert failures.count <= 5 + 10 * outage
            assert inbox.pending() == []
            send(name)
            assert inbox.get().kind == "notify"
    finally:
        log.removeHandler(failures)
        log.removeHandler(lost)
        log.setLevel(level)
        proxy.close()


@pytest.mark.faults
def test_unreachable_database_subscribe_raises_without_busy_looping(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With no server, subscribe raises ConnectionLost after connect_timeout; retries back off."""
    conninfo = make_conninfo(host=str(tmp_path), port=5432, dbname="postgres", user="postgres")
    lst = Listener(conninfo, reconnect_initial=0.05, reconnect_max=0.2, connect_timeout=1.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match="could not LISTEN"):
            lst.subscribe("orders", lambda event: None)
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 3.0
        assert lst.queues == []  # the failed subscription is not left behind
        start = time.monotonic()
        lst.close()
        assert time.monotonic() - start < 1.0
    attempts = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    # Delays 0.05, 0.1, 0.2, 0.2, ... give ~7 attempts in a second; a busy loop thousands.
    assert 2 <= len(attempts) <= 20
    assert attempts[0].levelno == logging.WARNING


@pytest.mark.faults
def test_close_does_not_hang_while_a_connection_attempt_hangs() -> None:
    """A server that accepts TCP but never answers: close() still returns within seconds."""
    accepted = threading.Event()
    held: list[socket.socket] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)
        accepted.set()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    lst = Listener(
        make_conninfo(host="127.0.0.1", port=port, dbname="x", user="x", sslmode="disable"),
        connect_timeout=30.0,
    )
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def subscribe() -> None:
        try:
            lst.subscribe("orders", lambda event: None)
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    subscriber = threading.Thread(target=subscribe, daemon=True)
    subscriber.start()
    try:
        assert accepted.wait(WAIT)
        start = time.monotonic()
        lst.close()
        assert time.monotonic() - start < 3.0
        error = outcome.get(timeout=WAIT)
        assert isinstance(error, RxPgmqError)
        assert "closed" in str(error)
    finally:
        server.close()
        for conn in held:
            conn.close()  # the pending connection attempt fails and the thread exits
