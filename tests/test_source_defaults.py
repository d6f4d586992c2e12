"""read_queue's defaults (#17 item 3), against a real PostgreSQL."""

from __future__ import annotations

import pytest
from _support import Conn, Subscribe, leased, source_of, wait_until, watch

import rx_pgmq
from rx_pgmq.message import Message


@pytest.mark.parametrize(("batch_size", "window"), [(10, 100), (50, 200)])
def test_the_default_window_is_four_batches_and_at_least_100(
    batch_size: int,
    window: int,
    pgmq: rx_pgmq.PGMQ,
    pgmq_queue: str,
    pgmq_dsn: str,
    db: Conn,
    subscribe: Subscribe,
) -> None:
    """#17 item 3: without max_in_flight, a consumer whose messages are never settled holds
    max(100, 4 x batch_size) of 300: a user who only sets batch_size=50 gets room to read
    while earlier batches are processed and acked (a window of 100 would hold 2 batches)."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(300)])
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue, batch_size=batch_size))
    sink_messages: list[Message] = sink.messages
    assert wait_until(lambda: len(sink_messages) >= window)
    watch()  # a larger window would read more meanwhile
    assert len(sink_messages) == window
    assert leased(db, pgmq_queue) == window
