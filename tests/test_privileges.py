"""Least privilege (issue 7, scenario 9): the grants a consumer and a producer need, tested.

A throwaway database gets PGMQ and ``REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq FROM
PUBLIC`` (PostgreSQL grants EXECUTE on functions to PUBLIC by default), so a role can do
exactly what its grants allow. Roles get the statements of the README's "Least privilege"
section, read from README.md; a role without them gets ``PermissionDenied`` with a hint
(``on_error`` for ``read_queue``, raised by the client).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faults import figure, queue_rows, wait_until
from psycopg import sql
from psycopg.conninfo import make_conninfo

import rx_pgmq
from rx_pgmq import Message, Settled, failed
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Action, Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import PermissionDenied

pytestmark = pytest.mark.faults

WAIT = 20.0

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_sql(after: str) -> str:
    """The first ```sql block after ``after`` in the README's "Least privilege" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Least privilege") :]
    start = section.index("```sql\n", section.index(after)) + len("```sql\n")
    return section[start : section.index("```", start)]


# The README's statements, verbatim: its roles (app_consumer, app_producer) are replaced by
# the test's roles; its queues (orders, dlq) are the test database's queues.
CONSUMER_GRANTS = readme_sql("Consumer (")
MOVE_GRANTS = readme_sql('`MoveTo("dlq")` also needs:')
PRODUCER_GRANTS = readme_sql("Producer (")


@dataclass(frozen=True)
class Database:
    """A throwaway database with PGMQ, queues ``orders``, ``dlq`` and ``other``, and roles."""

    dsn: str  # as the superuser
    consumer: str  # conninfo of a role with CONSUMER_GRANTS on orders (+ MOVE_GRANTS to dlq)
    producer: str  # conninfo of a role with PRODUCER_GRANTS on orders
    nobody: str  # conninfo of a role with no grant at all


def _grant(conn: psycopg.Connection[Any], statements: str, readme_role: str, role: str) -> None:
    """Run the README's ``statements`` with ``readme_role`` replaced by ``role``."""
    assert readme_role in statements, f"{readme_role} not in {statements}"
    quoted = sql.Identifier(role).as_string(conn)
    conn.execute(re.sub(rf"\b{readme_role}\b", quoted, statements).encode())


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
            _grant(conn, CONSUMER_GRANTS, "app_consumer", roles["consumer"])
            _grant(conn, MOVE_GRANTS, "app_consumer", roles["consumer"])
            _grant(conn, PRODUCER_GRANTS, "app_producer", roles["producer"])
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


ACTIONS: dict[int, Action] = {
    0: Delete(),
    1: Archive(),
    2: Nothing(),
    3: SetVisibilityTimeout(600),
    4: MoveTo("dlq"),
}
"""The action each message gets, by ``n % 5`` (as an override, so one flush mixes them)."""


def _vt_seconds_left(dsn: str, queue: str) -> dict[int, float]:
    """msg_id -> seconds until the message is visible again (negative: visible)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT msg_id, extract(epoch FROM vt - clock_timestamp())::float8 FROM {}"
            ).format(sql.Identifier("pgmq", f"q_{queue}"))
        ).fetchall()
    return {int(r[0]): float(r[1]) for r in rows}


@pytest.mark.parametrize("fenced", [False, True], ids=["plain", "fenced"])
def test_a_consumer_role_with_only_the_readme_grants_applies_every_ack_action(
    database: Database, fenced: bool
) -> None:
    """#14 item 12: a role with exactly the README's consumer grants (and its MoveTo grants)
    runs read_queue with a listener + process + ack, with Delete, Archive, Nothing,
    SetVisibilityTimeout and MoveTo mixed in the same flushes: every Settled is acked and
    each message ends where its action puts it.

    Before, the set_vt flushes failed whole (set_vt(text, bigint[], integer) calls the
    timestamptz overload, which the README did not grant), losing the deletes with them.
    """
    with PGMQ(database.producer) as producer:
        ids = producer.send_batch("orders", [{"n": i} for i in range(30)])

    def handle(message: Message) -> rx_pgmq.Outcome:
        return failed(message, "by design").with_ack(ACTIONS[message.body["n"] % 5])

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
    by_kind = {k: {ids[n] for n in range(30) if n % 5 == k} for k in ACTIONS}
    left = _vt_seconds_left(database.dsn, "orders")
    assert set(left) == by_kind[2] | by_kind[3]  # Nothing and SetVisibilityTimeout stay
    assert all(0 < left[i] <= 31 for i in by_kind[2])  # Nothing: still leased from the read
    assert all(500 < left[i] <= 601 for i in by_kind[3])  # SetVisibilityTimeout(600)
    assert set(queue_rows(database.dsn, "orders", "a")) & set(ids) == by_kind[1]
    with PGMQ(database.dsn) as admin:
        moved = admin.read("dlq", vt=0, qty=100)
        admin.purge_queue("dlq")
        admin.purge_queue("orders")
    assert sorted(m.body["n"] for m in moved) == [n for n in range(30) if n % 5 == 4]


@pytest.mark.parametrize("fenced", [False, True], ids=["plain", "fenced"])
def test_a_consumer_role_with_only_the_readme_grants_extends_and_releases(
    database: Database, fenced: bool
) -> None:
    """#14 item 12: with exactly the README's consumer grants, extend_visibility keeps held
    messages hidden past their 2 s timeout (heartbeats succeed), and disposing releases
    them at once (set_vt 0): all visible again, read once.

    Before, both failed: set_vt's timestamptz overload was not granted.
    """
    with PGMQ(database.producer) as producer:
        ids = producer.send_batch("orders", [{"n": i} for i in range(3)])
    source = rx_pgmq.read_queue(
        database.consumer,
        "orders",
        visibility_timeout=2,
        extend_visibility=True,
        fenced=fenced,
        read_interval=0.1,
    )
    held: list[Message] = []
    errors: list[Exception] = []
    sub = source.subscribe(on_next=held.append, on_error=errors.append)
    try:
        assert wait_until(lambda: len(held) == 3, WAIT)
        assert wait_until(lambda: source.stats.extended >= 6, WAIT), source.stats
        left = _vt_seconds_left(database.dsn, "orders")
        assert all(t > 0 for t in left.values()), left  # hidden, beyond the first 2 s
    finally:
        sub.dispose()
    assert source.wait_closed(WAIT)  # `held` keeps them: they may settle for close_timeout
    left = _vt_seconds_left(database.dsn, "orders")
    assert sorted(left) == sorted(ids)
    assert all(t <= 0 for t in left.values()), left  # released, not merely expired later
    assert errors == []
    assert source.stats.extended >= 6
    with PGMQ(database.dsn) as admin:
        admin.purge_queue("orders")


def test_the_readme_consumer_grants_do_not_let_the_role_rewrite_bodies(
    database: Database,
) -> None:
    """#14 item 12: UPDATE is granted on vt, read_ct and last_read_at only: the consumer
    role cannot change a message's body or headers."""
    with PGMQ(database.producer) as producer:
        producer.send("orders", {"n": 1})
    try:
        with psycopg.connect(database.consumer, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE pgmq.q_orders SET message = '{}'::jsonb")
            conn.execute("UPDATE pgmq.q_orders SET vt = vt")  # the columns acks need
    finally:
        with PGMQ(database.dsn) as admin:
            admin.purge_queue("orders")


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
