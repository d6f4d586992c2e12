"""The ``rx-pgmq`` command line, run with click's CliRunner (and a subprocess for signals)
against the real test server."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

import rx_pgmq
from rx_pgmq.cli import cli, demo_fails


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def count_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgmq", table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rx-pgmq: error: ")
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def demo_queue(pgmq: rx_pgmq.PGMQ) -> Iterator[str]:
    name = f"demo_{uuid.uuid4().hex[:10]}"
    yield name
    pgmq.drop_queue(name)


# -- demo ---------------------------------------------------------------------------------


def test_demo_handler_fails_deterministically() -> None:
    """Every 7th message fails only on its first read; every 23rd fails on every read."""
    assert demo_fails({"n": 7}, 1, every=7, poison=23)
    assert not demo_fails({"n": 7}, 2, every=7, poison=23)
    assert all(demo_fails({"n": 46}, ct, every=7, poison=23) for ct in (1, 2, 3))
    assert not demo_fails({"n": 8}, 1, every=7, poison=23)


def test_demo_exits_0_and_its_summary_matches_the_database(pgmq_dsn: str, demo_queue: str) -> None:
    """`demo` drains its queue through retries and archiving; the summary's numbers add up
    and the archived count equals the rows in pgmq.a_<demo queue>."""
    result = run("demo", "--dsn", pgmq_dsn, "--queue", demo_queue, "--messages", "200")
    assert result.exit_code == 0, result.output + result.stderr
    out = result.output
    processed = int(re.search(r"processed \(deleted\)\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    archived = int(re.search(r"archived\s*│\s*(\d+)", out).group(1))  # type: ignore[union-attr]
    retries = re.search(r"(\d+) retries of (\d+) messages", out)
    assert retries is not None
    # 1..200: 8 multiples of 23 always fail (2 retries each, then archived); the 27 other
    # multiples of 7 fail once (1 retry each).
    assert (processed, archived) == (192, 8)
    assert (int(retries.group(1)), int(retries.group(2))) == (27 + 2 * 8, 27 + 8)
    assert count_rows(pgmq_dsn, f"a_{demo_queue}") == archived
    assert count_rows(pgmq_dsn, f"q_{demo_queue}") == 0
    assert "msg/s" in out
    assert "database check: OK" in out


# -- administration -----------------------------------------------------------------------


def test_create_queues_and_drop(pgmq_dsn: str, demo_queue: str) -> None:
    """`create` makes a queue that `queues` lists with its metrics; `drop` removes it and a
    second `drop` is an error (unless --missing-ok)."""
    assert run("create", demo_queue, "--dsn", pgmq_dsn, "--notify", "0").exit_code == 0
    listed = run("queues", "--dsn", pgmq_dsn)
    assert listed.exit_code == 0
    assert demo_queue in listed.output
    assert run("drop", demo_queue, "--dsn", pgmq_dsn).exit_code == 0
    assert_one_line_error(run("drop", demo_queue, "--dsn", pgmq_dsn), "does not exist")
    assert run("drop", demo_queue, "--missing-ok", "--dsn", pgmq_dsn).exit_code == 0


def test_group_dsn_option_applies_to_commands(pgmq_dsn: str, pgmq_queue: str) -> None:
    """`rx-pgmq --dsn X CMD` works like `CMD --dsn X`."""
    result = run("--dsn", pgmq_dsn, "queues")
    assert result.exit_code == 0
    assert pgmq_queue in result.output


# -- send and peek ------------------------------------------------------------------------


def test_send_arguments_and_stdin_lines(pgmq_dsn: str, pgmq_queue: str) -> None:
    """`send` sends one message per JSON argument, or per non-blank stdin line, and prints
    the ids; headers come from --header."""
    sent = run("send", pgmq_queue, '{"a": 1}', "[1, 2]", '"text"', "--dsn", pgmq_dsn)
    assert sent.exit_code == 0
    assert len(sent.stdout.split()) == 3
    piped = run(
        "send", pgmq_queue, "--header", '{"k": "v"}', "--dsn", pgmq_dsn, input='{"b":1}\n\n7\n'
    )
    assert piped.exit_code == 0
    assert len(piped.stdout.split()) == 2
    peeked = run("peek", pgmq_queue, "--json", "--dsn", pgmq_dsn)
    records = [json.loads(line) for line in peeked.stdout.splitlines()]
    assert [r["body"] for r in records] == [{"a": 1}, [1, 2], "text", {"b": 1}, 7]
    assert records[-1]["headers"] == {"k": "v"}


def test_peek_leaves_read_ct_and_vt_unchanged(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """`peek` (table and JSON) claims nothing: read_ct and vt of every row stay the same."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(4)])
    pgmq.read(pgmq_queue, vt=60, qty=1)
    query = sql.SQL("SELECT msg_id, read_ct, vt FROM {} ORDER BY msg_id").format(
        sql.Identifier("pgmq", f"q_{pgmq_queue}")
    )
    with psycopg.connect(pgmq_dsn) as conn:
        before = conn.execute(query).fetchall()
        table = run("peek", pgmq_queue, "--dsn", pgmq_dsn)
        lines = run("peek", pgmq_queue, "--json", "-n", "2", "--dsn", pgmq_dsn)
        after = conn.execute(query).fetchall()
    assert table.exit_code == 0 and lines.exit_code == 0
    assert after == before
    assert "not claimed" in table.output
    assert [json.loads(line)["read_ct"] for line in lines.stdout.splitlines()] == [1, 0]


# -- bad input: one line, non-zero exit ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("peek", "no_such_queue_x"), ("no_such_queue_x", "does not exist", "rx-pgmq create")),
        (("send", "no_such_queue_x", "1"), ("does not exist",)),
        (("tail", "no_such_queue_x"), ("does not exist",)),
        (("peek", "Bad-Name"), ("invalid queue name", "Bad-Name")),
        (("create", "9starts_with_digit"), ("invalid queue name",)),
        (("send", "QUEUE_PLACEHOLDER", "{not json"), ("not valid JSON", "{not json")),
        (("send", "QUEUE_PLACEHOLDER", "--header", "[1]", "1"), ("--header",)),
        (("tail", "QUEUE_PLACEHOLDER", "--ack", "bogus"), ("--ack", "bogus", "--help")),
        (("no-such-command",), ("no-such-command",)),
    ],
)
def test_bad_input_prints_one_line_and_exits_non_zero(
    pgmq_dsn: str, pgmq_queue: str, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    """Unknown queues, invalid names, non-JSON bodies and bad options give one clear line on
    stderr, no traceback, and a non-zero exit status."""
    argv = [pgmq_queue if a == "QUEUE_PLACEHOLDER" else a for a in args]
    assert_one_line_error(run(*argv, "--dsn", pgmq_dsn), *words)


def test_bad_stdin_line_is_reported_by_line_number(pgmq_dsn: str, pgmq_queue: str) -> None:
    """A non-JSON stdin line names its line number and nothing is sent."""
    result = run("send", pgmq_queue, "--dsn", pgmq_dsn, input='{"ok": 1}\nnope\n')
    assert_one_line_error(result, "stdin line 2")
    assert count_rows(pgmq_dsn, f"q_{pgmq_queue}") == 0


def test_unreachable_database_is_one_line(tmp_path: os.PathLike[str]) -> None:
    """A DSN that cannot connect is reported in one line, without a traceback."""
    dsn = f"postgresql://nobody@/postgres?host={tmp_path}&connect_timeout=2"
    assert_one_line_error(run("queues", "--dsn", dsn))


# -- tail ---------------------------------------------------------------------------------


def test_tail_prints_and_acks_count_messages(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """`tail --count N --ack archive` prints N messages and archives them."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(5)])
    result = run(
        "tail", pgmq_queue, "--ack", "archive", "--count", "5", "--interval", "0.1",
        "--dsn", pgmq_dsn,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line.split("\t")[2])["n"] for line in result.stdout.splitlines()] == list(
        range(5)
    )
    assert count_rows(pgmq_dsn, f"a_{pgmq_queue}") == 5
    assert count_rows(pgmq_dsn, f"q_{pgmq_queue}") == 0
    assert "5 settled (archive)" in result.stderr


def test_tail_idle_timeout_stops_and_json_lines(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """`tail --idle-timeout` stops after a quiet spell; `--json` prints one record a line;
    `--ack nothing` leaves the messages in the queue."""
    pgmq.send_batch(pgmq_queue, [{"n": 1}, {"n": 2}])
    result = run(
        "tail", pgmq_queue, "--json", "--ack", "nothing", "--idle-timeout", "1",
        "--interval", "0.1", "--dsn", pgmq_dsn,
    )  # fmt: skip
    assert result.exit_code == 0
    assert [json.loads(line)["body"] for line in result.stdout.splitlines()] == [
        {"n": 1},
        {"n": 2},
    ]
    assert count_rows(pgmq_dsn, f"q_{pgmq_queue}") == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_tail_stops_cleanly_on_signals_and_releases_in_flight_messages(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str, signum: signal.Signals
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM stops `tail` with exit 0 and one summary line; messages
    read but not acked are released (visible again at once, read_ct 1)."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(10)])
    env = {**os.environ, "RX_PGMQ_DSN": pgmq_dsn}
    args = ["tail", pgmq_queue, "--window", "5", "--pace", "60", "--interval", "0.1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rx_pgmq.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with selectors.DefaultSelector() as selector:
            assert proc.stdout is not None
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "tail printed nothing"
        first = proc.stdout.readline()
        assert first.startswith("1\t1\t")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "interrupted: 1 printed" in err
    assert "5 released" in err
    with psycopg.connect(pgmq_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT msg_id, read_ct, vt <= now() FROM {} ORDER BY msg_id").format(
                sql.Identifier("pgmq", f"q_{pgmq_queue}")
            )
        ).fetchall()
    assert len(rows) == 10
    assert all(visible for _, _, visible in rows)  # nothing left hidden
    assert [ct for _, ct, _ in rows] == [1] * 5 + [0] * 5


# -- bench --------------------------------------------------------------------------------


def test_bench_prints_drain_throughput(pgmq: rx_pgmq.PGMQ, pgmq_dsn: str) -> None:
    """`bench` drains a scratch queue, prints msg/s, and drops its queue."""
    before = {q.queue_name for q in pgmq.list_queues()}
    result = run("bench", "--messages", "500", "--dsn", pgmq_dsn)
    assert result.exit_code == 0, result.stderr
    assert re.search(r"drained 500 messages in [\d.]+ s: \d+ msg/s", result.output)
    assert {q.queue_name for q in pgmq.list_queues()} == before


@pytest.mark.slow
def test_bench_with_consumer_processes_reports_rate_duplicates_and_losses(pgmq_dsn: str) -> None:
    """#17 item 4: `rx-pgmq bench --consumers 2` fills a scratch queue, drains it with two
    consumer processes, prints msg/s and the per-consumer counts, and finds no duplicate and
    no lost message; the scratch queue is dropped."""
    before = set(rx_pgmq.PGMQ(pgmq_dsn).list_queues())
    result = run(
        "bench", "--consumers", "2", "--messages", "400", "--batch-size", "50", "--dsn", pgmq_dsn
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "drained 400 messages with 2 consumer processes" in result.output
    assert "duplicates 0, lost 0" in result.output
    assert set(rx_pgmq.PGMQ(pgmq_dsn).list_queues()) == before
