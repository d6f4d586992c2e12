"""Bad arguments are rejected with InvalidArgument before any SQL is sent.

The table-driven test feeds every client entry point bad input and runs each case twice:
against a client whose server does not exist (any SQL attempt would raise ConnectionLost,
not InvalidArgument), and against a real connection whose wire traffic is traced by libpq
and whose server-side PGMQ function call counter is read back in the same transaction.
The ``_validate`` helpers are unit-tested directly, with hypothesis where it fits.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rx_pgmq import PGMQ
from rx_pgmq._values._validate import (
    MAX_INT4,
    QUEUE_NAME_RULE,
    check_body,
    check_headers,
    check_non_negative_int,
    check_positive_int,
    check_queue_name,
    seconds,
    whole_seconds,
)
from rx_pgmq.errors import ConnectionLost, InvalidArgument, RxPgmqError

QUEUE = "rx_validation_never_created"
NAME_REGEX = r"[a-z_][a-z0-9_]{0,46}"

# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad call: what to call, which argument is blamed, and a fragment of the rule."""

    id: str
    call: Callable[[Any], object]  # Any: the calls are deliberately ill-typed
    argument: str
    rule: str


NAME_ENTRY_POINTS: dict[str, Callable[[PGMQ, Any], object]] = {
    "create_queue": lambda c, n: c.create_queue(n),
    "create_queue_unlogged": lambda c, n: c.create_queue(n, unlogged=True),
    "drop_queue": lambda c, n: c.drop_queue(n),
    "purge_queue": lambda c, n: c.purge_queue(n),
    "queue_exists": lambda c, n: c.queue_exists(n),
    "metrics": lambda c, n: c.metrics(n),
    "enable_notify": lambda c, n: c.enable_notify(n),
    "disable_notify": lambda c, n: c.disable_notify(n),
    "notify_throttle_ms": lambda c, n: c.notify_throttle_ms(n),
    "send": lambda c, n: c.send(n, {"ok": 1}),
    "send_batch": lambda c, n: c.send_batch(n, [1]),
    "read": lambda c, n: c.read(n, 30),
    "read_with_poll": lambda c, n: c.read_with_poll(n, 30, max_poll_seconds=1),
    "pop": lambda c, n: c.pop(n),
    "delete": lambda c, n: c.delete(n, 1),
    "delete_list": lambda c, n: c.delete(n, [1]),
    "archive": lambda c, n: c.archive(n, 1),
    "archive_list": lambda c, n: c.archive(n, [1]),
    "set_vt": lambda c, n: c.set_vt(n, 1, 0),
    "set_vt_list": lambda c, n: c.set_vt(n, [1], 0),
    # the rest of PGMQ 1.13 (#18 item 2)
    "create_queue_partitioned": lambda c, n: c.create_queue(n, partitioned=True),
    "convert_archive_partitioned": lambda c, n: c.convert_archive_partitioned(n),
    "queue": lambda c, n: c.queue(n),
    "peek": lambda c, n: c.peek(n),
    "update_notify": lambda c, n: c.update_notify(n, 10),
    "create_fifo_index": lambda c, n: c.create_fifo_index(n),
    "read_grouped": lambda c, n: c.read_grouped(n, 30),
    "read_grouped_rr": lambda c, n: c.read_grouped_rr(n, 30),
    "read_grouped_head": lambda c, n: c.read_grouped_head(n, 30),
    "read_grouped_with_poll": lambda c, n: c.read_grouped_with_poll(n, 30),
    "read_grouped_rr_with_poll": lambda c, n: c.read_grouped_rr_with_poll(n, 30),
    "read_grouped_head_with_poll": lambda c, n: c.read_grouped_head_with_poll(n, 30),
    "bind_topic": lambda c, n: c.bind_topic("a.#", n),
    "unbind_topic": lambda c, n: c.unbind_topic("a.#", n),
}

NAME_ARGUMENT = {"peek": "queue", "bind_topic": "queue", "unbind_topic": "queue"}
"""The argument blamed for a bad queue name, where it is not ``name``."""

BAD_NAMES: dict[str, object] = {
    "empty": "",
    "48_chars": "a" * 48,
    "upper_case": "Orders",
    "hyphen": "a-b",
    "sql_injection": "x;drop table y",
    "double_quoted": '"q"',
    "unicode": "ñame",
    "None": None,
    "int": 5,
    "leading_digit": "1abc",
    "space": "a b",
    "trailing_newline": "abc\n",
    "bytes": b"abc",
}

NAME_RULE = "must match ^[a-z_][a-z0-9_]{0,46}$"


def _with_name(fn: Callable[[PGMQ, Any], object], name: object) -> Callable[[Any], object]:
    return lambda client: fn(client, name)


def _name_cases() -> list[Case]:
    return [
        Case(f"{ep}-name-{label}", _with_name(fn, bad), NAME_ARGUMENT.get(ep, "name"), NAME_RULE)
        for ep, fn in NAME_ENTRY_POINTS.items()
        for label, bad in BAD_NAMES.items()
    ]


q = QUEUE
NAN = float("nan")
NAIVE = datetime(2030, 1, 1, 12, 0)

OTHER_CASES: list[Case] = [
    # visibility timeouts: whole seconds >= 0, int or timedelta
    Case("read-vt-negative", lambda c: c.read(q, -1), "vt", ">= 0 seconds"),
    Case("read-vt-negative_timedelta", lambda c: c.read(q, timedelta(seconds=-1)), "vt", ">= 0"),
    Case("read-vt-float", lambda c: c.read(q, 1.5), "vt", "whole seconds (int) or a timedelta"),
    Case("read-vt-integral_float", lambda c: c.read(q, 2.0), "vt", "whole seconds"),
    Case("read-vt-bool", lambda c: c.read(q, True), "vt", "whole seconds (int) or a timedelta"),
    Case("read-vt-str", lambda c: c.read(q, "30"), "vt", "whole seconds"),
    Case("read-vt-None", lambda c: c.read(q, None), "vt", "whole seconds"),
    Case("read-vt-too_large", lambda c: c.read(q, MAX_INT4 + 1), "vt", "at most 2147483647"),
    Case("read_with_poll-vt-negative", lambda c: c.read_with_poll(q, -5), "vt", ">= 0"),
    Case("read_with_poll-vt-float", lambda c: c.read_with_poll(q, 0.5), "vt", "whole seconds"),
    Case("set_vt-vt-negative", lambda c: c.set_vt(q, 1, -1), "vt", ">= 0 seconds"),
    Case("set_vt-vt-float", lambda c: c.set_vt(q, 1, 1.5), "vt", "whole seconds"),
    Case("set_vt-vt-bool", lambda c: c.set_vt(q, [1], False), "vt", "whole seconds"),
    Case("set_vt_list-vt-negative", lambda c: c.set_vt(q, [1], -1), "vt", ">= 0"),
    # delays: whole seconds >= 0
    Case("send-delay-negative", lambda c: c.send(q, 1, delay=-1), "delay", ">= 0 seconds"),
    Case("send-delay-float", lambda c: c.send(q, 1, delay=1.5), "delay", "whole seconds"),
    Case("send-delay-bool", lambda c: c.send(q, 1, delay=True), "delay", "whole seconds"),
    Case(
        "send-delay-negative_timedelta",
        lambda c: c.send(q, 1, delay=timedelta(milliseconds=-1)),
        "delay",
        ">= 0",
    ),
    Case("send_batch-delay-negative", lambda c: c.send_batch(q, [1], delay=-3), "delay", ">= 0"),
    Case("send_batch-delay-float", lambda c: c.send_batch(q, [1], delay=0.1), "delay", "whole"),
    # qty >= 1, a real int
    Case("read-qty-0", lambda c: c.read(q, 30, qty=0), "qty", "must be an int >= 1"),
    Case("read-qty--1", lambda c: c.read(q, 30, qty=-1), "qty", "must be an int >= 1"),
    Case("read-qty-True", lambda c: c.read(q, 30, qty=True), "qty", "must be an int >= 1"),
    Case("read-qty-float", lambda c: c.read(q, 30, qty=2.0), "qty", "must be an int >= 1"),
    Case("read_with_poll-qty-0", lambda c: c.read_with_poll(q, 30, qty=0), "qty", ">= 1"),
    Case("pop-qty-0", lambda c: c.pop(q, qty=0), "qty", "must be an int >= 1"),
    Case("pop-qty--1", lambda c: c.pop(q, qty=-1), "qty", "must be an int >= 1"),
    Case("pop-qty-True", lambda c: c.pop(q, qty=True), "qty", "must be an int >= 1"),
    # polling knobs and throttle
    Case(
        "read_with_poll-max_poll_seconds-negative",
        lambda c: c.read_with_poll(q, 30, max_poll_seconds=-1),
        "max_poll_seconds",
        "must be an int >= 0",
    ),
    Case(
        "read_with_poll-poll_interval_ms-0",
        lambda c: c.read_with_poll(q, 30, poll_interval_ms=0),
        "poll_interval_ms",
        "must be an int >= 1",
    ),
    Case(
        "enable_notify-throttle_ms-negative",
        lambda c: c.enable_notify(q, throttle_ms=-1),
        "throttle_ms",
        "must be an int >= 0",
    ),
    Case(
        "enable_notify-throttle_ms-float",
        lambda c: c.enable_notify(q, throttle_ms=2.5),
        "throttle_ms",
        "must be an int >= 0",
    ),
    # conditional: a dict or None
    Case(
        "read-conditional-list",
        lambda c: c.read(q, 30, conditional=[1]),
        "conditional",
        "must be a dict",
    ),
    Case(
        "read-conditional-not_json",
        lambda c: c.read(q, 30, conditional={"k": object()}),
        "conditional",
        "JSON-serializable",
    ),
    Case(
        "read_with_poll-conditional-str",
        lambda c: c.read_with_poll(q, 30, conditional="{}"),
        "conditional",
        "must be a dict",
    ),
    # bodies: JSON-serializable (no NaN/Infinity, which jsonb rejects)
    Case("send-body-object", lambda c: c.send(q, object()), "body", "JSON-serializable"),
    Case("send-body-set", lambda c: c.send(q, {1, 2}), "body", "JSON-serializable"),
    Case("send-body-nan", lambda c: c.send(q, NAN), "body", "JSON-serializable"),
    Case("send-body-inf", lambda c: c.send(q, math.inf), "body", "JSON-serializable"),
    Case("send-body-nested_nan", lambda c: c.send(q, {"x": [NAN]}), "body", "JSON-serial"),
    Case("send-body-bytes", lambda c: c.send(q, b"raw"), "body", "JSON-serializable"),
    Case("send-body-tuple_key", lambda c: c.send(q, {(1, 2): 3}), "body", "JSON-serializable"),
    Case("send_batch-body-set", lambda c: c.send_batch(q, [1, {2}]), "bodies[1]", "JSON"),
    Case("send_batch-body-nan", lambda c: c.send_batch(q, [NAN]), "bodies[0]", "JSON"),
    Case("send_batch-body-bytes", lambda c: c.send_batch(q, [1, 2, b"x"]), "bodies[2]", "JSON"),
    # headers: a dict with str keys (or None)
    Case("send-headers-list", lambda c: c.send(q, 1, headers=[1]), "headers", "dict with str"),
    Case("send-headers-str", lambda c: c.send(q, 1, headers="h"), "headers", "dict with str"),
    Case("send-headers-int_key", lambda c: c.send(q, 1, headers={1: "a"}), "headers", "str keys"),
    Case(
        "send-headers-not_json",
        lambda c: c.send(q, 1, headers={"k": object()}),
        "headers",
        "JSON-serializable",
    ),
    Case(
        "send_batch-headers-dict_not_list",
        lambda c: c.send_batch(q, [1], headers={"h": 1}),
        "headers",
        "one entry per body",
    ),
    Case(
        "send_batch-headers-count_mismatch",
        lambda c: c.send_batch(q, [1, 2], headers=[{"h": 1}]),
        "headers",
        "has 1 entries for 2 bodies",
    ),
    Case(
        "send_batch-headers-bad_entry",
        lambda c: c.send_batch(q, [1, 2], headers=[None, ["x"]]),
        "headers[1]",
        "dict with str keys",
    ),
    Case(
        "send_batch-headers-non_str_key",
        lambda c: c.send_batch(q, [1], headers=[{2: "x"}]),
        "headers[0]",
        "str keys",
    ),
    # send_batch bodies: a non-empty list
    Case("send_batch-bodies-empty", lambda c: c.send_batch(q, []), "bodies", "at least one"),
    Case("send_batch-bodies-empty_tuple", lambda c: c.send_batch(q, ()), "bodies", "at least"),
    Case("send_batch-bodies-dict", lambda c: c.send_batch(q, {"a": 1}), "bodies", "must be a list"),
    Case("send_batch-bodies-str", lambda c: c.send_batch(q, "abc"), "bodies", "must be a list"),
    Case("send_batch-bodies-int", lambda c: c.send_batch(q, 3), "bodies", "must be a list"),
    Case("send_batch-bodies-None", lambda c: c.send_batch(q, None), "bodies", "must be a list"),
    Case("send_batch-bodies-set", lambda c: c.send_batch(q, {1, 2}), "bodies", "must be a list"),
    # message ids: ints >= 1, or a list of them
    Case("delete-msg_id-0", lambda c: c.delete(q, 0), "msg_id", "int >= 1"),
    Case("delete-msg_id-negative", lambda c: c.delete(q, -1), "msg_id", "int >= 1"),
    Case("delete-msg_id-True", lambda c: c.delete(q, True), "msg_id", "int >= 1"),
    Case("delete-msg_id-str", lambda c: c.delete(q, "1"), "msg_id", "list of message ids"),
    Case("delete-msg_id-None", lambda c: c.delete(q, None), "msg_id", "list of message ids"),
    Case("delete-msg_id-list_with_0", lambda c: c.delete(q, [1, 0]), "msg_id", "ints >= 1"),
    Case("delete-msg_id-list_with_str", lambda c: c.delete(q, ["1"]), "msg_id", "ints >= 1"),
    Case("archive-msg_id-0", lambda c: c.archive(q, 0), "msg_id", "int >= 1"),
    Case("archive-msg_id-float", lambda c: c.archive(q, 1.0), "msg_id", "list of message ids"),
    Case("archive-msg_id-list_bool", lambda c: c.archive(q, [True]), "msg_id", "ints >= 1"),
    Case("set_vt-msg_id-0", lambda c: c.set_vt(q, 0, 1), "msg_id", "int >= 1"),
    Case("set_vt-msg_id-bytes", lambda c: c.set_vt(q, b"\x01", 1), "msg_id", "list of message"),
    # times: an aware datetime is a point in time; a naive one is ambiguous (#18 item 2)
    Case("send-delay-naive", lambda c: c.send(q, 1, delay=NAIVE), "delay", "naive datetime"),
    Case("send_batch-delay-naive", lambda c: c.send_batch(q, [1], delay=NAIVE), "delay", "naive"),
    Case("set_vt-vt-naive", lambda c: c.set_vt(q, 1, NAIVE), "vt", "naive datetime"),
    Case("set_vt_list-vt-naive", lambda c: c.set_vt(q, [1], NAIVE), "vt", "naive datetime"),
    # topics: routing keys and patterns by PGMQ's rules (#18 item 2)
    Case("send_topic-routing_key-empty", lambda c: c.send_topic("", 1), "routing_key", "non-empty"),
    Case("send_topic-routing_key-star", lambda c: c.send_topic("a.*", 1), "routing_key", "only"),
    Case("send_topic-delay-naive", lambda c: c.send_topic("a", 1, delay=NAIVE), "delay", "naive"),
    Case("send_topic-body-nan", lambda c: c.send_topic("a", NAN), "body", "JSON-serializable"),
    Case("send_topic-headers-list", lambda c: c.send_topic("a", 1, headers=[1]), "headers", "dict"),
    Case(
        "send_batch_topic-routing_key-dots",
        lambda c: c.send_batch_topic("a..b", [1]),
        "routing_key",
        "..",
    ),
    Case(
        "send_batch_topic-bodies-empty", lambda c: c.send_batch_topic("a", []), "bodies", "at least"
    ),
    Case("test_routing-routing_key-space", lambda c: c.test_routing("a b"), "routing_key", "only"),
    Case(
        "test_routing-routing_key-None", lambda c: c.test_routing(None), "routing_key", "non-empty"
    ),
    Case(
        "validate_routing_key-routing_key-end_dot",
        lambda c: c.validate_routing_key("a."),
        "routing_key",
        "end",
    ),
    Case(
        "validate_topic_pattern-pattern-stars",
        lambda c: c.validate_topic_pattern("a.**"),
        "pattern",
        "'**'",
    ),
    Case("bind_topic-pattern-hash_star", lambda c: c.bind_topic("#*", q), "pattern", "'#*'"),
    Case(
        "unbind_topic-pattern-long",
        lambda c: c.unbind_topic("a" * 256, q),
        "pattern",
        "at most 255",
    ),
    # typed bodies: one of the four kinds of body type (#18 item 4)
    Case("read-body_type-int", lambda c: c.read(q, 30, body_type=int), "body_type", "dataclass"),
    Case("pop-body_type-instance", lambda c: c.pop(q, body_type={}), "body_type", "TypedDict"),
    Case(
        "read_grouped_rr-body_type-str",
        lambda c: c.read_grouped_rr(q, 30, body_type="Order"),
        "body_type",
        "pydantic model class",
    ),
    # list_topic_bindings(None) lists every binding; other non-names are refused
    Case("list_topic_bindings-queue-upper", lambda c: c.list_topic_bindings("Q"), "queue", "match"),
    Case("list_topic_bindings-queue-int", lambda c: c.list_topic_bindings(5), "queue", "match"),
    # notifications, FIFO and partitioning knobs
    Case(
        "update_notify-throttle_ms-negative",
        lambda c: c.update_notify(q, -1),
        "throttle_ms",
        ">= 0",
    ),
    Case("read_grouped-qty-0", lambda c: c.read_grouped(q, 30, 0), "qty", "must be an int >= 1"),
    Case("read_grouped_rr-vt-negative", lambda c: c.read_grouped_rr(q, -1), "vt", ">= 0"),
    Case(
        "read_grouped_head_with_poll-max_poll_seconds-negative",
        lambda c: c.read_grouped_head_with_poll(q, 30, max_poll_seconds=-1),
        "max_poll_seconds",
        "must be an int >= 0",
    ),
    Case("peek-n-0", lambda c: c.peek(q, 0), "n", "must be an int >= 1"),
    Case(
        "create_queue-unlogged-partitioned",
        lambda c: c.create_queue(q, unlogged=True, partitioned=True),
        "unlogged",
        "cannot be unlogged",
    ),
    Case(
        "create_queue-partitioned-str",
        lambda c: c.create_queue(q, partitioned="yes"),
        "partitioned",
        "must be a bool",
    ),
    Case(
        "convert_archive_partitioned-leading_partition-0",
        lambda c: c.convert_archive_partitioned(q, leading_partition=0),
        "leading_partition",
        "must be an int >= 1",
    ),
    Case("set_vt-msg_id-list_negative", lambda c: c.set_vt(q, [-2], 1), "msg_id", "ints >= 1"),
]

CASES: list[Case] = _name_cases() + OTHER_CASES


def _assert_invalid(case: Case, client: PGMQ) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        case.call(client)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, RxPgmqError)
    assert err.argument == case.argument
    message = str(err)
    assert message.startswith(f"{case.argument}: "), message
    assert case.rule in message, message
    return err


# -- target 1: a server that does not exist ----------------------------------------------


UNREACHABLE = "postgresql://nobody@/postgres?host=/nonexistent/rx_pgmq_no_server&connect_timeout=1"


@pytest.fixture(scope="module")
def unreachable_client() -> Iterator[PGMQ]:
    """A client for a server that does not exist: any SQL it tried would be ConnectionLost."""
    with PGMQ(UNREACHABLE) as client:
        yield client


def test_the_unreachable_client_really_fails_on_sql(unreachable_client: PGMQ) -> None:
    """Control: a valid call on the unreachable client raises ConnectionLost, so a bad call
    that reached SQL could not pass as InvalidArgument."""
    with pytest.raises(ConnectionLost):
        unreachable_client.list_queues()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_invalid_argument_without_contacting_the_server(
    case: Case, unreachable_client: PGMQ
) -> None:
    """Each bad input raises InvalidArgument (a ValueError) naming the argument and the rule,
    before the client tries to reach the (nonexistent) server."""
    _assert_invalid(case, unreachable_client)


# -- target 2: a real connection, traced ---------------------------------------------------


class TracedClient:
    """A PGMQ client on one real connection, with every protocol message libpq sends or
    receives written to a file, and the server's per-transaction PGMQ call counter."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False)
        # Count calls of every function (plpgsql and SQL) in pg_stat_xact_user_functions.
        self.conn.execute("SET track_functions = 'all'")
        self.conn.commit()
        self.client = PGMQ(self.conn)
        # libpq fdopen()s the descriptor on every trace() and never closes it, so one
        # descriptor serves the whole module; each trace is the bytes it appended.
        self._fd, path = tempfile.mkstemp(prefix="rx_pgmq_trace_")
        os.unlink(path)

    def begin(self) -> int:
        """Open a transaction; return the backend's PGMQ call count at its start.

        The count only grows inside one transaction (the server flushes its pending
        function statistics only between transactions), so an unchanged count at the end
        proves no PGMQ function ran in between.
        """
        self.conn.rollback()
        self.conn.execute("SELECT 1")
        return self.pgmq_calls()

    def traced(self, action: Callable[[], object]) -> tuple[bytes, BaseException | None]:
        """Run ``action`` with libpq tracing on; return the trace and what it raised."""
        start = os.fstat(self._fd).st_size
        self.conn.pgconn.trace(self._fd)
        self.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        raised: BaseException | None = None
        try:
            action()
        except BaseException as exc:  # handed back to the caller
            raised = exc
        finally:
            self.conn.pgconn.untrace()  # flushes
        end = os.fstat(self._fd).st_size
        return os.pread(self._fd, end - start, start), raised

    def pgmq_calls(self) -> int:
        """PGMQ function calls this backend counted and has not yet flushed to the server."""
        row = self.conn.execute(
            "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'pgmq'"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.conn.close()
        os.close(self._fd)


@pytest.fixture(scope="module")
def traced(pgmq_dsn: str) -> Iterator[TracedClient]:
    """One traced client on a real connection for the whole module."""
    t = TracedClient(pgmq_dsn)
    yield t
    t.close()


def test_the_trace_and_counter_see_sql_when_it_is_sent(traced: TracedClient, pgmq: PGMQ) -> None:
    """Control: a valid call does show up in the libpq trace and in the server's counter of
    PGMQ calls, so the no-SQL assertions below could not pass if SQL were sent."""
    name = "rx_validation_control_q"
    pgmq.create_queue(name)
    try:
        baseline = traced.begin()
        trace, raised = traced.traced(lambda: traced.client.send(name, {"ok": True}))
        assert raised is None
        assert b"pgmq.send" in trace
        assert traced.pgmq_calls() > baseline
        trace, raised = traced.traced(lambda: traced.client.queue_exists(name))
        assert raised is None
        assert b"pgmq.meta" in trace, "plain SELECTs (no PGMQ function) are traced too"
        traced.conn.rollback()
    finally:
        pgmq.drop_queue(name)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_sends_no_sql_on_a_real_connection(case: Case, traced: TracedClient) -> None:
    """Each bad input raises InvalidArgument on a real connection with nothing on the wire
    (empty libpq trace) and no PGMQ function run in the open transaction."""
    baseline = traced.begin()
    trace, raised = traced.traced(lambda: _assert_invalid(case, traced.client))
    if raised is not None:
        raise raised
    assert trace == b"", f"SQL was sent: {trace!r}"
    assert traced.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert traced.pgmq_calls() == baseline
    traced.conn.rollback()


def test_table_covers_every_requested_bad_input() -> None:
    """The table holds the inputs the issue lists, for every entry point taking a queue."""
    ids = {c.id for c in CASES}
    for ep in NAME_ENTRY_POINTS:
        for label in ("empty", "48_chars", "upper_case", "hyphen", "sql_injection"):
            assert f"{ep}-name-{label}" in ids
        for label in ("double_quoted", "unicode", "None", "int"):
            assert f"{ep}-name-{label}" in ids
    for needed in (
        "read-vt-negative",
        "send-delay-negative",
        "read-vt-float",
        "read-vt-bool",
        "read-qty-0",
        "read-qty--1",
        "read-qty-True",
        "send-body-object",
        "send-body-set",
        "send-body-nan",
        "send-body-bytes",
        "send-headers-list",
        "send-headers-int_key",
        "send_batch-bodies-empty",
        "send_batch-bodies-dict",
        "send_batch-headers-count_mismatch",
    ):
        assert needed in ids
    public = {
        n for n in dir(PGMQ) if not n.startswith("_") and callable(getattr(PGMQ, n)) and n != "dsn"
    } - {"close"}
    covered = {
        ep.removesuffix("_list").removesuffix("_unlogged").removesuffix("_partitioned")
        for ep in NAME_ENTRY_POINTS
    }
    covered |= {c.id.split("-")[0] for c in OTHER_CASES}  # calls that take no queue name
    without_arguments = {"list_queues", "metrics_all", "queues", "list_notify_throttles"}
    assert public - without_arguments - {"create_fifo_indexes_all"} <= covered, public - covered


def test_client_constructor_rejects_non_conninfo_without_connecting() -> None:
    """PGMQ(x) for x not a non-empty string, a pool or a connection raises InvalidArgument
    naming conninfo."""
    for bad in (5, "", "   ", None, b"postgresql://", object()):
        with pytest.raises(InvalidArgument) as info:
            PGMQ(bad)  # type: ignore[arg-type]
        assert info.value.argument == "conninfo"


# -- the helpers directly ----------------------------------------------------------------


@settings(database=None, deadline=None)
@given(st.from_regex(NAME_REGEX, fullmatch=True))
def test_check_queue_name_accepts_every_name_matching_the_rule(name: str) -> None:
    """Any string matching ^[a-z_][a-z0-9_]{0,46}$ is returned unchanged."""
    assert check_queue_name(name) == name


@settings(database=None, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="abcAZ_09-;\n ñ\"'", max_size=60)))
def test_check_queue_name_rejects_everything_else(name: str) -> None:
    """Any string not fully matching the rule raises InvalidArgument stating the rule."""
    if re.fullmatch(NAME_REGEX, name):
        assert check_queue_name(name) == name
    else:
        with pytest.raises(InvalidArgument) as info:
            check_queue_name(name, "queue")
        assert info.value.argument == "queue"
        assert QUEUE_NAME_RULE in str(info.value)


@pytest.mark.parametrize(
    "value", [None, 5, 1.5, b"abc", ["a"], "abc\n", "a" * 48], ids=lambda v: repr(v)[:20]
)
def test_check_queue_name_rejects_non_strings_and_edge_strings(value: object) -> None:
    """Non-strings, a trailing newline and 48 characters are rejected."""
    with pytest.raises(InvalidArgument, match="must match"):
        check_queue_name(value)


def test_check_queue_name_length_boundary() -> None:
    """47 characters is the longest accepted name."""
    assert check_queue_name("a" * 47) == "a" * 47
    assert check_queue_name("_") == "_"


@settings(database=None, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_INT4))
def test_whole_seconds_returns_non_negative_ints_unchanged(value: int) -> None:
    """Any int in [0, 2**31-1] is returned as is."""
    assert whole_seconds(value, "vt") == value


@settings(database=None, deadline=None)
@given(st.integers(max_value=-1))
def test_whole_seconds_rejects_negative_ints(value: int) -> None:
    """Negative ints raise InvalidArgument naming the argument."""
    with pytest.raises(InvalidArgument, match=r"^delay: must be >= 0 seconds"):
        whole_seconds(value, "delay")


@settings(database=None, deadline=None)
@given(st.integers(min_value=MAX_INT4 + 1))
def test_whole_seconds_rejects_values_beyond_postgres_integer(value: int) -> None:
    """Ints that do not fit PostgreSQL's integer raise InvalidArgument."""
    with pytest.raises(InvalidArgument, match="at most 2147483647"):
        whole_seconds(value, "vt")


@settings(database=None, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_whole_seconds_rejects_every_float(value: float) -> None:
    """Floats, even integral ones, are not whole seconds (use an int or a timedelta)."""
    with pytest.raises(InvalidArgument, match="whole seconds"):
        whole_seconds(value, "vt")


@settings(database=None, deadline=None)
@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365)))
def test_whole_seconds_rounds_timedeltas_up(value: timedelta) -> None:
    """A non-negative timedelta becomes the smallest whole number of seconds >= it."""
    result = whole_seconds(value, "vt")
    assert isinstance(result, int)
    assert result == math.ceil(value.total_seconds())
    assert result >= value.total_seconds()
    assert result - value.total_seconds() < 1


@settings(database=None, deadline=None)
@given(st.timedeltas(max_value=timedelta(microseconds=-1)))
def test_whole_seconds_rejects_negative_timedeltas(value: timedelta) -> None:
    """Negative timedeltas raise InvalidArgument."""
    with pytest.raises(InvalidArgument, match=">= 0 seconds"):
        whole_seconds(value, "vt")


@pytest.mark.parametrize(
    "value", [True, False, "1", None, [1], 1 + 0j], ids=lambda v: type(v).__name__ + repr(v)
)
def test_whole_seconds_rejects_non_numbers_and_bools(value: object) -> None:
    """Bools, strings, None and other types are rejected as not whole seconds."""
    with pytest.raises(InvalidArgument, match="whole seconds"):
        whole_seconds(value, "vt")


def test_whole_seconds_rejects_a_huge_timedelta() -> None:
    """A timedelta beyond PostgreSQL's integer range is rejected."""
    with pytest.raises(InvalidArgument, match="at most"):
        whole_seconds(timedelta(days=30_000), "vt")


@settings(database=None, deadline=None)
@given(st.integers())
def test_check_positive_and_non_negative_int(value: int) -> None:
    """check_positive_int accepts exactly the ints 1..2**31-1 (PostgreSQL integer);
    check_non_negative_int exactly 0..2**31-1."""
    if 1 <= value <= MAX_INT4:
        assert check_positive_int(value, "qty") == value
    else:
        with pytest.raises(InvalidArgument, match=r"^qty: must be an int >= 1"):
            check_positive_int(value, "qty")
    if 0 <= value <= MAX_INT4:
        assert check_non_negative_int(value, "n") == value
    else:
        with pytest.raises(InvalidArgument, match=r"^n: must be an int >= 0"):
            check_non_negative_int(value, "n")


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None], ids=repr)
def test_int_checks_reject_bools_and_non_ints(value: object) -> None:
    """Bools and non-int types are rejected by both int checks."""
    with pytest.raises(InvalidArgument):
        check_positive_int(value, "qty")
    with pytest.raises(InvalidArgument):
        check_non_negative_int(value, "qty")


@settings(database=None, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=0, max_value=10**6),
        st.floats(min_value=0, max_value=1e6),
        st.timedeltas(min_value=timedelta(0), max_value=timedelta(seconds=10**6)),
    )
)
def test_seconds_accepts_non_negative_durations_as_float(value: float | timedelta) -> None:
    """seconds() returns ints, floats and timedeltas from 0 to LONGEST_WAIT as float seconds."""
    expected = value.total_seconds() if isinstance(value, timedelta) else float(value)
    result = seconds(value, "read_interval")
    assert isinstance(result, float)
    assert result == expected


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (1e6 + 1, "at most 1000000 seconds"),
        (timedelta(days=12), "at most 1000000 seconds"),
        (-0.5, ">= 0 seconds"),
        (timedelta(seconds=-1), ">= 0 seconds"),
        (math.nan, "seconds (int or float) or a timedelta"),
        (math.inf, "seconds (int or float) or a timedelta"),
        (True, "seconds (int or float) or a timedelta"),
        ("1", "seconds (int or float) or a timedelta"),
        (None, "seconds (int or float) or a timedelta"),
    ],
    ids=[
        "too_long",
        "too_long_timedelta",
        "negative",
        "negative_timedelta",
        "nan",
        "inf",
        "bool",
        "str",
        "None",
    ],
)
def test_seconds_rejects_bad_durations(value: object, rule: str) -> None:
    """seconds() rejects waits beyond LONGEST_WAIT, negatives, NaN/inf, bools and
    non-numbers, naming the argument."""
    with pytest.raises(InvalidArgument) as info:
        seconds(value, "read_interval")
    assert info.value.argument == "read_interval"
    assert rule in str(info.value)


def test_seconds_without_zero_rejects_zero() -> None:
    """seconds(allow_zero=False) rejects 0 with a '> 0' rule and accepts a positive value."""
    with pytest.raises(InvalidArgument, match="must be > 0 seconds"):
        seconds(0, "interval", allow_zero=False)
    with pytest.raises(InvalidArgument, match="must be > 0 seconds"):
        seconds(timedelta(0), "interval", allow_zero=False)
    assert seconds(0.25, "interval", allow_zero=False) == 0.25


# Every character jsonb can store: anything but NUL and lone surrogates (refused by check_body).
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # the Unicode category, typed as hypothesis wants
JSONB_CHARS = st.characters(exclude_characters="\x00", exclude_categories=SURROGATES)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(JSONB_CHARS),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(JSONB_CHARS, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(database=None, deadline=None)
@given(JSON_VALUES)
def test_check_body_round_trips_every_json_value(value: Any) -> None:
    """check_body serializes any JSON value to text that json.loads() turns back into it."""
    text = check_body(value)
    assert isinstance(text, str)
    assert json.loads(text) == value


@pytest.mark.parametrize(
    "body",
    [object(), {1, 2}, math.nan, -math.inf, b"x", {"k": {"n": math.nan}}, {(1,): 1}],
    ids=["object", "set", "nan", "neg_inf", "bytes", "nested_nan", "tuple_key"],
)
def test_check_body_rejects_non_json(body: object) -> None:
    """Non-JSON values (and NaN/Infinity, which jsonb refuses) raise InvalidArgument."""
    with pytest.raises(InvalidArgument) as info:
        check_body(body, "body")
    assert info.value.argument == "body"
    assert "must be JSON-serializable" in str(info.value)


def test_check_body_rejects_a_circular_structure() -> None:
    """A self-referencing list is rejected as not JSON-serializable."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidArgument, match="JSON-serializable"):
        check_body(loop)


def test_check_headers_accepts_none_and_str_keyed_mappings() -> None:
    """None stays None; a mapping with str keys becomes JSON object text."""
    assert check_headers(None) is None
    assert json.loads(check_headers({"a": [1, None]}) or "") == {"a": [1, None]}
    from types import MappingProxyType

    assert json.loads(check_headers(MappingProxyType({"m": 1})) or "") == {"m": 1}


@pytest.mark.parametrize(
    "headers",
    [[("a", 1)], "a=1", 5, {1: "a"}, {"a": 1, None: 2}],
    ids=["list", "str", "int", "int_key", "None_key"],
)
def test_check_headers_rejects_non_mappings_and_non_str_keys(headers: object) -> None:
    """Headers that are not a dict with str keys raise InvalidArgument naming 'headers'."""
    with pytest.raises(InvalidArgument) as info:
        check_headers(headers)
    assert info.value.argument == "headers"
    assert "must be a dict with str keys or None" in str(info.value)


def test_check_headers_rejects_non_json_values() -> None:
    """Headers with a non-JSON value raise InvalidArgument."""
    with pytest.raises(InvalidArgument, match="headers: must be JSON-serializable"):
        check_headers({"a": math.nan})
