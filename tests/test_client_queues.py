"""The rest of PGMQ 1.13 on the client: times, notification throttles, queue details,
peeking, headers and partitioned queues (#18 items 2 and 5, #15 item 7).

EctoPGMQ's tests of these functions (``test/ecto_pgmq/pgmq_test.exs`` and
``ecto_pgmq_test.exs``) each have an equivalent here, named in a comment. Its tests of
read, ack, notification, topic, FIFO and partition functions are covered here, in
``test_client_fifo.py``, ``test_client_topics.py`` and ``test_client.py`` (each named in
a comment at its equivalent), except these, whose equivalents live elsewhere:

- notifications_test.exs "subscribe/3 will subscribe to queue insert notifications":
  ``test_listener.py::test_sent_message_notifies_its_queue_and_not_another``;
- notifications_test.exs "unsubscribe/3 will unsubscribe from queue insert
  notifications": ``test_listener.py::test_dispose_stops_delivery_and_unlistens``;
- ecto_pgmq_test.exs "update_queue/4 will create an index to optimize message group
  reads": ``test_client_fifo.py::test_create_fifo_index_indexes_the_headers``;
- ecto_pgmq_test.exs "read_messages/5 will read messages with a custom payload type" and
  "send_messages/4 will send messages with a custom payload type to a queue": typed bodies
  (#18 item 4), not done yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from _support import Conn, table
from psycopg import sql

from rx_pgmq import PGMQ, Partitioning
from rx_pgmq.errors import InvalidArgument, PGMQFeatureMissing, QueueNotFound, RxPgmqError
from rx_pgmq.headers import GROUP

VT = 300


@pytest.fixture
def fresh_name(pgmq: PGMQ) -> Iterator[str]:
    """A queue name that does not exist yet; whatever gets created under it is dropped."""
    name = f"tq_{uuid.uuid4().hex[:12]}"
    yield name
    pgmq.drop_queue(name)


def _vts(db: Conn, queue: str) -> list[datetime]:
    query = sql.SQL("SELECT vt FROM {} ORDER BY msg_id").format(table(queue))
    return [r[0] for r in db.execute(query).fetchall()]


# -- delays and visibility timeouts as times ----------------------------------------------


@pytest.mark.parametrize("batch", [False, True], ids=["send", "send_batch"])
def test_send_delay_as_an_aware_datetime_sets_the_visible_time(
    client: PGMQ, pgmq_queue: str, db: Conn, batch: bool
) -> None:
    """#18 item 2. EctoPGMQ: "send_batch/6 will send messages to a queue with a timestamp
    delay" (and "... with an integer delay", "send_messages/4 will send messages to a queue
    with a duration delay"): an aware datetime becomes the message's vt exactly, in any
    time zone; a datetime in the past makes it visible at once."""
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    in_tokyo = at.astimezone(datetime.now(UTC).astimezone().tzinfo)
    if batch:
        client.send_batch(pgmq_queue, [1, 2], delay=in_tokyo)
    else:
        client.send(pgmq_queue, 1, delay=in_tokyo)
    assert set(_vts(db, pgmq_queue)) == {at}
    assert client.read(pgmq_queue, VT, 5) == []
    past = datetime.now(UTC) - timedelta(minutes=1)
    msg_id = client.send(pgmq_queue, "now", delay=past)
    assert [m.msg_id for m in client.read(pgmq_queue, VT, 5)] == [msg_id]


@pytest.mark.parametrize("delay", [7, timedelta(seconds=7)], ids=["int", "timedelta"])
def test_send_delay_in_seconds_still_works(
    client: PGMQ, pgmq_queue: str, db: Conn, delay: Any
) -> None:
    """#18 item 2. EctoPGMQ: "send_batch/6 will send messages to a queue with an integer
    delay": an int or timedelta delays by that many seconds from the server's now."""
    before = datetime.now(UTC)
    client.send_batch(pgmq_queue, [1, 2], delay=delay)
    for vt in _vts(db, pgmq_queue):
        assert before + timedelta(seconds=6) <= vt <= datetime.now(UTC) + timedelta(seconds=8)


@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_set_vt_to_an_aware_datetime(client: PGMQ, pgmq_queue: str, many: bool) -> None:
    """#18 item 2. EctoPGMQ: "set_vt/5 will update message visibility timeouts with a
    timestamp delay" (and "... with an integer delay", "update_messages/5 will update
    message visibility timeouts"): the returned messages carry that vt, and they stay
    hidden until then."""
    ids = client.send_batch(pgmq_queue, [1, 2])
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    if many:
        updated = client.set_vt(pgmq_queue, ids, at)
    else:
        one = client.set_vt(pgmq_queue, ids[0], at)
        assert one is not None
        updated = [one, *client.set_vt(pgmq_queue, ids[1:], 300)]
    assert [m.msg_id for m in updated] == ids
    assert updated[0].vt == at
    assert client.read(pgmq_queue, VT, 5) == []


def test_naive_datetimes_are_refused_before_sql(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 2: a naive datetime (no time zone) as delay or vt is InvalidArgument naming
    the argument, for send, send_batch, send_topic, send_batch_topic and set_vt."""
    naive = datetime(2030, 1, 1, 12, 0)
    calls: list[tuple[str, Any]] = [
        ("delay", lambda: client.send(pgmq_queue, 1, delay=naive)),
        ("delay", lambda: client.send_batch(pgmq_queue, [1], delay=naive)),
        ("delay", lambda: client.send_topic("k", 1, delay=naive)),
        ("delay", lambda: client.send_batch_topic("k", [1], delay=naive)),
        ("vt", lambda: client.set_vt(pgmq_queue, 1, naive)),
        ("vt", lambda: client.set_vt(pgmq_queue, [1], naive)),
    ]
    for argument, call in calls:
        with pytest.raises(InvalidArgument, match="naive datetime") as info:
            call()
        assert info.value.argument == argument


@pytest.mark.parametrize("poll", [False, True], ids=["read", "read_with_poll"])
def test_reading_more_than_there_is_claims_all_of_it(
    client: PGMQ, pgmq_queue: str, poll: bool
) -> None:
    """#18 item 2. EctoPGMQ: "read/6 will read messages from a queue", "... when too many
    are requested", "read_with_poll/8 will read messages from a queue", "... when too
    many are requested" and "read_messages/5 will read messages with a Duration
    visibility timeout": qty 3 of 2 returns both, in order, hidden for the timedelta."""
    ids = client.send_batch(pgmq_queue, [{"id": 1}, {"id": 2}])
    vt = timedelta(minutes=5)
    before = datetime.now(UTC)
    if poll:
        got = client.read_with_poll(pgmq_queue, vt, 3, max_poll_seconds=1)
    else:
        got = client.read(pgmq_queue, vt, 3)
    assert [m.msg_id for m in got] == ids and [m.read_ct for m in got] == [1, 1]
    assert all(before + vt - timedelta(seconds=1) <= m.vt <= datetime.now(UTC) + vt for m in got)
    assert client.read(pgmq_queue, VT, 1) == []


# -- notifications ------------------------------------------------------------------------


def test_update_notify_changes_the_throttle_and_list_shows_it(
    client: PGMQ, pgmq_queue: str
) -> None:
    """#18 item 2. EctoPGMQ: "update_notify_insert/4 will update a notification throttle",
    "list_notify_insert_throttles/2 will list all notification throttles",
    "enable_notify_insert/4", "disable_notify_insert/3" and "update_queue/4 will update
    notifications for a queue": 250 -> 500 ms, listed while on, gone once off."""
    client.enable_notify(pgmq_queue, throttle_ms=250)
    assert client.notify_throttle_ms(pgmq_queue) == 250
    client.update_notify(pgmq_queue, 500)
    assert client.notify_throttle_ms(pgmq_queue) == 500
    (ours,) = [t for t in client.list_notify_throttles() if t.queue_name == pgmq_queue]
    assert ours.throttle_interval_ms == 500 and ours.last_notified_at.tzinfo is not None
    names = [t.queue_name for t in client.list_notify_throttles()]
    assert names == sorted(names)
    client.disable_notify(pgmq_queue)
    assert all(t.queue_name != pgmq_queue for t in client.list_notify_throttles())


def test_update_notify_refuses_a_queue_without_notifications(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 2: update_notify on a queue whose notifications are off says to enable
    them; a bad throttle is InvalidArgument; a missing queue QueueNotFound."""
    with pytest.raises(InvalidArgument, match=r"enable_notify") as info:
        client.update_notify(pgmq_queue, 100)
    assert info.value.argument == "name"
    with pytest.raises(InvalidArgument, match="throttle_ms"):
        client.update_notify(pgmq_queue, -1)
    with pytest.raises(QueueNotFound):
        client.update_notify("no_such_queue_notify", 100)


# -- one record per queue -----------------------------------------------------------------


def test_queue_gathers_kind_metrics_throttle_and_bindings(
    client: PGMQ, pgmq_queue: str, fresh_name: str
) -> None:
    """#18 item 2. EctoPGMQ: "get_queue/3 will get a queue", "get_queue/3 will not get a
    missing queue", "all_queues/2 will list all queues", "create_queue/3 will create a
    queue with notifications enabled" and "... with bindings": PGMQ.queue(name) holds the
    kind, metrics, throttle and bindings; queues() lists every queue by name."""
    client.send_batch(pgmq_queue, [1, 2, 3])
    client.enable_notify(pgmq_queue, throttle_ms=40)
    client.bind_topic("b.#", pgmq_queue)
    client.bind_topic("a.*", pgmq_queue)
    details = client.queue(pgmq_queue)
    assert details.queue_name == pgmq_queue and details.kind == "logged"
    assert details.metrics.queue_length == 3 and details.metrics.queue_name == pgmq_queue
    assert details.notify_throttle_ms == 40
    assert details.bindings == ("a.*", "b.#")
    assert details.created_at.tzinfo is not None
    client.create_queue(fresh_name, unlogged=True)
    other = client.queue(fresh_name)
    assert (other.kind, other.notify_throttle_ms, other.bindings) == ("unlogged", None, ())
    listed = {q.queue_name: q for q in client.queues()}
    again = listed[pgmq_queue]
    assert (again.kind, again.notify_throttle_ms, again.bindings, again.created_at) == (
        "logged",
        40,
        ("a.*", "b.#"),
        details.created_at,
    )
    assert list(listed) == sorted(listed)
    with pytest.raises(QueueNotFound):
        client.queue("no_such_queue_details")


# -- peek ----------------------------------------------------------------------------------


def test_peek_reads_without_claiming(client: PGMQ, pgmq_queue: str, db: Conn) -> None:
    """#15 item 7 / #18 item 2: PGMQ.peek returns the first n messages by msg_id, hidden
    ones too, and changes neither read_ct nor vt; archive=True browses the archive."""
    ids = client.send_batch(pgmq_queue, [{"i": i} for i in range(4)])
    client.read(pgmq_queue, VT, 1)
    before = _vts(db, pgmq_queue)
    peeked = client.peek(pgmq_queue, 3)
    assert [m.msg_id for m in peeked] == ids[:3]
    assert [m.read_ct for m in peeked] == [1, 0, 0]
    assert _vts(db, pgmq_queue) == before
    client.archive(pgmq_queue, ids[3])
    assert [m.body for m in client.peek(pgmq_queue, archive=True)] == [{"i": 3}]
    with pytest.raises(QueueNotFound):
        client.peek("no_such_queue_peek")
    with pytest.raises(InvalidArgument, match="n"):
        client.peek(pgmq_queue, 0)


# -- headers (#18 item 5) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [[("a", 1)], "x", 1, {1: "int key"}, {"nan": float("nan")}, {"nul": "\x00"}]
)
def test_headers_must_be_a_json_object(client: PGMQ, pgmq_queue: str, headers: Any) -> None:
    """#18 item 5: send(..., headers=...) accepts only a JSON object with str keys that
    jsonb can store; anything else is InvalidArgument naming 'headers', before any SQL."""
    with pytest.raises(InvalidArgument) as info:
        client.send(pgmq_queue, {}, headers=headers)
    assert info.value.argument == "headers"
    assert client.peek(pgmq_queue) == []


def test_headers_round_trip_with_the_keys_pgmq_and_rx_pgmq_use(
    client: PGMQ, pgmq_queue: str
) -> None:
    """#18 item 5: headers are stored and read back exactly, nested values too, and the
    group key PGMQ reads (x-pgmq-group) works as documented."""
    headers = {GROUP: "g1", "trace": {"id": "abc", "n": [1, 2]}, "x-app": None}
    client.send(pgmq_queue, {"b": 1}, headers=headers)
    (message,) = client.read_grouped(pgmq_queue, VT, 1)
    assert message.headers == headers


# -- partitioned queues -----------------------------------------------------------------------


def _has_partman(db: Conn) -> bool:
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman')"
    ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def partman(db: Conn) -> None:
    """pg_partman in the test database, or the test is skipped (saying how to get it)."""
    if not _has_partman(db):
        pytest.skip(
            "pg_partman is not available on this server (the embedded PostgreSQL has none); "
            "run with RX_PGMQ_DSN pointing at a PostgreSQL 15 cluster with "
            "postgresql-15-partman installed (.ci/run does)"
        )
    db.execute("CREATE EXTENSION IF NOT EXISTS pg_partman")


def test_partitioning_without_pg_partman_names_the_missing_extension(
    client: PGMQ, pgmq_queue: str, fresh_name: str, db: Conn
) -> None:
    """#18 item 2: where pg_partman is not installed, create_queue(partitioned=...) and
    convert_archive_partitioned raise PGMQFeatureMissing naming pg_partman and its
    package, and create nothing."""
    if _partman_installed(db):
        pytest.skip("pg_partman is installed here; the error cannot happen")
    with pytest.raises(PGMQFeatureMissing, match="pg_partman") as info:
        client.create_queue(fresh_name, partitioned=True)
    assert info.value.extension == "pg_partman"
    assert "postgresql-<major>-partman" in str(info.value)
    assert isinstance(info.value, RxPgmqError)
    assert not client.queue_exists(fresh_name)
    with pytest.raises(PGMQFeatureMissing, match="pg_partman"):
        client.convert_archive_partitioned(pgmq_queue)


def _partman_installed(db: Conn) -> bool:
    row = db.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_partman')")
    found = row.fetchone()
    return bool(found and found[0])


def test_partitioning_arguments_are_validated_before_sql(client: PGMQ, fresh_name: str) -> None:
    """#18 item 2: bad intervals, mixed kinds, premake < 1, unlogged + partitioned and a
    non-bool 'partitioned' are InvalidArgument naming the argument."""
    builds: list[tuple[str, Callable[[], object]]] = [
        ("interval", lambda: Partitioning(interval=0)),
        ("interval", lambda: Partitioning(interval="daily")),  # type: ignore[arg-type]
        ("retention", lambda: Partitioning(interval=10, retention=timedelta(days=1))),
        ("interval", lambda: Partitioning(interval=timedelta(seconds=0.5), retention=timedelta(1))),
        ("premake", lambda: Partitioning(premake=0)),
    ]
    for argument, build in builds:
        with pytest.raises(InvalidArgument) as info:
            build()
        assert info.value.argument == argument
    with pytest.raises(InvalidArgument, match="unlogged"):
        client.create_queue(fresh_name, unlogged=True, partitioned=True)
    with pytest.raises(InvalidArgument, match="partitioned"):
        client.create_queue(fresh_name, partitioned="yes")  # type: ignore[arg-type]
    assert not client.queue_exists(fresh_name)


def _partitioned(db: Conn, name: str) -> bool:
    row = db.execute(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pgmq' AND c.relname = %s",
        (name,),
    ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize(
    "partitioning",
    [True, Partitioning(interval=timedelta(days=1), retention=timedelta(days=7), premake=2)],
    ids=["by_msg_id", "by_time"],
)
def test_create_partitioned_queue(
    partman: None, client: PGMQ, fresh_name: str, db: Conn, partitioning: Any
) -> None:
    """#18 item 2. EctoPGMQ: "create_partitioned/5 will create a partitioned queue based on
    message ID", "... based on a time interval" and "create_queue/3 will create a
    partitioned queue": the queue and archive are partitioned tables, its kind is
    'partitioned', and it sends, reads and archives like any queue."""
    client.create_queue(fresh_name, partitioned=partitioning)
    assert _partitioned(db, f"q_{fresh_name}") and _partitioned(db, f"a_{fresh_name}")
    assert client.queue(fresh_name).kind == "partitioned"
    ids = client.send_batch(fresh_name, [1, 2])
    assert [m.msg_id for m in client.read(fresh_name, VT, 5)] == ids
    assert client.archive(fresh_name, ids) == ids


@pytest.mark.parametrize(
    "partitioning",
    [None, Partitioning(interval=timedelta(days=1), retention=timedelta(days=30))],
    ids=["by_msg_id", "by_time"],
)
def test_convert_archive_partitioned(
    partman: None, client: PGMQ, pgmq_queue: str, db: Conn, partitioning: Any
) -> None:
    """#18 item 2. EctoPGMQ: "convert_archive_partitioned/6 will partition a
    non-partitioned archive based on message ID" and "... based on a time interval": the
    archive becomes a partitioned table and archiving still works."""
    assert not _partitioned(db, f"a_{pgmq_queue}")
    client.convert_archive_partitioned(pgmq_queue, partitioning)
    assert _partitioned(db, f"a_{pgmq_queue}")
    msg_id = client.send(pgmq_queue, {"x": 1})
    assert client.archive(pgmq_queue, msg_id) is True
    assert [m.msg_id for m in client.peek(pgmq_queue, archive=True)] == [msg_id]


def test_convert_archive_partitioned_of_a_missing_queue(partman: None, client: PGMQ) -> None:
    """#18 item 2: converting the archive of a missing queue is QueueNotFound (PGMQ only
    prints a notice)."""
    with pytest.raises(QueueNotFound):
        client.convert_archive_partitioned("no_such_queue_part")


def test_a_connection_client_sees_the_callers_transaction(pgmq_dsn: str, pgmq_queue: str) -> None:
    """The new calls run through the client's one execute path: on a connection inside a
    caller's transaction, a binding made there is gone after the caller rolls back."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        client = PGMQ(conn)
        with conn.transaction():
            client.bind_topic("tx.#", pgmq_queue)
            assert client.queue(pgmq_queue).bindings == ("tx.#",)
            raise psycopg.Rollback()
        assert client.queue(pgmq_queue).bindings == ()
