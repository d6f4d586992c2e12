"""Bad arguments and bad data against a real PostgreSQL (issue 14, items 6, 7 and 8).

Arguments are refused with ``InvalidArgument`` naming them when the pipeline is built or
the call is made, before any SQL; data PostgreSQL accepts but Python cannot decode fails
one message at a time, never the stream.
"""

from __future__ import annotations

from typing import Any

import pytest
from _support import WAIT, Conn, Subscribe, count, source_of

from rx_pgmq import Message
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Archive, Delete, MoveTo, Nothing, SetVisibilityTimeout
from rx_pgmq.client import PGMQ
from rx_pgmq.errors import InvalidArgument

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
