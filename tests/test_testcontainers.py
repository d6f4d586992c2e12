"""The testcontainers backend: the official PGMQ image in Docker.

Marked ``docker``: the rx_pgmq plugin skips these tests, with the reason, where no Docker
engine answers (e.g. a CI container with only the docker client binary).
"""

from __future__ import annotations

import psycopg
import pytest

from rx_pgmq._pg._install import install_pgmq, pgmq_version
from rx_pgmq.client import PGMQ
from rx_pgmq.testing import start_testcontainers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_container_serves_pgmq_extension() -> None:
    """The container offers the pgmq extension; install_pgmq creates it (no SQL fallback),
    track_functions is 'all', and a queue round trip works."""
    dsn, stop = start_testcontainers()
    try:
        version = install_pgmq(dsn)
        assert pgmq_version(dsn) == version
        with psycopg.connect(dsn) as conn:
            assert conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
            ).fetchone() == (version,)
            assert conn.execute("SHOW track_functions").fetchone() == ("all",)
        with PGMQ(dsn) as client:
            client.create_queue("in_docker")
            msg_id = client.send("in_docker", {"n": 1})
            [message] = client.read("in_docker", vt=30)
            assert message.msg_id == msg_id
            client.drop_queue("in_docker")
    finally:
        stop()


def test_plugin_uses_testcontainers_when_asked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RX_PGMQ_TEST_BACKEND=testcontainers (and no dsn): the session runs on a container,
    announced in the header."""
    monkeypatch.delenv("RX_PGMQ_DSN", raising=False)
    monkeypatch.setenv("RX_PGMQ_TEST_BACKEND", "testcontainers")
    pytester.makepyfile(
        test_inner=(
            "def test_inner(pgmq, pgmq_queue):\n"
            "    pgmq.send(pgmq_queue, {'a': 1})\n"
            "    assert pgmq.metrics(pgmq_queue).queue_length == 1\n"
        )
    )
    result = pytester.runpytest("-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["rx_pgmq: backend testcontainers*", "*PGMQ *"])
