"""Topic routing on the PGMQ client against a real PGMQ 1.13 (#18 item 2).

EctoPGMQ's tests of the topic functions (``test/ecto_pgmq/pgmq_test.exs``:
``bind_topic/4``, ``unbind_topic/4``, ``list_topic_bindings/2``, ``test_routing/3``,
``send_batch_topic/6``, ``validate_routing_key/3``, ``validate_topic_pattern``; and
``ecto_pgmq_test.exs``: "create a queue with bindings", "update bindings for a queue",
"send messages with a routing key") each have an equivalent here, named in a comment.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from _support import Conn, table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from rx_pgmq import PGMQ
from rx_pgmq._values._routing import check_routing_key, check_topic_pattern
from rx_pgmq.errors import InvalidArgument, PGMQOutdated, QueueNotFound


@pytest.fixture
def second_queue(pgmq: PGMQ) -> Iterator[str]:
    """Another fresh queue, dropped after the test."""
    name = f"t2_{uuid.uuid4().hex[:12]}"
    pgmq.create_queue(name)
    yield name
    pgmq.drop_queue(name)


def _patterns(pgmq: PGMQ, queue: str) -> list[str]:
    return sorted(b.pattern for b in pgmq.list_topic_bindings(queue))


def _bodies(db: Conn, queue: str) -> list[Any]:
    query = sql.SQL("SELECT message FROM {} ORDER BY msg_id").format(table(queue))
    rows = db.execute(query).fetchall()
    return [r[0] for r in rows]


def test_bind_list_and_unbind_a_topic(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 2. EctoPGMQ: "bind_topic/4 will bind a queue to a routing key pattern",
    "unbind_topic/4 will unbind a queue from a routing key pattern", "list_topic_bindings/2
    will list all queue bindings" and "update_queue/4 will update bindings for a queue":
    a binding appears with its time and regex, binding twice keeps one, unbinding reports
    whether it existed."""
    assert client.list_topic_bindings(pgmq_queue) == []
    client.bind_topic("orders.*", pgmq_queue)
    client.bind_topic("orders.*", pgmq_queue)
    client.bind_topic("#", pgmq_queue)
    (binding,) = [b for b in client.list_topic_bindings(pgmq_queue) if b.pattern == "orders.*"]
    assert binding.queue_name == pgmq_queue
    assert binding.bound_at.tzinfo is not None
    assert binding.compiled_regex.startswith("^") and binding.compiled_regex.endswith("$")
    assert _patterns(client, pgmq_queue) == ["#", "orders.*"]
    every = {(b.pattern, b.queue_name) for b in client.list_topic_bindings()}
    assert {("#", pgmq_queue), ("orders.*", pgmq_queue)} <= every
    assert client.unbind_topic("#", pgmq_queue) is True
    assert client.unbind_topic("#", pgmq_queue) is False
    assert _patterns(client, pgmq_queue) == ["orders.*"]


def test_bindings_go_with_their_queue(client: PGMQ) -> None:
    """#18 item 2: dropping a queue drops its bindings (no route to a missing queue)."""
    name = f"t3_{uuid.uuid4().hex[:12]}"
    client.create_queue(name)
    client.bind_topic("gone.#", name)
    client.drop_queue(name)
    assert all(b.queue_name != name for b in client.list_topic_bindings())
    assert all(m.queue_name != name for m in client.test_routing("gone.x"))


def test_test_routing_lists_the_matching_bindings(
    client: PGMQ, pgmq_queue: str, second_queue: str
) -> None:
    """#18 item 2. EctoPGMQ: "test_routing/3 will return all bindings for a routing key":
    * matches one segment, # any number; nothing is sent."""
    client.bind_topic("logs.*", pgmq_queue)
    client.bind_topic("logs.#", second_queue)
    ours = {pgmq_queue, second_queue}

    def routes(key: str) -> set[tuple[str, str]]:
        return {(m.pattern, m.queue_name) for m in client.test_routing(key) if m.queue_name in ours}

    assert routes("logs.error") == {("logs.*", pgmq_queue), ("logs.#", second_queue)}
    assert routes("logs.api.error") == {("logs.#", second_queue)}
    assert routes("metrics.cpu") == set()
    assert client.read(pgmq_queue, 30, 10) == [] and client.read(second_queue, 30, 10) == []


def test_send_topic_delivers_to_every_matching_queue(
    client: PGMQ, pgmq_queue: str, second_queue: str, db: Conn
) -> None:
    """#18 item 2. EctoPGMQ: "send_messages/4 will send messages with a routing key":
    send_topic copies the message (and headers) to each matching queue and returns how
    many queues got it; no match sends nothing and returns 0."""
    client.bind_topic("orders.*", pgmq_queue)
    client.bind_topic("orders.#", second_queue)
    assert client.send_topic("orders.created", {"id": 1}, headers={"k": "v"}) == 2
    assert client.send_topic("orders.eu.created", {"id": 2}) == 1
    assert client.send_topic("invoices.created", {"id": 3}) == 0
    assert _bodies(db, pgmq_queue) == [{"id": 1}]
    assert _bodies(db, second_queue) == [{"id": 1}, {"id": 2}]
    (first,) = client.read(pgmq_queue, 30, 5)
    assert first.headers == {"k": "v"}


@pytest.mark.parametrize(
    "delay",
    [0, 7, timedelta(seconds=7), datetime.now(UTC) + timedelta(days=1)],
    ids=["none", "int", "timedelta", "datetime"],
)
def test_send_batch_topic_returns_ids_by_queue_and_honours_the_delay(
    client: PGMQ, pgmq_queue: str, second_queue: str, db: Conn, delay: Any
) -> None:
    """#18 item 2. EctoPGMQ: "send_batch_topic/6 will send messages with an integer
    delay" and "... with a timestamp delay": every matching queue gets the batch in
    order; the result maps each queue to its new ids; a delay hides them."""
    client.bind_topic("#", pgmq_queue)
    client.bind_topic("my.key", second_queue)
    sent = client.send_batch_topic(
        "my.key", [{"id": 1}, {"id": 2}], headers=[{"h": 1}, None], delay=delay
    )
    assert list(sent) == sorted([pgmq_queue, second_queue])
    for queue, ids in sent.items():
        assert len(ids) == 2 and ids == sorted(ids)
        assert _bodies(db, queue) == [{"id": 1}, {"id": 2}]
    visible = client.read(pgmq_queue, 30, 5)
    if delay == 0:
        assert [m.msg_id for m in visible] == sent[pgmq_queue]
        assert [m.headers for m in visible] == [{"h": 1}, None]
    else:
        assert visible == []


def test_send_topic_with_a_datetime_delay_hides_the_message_until_then(
    client: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#18 item 2: send_topic (which PGMQ only takes in seconds) accepts an aware
    datetime; the message becomes visible at that time, not before (rounded up to the
    second)."""
    client.bind_topic("later", pgmq_queue)
    at = datetime.now(UTC) + timedelta(hours=1)
    assert client.send_topic("later", {"x": 1}, delay=at) == 1
    (vt,) = db.execute(sql.SQL("SELECT vt FROM {}").format(table(pgmq_queue))).fetchone() or (None,)
    assert vt is not None and at <= vt <= at + timedelta(seconds=2)


def test_topic_calls_validate_before_sql(client: PGMQ, pgmq_queue: str) -> None:
    """#18 item 2: bad routing keys, patterns, queue names, bodies and delays are
    InvalidArgument naming the argument; binding a missing queue is QueueNotFound."""
    cases: list[tuple[str, Any]] = [
        ("pattern", lambda: client.bind_topic("a..b", pgmq_queue)),
        ("pattern", lambda: client.unbind_topic("", pgmq_queue)),
        ("queue", lambda: client.bind_topic("a.*", "Bad")),
        ("routing_key", lambda: client.send_topic("a.*", {})),
        ("routing_key", lambda: client.test_routing("a b")),
        ("body", lambda: client.send_topic("a", float("nan"))),
        ("headers", lambda: client.send_topic("a", {}, headers=["x"])),  # type: ignore[arg-type]
        ("delay", lambda: client.send_topic("a", {}, delay=-1)),
        ("delay", lambda: client.send_batch_topic("a", [1], delay=datetime(2030, 1, 1))),
        ("bodies", lambda: client.send_batch_topic("a", [])),
        ("headers", lambda: client.send_batch_topic("a", [1, 2], headers=[None])),
    ]
    for argument, call in cases:
        with pytest.raises(InvalidArgument) as info:
            call()
        assert info.value.argument == argument
    with pytest.raises(QueueNotFound):
        client.bind_topic("a.#", "no_such_queue_topic")


# -- the rules are PGMQ's --------------------------------------------------------------------

KEYS_OK = ["my.key", "logs.error", "app.user-service.auth", "system_events.db.x", "a", "A-9_z"]
KEYS_BAD = [
    "",
    ".logs",
    "logs.",
    "logs..error",
    "logs.error!",
    "logs error",
    "logs.*",
    "é",
    "x" * 256,
]
PATTERNS_OK = ["my.*.pattern", "logs.*", "logs.#", "*.error", "#.error", "app.*.#", "#", "a-b_c"]
PATTERNS_BAD = [
    "",
    ".logs.*",
    "logs.*.",
    "logs..error",
    "logs.**",
    "logs.##",
    "logs.*#",
    "#*",
    "a!",
]


def _server_accepts(db: Conn, function: str, value: str) -> bool:
    try:
        db.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier("pgmq", function)), (value,))
    except psycopg.errors.RaiseException:
        return False
    return True


def _local_accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except InvalidArgument:
        return False
    return True


def test_routing_keys_and_patterns_follow_pgmqs_rules(client: PGMQ, db: Conn) -> None:
    """#18 item 2. EctoPGMQ: "validate_routing_key/3 will validate a routing key", "...
    will raise an error with an invalid routing key", "validate_topic_pattern will
    validate a pattern", "... will raise an error with an invalid pattern": rx_pgmq's
    checks and PGMQ's functions agree on every listed key and pattern, and the client's
    validate_* refuse the bad ones with InvalidArgument."""
    for key in [*KEYS_OK, *KEYS_BAD, "my.*.invalid..key"]:
        expected = _server_accepts(db, "validate_routing_key", key)
        assert _local_accepts(check_routing_key, key) == expected, key
        assert expected == (key in KEYS_OK), key
    for pattern in [*PATTERNS_OK, *PATTERNS_BAD, "my..invalid*.pattern"]:
        expected = _server_accepts(db, "validate_topic_pattern", pattern)
        assert _local_accepts(check_topic_pattern, pattern) == expected, pattern
        assert expected == (pattern in PATTERNS_OK), pattern
    client.validate_routing_key("my.key")
    client.validate_topic_pattern("my.*.pattern")
    with pytest.raises(InvalidArgument, match="routing_key"):
        client.validate_routing_key("my.*.invalid..key")
    with pytest.raises(InvalidArgument, match="pattern"):
        client.validate_topic_pattern("my..invalid*.pattern")


_TOPIC_TEXT = st.text(alphabet="ab.-_*#!Z9 é", max_size=8)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=_TOPIC_TEXT)
def test_local_checks_agree_with_pgmq_on_random_text(db: Conn, value: str) -> None:
    """#18 item 2: for random short strings of key and pattern characters, rx_pgmq accepts
    a routing key or pattern exactly when PGMQ's validate_* functions do."""
    assert _local_accepts(check_routing_key, value) == _server_accepts(
        db, "validate_routing_key", value
    )
    assert _local_accepts(check_topic_pattern, value) == _server_accepts(
        db, "validate_topic_pattern", value
    )


def test_a_pgmq_without_topics_names_the_version_needed(pgmq_dsn: str, pgmq_queue: str) -> None:
    """#18 item 2: on a PGMQ without topics (bind_topic dropped inside a transaction that
    is rolled back) the call raises PGMQOutdated naming PGMQ 1.11.0."""
    with psycopg.connect(pgmq_dsn) as conn:
        conn.execute("DROP FUNCTION pgmq.bind_topic(text, text)")
        with pytest.raises(PGMQOutdated, match=r"needs PGMQ 1\.11\.0 or later"):
            PGMQ(conn).bind_topic("a.#", pgmq_queue)
        conn.rollback()
