"""Bad input, fuzzed (issue 7, scenario 8): every public entry point, on a real PostgreSQL.

Hypothesis feeds queue names, durations, sizes, bodies, headers and options (including
injection strings: ``'; drop table x; --``, ``"q"``, ``$1``, ``q'); drop``, unicode) to
the PGMQ client, ``read_queue``, ``Listener``, the actions, the operators, ``ReadOptions``
and ``LongPoll``. Each call must either raise a named ``rx_pgmq.errors`` exception before
any SQL (checked on a libpq trace of a real connection), or behave correctly: the SQL sent
is one of the library's fixed statements (input only ever travels as bound parameters),
bodies and headers round-trip, consumers deliver and stop. No background thread may crash
(``threading.excepthook``), no call may hang.

Strings jsonb cannot store (NUL, lone surrogates) and numbers beyond PostgreSQL's integer
and bigint are fuzzed too: they must be refused before any SQL like every other bad input.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, Literal

import psycopg
import pytest
import reactivex
from faults import ThreadCrashes, figure, queue_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import rx_pgmq
from rx_pgmq import LongPoll, Message, ReadOptions
from rx_pgmq import operators as pgops
from rx_pgmq._pg import _sql as statements
from rx_pgmq.actions import AckStatus, Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import ConnectionLost, InvalidArgument, QueueNotFound, RxPgmqError

pytestmark = pytest.mark.faults

CANARY = f"rx_fuzz_canary_{uuid.uuid4().hex[:8]}"
INJECTIONS = [
    "'; drop table x; --",
    f"'; drop table {CANARY}; --",
    f'"; drop table {CANARY}; --',
    '"q"',
    "$1",
    "$1::text",
    "q'); drop",
    "q'); drop table " + CANARY + "; --",
    "%s",
    "%(name)s",
    "{}",
    "\\",
    "--",
    "orders; select 1",
    "ÖRDERS",
    "очередь",
    "日本語",
    "🙂",
    "\u202e",
    "a\tb\nc",
    "",
    " ",
]
# Text jsonb can store (no NUL, no lone surrogate), and any text at all.
SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # the Unicode category, typed as hypothesis wants
TEXT = st.text(
    alphabet=st.characters(exclude_categories=SURROGATES, exclude_characters="\x00"),
    max_size=12,
) | st.sampled_from(INJECTIONS)
ANY_TEXT = st.text(max_size=12) | st.sampled_from(["a\x00b", "\ud800", "\udfff x"])
INT4 = 2**31 - 1
INT8 = 2**63 - 1
_NOT_INTS: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.floats()
    | TEXT
    | ANY_TEXT
    | st.binary(max_size=4)
    | st.timedeltas()
    | st.dictionaries(TEXT, st.integers(), max_size=2)
)
ANYTHING: st.SearchStrategy[Any] = (
    _NOT_INTS
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.lists(st.integers(min_value=-(2**64), max_value=2**64), max_size=3)
)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
HEADERS: st.SearchStrategy[dict[str, Any] | None] = st.none() | st.dictionaries(
    TEXT, JSON, max_size=4
)
FUZZ = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HANG = 15.0  # any single call or subscription step must finish well within this
RULE = re.compile(r"[a-z_][a-z0-9_]{0,46}")


def valid_name(value: object) -> bool:
    return isinstance(value, str) and RULE.fullmatch(value) is not None


def same(sent: Any, received: Any) -> bool:
    """JSON equality as jsonb keeps it: numbers are PostgreSQL ``numeric``, so a float
    comes back as a number of the same value (a float >= 1e16 comes back as an int)."""
    if isinstance(sent, bool) or sent is None or isinstance(sent, str):
        return type(received) is type(sent) and received == sent
    if isinstance(sent, float):
        return (
            isinstance(received, int | float)
            and not isinstance(received, bool)
            and float(received) == sent
        )
    if isinstance(sent, int):
        return type(received) is int and received == sent
    if isinstance(sent, list):
        return (
            isinstance(received, list)
            and len(sent) == len(received)
            and all(same(a, b) for a, b in zip(sent, received, strict=True))
        )
    if isinstance(sent, dict):
        return (
            isinstance(received, dict)
            and sent.keys() == received.keys()
            and all(same(v, received[k]) for k, v in sent.items())
        )
    raise AssertionError(f"not JSON: {sent!r}")


# -- a client whose every protocol message is traced --------------------------------------


def _numbered(statement: str) -> str:
    """A statement as psycopg sends it: ``%s`` placeholders become ``$1, $2, ...``."""
    count = iter(range(1, 100))
    return re.sub("%s", lambda _m: f"${next(count)}", statement)


FIXED_STATEMENTS = {
    _numbered(value)
    for name, value in vars(statements).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
} | {"BEGIN", "COMMIT", "ROLLBACK"}
# psycopg's own statements: it prepares statements run often and may drop its cache.
_PSYCOPG_OWN = re.compile(r'DEALLOCATE (ALL|"?_pg3_\d+"?)')
_SENT = re.compile(r'^F\t\d+\t(?:Parse\t "[^"]*" "(?P<parse>.*)" \d+|Query\t "(?P<query>.*)")')


class Traced:
    """A PGMQ client on one real connection with libpq tracing of everything it sends."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.client = PGMQ(self.conn)
        self._fd, path = tempfile.mkstemp(prefix="rx_pgmq_fuzz_trace_")
        os.unlink(path)
        self.calls = 0

    def run(self, call: Callable[[PGMQ], object]) -> tuple[list[str], object, BaseException | None]:
        """Call ``call(client)`` traced; return (statements sent, result, what it raised)."""
        start = os.fstat(self._fd).st_size
        self.conn.pgconn.trace(self._fd)
        self.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        result: object = None
        raised: BaseException | None = None
        began = time.monotonic()
        try:
            result = call(self.client)
        except BaseException as exc:
            raised = exc
        finally:
            self.conn.pgconn.untrace()
        assert time.monotonic() - began < HANG, "a client call took too long"
        self.calls += 1
        end = os.fstat(self._fd).st_size
        text = os.pread(self._fd, end - start, start).decode("utf-8", "replace")
        sent = []
        for line in text.splitlines():
            if line.startswith("F\t") and ("\tParse\t" in line or "\tQuery\t" in line):
                match = _SENT.match(line)
                assert match is not None, f"unparsed trace line {line!r}"
                sent.append(match["parse"] if match["parse"] is not None else match["query"])
        return sent, result, raised

    def close(self) -> None:
        self.conn.close()
        os.close(self._fd)


@pytest.fixture(scope="module")
def crashes() -> Iterator[ThreadCrashes]:
    """Every thread crash during the module fails it (checked after each test too)."""
    with ThreadCrashes() as watch:
        yield watch
    assert watch.crashes == []


@pytest.fixture(scope="module")
def canary(pgmq_dsn: str) -> Iterator[str]:
    """A table the injection strings name; it must survive them all."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(CANARY)))
    yield CANARY
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CANARY,)).fetchone()
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(CANARY)))
    assert row == (True,), "an injection string dropped the canary table"


@pytest.fixture(scope="module")
def fuzz_queue(pgmq_dsn: str, canary: str) -> Iterator[str]:
    """The one existing queue the fuzzed calls may touch (other valid names don't exist)."""
    name = f"fz_{uuid.uuid4().hex[:10]}"
    with PGMQ(pgmq_dsn) as admin:
        admin.create_queue(name)
        yield name
        admin.drop_queue(name)


@pytest.fixture(scope="module")
def traced(pgmq_dsn: str) -> Iterator[Traced]:
    t = Traced(pgmq_dsn)
    yield t
    t.close()


@pytest.fixture(autouse=True)
def no_thread_crash(crashes: ThreadCrashes) -> Iterator[None]:
    before = len(crashes.crashes)
    yield
    assert crashes.crashes[before:] == []


def absent_names() -> st.SearchStrategy[str]:
    """Valid queue names that surely do not exist (so fuzzing touches no one's queue)."""
    return st.from_regex(r"fz_absent_[a-z0-9_]{0,20}", fullmatch=True)


def names(mine: str) -> st.SearchStrategy[Any]:
    """Queue names: anything at all, injections, absent valid names and our own queue."""
    return ANYTHING | absent_names() | st.just(mine)


def check_call(
    traced: Traced, call: Callable[[PGMQ], object], *, input_valid: bool
) -> tuple[object, BaseException | None]:
    """Run a client call; enforce: invalid input -> named error and nothing sent; valid
    input -> only fixed statements sent and no error other than a named one."""
    sent, result, raised = traced.run(call)
    if not input_valid:
        assert isinstance(raised, InvalidArgument), f"expected InvalidArgument, got {raised!r}"
        assert sent == [], f"SQL was sent for invalid input: {sent}"
        return result, raised
    unknown = [s for s in sent if s not in FIXED_STATEMENTS and not _PSYCOPG_OWN.fullmatch(s)]
    assert unknown == [], f"SQL built from input: {unknown}"
    if raised is not None:
        assert isinstance(raised, RxPgmqError) and not isinstance(raised, InvalidArgument), (
            f"valid input raised {raised!r}"
        )
    return result, raised


# -- the client ----------------------------------------------------------------------------

NAME_CALLS: dict[str, Callable[[PGMQ, Any], object]] = {
    "create_queue": lambda c, q: c.create_queue(q),
    "drop_queue": lambda c, q: c.drop_queue(q),
    "purge_queue": lambda c, q: c.purge_queue(q),
    "queue_exists": lambda c, q: c.queue_exists(q),
    "metrics": lambda c, q: c.metrics(q),
    "enable_notify": lambda c, q: c.enable_notify(q, throttle_ms=0),
    "disable_notify": lambda c, q: c.disable_notify(q),
    "notify_throttle_ms": lambda c, q: c.notify_throttle_ms(q),
    "send": lambda c, q: c.send(q, {"k": 1}),
    "send_batch": lambda c, q: c.send_batch(q, [{"k": 1}]),
    "read": lambda c, q: c.read(q, vt=0),
    "read_with_poll": lambda c, q: c.read_with_poll(q, vt=0, max_poll_seconds=0),
    "pop": lambda c, q: c.pop(q),
    "delete": lambda c, q: c.delete(q, [1]),
    "archive": lambda c, q: c.archive(q, 1),
    "set_vt": lambda c, q: c.set_vt(q, [1], 0),
}


@FUZZ
@given(method=st.sampled_from(sorted(NAME_CALLS)), data=st.data())
def test_client_queue_names_are_refused_before_sql_or_only_ever_bound(
    traced: Traced, fuzz_queue: str, method: str, data: st.DataObject
) -> None:
    """Every client method taking a queue name: a name breaking the rule (anything, incl.
    injection strings and unicode) raises InvalidArgument with nothing on the wire; a valid
    name sends only the library's fixed statements (QueueNotFound for a missing queue)."""
    pool = absent_names() if method in ("create_queue", "drop_queue") else names(fuzz_queue)
    name = data.draw(ANYTHING | pool, label="name")
    result, raised = check_call(
        traced, lambda c: NAME_CALLS[method](c, name), input_valid=valid_name(name)
    )
    if method == "create_queue" and raised is None:
        traced.client.drop_queue(name)  # it was created: clean up
    if method == "queue_exists" and valid_name(name):
        assert result is (name == fuzz_queue)


DURATION: st.SearchStrategy[Any] = (
    ANYTHING
    | st.integers(min_value=0, max_value=INT4)
    | st.timedeltas(min_value=timedelta(0), max_value=timedelta(seconds=INT4))
)
COUNT: st.SearchStrategy[Any] = ANYTHING | st.integers(min_value=1, max_value=INT4)
IDS: st.SearchStrategy[Any] = (
    ANYTHING
    | st.integers(min_value=1, max_value=INT8)
    | st.lists(st.integers(min_value=1, max_value=INT8), max_size=4)
)


def _duration_ok(value: object) -> bool:
    if isinstance(value, timedelta):
        return timedelta(0) <= value and math.ceil(value.total_seconds()) <= INT4
    return type(value) is int and 0 <= value <= INT4


def _count_ok(value: object, low: int = 1) -> bool:
    return type(value) is int and low <= value <= INT4


def _ids_ok(value: object) -> bool:
    if type(value) is int:
        return 1 <= value <= INT8
    return isinstance(value, list) and all(type(i) is int and 1 <= i <= INT8 for i in value)


@FUZZ
@given(
    vt=DURATION,
    qty=COUNT,
    delay=DURATION,
    throttle=ANYTHING | st.integers(min_value=0, max_value=INT4),
    ids=IDS,
    poll=st.tuples(ANYTHING | st.integers(0, 1), COUNT),
)
def test_client_durations_counts_and_ids_are_refused_before_sql_or_work(
    traced: Traced,
    fuzz_queue: str,
    vt: Any,
    qty: Any,
    delay: Any,
    throttle: Any,
    ids: Any,
    poll: tuple[Any, Any],
) -> None:
    """Visibility timeouts, delays, quantities, throttles, message ids and poll settings
    (anything, or in PostgreSQL's integer ranges): out-of-rule values raise InvalidArgument
    with nothing sent; in-rule values run the fixed statements without error."""
    q = fuzz_queue
    check_call(
        traced, lambda c: c.read(q, vt=vt, qty=qty), input_valid=_duration_ok(vt) and _count_ok(qty)
    )
    check_call(traced, lambda c: c.pop(q, qty), input_valid=_count_ok(qty))
    check_call(traced, lambda c: c.send(q, {"k": 1}, delay=delay), input_valid=_duration_ok(delay))
    check_call(
        traced,
        lambda c: c.enable_notify(q, throttle_ms=throttle),
        input_valid=_count_ok(throttle, 0),
    )
    for method in ("delete", "archive"):

        def settle_ids(c: PGMQ, m: str = method) -> object:
            return getattr(c, m)(q, ids)

        check_call(traced, settle_ids, input_valid=_ids_ok(ids))
    check_call(
        traced, lambda c: c.set_vt(q, ids, vt), input_valid=_ids_ok(ids) and _duration_ok(vt)
    )
    seconds_, interval = poll
    traced.client.send(q, {"k": 1})  # a visible message: a long poll returns at once
    check_call(
        traced,
        lambda c: c.read_with_poll(
            q, vt=0, qty=1, max_poll_seconds=seconds_, poll_interval_ms=interval
        ),
        input_valid=_count_ok(seconds_, 0) and _count_ok(interval),
    )
    traced.client.purge_queue(q)


@FUZZ
@given(
    bodies=st.lists(JSON, min_size=1, max_size=4),
    headers=st.lists(HEADERS, min_size=4, max_size=4),
    raw=ANY_TEXT,
)
def test_bodies_and_headers_round_trip_exactly_through_send_and_read(
    traced: Traced,
    fuzz_queue: str,
    bodies: list[Any],
    headers: list[dict[str, Any] | None],
    raw: str,
) -> None:
    """Any JSON body and header object (injection strings and unicode in keys and values)
    goes in as a bound parameter and comes back out equal (numbers as jsonb keeps them);
    text jsonb cannot store (NUL, a lone surrogate) is refused before any SQL."""
    q = fuzz_queue
    traced.client.purge_queue(q)
    storable = "\x00" not in raw and not any("\ud800" <= ch <= "\udfff" for ch in raw)
    for call in (
        lambda c: c.send(q, {raw: raw}),
        lambda c: c.send(q, 1, headers={"h": [raw]}),
        lambda c: c.read(q, vt=0, conditional={"k": raw}),
    ):
        check_call(traced, call, input_valid=storable)
    traced.client.purge_queue(q)
    heads = headers[: len(bodies)]
    sent_ids, _ = check_call(
        traced, lambda c: c.send_batch(q, bodies, headers=heads), input_valid=True
    )
    one, _ = check_call(traced, lambda c: c.send(q, bodies[0], headers=heads[0]), input_valid=True)
    got, _ = check_call(traced, lambda c: c.read(q, vt=30, qty=10), input_valid=True)
    assert isinstance(sent_ids, list) and isinstance(got, list)
    by_id = {m.msg_id: m for m in got}
    assert set(by_id) == {*sent_ids, one}
    for msg_id, body, head in [
        *zip(sent_ids, bodies, heads, strict=True),
        (one, bodies[0], heads[0]),
    ]:
        assert same(body, by_id[msg_id].body), (body, by_id[msg_id].body)
        assert (head is None and by_id[msg_id].headers is None) or same(head, by_id[msg_id].headers)
    traced.client.purge_queue(q)


# -- the consumer ---------------------------------------------------------------------------


@st.composite
def read_options(draw: st.DrawFn) -> ReadOptions | None:
    """A valid ReadOptions (or None)."""
    kind = draw(st.sampled_from(["none", "plain", "pop", "conditional", "long_poll", "fifo"]))
    if kind == "none":
        return None
    if kind == "pop":
        return ReadOptions(delete_on_read=True)
    if kind == "conditional":
        return ReadOptions(conditional=draw(st.dictionaries(TEXT, JSON, max_size=2)))
    if kind == "long_poll":
        poll = LongPoll(
            max_seconds=draw(st.integers(1, INT4)), interval_ms=draw(st.integers(1, INT4))
        )
        return ReadOptions(long_poll=poll)
    if kind == "fifo":
        return ReadOptions(fifo=draw(st.sampled_from(["grouped", "grouped_rr", "grouped_head"])))
    return ReadOptions()


READ_QUEUE_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "queue": st.just("MINE") | absent_names(),
    "visibility_timeout": st.integers(1, 60)
    | st.integers(1, INT4)
    | st.timedeltas(min_value=timedelta(seconds=0.001), max_value=timedelta(seconds=INT4 - 1)),
    "read_interval": st.floats(min_value=0.01, max_value=1e6) | st.just(0.05),
    "listener": st.sampled_from([None, True, False]),
    "batch_size": st.integers(1, INT4) | st.integers(1, 20),
    "max_in_flight": st.integers(1, 2**40) | st.integers(1, 20),
    "read_options": read_options(),
    "on_dispose": st.sampled_from(["release", "keep"]),
    "extend_visibility": st.booleans(),
    "fenced": st.booleans(),
    "ack_batch_size": st.none() | st.integers(1, 2**40),
    "ack_max_age": st.floats(min_value=0, max_value=1e6) | st.just(0.005),
    "close_timeout": st.floats(min_value=0, max_value=1e6) | st.just(1.0),
}
FUZZ_COUNTS: Counter[str] = Counter()
VALUES_EARLY: st.SearchStrategy[Any] = ANYTHING | st.sampled_from(
    [None, 0, -1, 0.0, 1e300, math.inf, math.nan, 2**31, "print", print]
)


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    figure("fuzz_examples", **{k.replace(" ", "_"): v for k, v in sorted(FUZZ_COUNTS.items())})


class Watch:
    """Observer recording messages and errors of one subscription."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.messages: list[Message] = []
        self.errors: list[Exception] = []
        self.acks: list[Future[AckStatus]] = []

    def on_next(self, message: Message) -> None:
        with self.cond:
            self.messages.append(message)
            self.acks.append(message.settle())
            self.cond.notify_all()

    def on_error(self, error: Exception) -> None:
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()


@settings(FUZZ, max_examples=60)
@given(
    bad=st.none() | st.sampled_from(sorted(READ_QUEUE_ARGS)),
    junk=ANYTHING | st.sampled_from([None, 0, -1, 1e300, 2**31, 2**63, "'; drop table x; --"]),
    data=st.data(),
)
def test_read_queue_arguments_are_refused_at_once_or_the_consumer_works_and_stops(
    pgmq_dsn: str, fuzz_queue: str, bad: str | None, junk: Any, data: st.DataObject
) -> None:
    """read_queue with fuzzed arguments (valid ones drawn widely: durations up to 1e6 s,
    sizes up to 2**40, every read mode; at most one argument replaced by anything at all):
    raises InvalidArgument at call time (no thread, no connection), or the consumer reads a
    matching message, settles it and stops within its close_timeout, with no error and no
    thread crash. A valid name of a missing queue ends the stream with QueueNotFound."""
    kwargs = {name: data.draw(strategy, label=name) for name, strategy in READ_QUEUE_ARGS.items()}
    if bad is not None:
        kwargs[bad] = junk
    if kwargs["queue"] == "MINE":
        kwargs["queue"] = fuzz_queue
    threads = set(threading.enumerate())  # a previous example's closer thread may still end
    try:
        source = rx_pgmq.read_queue(pgmq_dsn, **kwargs)
    except InvalidArgument:
        FUZZ_COUNTS["read_queue refused"] += 1
        assert set(threading.enumerate()) - threads == set(), (
            "a refused read_queue started a thread"
        )
        return
    name = kwargs["queue"]
    assert valid_name(name), f"read_queue accepted the queue name {name!r}"
    watch = Watch()
    if name != fuzz_queue:  # valid, but no such queue: on_error, nothing else
        FUZZ_COUNTS["read_queue missing queue"] += 1
        sub = source.subscribe(on_next=watch.on_next, on_error=watch.on_error)
        with watch.cond:
            assert watch.cond.wait_for(lambda: bool(watch.errors), HANG)
        sub.dispose()
        assert [type(e) for e in watch.errors] == [QueueNotFound] and watch.messages == []
        return
    FUZZ_COUNTS["read_queue consumed"] += 1
    opts = source.config.options
    body = dict(opts.conditional) if opts.conditional else {"k": "v"}
    with PGMQ(pgmq_dsn) as client:
        client.send(fuzz_queue, body)
        sub = source.subscribe(on_next=watch.on_next, on_error=watch.on_error)
        try:
            with watch.cond:
                assert watch.cond.wait_for(lambda: watch.messages or watch.errors, HANG)
            assert watch.errors == []
            assert same(body, watch.messages[0].body)
        finally:
            began = time.monotonic()
            sub.dispose()
            assert time.monotonic() - began < min(source.config.close_timeout, HANG) + HANG
            client.purge_queue(fuzz_queue)
    for fut in watch.acks:
        assert fut.result(HANG) in ("acked", "unacked", "ignored", "lost_lease")


LISTENER_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "reconnect_initial": st.floats(min_value=0.001, max_value=1.0),
    "reconnect_max": st.floats(min_value=1.0, max_value=1e6),
    "connect_timeout": st.floats(min_value=2.0, max_value=1e6) | st.just(5.0),
    "queue": st.just("MINE") | absent_names(),
    "callback": st.just(lambda event: None),
}


@settings(FUZZ, max_examples=30)
@given(
    bad=st.none() | st.sampled_from(sorted(LISTENER_ARGS)),
    junk=VALUES_EARLY,
    data=st.data(),
)
def test_listener_arguments_are_refused_at_once_or_it_listens(
    pgmq_dsn: str, fuzz_queue: str, bad: str | None, junk: Any, data: st.DataObject
) -> None:
    """Listener(conninfo, reconnect_initial, reconnect_max, connect_timeout), subscribe and
    notifications (queue, callback) with fuzzed values (at most one replaced by anything):
    InvalidArgument at once, or the LISTEN becomes active and close() returns promptly."""
    args = {name: data.draw(strategy, label=name) for name, strategy in LISTENER_ARGS.items()}
    if bad is not None:
        args[bad] = junk
    name = fuzz_queue if args["queue"] == "MINE" else args["queue"]
    callback = args["callback"]
    try:
        listener = rx_pgmq.Listener(
            pgmq_dsn,
            reconnect_initial=args["reconnect_initial"],
            reconnect_max=args["reconnect_max"],
            connect_timeout=args["connect_timeout"],
        )
    except InvalidArgument:
        FUZZ_COUNTS["listener refused"] += 1
        return
    try:
        try:
            listener.notifications(name)
            sub = listener.subscribe(name, callback)
        except InvalidArgument:
            FUZZ_COUNTS["listener subscribe refused"] += 1
            assert not valid_name(name) or not callable(callback)
            return
        except ConnectionLost:  # documented: LISTEN not active within connect_timeout
            assert listener._connect_timeout < 2.0
            return
        FUZZ_COUNTS["listener listened"] += 1
        assert valid_name(name) and callable(callback)
        assert listener.queues == [name]
        sub.dispose()
    finally:
        began = time.monotonic()
        listener.close()
        assert time.monotonic() - began < HANG


# -- values and operators (no I/O) ------------------------------------------------------------


def _named_or(allowed: tuple[type[BaseException], ...], make: Callable[[], object]) -> object:
    """Call ``make``; only InvalidArgument (or a documented ``allowed`` error) may escape."""
    try:
        return make()
    except InvalidArgument:
        return None
    except allowed:
        return None


VALUES: st.SearchStrategy[Any] = ANYTHING | st.sampled_from(
    [
        Delete(),
        Archive(),
        Nothing(),
        SetVisibilityTimeout(5),
        MoveTo("dlq"),
        print,
        reactivex.of(True),
    ]
)


@settings(FUZZ, max_examples=300)
@given(a=VALUES, b=VALUES, c=VALUES)
def test_actions_operators_and_options_refuse_bad_values_with_invalid_argument(
    a: Any, b: Any, c: Any
) -> None:
    """SetVisibilityTimeout, MoveTo, process, ack, ack_with, max_attempts, backoff,
    windowed, pausable, controlled().request, ReadOptions and LongPoll with fuzzed values
    raise InvalidArgument (pausable and operators applied to a non-source: the documented
    TypeError) or build a working value; never another exception."""
    vt = _named_or((), lambda: SetVisibilityTimeout(a))
    if vt is not None:
        assert isinstance(vt, SetVisibilityTimeout) and 0 <= vt.vt <= INT4
    move = _named_or((), lambda: MoveTo(a))
    if move is not None:
        assert isinstance(move, MoveTo) and valid_name(move.queue)
    _named_or((), lambda: pgops.process(a))
    _named_or((), lambda: pgops.process(lambda m: None, max_concurrency=a, scheduler=b))
    _named_or((), lambda: pgops.ack(a, b))
    _named_or((), lambda: pgops.ack_with(a))
    _named_or((), lambda: pgops.max_attempts(a, then=b, otherwise=c))
    _named_or((), lambda: pgops.backoff(a, factor=b, max=c))
    _named_or((), lambda: pgops.windowed(a))
    _named_or((TypeError,), lambda: pgops.pausable(a))
    _named_or((TypeError,), lambda: pgops.windowed(3)(a))
    source = rx_pgmq.read_queue("host=/nonexistent dbname=x", "q", visibility_timeout=1)
    controlled = pgops.controlled()(source)
    _named_or((), lambda: controlled.request(a))
    _named_or((), lambda: ReadOptions(delete_on_read=a, conditional=b, fifo=c))
    _named_or((), lambda: ReadOptions(long_poll=a))
    _named_or((), lambda: LongPoll(max_seconds=a, interval_ms=b))
    _named_or((TypeError,), lambda: pgops.pausable(reactivex.of(True))(a))


# -- injection strings everywhere, deterministic -------------------------------------------


def test_injection_strings_in_every_string_field_are_refused_or_stored_verbatim(
    pgmq_dsn: str, traced: Traced, fuzz_queue: str, canary: str
) -> None:
    """Each injection string: as a queue name (client, read_queue, Listener, MoveTo) it is
    refused with InvalidArgument and nothing sent; as a body, header key or value and
    conditional filter it is sent as a parameter and read back verbatim, including through
    a consumer and a MoveTo copy; the canary table the strings name survives."""
    traced.client.purge_queue(fuzz_queue)
    refused = 0
    listener = rx_pgmq.Listener("host=/nonexistent dbname=x")
    for text in INJECTIONS:
        for call in NAME_CALLS.values():

            def call_with_name(
                c: PGMQ, f: Callable[[PGMQ, Any], object] = call, t: str = text
            ) -> object:
                return f(c, t)

            check_call(traced, call_with_name, input_valid=False)
            refused += 1
        for make in (
            lambda t=text: rx_pgmq.read_queue(pgmq_dsn, t, visibility_timeout=1),
            lambda t=text: MoveTo(t),
            lambda t=text: listener.subscribe(t, print),
        ):
            with pytest.raises(InvalidArgument):
                make()
            refused += 1

        def read_filtered(c: PGMQ, t: str = text) -> object:
            return c.read(fuzz_queue, vt=0, conditional={t: t})

        check_call(traced, read_filtered, input_valid=True)
    listener.close()
    bodies = [{"text": t, t: [t]} for t in INJECTIONS]
    heads = [{t: t, "x-pgmq-group": t} for t in INJECTIONS]
    ids, _ = check_call(
        traced, lambda c: c.send_batch(fuzz_queue, bodies, headers=heads), input_valid=True
    )
    assert isinstance(ids, list)
    dest = f"fz_dest_{uuid.uuid4().hex[:8]}"
    with PGMQ(pgmq_dsn) as admin:
        admin.create_queue(dest)
        try:
            watch = Watch()
            moved: list[Future[AckStatus]] = []

            def on_next(message: Message) -> None:
                with watch.cond:
                    watch.messages.append(message)
                    moved.append(message.settle(MoveTo(dest), reason=message.body["text"]))
                    watch.cond.notify_all()

            sub = rx_pgmq.read_queue(pgmq_dsn, fuzz_queue, visibility_timeout=30).subscribe(
                on_next=on_next, on_error=watch.on_error
            )
            try:
                with watch.cond:
                    assert watch.cond.wait_for(lambda: len(watch.messages) >= len(ids), HANG)
                assert [f.result(HANG) for f in moved] == ["acked"] * len(ids)
            finally:
                sub.dispose()
            assert watch.errors == []
            by_id = {m.msg_id: m for m in watch.messages}
            for msg_id, body, head in zip(ids, bodies, heads, strict=True):
                assert by_id[msg_id].body == body and by_id[msg_id].headers == head
            copies = admin.read(dest, vt=30, qty=100)
            assert sorted((m.body["text"], m.body) for m in copies) == sorted(
                (b["text"], b) for b in bodies
            )
            for m in copies:
                text = m.body["text"]
                assert m.headers is not None and m.headers[text] == text
                assert m.headers["x-rx-pgmq-moved"]["reason"] == text
        finally:
            admin.drop_queue(dest)
    assert queue_rows(pgmq_dsn, fuzz_queue) == {}
    figure(
        "fuzz_injections", strings=len(INJECTIONS), refused_calls=refused, traced_calls=traced.calls
    )


# -- values PostgreSQL cannot take: refused before SQL ------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c, q: c.send(q, "a\x00b"),
        lambda c, q: c.send(q, {"k\x00": 1}),
        lambda c, q: c.send(q, "\ud800"),
        lambda c, q: c.send(q, {"k": 1}, headers={"h": "\x00"}),
        lambda c, q: c.read(q, vt=0, conditional={"k": "\x00"}),
    ],
    ids=["nul_body", "nul_key", "lone_surrogate", "nul_header", "nul_conditional"],
)
def test_strings_jsonb_cannot_store_are_refused_before_sql(
    traced: Traced, fuzz_queue: str, call: Callable[[PGMQ, str], object]
) -> None:
    """Bodies, headers and filters holding NUL or a lone surrogate (jsonb refuses both)
    raise InvalidArgument with nothing sent (before, a raw psycopg DataError came back
    from the server)."""
    check_call(traced, lambda c: call(c, fuzz_queue), input_valid=False)


@pytest.mark.parametrize(
    "call",
    [
        lambda c, q: c.read(q, vt=0, qty=2**31),
        lambda c, q: c.pop(q, 2**31),
        lambda c, q: c.delete(q, 2**63),
        lambda c, q: c.archive(q, [2**63]),
        lambda c, q: c.set_vt(q, 2**63, 0),
        lambda c, q: c.read_with_poll(q, vt=0, max_poll_seconds=2**31),
        lambda c, q: c.read_with_poll(q, vt=0, max_poll_seconds=0, poll_interval_ms=2**31),
        lambda c, q: c.enable_notify(q, throttle_ms=2**31),
    ],
    ids=[
        "read_qty",
        "pop_qty",
        "delete_id",
        "archive_ids",
        "set_vt_id",
        "poll_seconds",
        "poll_interval",
        "throttle",
    ],
)
def test_numbers_beyond_postgres_integers_are_refused_before_sql(
    traced: Traced, fuzz_queue: str, call: Callable[[PGMQ, str], object]
) -> None:
    """Quantities, poll settings and throttles above 2**31 - 1 and message ids above
    2**63 - 1 raise InvalidArgument with nothing sent (before, a raw NumericValueOutOfRange,
    or for throttle_ms a misleading PGMQNotInstalled, came back from the server)."""
    check_call(traced, lambda c: call(c, fuzz_queue), input_valid=False)


def test_read_queue_refuses_waits_and_sizes_the_os_or_postgres_cannot_take() -> None:
    """Regression: read_queue and Listener bound their durations (<= 1e6 s) and read sizes
    (<= 2**31 - 1) up front. Before, ack_max_age=1e300 crashed the acknowledger thread
    (OverflowError), close_timeout=1e300 crashed the reader thread and dispose,
    read_interval=1e300 ended the stream with OverflowError, batch_size=2**40 with a raw
    NumericValueOutOfRange, and Listener(connect_timeout=1e300).subscribe raised
    OverflowError."""
    dsn = "host=/nonexistent dbname=x"
    for make in (
        lambda: {"ack_max_age": 1e300},
        lambda: {"close_timeout": 1e300},
        lambda: {"read_interval": 1e7},
        lambda: {"batch_size": 2**31},
        # LongPoll itself may refuse these already; either way before any connection
        lambda: {"read_options": ReadOptions(long_poll=LongPoll(max_seconds=2**31))},
        lambda: {"read_options": ReadOptions(long_poll=LongPoll(interval_ms=2**31))},
    ):
        with pytest.raises(InvalidArgument):
            rx_pgmq.read_queue(dsn, "q", visibility_timeout=1, **make())
    for kwargs in ({"connect_timeout": 1e300}, {"reconnect_max": 1e7}, {"reconnect_initial": 1e7}):
        with pytest.raises(InvalidArgument):
            rx_pgmq.Listener(dsn, **kwargs)
    assert rx_pgmq.read_queue(
        dsn, "q", visibility_timeout=1, batch_size=2**31 - 1, read_interval=1e6
    )
