"""Bad arguments and bad data against a real PostgreSQL (issue 14, items 6, 7 and 8).

Arguments are refused with ``InvalidArgument`` naming them when the pipeline is built or
the call is made, before any SQL; data PostgreSQL accepts but Python cannot decode fails
one message at a time, never the stream.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from _support import WAIT, Conn, Subscribe, count, source_of
from reactivex.subject import Subject

from rx_pgmq import Message, install_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument

JSONB_LIMIT = 268_435_455  # bytes: PostgreSQL's largest jsonb value (JENTRY_OFFLENMASK)

# -- item 6: policies are checked when the pipeline is built ---------------------------


@pytest.mark.parametrize("cls", [Delete, Archive, Nothing, SetVisibilityTimeout, MoveTo])
@pytest.mark.parametrize("argument", ["on_success", "on_failure"])
def test_an_action_class_is_refused_when_the_pipeline_is_built(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, cls: type, argument: str
) -> None:
    """#14 item 6: ack(on_success=Delete) (the class) raises InvalidArgument at pipe time.

    Before, a class passed as callable: the stream ended later with a TypeError. The
    message stays unread: nothing was read or settled.
    """
    pgmq.send(pgmq_queue, {"id": 1})
    source = source_of(pgmq_dsn, pgmq_queue)
    with pytest.raises(InvalidArgument) as info:
        source.pipe(pgops.process(lambda m: None), pgops.ack(**{argument: cls}))
    assert info.value.argument == argument
    assert f"{cls.__name__}()" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        pgops.ack_with(cls)
    assert info.value.argument == "policy"
    with pytest.raises(InvalidArgument) as info:
        pgops.max_attempts(3, then=cls)
    assert info.value.argument == "then"
    assert count(db, pgmq_queue, "read_ct = 0") == 1


def _no_argument() -> Delete:
    return Delete()


def _two_arguments(a: object, b: object) -> Delete:
    return Delete()


@pytest.mark.parametrize("policy", [_no_argument, _two_arguments, lambda: Archive()])
def test_a_function_that_cannot_take_an_outcome_is_refused(policy: Any) -> None:
    """#14 item 6: a callable that cannot be called with one outcome is not a policy."""
    with pytest.raises(InvalidArgument) as info:
        pgops.ack(on_failure=policy)
    assert info.value.argument == "on_failure"
    assert "one outcome" in str(info.value)


def test_settling_with_an_action_class_is_refused_at_call_time(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, db: Conn, subscribe: Subscribe
) -> None:
    """#14 item 6: message.settle(Delete) raises InvalidArgument; the consumer goes on.

    Before, the class was queued and broke the acknowledger's flush later.
    """
    pgmq.send(pgmq_queue, {"id": 1})
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue))
    (message,) = sink.collect(1)
    assert isinstance(message, Message)
    with pytest.raises(InvalidArgument) as info:
        message.settle(Delete)  # type: ignore[arg-type]
    assert info.value.argument == "action"
    assert message.settle(Delete()).result(WAIT) == "acked"
    assert count(db, pgmq_queue) == 0
    assert not sink.errors


# -- item 8: input checks before any SQL ------------------------------------------------


def test_a_bool_flag_must_be_a_real_bool(pgmq: PGMQ, pgmq_dsn: str, pgmq_queue: str) -> None:
    """#14 item 8: create_queue(unlogged="false") raises InvalidArgument; nothing is created.

    Before, the truthy string created an UNLOGGED queue.
    """
    name = f"{pgmq_queue}_flag"
    with pytest.raises(InvalidArgument) as info:
        pgmq.create_queue(name, unlogged="false")  # type: ignore[arg-type]
    assert info.value.argument == "unlogged"
    assert not pgmq.queue_exists(name)
    with pytest.raises(InvalidArgument) as info:
        source_of(pgmq_dsn, pgmq_queue).pipe(
            pgops.pausable(Subject(), start_paused=1)  # type: ignore[arg-type]
        )
    assert info.value.argument == "start_paused"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"body": {1: "a", "1": "b"}}, "body"),
        ({"body": [{"ok": {None: 1}}]}, "body"),
        ({"body": {"x": {2.5: 1, True: 2}}}, "body"),
        ({"body": {}, "headers": {"trace": {7: "x"}}}, "headers"),
    ],
)
def test_dict_keys_that_are_not_str_are_refused(
    pgmq: PGMQ, pgmq_queue: str, db: Conn, kwargs: dict[str, Any], argument: str
) -> None:
    """#14 item 8: a non-str dict key raises InvalidArgument naming the argument; nothing sent.

    Before, JSON turned 1 into "1" and {1: 'a', '1': 'b'} was stored with one value.
    """
    with pytest.raises(InvalidArgument) as info:
        pgmq.send(pgmq_queue, **kwargs)
    assert info.value.argument == argument
    assert "keys must be str" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        pgmq.send_batch(pgmq_queue, [{"fine": 1}, kwargs["body"]], [None, kwargs.get("headers")])
    assert info.value.argument in ("bodies[1]", "headers[1]")
    assert count(db, pgmq_queue) == 0


def test_string_keys_that_look_like_numbers_are_kept(pgmq: PGMQ, pgmq_queue: str) -> None:
    """#14 item 8: str keys such as "1", "true" or "null" are fine and stored as given."""
    body = {"1": "a", "true": [{"null": 2.5}], "x": '"1":'}
    pgmq.send(pgmq_queue, body, headers={"2": "h"})
    (message,) = pgmq.read(pgmq_queue, 30)
    assert (message.body, message.headers) == (body, {"2": "h"})


def test_a_body_over_the_jsonb_limit_is_refused_before_sending(
    pgmq: PGMQ, pgmq_queue: str, db: Conn
) -> None:
    """#14 item 8: a body over jsonb's 255 MB is refused with InvalidArgument before sending.

    Before, the client sent it for many seconds and got a raw psycopg error.
    """
    body = "x" * JSONB_LIMIT  # plus its two quotes: 2 bytes over the limit
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        pgmq.send(pgmq_queue, body)
    elapsed = time.monotonic() - started
    assert info.value.argument == "body"
    assert "255 MB" in str(info.value)
    assert elapsed < 10.0, elapsed  # encoding only, no transfer (under 2 s when idle)
    assert count(db, pgmq_queue) == 0


def test_install_pgmq_of_none_is_an_invalid_argument() -> None:
    """#14 item 8: install_pgmq(None) raises InvalidArgument, not AttributeError."""
    for bad in (None, "", 42):
        with pytest.raises(InvalidArgument) as info:
            install_pgmq(bad)  # type: ignore[arg-type]
        assert info.value.argument == "conninfo"
