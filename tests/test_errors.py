"""The named errors: one base class, a public module path, messages that say what to do,
and the mapping from psycopg's exceptions to them (pure logic, real psycopg classes)."""

from __future__ import annotations

import inspect
import pickle
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import errors as pgerr

from rx_pgmq import Message, errors
from rx_pgmq._pg._dberrors import is_transient, translate
from rx_pgmq.errors import (
    AuthenticationFailed,
    BodyMismatch,
    CannotConnect,
    ConnectionLost,
    DatabaseNotFound,
    DecodeError,
    InvalidArgument,
    InvalidConninfo,
    NotAcknowledgeable,
    PermissionDenied,
    PGMQFeatureMissing,
    PGMQNotInstalled,
    PGMQOutdated,
    QueueNotFound,
    RoleNotFound,
    RxPgmqError,
)

ERROR_CLASSES: list[type[BaseException]] = [
    obj
    for name in errors.__all__
    if inspect.isclass(obj := getattr(errors, name)) and issubclass(obj, BaseException)
]


def test_errors_module_exports_every_error_class_sorted() -> None:
    """errors.__all__ lists each public error class (and nothing else), sorted."""
    assert errors.__all__ == sorted(errors.__all__)
    defined = {
        name
        for name, obj in vars(errors).items()
        if not name.startswith("_")
        and inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__.startswith("rx_pgmq")
    }
    assert set(errors.__all__) == defined
    assert len(ERROR_CLASSES) == len(errors.__all__) == 16


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_subclasses_rx_pgmq_error(cls: type[BaseException]) -> None:
    """Every public error class is an RxPgmqError (so one except clause catches them all)."""
    assert issubclass(cls, RxPgmqError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_reports_the_public_module(cls: type[BaseException]) -> None:
    """Tracebacks show rx_pgmq.errors.<Name>, the public path."""
    assert cls.__module__ == "rx_pgmq.errors"
    assert cls.__doc__, "each error documents when it is raised"


def test_builtin_bases_let_callers_catch_by_kind() -> None:
    """InvalidArgument is a ValueError, QueueNotFound a LookupError, ConnectionLost a
    ConnectionError."""
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(QueueNotFound, LookupError)
    assert issubclass(ConnectionLost, ConnectionError)


def test_invalid_argument_names_the_argument_and_the_rule() -> None:
    """InvalidArgument('qty', rule) reads 'qty: rule' and keeps .argument."""
    err = InvalidArgument("qty", "must be an int >= 1, got 0")
    assert str(err) == "qty: must be an int >= 1, got 0"
    assert err.argument == "qty"


def test_queue_not_found_says_how_to_create_the_queue() -> None:
    """QueueNotFound names the queue, tells to call create_queue and keeps the detail."""
    err = QueueNotFound("orders", 'relation "pgmq.q_orders" does not exist')
    assert err.queue == "orders"
    assert "PGMQ.create_queue('orders')" in str(err)
    assert 'relation "pgmq.q_orders" does not exist' in str(err)
    assert str(QueueNotFound("orders")).endswith("create_queue('orders')")


def test_pgmq_not_installed_says_how_to_install() -> None:
    """PGMQNotInstalled points at rx_pgmq.install_pgmq and CREATE EXTENSION pgmq."""
    for err in (PGMQNotInstalled(), PGMQNotInstalled('schema "pgmq" does not exist')):
        assert "rx_pgmq.install_pgmq(conninfo)" in str(err)
        assert "CREATE EXTENSION pgmq" in str(err)
    assert 'schema "pgmq" does not exist' in str(PGMQNotInstalled('schema "pgmq" does not exist'))


def test_permission_denied_lists_the_grants_needed() -> None:
    """PermissionDenied says which privileges the role needs and where to read more."""
    message = str(PermissionDenied("permission denied for schema pgmq"))
    assert "USAGE on schema pgmq" in message
    assert "EXECUTE" in message
    assert "Least privilege" in message
    assert "permission denied for schema pgmq" in message


def test_not_acknowledgeable_from_a_plain_message_says_what_to_use() -> None:
    """Settling a message not read by a consumer raises NotAcknowledgeable pointing at
    PGMQ.delete/archive/set_vt."""
    now = datetime.now(UTC)
    msg: Message = Message(
        msg_id=7,
        read_ct=1,
        enqueued_at=now,
        last_read_at=now,
        vt=now,
        body={},
        headers=None,
        queue="orders",
    )
    assert not msg.acknowledgeable
    with pytest.raises(NotAcknowledgeable) as info:
        msg.settle()
    assert "PGMQ.delete/archive/set_vt" in str(info.value)
    assert "message 7 of queue 'orders'" in str(info.value)
    with pytest.raises(NotAcknowledgeable):
        msg.release()


# -- mapping psycopg exceptions (pure logic on real psycopg exception classes) -----------


def test_translate_insufficient_privilege_is_permission_denied() -> None:
    """SQLSTATE 42501 becomes PermissionDenied carrying the server's first line."""
    out = translate(pgerr.InsufficientPrivilege("permission denied for schema pgmq\nLINE 1"))
    assert isinstance(out, PermissionDenied)
    assert "permission denied for schema pgmq" in str(out)
    assert "LINE 1" not in str(out)


@pytest.mark.parametrize(
    "exc",
    [
        pgerr.InvalidSchemaName('schema "pgmq" does not exist'),
        pgerr.UndefinedTable('relation "pgmq.meta" does not exist'),
        pgerr.UndefinedTable('relation "pgmq.notify_insert_throttle" does not exist'),
    ],
    ids=["no_schema", "no_meta_table", "no_throttle_table"],
)
def test_translate_missing_pgmq_objects_is_pgmq_not_installed(exc: psycopg.Error) -> None:
    """A missing pgmq schema or catalog table means PGMQ is not installed, even when the
    statement was about a queue."""
    for out in (translate(exc, "orders"), translate(exc)):
        assert isinstance(out, PGMQNotInstalled) and not isinstance(out, PGMQOutdated)


def test_translate_a_missing_pgmq_function_is_pgmq_outdated() -> None:
    """A pgmq function that does not exist (the schema does, or the server would say so)
    means an older PGMQ: PGMQOutdated, which is still a PGMQNotInstalled, with the server's
    text and an upgrade hint."""
    exc = pgerr.UndefinedFunction(
        "function pgmq.read_grouped(unknown, integer, integer) does not exist"
    )
    for out in (translate(exc, "orders"), translate(exc)):
        assert isinstance(out, PGMQOutdated) and isinstance(out, PGMQNotInstalled)
        assert "pgmq.read_grouped" in str(out) and "upgrade" in str(out)
    other = pgerr.UndefinedFunction("function public.f() does not exist")
    assert translate(other) is other


@pytest.mark.parametrize(
    ("text", "needs"),
    [
        ("function pgmq.read_grouped(unknown, integer, integer) does not exist", "1.9.0"),
        ("function pgmq.read_grouped_head(unknown, integer, integer) does not exist", "1.11.0"),
        ("function pgmq.bind_topic(unknown, unknown) does not exist", "1.11.0"),
        ("function pgmq.update_notify_insert(unknown, integer) does not exist", "1.11.0"),
        (
            "function pgmq.set_vt(unknown, bigint, timestamp with time zone) does not exist",
            "1.13.0",
        ),
        ("function pgmq.set_vt(unknown, bigint, integer) does not exist", ""),
        ("function pgmq.metrics(unknown) does not exist", ""),
    ],
)
def test_pgmq_outdated_names_the_version_with_the_missing_function(text: str, needs: str) -> None:
    """#18 item 2: a missing function newer than PGMQ 1.5 gives PGMQOutdated naming the
    PGMQ version that has it ("needs PGMQ X or later"); one rx_pgmq knows no version for
    keeps the plain upgrade hint."""
    out = translate(pgerr.UndefinedFunction(text))
    assert isinstance(out, PGMQOutdated)
    assert out.needs == needs
    assert (f"needs PGMQ {needs} or later" in str(out)) == bool(needs)
    assert "upgrade" in str(out) and text in str(out)


@pytest.mark.parametrize(
    "exc",
    [
        pgerr.UndefinedTable('relation "pgmq.q_orders" does not exist'),
        pgerr.UndefinedTable('relation "pgmq.a_orders" does not exist'),
        pgerr.RaiseException('Queue "orders" does not exist. Create it first'),
    ],
    ids=["queue_table", "archive_table", "raised_by_pgmq"],
)
def test_translate_missing_queue_is_queue_not_found(exc: psycopg.Error) -> None:
    """A missing queue table, or PGMQ raising 'does not exist', is QueueNotFound for the
    queue the statement named."""
    out = translate(exc, "orders")
    assert isinstance(out, QueueNotFound)
    assert out.queue == "orders"


def test_translate_without_a_queue_leaves_missing_tables_alone() -> None:
    """Without a queue to blame, a missing queue table is not turned into QueueNotFound."""
    exc = pgerr.UndefinedTable('relation "pgmq.q_orders" does not exist')
    assert translate(exc) is exc


@pytest.mark.parametrize(
    "exc",
    [
        pgerr.AdminShutdown("terminating connection due to administrator command"),
        pgerr.CrashShutdown("crash"),
        pgerr.CannotConnectNow("the database system is starting up"),
        pgerr.ConnectionFailure("connection failure"),
        psycopg.OperationalError("consuming input failed: server closed the connection"),
        psycopg.InterfaceError("the connection is closed"),
    ],
    ids=["admin_shutdown", "crash", "starting_up", "08006", "client_side", "closed"],
)
def test_translate_connection_failures_is_connection_lost(exc: psycopg.Error) -> None:
    """Connection-level failures become ConnectionLost, which says to retry."""
    assert is_transient(exc)
    out = translate(exc, "orders")
    assert isinstance(out, ConnectionLost)
    assert "retry" in str(out)
    assert is_transient(out)


def test_translate_leaves_other_errors_unchanged() -> None:
    """Errors without a name (a division by zero, a non-database error, an RxPgmqError)
    come back as they are."""
    for exc in (
        pgerr.DivisionByZero("division by zero"),
        RuntimeError("boom"),
        QueueNotFound("orders"),
    ):
        assert translate(exc, "orders") is exc
    assert not is_transient(pgerr.DivisionByZero("x"))
    assert not is_transient(pgerr.UniqueViolation("x"))


def test_serialization_failures_and_deadlocks_are_transient_but_not_connection_lost() -> None:
    """Serialization failures and deadlocks are worth retrying (is_transient) but the
    connection is fine, so translate does not call them ConnectionLost."""
    for exc in (pgerr.SerializationFailure("x"), pgerr.DeadlockDetected("x")):
        assert is_transient(exc)
        assert translate(exc, "orders") is exc


PICKLED_ERRORS: list[RxPgmqError] = [
    InvalidArgument("batch_size", "must be an int >= 1, got 0"),
    QueueNotFound("orders"),
    QueueNotFound("orders", 'relation "pgmq.q_orders" does not exist'),
    PGMQNotInstalled(),
    PGMQNotInstalled('schema "pgmq" does not exist'),
    PGMQOutdated("function pgmq.read_grouped(unknown, integer, integer) does not exist"),
    PGMQOutdated("function pgmq.bind_topic(unknown, unknown) does not exist", needs="1.11.0"),
    PGMQFeatureMissing("pg_partman", "partitioned queues"),
    BodyMismatch("Order", "Expected `int`, got `str` - at `$.id`", 7, "orders"),
    PermissionDenied("permission denied for table q_orders"),
    ConnectionLost("server closed the connection"),
    NotAcknowledgeable("read with PGMQ.read"),
    DecodeError(7, "orders", "body", "RecursionError: too deep", "[[[]]]", '{"h": 1}'),
    ConnectionLost("lost while committing", may_have_run=True),
    AuthenticationFailed('password authentication failed for user "app"'),
    RoleNotFound('role "app" does not exist'),
    DatabaseNotFound('database "app" does not exist'),
    InvalidConninfo('missing "=" after "bogus" in connection info string'),
    CannotConnect(),
    RxPgmqError("anything"),
]


@pytest.mark.parametrize("error", PICKLED_ERRORS, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_with_their_text_and_attributes(error: RxPgmqError) -> None:
    """An error sent through a process pool or multiprocessing queue (pickled) comes back
    as the same class with the same text and attributes, not re-wrapped or broken."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
