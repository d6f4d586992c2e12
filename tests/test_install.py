"""install_pgmq / pgmq_version against fresh databases on the test server."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import rx_pgmq
from rx_pgmq._pg._install import bundled_sql, install_pgmq, pgmq_version
from rx_pgmq._values._options import ReadOptions
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import ConnectionLost, PermissionDenied, PGMQNotInstalled, PGMQOutdated

BUNDLED_VERSION = "1.13.0"


def _has_extension(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq'").fetchone()
    return row is not None


@pytest.fixture
def fresh_db(pgmq_dsn: str) -> Iterator[str]:
    """Conninfo of a new empty database on the test server, dropped after the test."""
    name = f"rx_pgmq_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(pgmq_dsn, dbname=name)
    finally:
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _read_oid(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT to_regprocedure('pgmq.read(text,integer,integer,jsonb)')::oid"
        ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def test_bundled_sql_is_pgmq_1_13_0() -> None:
    """The SQL shipped in the pgmq package is PGMQ 1.13.0 and defines pgmq.read."""
    version, script = bundled_sql()
    assert version == BUNDLED_VERSION
    assert "CREATE FUNCTION pgmq.read(" in script


def test_fresh_database_has_no_pgmq(fresh_db: str) -> None:
    """pgmq_version is None on a database without PGMQ."""
    assert pgmq_version(fresh_db) is None


def test_install_then_second_install_is_a_no_op(fresh_db: str) -> None:
    """install_pgmq installs PGMQ 1.13.0 and reports it; a second call changes nothing."""
    first = install_pgmq(fresh_db)
    if not _has_extension(fresh_db):
        assert first == BUNDLED_VERSION
        with psycopg.connect(fresh_db) as conn:
            row = conn.execute("SELECT obj_description('pgmq'::regnamespace)").fetchone()
        assert row == (f"pgmq {BUNDLED_VERSION} installed by rx_pgmq",)
    assert pgmq_version(fresh_db) == first
    oid = _read_oid(fresh_db)
    assert install_pgmq(fresh_db) == first
    assert _read_oid(fresh_db) == oid, "the second call must not recreate the functions"


def test_queue_works_after_install(fresh_db: str) -> None:
    """After install_pgmq a queue can be created, written, read and dropped."""
    install_pgmq(fresh_db)
    with PGMQ(fresh_db) as client:
        client.create_queue("orders")
        msg_id = client.send("orders", {"id": 1})
        [message] = client.read("orders", vt=30)
        assert (message.msg_id, message.body) == (msg_id, {"id": 1})
        assert client.drop_queue("orders")


def test_concurrent_installs_are_serialized(fresh_db: str) -> None:
    """Four simultaneous install_pgmq calls all succeed with the same version (advisory lock)."""
    barrier = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def install() -> None:
        barrier.wait(timeout=30)
        try:
            results.append(install_pgmq(fresh_db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 4 and len(set(results)) == 1


def test_foreign_sql_install_reports_unknown_version(fresh_db: str) -> None:
    """A SQL install without rx_pgmq's schema comment is detected and reported as 'unknown'."""
    if _has_extension(fresh_db):
        pytest.skip("the server has the pgmq extension; the SQL path is not used")
    install_pgmq(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("COMMENT ON SCHEMA pgmq IS NULL")
    assert pgmq_version(fresh_db) == "unknown"
    assert install_pgmq(fresh_db) == "unknown"


def test_missing_pgmq_package_raises_with_pip_hint(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the pgmq package (and no extension) install_pgmq raises PGMQNotInstalled
    naming the pip extra, and leaves the database untouched."""
    if _has_extension(fresh_db):
        pytest.skip("the server has the pgmq extension; the package is not needed")
    monkeypatch.setitem(sys.modules, "pgmq", None)  # makes the package unimportable
    with pytest.raises(PGMQNotInstalled, match=r'pip install "rx-pgmq\[embedded\]"'):
        install_pgmq(fresh_db)
    monkeypatch.undo()
    assert pgmq_version(fresh_db) is None


def test_role_without_create_privilege_gets_permission_denied(fresh_db: str, pgmq_dsn: str) -> None:
    """A role that may not create schemas gets PermissionDenied, and nothing is installed."""
    role = f"rx_pgmq_r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'rx-pgmq-test'").format(sql.Identifier(role))
        )
    try:
        weak = make_conninfo(fresh_db, user=role, password="rx-pgmq-test")
        with pytest.raises(PermissionDenied):
            install_pgmq(weak)
        assert pgmq_version(fresh_db) is None
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
                ).format(sql.Literal(role))
            )
        with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_unreachable_server_raises_connection_lost(tmp_path: object) -> None:
    """install_pgmq and pgmq_version raise ConnectionLost when no server answers."""
    dsn = f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=3"
    with pytest.raises(ConnectionLost):
        install_pgmq(dsn)
    with pytest.raises(ConnectionLost):
        pgmq_version(dsn)


def test_a_pgmq_without_a_function_is_reported_as_outdated(fresh_db: str) -> None:
    """A PGMQ that lacks a function a call needs (as an older version would; here one is
    dropped) raises PGMQOutdated, a PGMQNotInstalled, naming the function: from the client
    at once, and as the consumer's on_error for a FIFO read."""
    install_pgmq(fresh_db)
    with PGMQ(fresh_db) as client:
        client.create_queue("orders")
        client.send("orders", {"n": 1})
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("DROP FUNCTION pgmq.read_grouped(text, integer, integer)")
            conn.execute("DROP FUNCTION pgmq.metrics(text)")
        with pytest.raises(PGMQOutdated, match=r"pgmq\.metrics") as info:
            client.metrics("orders")
        assert isinstance(info.value, PGMQNotInstalled)
    errors: list[Exception] = []
    failed = threading.Event()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        failed.set()

    source = rx_pgmq.read_queue(
        fresh_db,
        "orders",
        visibility_timeout=30,
        read_options=ReadOptions(fifo="grouped"),
    )
    subscription = source.subscribe(on_next=lambda _m: None, on_error=on_error)
    try:
        assert failed.wait(30), "the consumer did not report the missing function"
    finally:
        subscription.dispose()
    assert len(errors) == 1 and isinstance(errors[0], PGMQOutdated)
    assert "pgmq.read_grouped" in str(errors[0]) and "upgrade" in str(errors[0])
