"""The rx_pgmq.testing pytest plugin: backend choice, fixtures, header, docker skips."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest

from rx_pgmq.client import PGMQ
from rx_pgmq.testing import docker_available

NOWHERE = "postgresql://postgres@/postgres?host=/nonexistent/rx_pgmq&connect_timeout=2"

INNER_TEST = """
import pathlib

def test_inner(pgmq_dsn, pgmq, pgmq_queue):
    pathlib.Path("seen.txt").write_text(pgmq_dsn + "\\n" + pgmq_queue)
    assert pgmq.queue_exists(pgmq_queue)
    pgmq.send(pgmq_queue, {"hello": "world"})
    [message] = pgmq.read(pgmq_queue, vt=30)
    assert message.body == {"hello": "world"}
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No backend chosen through the environment."""
    monkeypatch.delenv("RX_PGMQ_DSN", raising=False)
    monkeypatch.delenv("RX_PGMQ_TEST_BACKEND", raising=False)
    return monkeypatch


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run an inner session in-process (without hypothesis' plugin, slow to import there)."""
    return pytester.runpytest("-p", "no:hypothesispytest", *args)


def _seen(pytester: pytest.Pytester) -> tuple[str, str]:
    dsn, queue = (pytester.path / "seen.txt").read_text().split("\n")
    return dsn, queue


def test_pgmq_queue_is_a_fresh_uniquely_named_empty_queue(pgmq: PGMQ, pgmq_queue: str) -> None:
    """pgmq_queue names a queue t_<12 hex digits> that exists and is empty."""
    assert re.fullmatch(r"t_[0-9a-f]{12}", pgmq_queue)
    assert pgmq.queue_exists(pgmq_queue)
    assert pgmq.metrics(pgmq_queue).queue_length == 0


def test_pgmq_fixture_is_a_client_of_the_test_database(pgmq: PGMQ, pgmq_dsn: str) -> None:
    """pgmq is an rx_pgmq.PGMQ client on pgmq_dsn, where PGMQ is installed."""
    assert isinstance(pgmq, PGMQ)
    assert pgmq.dsn() == pgmq_dsn
    with psycopg.connect(pgmq_dsn) as conn:
        row = conn.execute("SELECT to_regprocedure('pgmq.send(text,jsonb,integer)')").fetchone()
    assert row is not None and row[0] is not None


def test_dsn_option_wins_over_env_and_queue_is_dropped_after(
    pytester: pytest.Pytester, pgmq_dsn: str, pgmq: PGMQ, clean_env: pytest.MonkeyPatch
) -> None:
    """--pgmq-dsn beats RX_PGMQ_DSN; the header names the dsn backend with the PostgreSQL
    and PGMQ versions; the test's queue is dropped after the test."""
    clean_env.setenv("RX_PGMQ_DSN", NOWHERE)
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester, f"--pgmq-dsn={pgmq_dsn}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["rx_pgmq: backend dsn (*), PostgreSQL *, PGMQ *"])
    dsn, queue = _seen(pytester)
    assert dsn == pgmq_dsn
    assert not pgmq.queue_exists(queue)


def test_env_dsn_is_used_without_option(
    pytester: pytest.Pytester, pgmq_dsn: str, clean_env: pytest.MonkeyPatch
) -> None:
    """Without --pgmq-dsn the plugin uses RX_PGMQ_DSN."""
    clean_env.setenv("RX_PGMQ_DSN", pgmq_dsn)
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    assert _seen(pytester)[0] == pgmq_dsn


def test_unreachable_dsn_fails_tests_with_a_clear_message(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """A dsn nobody answers: the header says unreachable, tests error naming the database."""
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester, f"--pgmq-dsn={NOWHERE}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["rx_pgmq: backend dsn (*), unreachable:*", "*the dsn test database is unavailable*"]
    )


def test_embedded_is_the_default_backend_and_is_removed_after(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """With no dsn and no backend asked for, an embedded PostgreSQL 18 in a temp folder
    serves the session; the header says so; after the session it is stopped and deleted."""
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "rx_pgmq: backend embedded (started when a test first needs it)",
            "rx_pgmq: embedded server *: PostgreSQL 18*, PGMQ 1.13.0",
        ]
    )
    dsn, _ = _seen(pytester)
    socket_dir = Path(parse_qs(urlparse(dsn).query)["host"][0])
    assert not socket_dir.exists()


def test_no_server_is_started_when_no_test_needs_one(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """A session whose tests do not use the fixtures starts no database."""
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("rx_pgmq: embedded server*")


def test_unknown_backend_is_a_usage_error(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """RX_PGMQ_TEST_BACKEND must be embedded or testcontainers."""
    clean_env.setenv("RX_PGMQ_TEST_BACKEND", "kubernetes")
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*RX_PGMQ_TEST_BACKEND='kubernetes' is not one of*"])


def test_testcontainers_backend_without_docker_fails_clearly(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """Asking for testcontainers where no Docker engine answers errors the tests with a
    message saying Docker is needed (no silent fallback to another server)."""
    if docker_available()[0]:
        pytest.skip("a Docker engine is available here")
    clean_env.setenv("RX_PGMQ_TEST_BACKEND", "testcontainers")
    pytester.makepyfile(test_inner=INNER_TEST)
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RX_PGMQ_TEST_BACKEND=testcontainers needs Docker*"])


def test_docker_marker_skips_with_reason_without_docker(
    pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch
) -> None:
    """A test marked docker is skipped, saying Docker is needed, when no engine answers."""
    ok, reason = docker_available()
    if ok:
        pytest.skip("a Docker engine is available here")
    assert reason.startswith("no Docker engine")
    pytester.makepyfile(
        test_marked="import pytest\n\n@pytest.mark.docker\ndef test_needs_docker():\n    pass\n"
    )
    result = _run(pytester, "-rs", "--strict-markers")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs Docker: no Docker engine*"])
