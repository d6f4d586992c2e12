"""``rx-pgmq topics``, ``send --topic`` and the richer ``queues`` table (#18 item 3)."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

import rx_pgmq
from rx_pgmq.cli import cli


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def one_line_error(result: Result, *words: str) -> None:
    """The command failed with one ``rx-pgmq: error:`` line holding every word."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rx-pgmq: error: ")
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_topics_bind_list_test_and_unbind(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """#18 item 3: `topics bind` makes a binding that `topics list` (table and JSON) and
    `topics test KEY` show; `topics unbind` removes it and a second unbind is an error
    unless --missing-ok."""
    dsn = ("--dsn", pgmq_dsn)
    bound = run("topics", "bind", "orders.*", pgmq_queue, *dsn)
    assert bound.exit_code == 0 and f"orders.* -> {pgmq_queue}" in bound.output
    assert [b.pattern for b in pgmq.list_topic_bindings(pgmq_queue)] == ["orders.*"]
    listed = run("topics", "list", pgmq_queue, "--json", *dsn)
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["pattern"], r["queue"]) for r in records] == [("orders.*", pgmq_queue)]
    table = run("topics", "list", *dsn)
    assert table.exit_code == 0 and pgmq_queue in table.output
    tested = run("topics", "test", "orders.created", *dsn)
    assert f"orders.* {pgmq_queue}" in tested.stdout.splitlines()
    assert "matches no binding" in run("topics", "test", "nothing.here", *dsn).stderr
    assert run("topics", "unbind", "orders.*", pgmq_queue, *dsn).exit_code == 0
    assert pgmq.list_topic_bindings(pgmq_queue) == []
    one_line_error(run("topics", "unbind", "orders.*", pgmq_queue, *dsn), "not bound")
    assert run("topics", "unbind", "orders.*", pgmq_queue, "--missing-ok", *dsn).exit_code == 0


def test_send_topic_sends_to_the_bound_queues(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """#18 item 3: `send --topic KEY JSON...` sends every body (with --header) to each
    queue bound to a matching pattern and prints "QUEUE MSG_ID" lines; stdin works too;
    a key nothing matches sends nothing and says so on stderr."""
    pgmq.bind_topic("orders.#", pgmq_queue)
    sent = run(
        "send", "--topic", "orders.eu", '{"a": 1}', "2", "--header", '{"k": "v"}',
        "--dsn", pgmq_dsn,
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    lines = [line.split() for line in sent.stdout.splitlines()]
    assert [q for q, _ in lines] == [pgmq_queue, pgmq_queue]
    got = pgmq.read(pgmq_queue, 30, 5)
    assert [m.msg_id for m in got] == [int(i) for _, i in lines]
    assert [m.body for m in got] == [{"a": 1}, 2]
    assert got[0].headers == {"k": "v"}
    piped = run("send", "--topic", "orders.x", "--dsn", pgmq_dsn, input="3\n4\n")
    assert len(piped.stdout.splitlines()) == 2
    none = run("send", "--topic", "invoices.x", "1", "--dsn", pgmq_dsn)
    assert none.exit_code == 0 and none.stdout == ""
    assert "nothing sent" in none.stderr


def test_queues_shows_kind_throttle_and_topics(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """#18 item 3: `queues` lists each queue's kind, notification throttle and bindings."""
    pgmq.enable_notify(pgmq_queue, throttle_ms=125)
    pgmq.bind_topic("audit.#", pgmq_queue)
    result = run("queues", "--dsn", pgmq_dsn)
    assert result.exit_code == 0
    (row,) = [line for line in result.output.splitlines() if pgmq_queue in line]
    for cell in ("logged", "125", "audit.#"):
        assert cell in row, row
    assert "notify" in result.output and "topics" in result.output


def test_topic_commands_report_bad_input_in_one_line(pgmq_dsn: str, pgmq_queue: str) -> None:
    """#18 item 3: a bad pattern or key, a missing queue, and `send` without QUEUE or
    --topic give one clear line on stderr and a non-zero exit."""
    dsn = ("--dsn", pgmq_dsn)
    one_line_error(run("topics", "bind", "a..b", pgmq_queue, *dsn), "pattern", "a..b")
    one_line_error(run("topics", "bind", "a.#", "no_such_queue_t", *dsn), "does not exist")
    one_line_error(run("topics", "test", "a.*", *dsn), "routing_key")
    one_line_error(run("send", "--topic", "a b", "1", *dsn), "routing_key")
    one_line_error(run("send", *dsn), "QUEUE", "--topic")
