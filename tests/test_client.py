"""The PGMQ client against a real PostgreSQL with PGMQ: connections, admin, send, read, acks.

Every test talks to the server from the ``rx_pgmq.testing`` plugin (``pgmq_dsn``); nothing
is mocked. Queues are created per test and dropped afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from rx_pgmq import PGMQ, Message, QueueInfo, QueueMetrics
from rx_pgmq.errors import (
    ConnectionLost,
    InvalidArgument,
    PermissionDenied,
    PGMQNotInstalled,
    QueueNotFound,
    RxPgmqError,
)

# -- helpers and fixtures ----------------------------------------------------------------


def _unique(prefix: str = "tc") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def db(pgmq_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An independent autocommit connection for looking at the database from outside."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def fresh_name(pgmq: PGMQ) -> Iterator[str]:
    """A queue name that does not exist yet; whatever gets created under it is dropped."""
    name = _unique()
    yield name
    pgmq.drop_queue(name)


def _queue_length(db: psycopg.Connection[Any], queue: str) -> int:
    """Rows in ``pgmq.q_<queue>``, read on a connection other than the client's."""
    table = sql.Identifier("pgmq", f"q_{queue}")
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def _archived(db: psycopg.Connection[Any], queue: str) -> dict[int, Any]:
    """``msg_id -> message`` of the archive table ``pgmq.a_<queue>``."""
    table = sql.Identifier("pgmq", f"a_{queue}")
    query = sql.SQL("SELECT msg_id, message FROM {} ORDER BY msg_id").format(table)
    return {int(r[0]): r[1] for r in db.execute(query).fetchall()}


# -- building a client -------------------------------------------------------------------


def test_client_from_conninfo_string_works_and_refuses_calls_after_close(
    pgmq_dsn: str, pgmq_queue: str
) -> None:
    """A conninfo string gets a private pool; after close() every call says to make a new one."""
    with PGMQ(pgmq_dsn) as client:
        msg_id = client.send(pgmq_queue, {"via": "conninfo"})
        assert [m.msg_id for m in client.read(pgmq_queue, vt=30)] == [msg_id]
        assert client.conninfo == pgmq_dsn
        assert client.dsn() == pgmq_dsn
    with pytest.raises(InvalidArgument, match="closed; create a new one"):
        client.send(pgmq_queue, 1)


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_client_from_pool_borrows_connections_and_leaves_the_pool_open(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any], autocommit: bool
) -> None:
    """A pool passed in is borrowed from (its work is committed) and stays open after
    close(); the closed client refuses further calls like any other."""
    with ConnectionPool(
        pgmq_dsn, min_size=1, max_size=2, kwargs={"autocommit": autocommit}, open=True
    ) as pool:
        client = PGMQ(pool)
        client.send(pgmq_queue, {"via": "pool"})
        assert _queue_length(db, pgmq_queue) == 1, "the send must be committed"
        assert client.conninfo is pool
        client.close()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(InvalidArgument, match="closed; create a new one"):
            client.send(pgmq_queue, {"after": "close"})
        assert _queue_length(db, pgmq_queue) == 1
        with psycopg.connect(client.dsn()) as again:
            assert again.info.dbname == db.info.dbname


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_client_on_a_connection_commits_outside_a_transaction(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any], autocommit: bool
) -> None:
    """On a bare connection (no transaction open) each call commits before it returns; after
    close() the connection stays open and the client refuses further calls."""
    with psycopg.connect(pgmq_dsn, autocommit=autocommit) as conn:
        client = PGMQ(conn)
        client.send(pgmq_queue, {"n": 1})
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert _queue_length(db, pgmq_queue) == 1
        client.close()
        assert not conn.closed, "a connection passed in stays open"
        assert client.conninfo is conn
        with pytest.raises(InvalidArgument, match="closed; create a new one"):
            client.send(pgmq_queue, {"after": "close"})
        assert _queue_length(db, pgmq_queue) == 1
        with psycopg.connect(client.dsn()) as again:
            assert again.info.dbname == conn.info.dbname


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_send_inside_the_callers_transaction_is_rolled_back_with_it(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any], autocommit: bool
) -> None:
    """Inside the caller's open transaction a send joins it: invisible until commit, undone
    by a rollback."""
    with psycopg.connect(pgmq_dsn, autocommit=autocommit) as conn:
        client = PGMQ(conn)
        with conn.transaction():
            client.send(pgmq_queue, {"n": "rolled back"})
            client.send_batch(pgmq_queue, [1, 2])
            assert _queue_length(db, pgmq_queue) == 0, "not visible before commit"
            assert client.metrics(pgmq_queue).queue_length == 3, "visible inside it"
            raise psycopg.Rollback()
        assert _queue_length(db, pgmq_queue) == 0
        assert client.metrics(pgmq_queue).queue_length == 0


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactional"])
def test_send_inside_the_callers_transaction_commits_with_it(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any], autocommit: bool
) -> None:
    """A send inside the caller's transaction becomes visible when the caller commits."""
    with psycopg.connect(pgmq_dsn, autocommit=autocommit) as conn:
        client = PGMQ(conn)
        with conn.transaction():
            msg_id = client.send(pgmq_queue, {"n": "kept"})
            assert _queue_length(db, pgmq_queue) == 0
        assert _queue_length(db, pgmq_queue) == 1
        assert [m.msg_id for m in client.read(pgmq_queue, 30)] == [msg_id]


def test_implicit_transaction_of_a_non_autocommit_connection_is_joined_and_rolled_back(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """A non-autocommit connection with a transaction already begun (by an earlier
    statement) keeps the send inside it; conn.rollback() discards it."""
    with psycopg.connect(pgmq_dsn, autocommit=False) as conn:
        client = PGMQ(conn)
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        client.send(pgmq_queue, "pending")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert _queue_length(db, pgmq_queue) == 0
        conn.rollback()
        assert _queue_length(db, pgmq_queue) == 0


def test_a_failed_call_inside_the_callers_transaction_only_undoes_itself(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """A client error inside the caller's transaction rolls back only its own savepoint: the
    caller's transaction stays usable and commits the other sends."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        client = PGMQ(conn)
        with conn.transaction():
            client.send(pgmq_queue, "first")
            with pytest.raises(QueueNotFound):
                client.send(_unique("tc_missing"), "lost")
            client.send(pgmq_queue, "second")
        assert [m.body for m in client.read(pgmq_queue, 30, qty=5)] == ["first", "second"]
    assert _queue_length(db, pgmq_queue) == 2


def test_dsn_of_a_connection_client_keeps_the_password(unprivileged_dsn: str) -> None:
    """client.dsn() for a client on a connection includes the password it logged in with,
    so it can open further connections to password-protected servers."""
    with psycopg.connect(unprivileged_dsn) as conn:
        dsn = PGMQ(conn).dsn()
    given = conninfo_to_dict(unprivileged_dsn)
    assert conninfo_to_dict(dsn)["password"] == given["password"]
    with psycopg.connect(dsn) as again:
        assert again.info.user == given["user"]


# -- administration ----------------------------------------------------------------------


# EctoPGMQ: "create_non_partitioned/3 will create a non-partitioned queue",
# "create_queue/3 will create an unpartitioned queue"
def test_create_queue_is_idempotent_and_listed(client: PGMQ, fresh_name: str) -> None:
    """create_queue makes a logged queue that list_queues/queue_exists see; again is a no-op."""
    assert not client.queue_exists(fresh_name)
    client.create_queue(fresh_name)
    msg_id = client.send(fresh_name, "survives a second create")
    client.create_queue(fresh_name)
    assert client.queue_exists(fresh_name)
    mine = [q for q in client.list_queues() if q.queue_name == fresh_name]
    assert len(mine) == 1
    info = mine[0]
    assert isinstance(info, QueueInfo)
    assert info.is_unlogged is False
    assert info.is_partitioned is False
    assert info.created_at.tzinfo is not None
    assert [m.msg_id for m in client.read(fresh_name, 30)] == [msg_id]


# EctoPGMQ: "create_unlogged/3 will create an unlogged queue",
# "create_queue/3 will create an unlogged queue"
def test_create_queue_unlogged_shows_in_list_queues(client: PGMQ, fresh_name: str) -> None:
    """create_queue(unlogged=True) makes an UNLOGGED queue (list_queues: is_unlogged)."""
    client.create_queue(fresh_name, unlogged=True)
    (info,) = [q for q in client.list_queues() if q.queue_name == fresh_name]
    assert info.is_unlogged is True
    client.send(fresh_name, {"fast": True})
    assert client.pop(fresh_name)[0].body == {"fast": True}


# EctoPGMQ: "list_queues/2 will list all queues", "all_queues/2 will list all queues"
def test_list_queues_is_sorted_by_name(client: PGMQ) -> None:
    """list_queues returns QueueInfo rows ordered by name."""
    names = [_unique("tc_b"), _unique("tc_a")]
    try:
        for n in names:
            client.create_queue(n)
        listed = [q.queue_name for q in client.list_queues()]
        assert set(names) <= set(listed)
        assert listed == sorted(listed)
    finally:
        for n in names:
            client.drop_queue(n)


# EctoPGMQ: "drop_queue/3 will drop a queue" (pgmq_test.exs and ecto_pgmq_test.exs)
def test_drop_queue_reports_whether_it_existed(client: PGMQ, fresh_name: str) -> None:
    """drop_queue returns True when it dropped the queue, False when there was none."""
    client.create_queue(fresh_name)
    assert client.drop_queue(fresh_name) is True
    assert not client.queue_exists(fresh_name)
    assert client.drop_queue(fresh_name) is False


# EctoPGMQ: "purge_queue/3 will purge messages from a queue" (both files)
def test_purge_queue_returns_how_many_it_deleted(client: PGMQ, pgmq_queue: str) -> None:
    """purge_queue deletes every message (visible or not) and returns the count."""
    client.send_batch(pgmq_queue, [1, 2, 3])
    client.send(pgmq_queue, 4, delay=60)
    client.read(pgmq_queue, 30)
    assert client.purge_queue(pgmq_queue) == 4
    assert client.metrics(pgmq_queue).queue_length == 0
    assert client.purge_queue(pgmq_queue) == 0


def test_metrics_use_pgmq_field_names_and_count_hidden_messages(
    client: PGMQ, pgmq_queue: str
) -> None:
    """metrics: queue_length counts all, queue_visible_length the readable ones,
    total_messages every message ever sent (deletes do not lower it)."""
    empty = client.metrics(pgmq_queue)
    assert isinstance(empty, QueueMetrics)
    assert (empty.queue_length, empty.queue_visible_length, empty.total_messages) == (0, 0, 0)
    assert empty.newest_msg_age_sec is None
    assert empty.oldest_msg_age_sec is None

    ids = client.send_batch(pgmq_queue, ["a", "b", "c"])
    client.read(pgmq_queue, vt=60)
    m = client.metrics(pgmq_queue)
    assert m.queue_name == pgmq_queue
    assert (m.queue_length, m.queue_visible_length, m.total_messages) == (3, 2, 3)
    assert m.newest_msg_age_sec is not None and m.newest_msg_age_sec >= 0
    assert m.oldest_msg_age_sec is not None and m.oldest_msg_age_sec >= 0
    assert m.scrape_time.tzinfo is not None

    client.delete(pgmq_queue, ids[1])
    m = client.metrics(pgmq_queue)
    assert (m.queue_length, m.queue_visible_length, m.total_messages) == (2, 1, 3)


# EctoPGMQ: "metrics_all/2 will return metrics for all queues"
def test_metrics_all_holds_every_queue_sorted(client: PGMQ, pgmq_queue: str) -> None:
    """metrics_all returns one QueueMetrics per queue, ordered by queue name."""
    client.send(pgmq_queue, 1)
    everything = client.metrics_all()
    names = [m.queue_name for m in everything]
    assert names == sorted(names)
    (mine,) = [m for m in everything if m.queue_name == pgmq_queue]
    assert (mine.queue_length, mine.total_messages) == (1, 1)


# -- producing ---------------------------------------------------------------------------


def test_send_returns_increasing_ids(client: PGMQ, pgmq_queue: str) -> None:
    """Each send returns a new msg_id, larger than the previous one."""
    ids = [client.send(pgmq_queue, i) for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert all(isinstance(i, int) for i in ids)


def test_headers_round_trip(client: PGMQ, pgmq_queue: str) -> None:
    """Headers sent with a message come back on read (None when sent without)."""
    headers = {"x-pgmq-group": "g1", "trace": {"id": "ñ-1", "n": [1, 2.5, None, True]}}
    with_h = client.send(pgmq_queue, "with", headers=headers)
    without = client.send(pgmq_queue, "without")
    got = {m.msg_id: m.headers for m in client.read(pgmq_queue, 30, qty=2)}
    assert got == {with_h: headers, without: None}


@pytest.mark.parametrize("delay", [5, timedelta(seconds=4.2)], ids=["int", "timedelta"])
def test_delay_hides_a_message_until_it_is_due(
    client: PGMQ, pgmq_queue: str, db: psycopg.Connection[Any], delay: int | timedelta
) -> None:
    """A delayed send is stored but not readable until its delay passes (timedelta rounds up)."""
    msg_id = client.send(pgmq_queue, "later", delay=delay)
    assert client.read(pgmq_queue, 30) == []
    m = client.metrics(pgmq_queue)
    assert (m.queue_length, m.queue_visible_length) == (1, 0)
    table = sql.Identifier("pgmq", f"q_{pgmq_queue}")
    query = sql.SQL("SELECT extract(epoch FROM vt - enqueued_at) FROM {} WHERE msg_id = %s")
    row = db.execute(query.format(table), (msg_id,)).fetchone()
    assert row is not None
    assert 4.9 <= float(row[0]) <= 5.9, "the delay (4.2 s rounds up to 5) sets vt"
    # Making it due now (instead of sleeping 5 s) shows it was only hidden.
    client.set_vt(pgmq_queue, msg_id, 0)
    assert [x.body for x in client.read(pgmq_queue, 30)] == ["later"]


def test_send_batch_without_headers_keeps_order(client: PGMQ, pgmq_queue: str) -> None:
    """send_batch returns one increasing id per body, in the order of the bodies."""
    ids = client.send_batch(pgmq_queue, [{"i": 0}, {"i": 1}, {"i": 2}])
    assert len(ids) == 3
    assert ids == sorted(ids)
    msgs = client.read(pgmq_queue, 30, qty=10)
    assert [(m.msg_id, m.body, m.headers) for m in msgs] == [
        (ids[i], {"i": i}, None) for i in range(3)
    ]


# EctoPGMQ: "send_messages/4 will send messages to a queue", "... with groups to a queue",
# "... with groups and headers to a queue"
def test_send_batch_with_headers_pairs_each_header_with_its_body(
    client: PGMQ, pgmq_queue: str
) -> None:
    """send_batch with a header list gives each message its own header (None allowed)."""
    ids = client.send_batch(pgmq_queue, ["a", "b", "c"], headers=[{"h": 1}, None, {"h": "ç"}])
    got = {m.msg_id: (m.body, m.headers) for m in client.read(pgmq_queue, 30, qty=10)}
    assert got == {ids[0]: ("a", {"h": 1}), ids[1]: ("b", None), ids[2]: ("c", {"h": "ç"})}


# EctoPGMQ: "send_batch/6 will send messages to a queue with an integer delay"
def test_send_batch_with_delay_hides_the_batch(client: PGMQ, pgmq_queue: str) -> None:
    """send_batch(delay=...) hides every message of the batch."""
    client.send_batch(pgmq_queue, [1, 2], delay=30)
    assert client.read(pgmq_queue, 30, qty=5) == []
    assert client.metrics(pgmq_queue).queue_length == 2


def test_send_batch_with_mismatched_header_count_sends_nothing(
    client: PGMQ, pgmq_queue: str
) -> None:
    """A header list whose length differs from the bodies' is rejected and nothing is sent."""
    with pytest.raises(InvalidArgument, match="headers: has 1 entries for 2 bodies"):
        client.send_batch(pgmq_queue, [1, 2], headers=[{"h": 1}])
    assert client.metrics(pgmq_queue).total_messages == 0


JSON_BODIES: list[tuple[str, Any]] = [
    ("dict", {"id": 1, "ok": True}),
    ("empty_dict", {}),
    ("list", [1, "two", None, 3.5, False]),
    ("empty_list", []),
    ("str", "plain text"),
    ("empty_str", ""),
    ("str_with_quotes_and_escapes", 'he said "hi"\n\t\\ done'),
    ("int", 42),
    ("negative_int", -7),
    ("big_int", 2**63 + 1),
    ("zero", 0),
    ("float", 3.25),
    ("float_fraction", 0.1),
    ("negative_float", -1e-7),
    ("true", True),
    ("false", False),
    ("null", None),
    (
        "nested_unicode",
        {"ünïcødé": ["ç", {"日本": "語", "emoji": "🎉"}], "deep": [[[{"k": [None]}]]]},
    ),
]


def _same_json(a: Any, b: Any) -> bool:
    """Equal and of the same JSON type all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("body", [b for _, b in JSON_BODIES], ids=[i for i, _ in JSON_BODIES])
def test_every_json_body_type_round_trips_exactly(client: PGMQ, pgmq_queue: str, body: Any) -> None:
    """send then read returns the same JSON value with the same Python types."""
    client.send(pgmq_queue, body)
    (msg,) = client.read(pgmq_queue, 30)
    assert _same_json(msg.body, body), (msg.body, body)


def test_every_json_body_type_round_trips_through_send_batch(client: PGMQ, pgmq_queue: str) -> None:
    """send_batch of bodies of every JSON type returns each exactly, in order."""
    bodies = [b for _, b in JSON_BODIES]
    ids = client.send_batch(pgmq_queue, bodies)
    msgs = client.read(pgmq_queue, 30, qty=len(bodies))
    assert [m.msg_id for m in msgs] == ids
    for msg, body in zip(msgs, bodies, strict=True):
        assert _same_json(msg.body, body), (msg.body, body)


# -- low-level reads ---------------------------------------------------------------------


# EctoPGMQ: "read/6 will read messages from a queue",
# "read_messages/5 will read messages from a queue without grouping"
def test_read_claims_qty_messages_and_hides_them_for_vt(client: PGMQ, pgmq_queue: str) -> None:
    """read(qty=2, vt=30) returns the two oldest messages with read_ct 1 and vt ~30 s ahead;
    while hidden, later reads skip them."""
    ids = client.send_batch(pgmq_queue, ["a", "b", "c"])
    before = datetime.now(UTC)
    first = client.read(pgmq_queue, vt=30, qty=2)
    assert [m.msg_id for m in first] == ids[:2]
    for m in first:
        assert isinstance(m, Message)
        assert m.queue == pgmq_queue
        assert m.read_ct == 1
        assert m.last_read_at is not None
        assert m.vt > before + timedelta(seconds=20)
        assert timedelta(seconds=29) <= m.vt - m.last_read_at <= timedelta(seconds=31)
        assert m.enqueued_at <= m.last_read_at
        assert not m.acknowledgeable
    second = client.read(pgmq_queue, vt=30, qty=5)
    assert [m.msg_id for m in second] == ids[2:]
    assert client.read(pgmq_queue, vt=30, qty=5) == []


def test_read_again_after_vt_expires_increments_read_ct(client: PGMQ, pgmq_queue: str) -> None:
    """A message read with vt=0 is visible again at once; each read bumps read_ct."""
    msg_id = client.send(pgmq_queue, "again")
    assert [m.read_ct for m in client.read(pgmq_queue, vt=0)] == [1]
    assert [m.read_ct for m in client.read(pgmq_queue, vt=timedelta(0))] == [2]
    (third,) = client.read(pgmq_queue, vt=timedelta(seconds=30))
    assert (third.msg_id, third.read_ct) == (msg_id, 3)
    assert client.read(pgmq_queue, vt=30) == []


def test_read_with_conditional_returns_only_matching_messages(
    client: PGMQ, pgmq_queue: str
) -> None:
    """read(conditional={...}) only claims messages whose body contains that JSON."""
    a, b, c = client.send_batch(
        pgmq_queue, [{"kind": "a"}, {"kind": "b", "n": 1}, {"kind": "b", "n": 2}]
    )
    assert [m.msg_id for m in client.read(pgmq_queue, 30, qty=5, conditional={"kind": "b"})] == [
        b,
        c,
    ]
    assert [m.msg_id for m in client.read(pgmq_queue, 30, qty=5, conditional={})] == [a]


# EctoPGMQ: "read_with_poll/8 will poll until messages are available" (pgmq_poll_test.exs),
# "read_messages/5 will read messages with a poll from a queue without grouping"
def test_read_with_poll_returns_as_soon_as_a_message_arrives(
    client: PGMQ, pgmq_queue: str, pgmq_dsn: str
) -> None:
    """read_with_poll waits in the server and returns shortly after another session sends,
    long before max_poll_seconds."""
    sent = threading.Event()

    def send_later() -> None:
        with PGMQ(pgmq_dsn) as producer:
            producer.send(pgmq_queue, {"late": True})
        sent.set()

    timer = threading.Timer(0.5, send_later)
    start = time.monotonic()
    timer.start()
    try:
        msgs = client.read_with_poll(
            pgmq_queue, vt=30, qty=5, max_poll_seconds=20, poll_interval_ms=50
        )
        elapsed = time.monotonic() - start
    finally:
        timer.join(timeout=30)
    assert sent.wait(timeout=10)
    assert [m.body for m in msgs] == [{"late": True}]
    assert elapsed < 10, f"returned after {elapsed:.1f}s; should be soon after the send at 0.5s"


def test_read_with_poll_on_an_empty_queue_returns_empty_after_max_poll_seconds(
    client: PGMQ, pgmq_queue: str
) -> None:
    """read_with_poll(max_poll_seconds=1) on an empty queue returns [] after about 1 s."""
    start = time.monotonic()
    assert client.read_with_poll(pgmq_queue, vt=30, max_poll_seconds=1) == []
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 10


# EctoPGMQ: "pop/4 will pop messages", "read_messages/5 will read messages from a queue
# without grouping and immediately delete them"
def test_pop_deletes_what_it_returns(client: PGMQ, pgmq_queue: str) -> None:
    """pop returns up to qty messages and deletes them (at-most-once)."""
    ids = client.send_batch(pgmq_queue, ["a", "b", "c"])
    (first,) = client.pop(pgmq_queue)
    assert (first.msg_id, first.body) == (ids[0], "a")
    assert client.metrics(pgmq_queue).queue_length == 2
    assert [m.msg_id for m in client.pop(pgmq_queue, qty=5)] == ids[1:]
    assert client.pop(pgmq_queue) == []
    assert client.metrics(pgmq_queue).queue_length == 0


# -- low-level acks ----------------------------------------------------------------------


def test_delete_single_reports_whether_it_deleted(
    client: PGMQ, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """delete(id) returns True once and False for an id that is gone."""
    msg_id = client.send(pgmq_queue, "x")
    assert client.delete(pgmq_queue, msg_id) is True
    assert client.delete(pgmq_queue, msg_id) is False
    assert _queue_length(db, pgmq_queue) == 0
    assert _archived(db, pgmq_queue) == {}


# EctoPGMQ: "delete/4 will delete messages", "delete_messages/4 will delete messages from a queue"
def test_delete_list_returns_the_ids_it_deleted(
    client: PGMQ, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """delete([ids]) deletes those messages and returns the ids that existed, sorted."""
    ids = client.send_batch(pgmq_queue, [1, 2, 3])
    missing = ids[-1] + 1000
    assert client.delete(pgmq_queue, [ids[2], missing, ids[0]]) == [ids[0], ids[2]]
    assert _queue_length(db, pgmq_queue) == 1
    assert client.delete(pgmq_queue, []) == []
    assert client.delete(pgmq_queue, (ids[1],)) == [ids[1]]
    assert _queue_length(db, pgmq_queue) == 0


def test_archive_single_moves_the_message_to_the_archive_table(
    client: PGMQ, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """archive(id) moves the row to pgmq.a_<queue>; True once, False after."""
    keep = client.send(pgmq_queue, "stays")
    msg_id = client.send(pgmq_queue, {"archived": "yes"})
    assert client.archive(pgmq_queue, msg_id) is True
    assert client.archive(pgmq_queue, msg_id) is False
    assert _archived(db, pgmq_queue) == {msg_id: {"archived": "yes"}}
    assert [m.msg_id for m in client.read(pgmq_queue, 30, qty=5)] == [keep]


# EctoPGMQ: "archive/4 will archive messages", "archive_messages/4 will archive messages from a
# queue"
def test_archive_list_returns_the_ids_it_archived(
    client: PGMQ, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """archive([ids]) archives those that exist and returns their ids, sorted."""
    ids = client.send_batch(pgmq_queue, ["a", "b", "c"])
    assert client.archive(pgmq_queue, [ids[2], ids[0], ids[2] + 1000]) == [ids[0], ids[2]]
    assert _archived(db, pgmq_queue) == {ids[0]: "a", ids[2]: "c"}
    assert _queue_length(db, pgmq_queue) == 1
    assert client.archive(pgmq_queue, []) == []


def test_acks_of_no_ids_answer_without_a_connection(client: PGMQ, pgmq_queue: str) -> None:
    """delete, archive and set_vt of an empty id list return [] without taking a
    connection (so even a closed client answers); one id on a closed client is refused."""
    client.close()
    assert client.delete(pgmq_queue, []) == []
    assert client.archive(pgmq_queue, []) == []
    assert client.set_vt(pgmq_queue, [], 0) == []
    with pytest.raises(InvalidArgument, match="closed"):
        client.delete(pgmq_queue, [1])


@pytest.mark.parametrize("vt", [60, timedelta(minutes=1)], ids=["int", "timedelta"])
def test_set_vt_single_hides_and_zero_shows_again(
    client: PGMQ, pgmq_queue: str, vt: int | timedelta
) -> None:
    """set_vt(id, 60) hides a message ~60 s ahead; set_vt(id, 0) makes it readable now;
    an unknown id gives None."""
    msg_id = client.send(pgmq_queue, "v")
    before = datetime.now(UTC)
    updated = client.set_vt(pgmq_queue, msg_id, vt)
    assert updated is not None
    assert updated.msg_id == msg_id
    assert updated.vt > before + timedelta(seconds=50)
    assert client.read(pgmq_queue, 30) == []
    shown = client.set_vt(pgmq_queue, msg_id, 0)
    assert shown is not None and shown.vt <= datetime.now(UTC) + timedelta(seconds=1)
    assert [m.msg_id for m in client.read(pgmq_queue, 30)] == [msg_id]
    assert client.set_vt(pgmq_queue, msg_id + 1000, 0) is None


# EctoPGMQ: "set_vt/5 will update message visibility timeouts with an integer delay",
# "update_messages/5 will update message visibility timeouts"
@pytest.mark.parametrize("vt", [0, timedelta(0)], ids=["int", "timedelta"])
def test_set_vt_list_releases_read_messages(
    client: PGMQ, pgmq_queue: str, vt: int | timedelta
) -> None:
    """set_vt([ids], 0) makes read (hidden) messages visible again; unknown ids are skipped."""
    ids = client.send_batch(pgmq_queue, [1, 2, 3])
    assert len(client.read(pgmq_queue, 60, qty=3)) == 3
    assert client.read(pgmq_queue, 60) == []
    released = client.set_vt(pgmq_queue, [ids[2], ids[0], ids[2] + 1000], vt)
    assert [m.msg_id for m in released] == [ids[0], ids[2]]
    assert all(m.queue == pgmq_queue for m in released)
    again = client.read(pgmq_queue, 60, qty=5)
    assert [(m.msg_id, m.read_ct) for m in again] == [(ids[0], 2), (ids[2], 2)]
    assert client.set_vt(pgmq_queue, [], 0) == []


# -- notifications -----------------------------------------------------------------------


@pytest.fixture
def listen(pgmq_dsn: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """``listen(queue)``: an autocommit connection LISTENing on the queue's insert channel."""
    conns: list[psycopg.Connection[Any]] = []

    def start(queue: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(pgmq_dsn, autocommit=True)
        conns.append(conn)
        channel = sql.Identifier(f"pgmq.q_{queue}.INSERT")
        conn.execute(sql.SQL("LISTEN {}").format(channel))
        return conn

    yield start
    for c in conns:
        c.close()


# EctoPGMQ: "enable_notify_insert/4 will enable insert notifications" (disabling:
# test_client_queues.py::test_update_notify_changes_the_throttle_and_list_shows_it)
def test_enable_notify_makes_a_send_notify_listeners(
    client: PGMQ, pgmq_queue: str, listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """After enable_notify, a send fires NOTIFY "pgmq.q_<queue>.INSERT"; after
    disable_notify it does not."""
    assert client.notify_throttle_ms(pgmq_queue) is None
    conn = listen(pgmq_queue)
    client.send(pgmq_queue, "before enable")
    assert list(conn.notifies(timeout=0.5)) == []

    client.enable_notify(pgmq_queue, throttle_ms=0)
    assert client.notify_throttle_ms(pgmq_queue) == 0
    client.send(pgmq_queue, "notified")
    notes = list(conn.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in notes] == [f"pgmq.q_{pgmq_queue}.INSERT"]

    client.disable_notify(pgmq_queue)
    assert client.notify_throttle_ms(pgmq_queue) is None
    client.send(pgmq_queue, "after disable")
    assert list(conn.notifies(timeout=1)) == []


def test_notify_throttle_sends_one_notification_per_window(
    client: PGMQ, pgmq_queue: str, listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """With a long throttle only the first of several quick sends notifies (leading edge);
    the default throttle is 250 ms and enabling again replaces it."""
    client.enable_notify(pgmq_queue)
    assert client.notify_throttle_ms(pgmq_queue) == 250
    client.enable_notify(pgmq_queue, throttle_ms=600_000)
    assert client.notify_throttle_ms(pgmq_queue) == 600_000
    conn = listen(pgmq_queue)
    for i in range(3):
        client.send(pgmq_queue, i)
    assert len(list(conn.notifies(timeout=1))) == 1


# -- error mapping -----------------------------------------------------------------------

MISSING_QUEUE_CALLS: list[tuple[str, Callable[[PGMQ, str], object]]] = [
    ("metrics", lambda c, q: c.metrics(q)),
    ("send", lambda c, q: c.send(q, {"x": 1})),
    ("send_batch", lambda c, q: c.send_batch(q, [1, 2])),
    ("read", lambda c, q: c.read(q, 30)),
    ("read_with_poll", lambda c, q: c.read_with_poll(q, 30, max_poll_seconds=1)),
    ("pop", lambda c, q: c.pop(q)),
    ("purge_queue", lambda c, q: c.purge_queue(q)),
    ("enable_notify", lambda c, q: c.enable_notify(q)),
    ("disable_notify", lambda c, q: c.disable_notify(q)),
    ("delete", lambda c, q: c.delete(q, 1)),
    ("delete_list", lambda c, q: c.delete(q, [1, 2])),
    ("archive", lambda c, q: c.archive(q, 1)),
    ("archive_list", lambda c, q: c.archive(q, [1, 2])),
    ("set_vt", lambda c, q: c.set_vt(q, 1, 0)),
    ("set_vt_list", lambda c, q: c.set_vt(q, [1, 2], 0)),
]


@pytest.mark.parametrize(
    "call", [c for _, c in MISSING_QUEUE_CALLS], ids=[i for i, _ in MISSING_QUEUE_CALLS]
)
def test_operations_on_a_missing_queue_raise_queue_not_found(
    client: PGMQ, call: Callable[[PGMQ, str], object]
) -> None:
    """Every queue operation on a queue that does not exist raises QueueNotFound naming it
    and saying to create it."""
    missing = _unique("tc_missing")
    with pytest.raises(QueueNotFound) as info:
        call(client, missing)
    assert info.value.queue == missing
    assert f"create_queue({missing!r})" in str(info.value)
    assert isinstance(info.value, RxPgmqError)
    assert not client.queue_exists(missing)


def test_queries_on_a_missing_queue_that_need_no_queue_do_not_raise(client: PGMQ) -> None:
    """queue_exists, notify_throttle_ms and drop_queue answer for a missing queue."""
    missing = _unique("tc_missing")
    assert client.queue_exists(missing) is False
    assert client.notify_throttle_ms(missing) is None
    assert client.drop_queue(missing) is False


@pytest.fixture
def db_without_pgmq(pgmq_dsn: str) -> Iterator[str]:
    """The conninfo of a throwaway database (same server) that has no PGMQ; dropped after."""
    name = _unique("rx_pgmq_nopgmq")
    with psycopg.connect(pgmq_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_conninfo(pgmq_dsn, dbname=name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


NO_PGMQ_CALLS: list[tuple[str, Callable[[PGMQ], object]]] = [
    ("create_queue", lambda c: c.create_queue("orders")),
    ("drop_queue", lambda c: c.drop_queue("orders")),
    ("list_queues", lambda c: c.list_queues()),
    ("queue_exists", lambda c: c.queue_exists("orders")),
    ("metrics", lambda c: c.metrics("orders")),
    ("metrics_all", lambda c: c.metrics_all()),
    ("send", lambda c: c.send("orders", 1)),
    ("send_batch", lambda c: c.send_batch("orders", [1])),
    ("read", lambda c: c.read("orders", 30)),
    ("pop", lambda c: c.pop("orders")),
    ("delete", lambda c: c.delete("orders", 1)),
    ("archive_list", lambda c: c.archive("orders", [1])),
    ("set_vt", lambda c: c.set_vt("orders", 1, 0)),
    ("enable_notify", lambda c: c.enable_notify("orders")),
    ("notify_throttle_ms", lambda c: c.notify_throttle_ms("orders")),
    ("purge_queue", lambda c: c.purge_queue("orders")),
]


def test_a_database_without_pgmq_raises_pgmq_not_installed(db_without_pgmq: str) -> None:
    """On a database without PGMQ every operation raises PGMQNotInstalled, which says to run
    install_pgmq (never QueueNotFound)."""
    with PGMQ(db_without_pgmq) as client:
        for label, call in NO_PGMQ_CALLS:
            with pytest.raises(PGMQNotInstalled) as info:
                call(client)
            message = str(info.value)
            assert "rx_pgmq.install_pgmq(conninfo)" in message, label
            assert "CREATE EXTENSION pgmq" in message, label


UNREACHABLE = "postgresql://nobody@/postgres?host=/nonexistent/rx_pgmq_no_server&connect_timeout=1"


def test_an_unreachable_server_raises_connection_lost_promptly() -> None:
    """A conninfo pointing where no server listens raises ConnectionLost (a ConnectionError)
    within about connect_timeout, not after the pool's default 30 s."""
    with PGMQ(UNREACHABLE) as client:
        start = time.monotonic()
        with pytest.raises(ConnectionLost) as info:
            client.send("orders", 1)
        elapsed = time.monotonic() - start
        assert isinstance(info.value, ConnectionError)
        assert isinstance(info.value, RxPgmqError)
        assert "retry" in str(info.value)
        assert elapsed < 15
        # The failed pool is not kept: the next call tries again (and fails the same way).
        with pytest.raises(ConnectionLost):
            client.list_queues()


def test_an_unreachable_server_behind_a_pool_raises_connection_lost() -> None:
    """A caller's pool that cannot connect makes calls raise ConnectionLost after its timeout."""
    with ConnectionPool(UNREACHABLE, min_size=1, timeout=1, open=True) as pool:
        client = PGMQ(pool)
        with pytest.raises(ConnectionLost):
            client.metrics_all()


def test_a_terminated_connection_raises_connection_lost(
    pgmq_dsn: str, pgmq_queue: str, db: psycopg.Connection[Any]
) -> None:
    """When the server ends the client's connection, the next call raises ConnectionLost."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        client = PGMQ(conn)
        client.send(pgmq_queue, 1)
        db.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(ConnectionLost):
            client.send(pgmq_queue, 2)


@pytest.fixture
def unprivileged_dsn(pgmq_dsn: str) -> Iterator[str]:
    """The conninfo of a fresh LOGIN role with no grants at all; dropped after."""
    role = _unique("rx_pgmq_noperm")
    password = uuid.uuid4().hex
    with psycopg.connect(pgmq_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        try:
            yield make_conninfo(pgmq_dsn, user=role, password=password)
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_without_grants_gets_permission_denied(
    unprivileged_dsn: str, pgmq_queue: str, pgmq: PGMQ
) -> None:
    """A role with no privileges on PGMQ gets PermissionDenied saying which grants it needs."""
    with PGMQ(unprivileged_dsn) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.send(pgmq_queue, 1),
            lambda: client.read(pgmq_queue, 30),
            lambda: client.metrics(pgmq_queue),
            lambda: client.list_queues(),
            lambda: client.create_queue(_unique("tc_denied")),
        ]
        for call in calls:
            with pytest.raises(PermissionDenied) as info:
                call()
            assert "USAGE on schema pgmq" in str(info.value)
            assert isinstance(info.value, RxPgmqError)
    assert pgmq.metrics(pgmq_queue).total_messages == 0
