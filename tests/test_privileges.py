"""Least privilege (issue 7, scenario 9): the grants a consumer and a producer need, tested.

A throwaway database gets PGMQ and ``REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq FROM
PUBLIC`` (PostgreSQL grants EXECUTE on functions to PUBLIC by default), so a role can do
exactly what its grants allow. Roles get the statements below, the same text as the
README's "Least privilege" section; a role without them gets ``PermissionDenied`` with a
hint (``on_error`` for ``read_queue``, raised by the client).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from faults import figure, queue_rows, wait_until
from psycopg import sql
from psycopg.conninfo import make_conninfo

import rx_pgmq
from rx_pgmq import Message, Settled, failed
from rx_pgmq import operators as pgops
from rx_pgmq.actions import MoveTo
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import PermissionDenied

pytestmark = pytest.mark.faults

WAIT = 20.0

# The README's statements; {role}, {queue}, {archive}, {dest} are identifiers. A producer
# needs the notify_insert_throttle grant only for queues with insert notifications (the
# notification trigger updates that table), as ``orders`` has here.
CONSUMER_GRANTS = """
GRANT USAGE ON SCHEMA pgmq TO {role};
GRANT SELECT ON pgmq.meta, pgmq.notify_insert_throttle TO {role};
GRANT EXECUTE ON FUNCTION
    pgmq.format_table_name(text, text),
    pgmq.read(text, integer, integer, jsonb),
    pgmq.delete(text, bigint[]),
    pgmq.archive(text, bigint[]),
    pgmq.set_vt(text, bigint[], integer)
  TO {role};
GRANT SELECT, UPDATE, DELETE ON {queue} TO {role};
GRANT SELECT, INSERT ON {archive} TO {role};
"""

SEND_FUNCTIONS = """
GRANT EXECUTE ON FUNCTION
    pgmq.format_table_name(text, text),
    pgmq.send(text, jsonb, jsonb, integer),
    pgmq.send(text, jsonb, jsonb, timestamp with time zone),
    pgmq.send_batch(text, jsonb[], jsonb[], integer),
    pgmq.send_batch(text, jsonb[], jsonb[], timestamp with time zone),
    pgmq._validate_batch_params(jsonb[], jsonb[]),
    pgmq._send_batch(text, jsonb[], jsonb[], timestamp with time zone)
  TO {role};
"""

PRODUCER_GRANTS = (
    """
GRANT USAGE ON SCHEMA pgmq TO {role};
"""
    + SEND_FUNCTIONS
    + """
GRANT SELECT, INSERT ON {queue} TO {role};
GRANT SELECT, UPDATE ON pgmq.notify_insert_throttle TO {role};
"""
)

MOVE_GRANTS = """
GRANT EXECUTE ON FUNCTION
    pgmq.send_batch(text, jsonb[], jsonb[], integer),
    pgmq.send_batch(text, jsonb[], jsonb[], timestamp with time zone),
    pgmq._validate_batch_params(jsonb[], jsonb[]),
    pgmq._send_batch(text, jsonb[], jsonb[], timestamp with time zone)
  TO {role};
GRANT SELECT, INSERT ON {dest} TO {role};
"""


@dataclass(frozen=True)
class Database:
    """A throwaway database with PGMQ, queues ``orders``, ``dlq`` and ``other``, and roles."""

    dsn: str  # as the superuser
    consumer: str  # conninfo of a role with CONSUMER_GRANTS on orders (+ MOVE_GRANTS to dlq)
    producer: str  # conninfo of a role with PRODUCER_GRANTS on orders
    nobody: str  # conninfo of a role with no grant at all


def _grant(conn: psycopg.Connection[Any], template: str, role: str, **queues: str) -> None:
    names: dict[str, sql.Composable] = {"role": sql.Identifier(role)}
    for key, queue in queues.items():
        prefix = "a" if key == "archive" else "q"
        names[key] = sql.Identifier("pgmq", f"{prefix}_{queue}")
    conn.execute(sql.SQL(template).format(**names))


@pytest.fixture(scope="module")
def database(pgmq_dsn: str) -> Iterator[Database]:
    tag = uuid.uuid4().hex[:10]
    name = f"rx_priv_{tag}"
    roles = {kind: f"rx_{kind}_{tag}" for kind in ("consumer", "producer", "nobody")}
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.skip(f"the test role cannot create databases and roles: {exc}")
        for role in roles.values():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    dsn = make_conninfo(pgmq_dsn, dbname=name)
    try:
        rx_pgmq.install_pgmq(dsn)
        with PGMQ(dsn) as admin:
            for queue in ("orders", "dlq", "other"):
                admin.create_queue(queue)
            admin.enable_notify("orders", throttle_ms=0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq FROM PUBLIC")
            consumer = roles["consumer"]
            _grant(conn, CONSUMER_GRANTS, consumer, queue="orders", archive="orders")
            _grant(conn, MOVE_GRANTS, consumer, dest="dlq")
            _grant(conn, PRODUCER_GRANTS, roles["producer"], queue="orders")
        yield Database(
            dsn, *(make_conninfo(dsn, user=roles[k]) for k in ("consumer", "producer", "nobody"))
        )
    finally:
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            for role in roles.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


class Collect:
    """Settled records and errors of one subscription."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: list[Settled] = []
        self.errors: list[Exception] = []

    def on_next(self, record: Settled) -> None:
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def on_error(self, error: Exception) -> None:
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _assert_hint(error: BaseException) -> None:
    assert isinstance(error, PermissionDenied), repr(error)
    text = str(error)
    assert "USAGE on schema pgmq" in text and "Least privilege" in text, text


@pytest.mark.parametrize("fenced", [False, True], ids=["plain", "fenced"])
def test_a_consumer_role_with_only_the_documented_grants_reads_acks_archives_and_moves(
    database: Database, fenced: bool
) -> None:
    """A role with exactly the README's consumer grants (and the MoveTo grants for the
    destination) runs read_queue with a listener + process + ack: successes are deleted,
    failures archived, failures overridden to MoveTo("dlq") moved; every Settled is acked
    and the queue ends empty."""
    with PGMQ(database.producer) as producer:
        ids = producer.send_batch("orders", [{"n": i} for i in range(30)])

    def handle(message: Message) -> rx_pgmq.Outcome | None:
        n = message.body["n"]
        if n % 7 == 0:
            return failed(message, "to the dead-letter queue").with_ack(MoveTo("dlq"))
        if n % 5 == 0:
            raise ValueError("fails on purpose")
        return None

    source = rx_pgmq.read_queue(
        database.consumer, "orders", visibility_timeout=30, listener=True, fenced=fenced
    )
    sink = Collect()
    sub = source.pipe(pgops.process(handle), pgops.ack()).subscribe(
        on_next=sink.on_next, on_error=sink.on_error
    )
    try:
        assert sink.wait(lambda: len(sink.records) >= len(ids) or bool(sink.errors))
    finally:
        sub.dispose()
    assert sink.errors == []
    statuses = Counter(r.status for r in sink.records)
    actions = Counter(r.action.name for r in sink.records)
    figure(
        f"least_privilege_consumer[{'fenced' if fenced else 'plain'}]",
        statuses=dict(statuses),
        actions=dict(actions),
    )
    assert statuses == {"acked": len(ids)}
    assert queue_rows(database.dsn, "orders") == {}
    archived = set(queue_rows(database.dsn, "orders", "a")) & set(ids)
    assert archived == {ids[n] for n in range(30) if n % 5 == 0 and n % 7}
    with PGMQ(database.dsn) as admin:
        moved = admin.read("dlq", vt=0, qty=100)
        admin.purge_queue("dlq")
        admin.purge_queue("orders")
    assert sorted(m.body["n"] for m in moved) == [n for n in range(30) if n % 7 == 0]


def test_a_producer_role_with_only_the_documented_grants_sends(database: Database) -> None:
    """A role with exactly the README's producer grants sends one message (with headers and
    a delay) and a batch."""
    with PGMQ(database.producer) as producer:
        one = producer.send("orders", {"n": 1}, headers={"h": "x"}, delay=1)
        batch = producer.send_batch("orders", [{"n": 2}, {"n": 3}], headers=[{"h": 1}, None])
    assert set(queue_rows(database.dsn, "orders")) == {one, *batch}
    with PGMQ(database.dsn) as admin:
        admin.purge_queue("orders")


def test_a_role_without_the_grants_gets_permission_denied_with_a_hint(
    database: Database,
) -> None:
    """A role with no grant: read_queue reports PermissionDenied to on_error (no crash, no
    retry loop) and every client call raises PermissionDenied; both say what to grant
    (hint naming USAGE on schema pgmq and the README section)."""
    sink = Collect()
    sub = rx_pgmq.read_queue(database.nobody, "orders", visibility_timeout=30).subscribe(
        on_next=lambda m: None, on_error=sink.on_error
    )
    try:
        assert sink.wait(lambda: bool(sink.errors))
    finally:
        sub.dispose()
    (error,) = sink.errors
    _assert_hint(error)
    calls: dict[str, Callable[[PGMQ], object]] = {
        "send": lambda c: c.send("orders", {"n": 1}),
        "send_batch": lambda c: c.send_batch("orders", [{"n": 1}]),
        "read": lambda c: c.read("orders", vt=30),
        "pop": lambda c: c.pop("orders"),
        "delete": lambda c: c.delete("orders", 1),
        "archive": lambda c: c.archive("orders", [1]),
        "set_vt": lambda c: c.set_vt("orders", 1, 0),
        "metrics": lambda c: c.metrics("orders"),
        "list_queues": lambda c: c.list_queues(),
        "queue_exists": lambda c: c.queue_exists("orders"),
        "create_queue": lambda c: c.create_queue("mine"),
        "purge_queue": lambda c: c.purge_queue("orders"),
        "enable_notify": lambda c: c.enable_notify("orders"),
    }
    denied = []
    with PGMQ(database.nobody) as client:
        for name, call in calls.items():
            with pytest.raises(PermissionDenied) as info:
                call(client)
            _assert_hint(info.value)
            denied.append(name)
    figure("least_privilege_denied", read_queue="PermissionDenied", client_calls_denied=len(denied))


def test_a_consumer_role_reading_a_queue_it_has_no_table_rights_on_is_denied(
    database: Database,
) -> None:
    """The consumer role's grants are per queue: reading queue ``other`` (schema and
    function rights, but no table rights) ends the subscription with PermissionDenied."""
    sink = Collect()
    sub = rx_pgmq.read_queue(database.consumer, "other", visibility_timeout=30).subscribe(
        on_next=lambda m: None, on_error=sink.on_error
    )
    with PGMQ(database.dsn) as admin:
        admin.send("other", {"n": 1})
    try:
        assert sink.wait(lambda: bool(sink.errors))
    finally:
        sub.dispose()
    (error,) = sink.errors
    _assert_hint(error)
    assert "q_other" in str(error)
    with PGMQ(database.dsn) as admin:
        admin.purge_queue("other")


def test_acks_the_role_may_not_apply_are_unacked_and_logged_with_the_hint(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """An ack the role may not apply (Archive, after INSERT on the archive is revoked)
    resolves "unacked" (the message stays and reappears after its timeout), the
    subscription goes on, and the error log carries the PermissionDenied hint."""
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        role = conninfo_user(database.consumer)
        conn.execute(sql.SQL("REVOKE INSERT ON pgmq.a_orders FROM {}").format(sql.Identifier(role)))
    try:
        with PGMQ(database.dsn) as admin:
            msg_id = admin.send("orders", {"n": 5})
        sink = Collect()
        source = rx_pgmq.read_queue(database.consumer, "orders", visibility_timeout=30)
        with caplog.at_level(logging.ERROR, logger="rx_pgmq"):
            sub = source.pipe(pgops.process(lambda m: failed(m, "x")), pgops.ack()).subscribe(
                on_next=sink.on_next, on_error=sink.on_error
            )
            try:
                assert sink.wait(lambda: bool(sink.records) or bool(sink.errors))
            finally:
                sub.dispose()
        assert sink.errors == []
        assert [r.status for r in sink.records] == ["unacked"]
        assert msg_id in queue_rows(database.dsn, "orders")
        logged = [
            r.getMessage() for r in caplog.records if "could not acknowledge" in r.getMessage()
        ]
        assert logged and "USAGE on schema pgmq" in logged[0], logged
        assert wait_until(lambda: source.consumers == [], 5.0)
    finally:
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT INSERT ON pgmq.a_orders TO {}").format(sql.Identifier(role))
            )
        with PGMQ(database.dsn) as admin:
            admin.purge_queue("orders")


def conninfo_user(conninfo: str) -> str:
    """The user a conninfo logs in as."""
    return str(psycopg.conninfo.conninfo_to_dict(conninfo)["user"])
