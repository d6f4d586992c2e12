"""The SQL a consumer runs: its read statement, and one ack batch applied in one go.

Beside :mod:`rx_pgmq._pg._sql` (the statements themselves); this module chooses among them
for a consumer's options and sends a batch of settle requests in as few round trips as
it can. The callers (:mod:`rx_pgmq._consumer._reader`, :mod:`rx_pgmq._consumer._acker`) own
the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rx_pgmq._core._ackbatch import Batch, Pending
from rx_pgmq._pg import _sql
from rx_pgmq._values._moved import MOVED_HEADER, moved_json
from rx_pgmq._values._options import ReadOptions
from rx_pgmq.message import Message

__all__ = ["MOVED_HEADER", "BatchWriter", "ReadStatement", "read_statement"]

_log = logging.getLogger("rx_pgmq")


_FENCED_DELETE = "DELETE FROM {table} WHERE msg_id = %s AND read_ct = %s RETURNING msg_id"
_FENCED_ARCHIVE = (
    "WITH moved AS (DELETE FROM {table} WHERE msg_id = %s AND read_ct = %s"
    " RETURNING msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " INSERT INTO {archive} (msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers)"
    " SELECT msg_id, vt, read_ct, enqueued_at, last_read_at, message, headers FROM moved"
    " RETURNING msg_id"
)
_FENCED_LOCK = "SELECT 1 FROM {table} WHERE msg_id = %s AND read_ct = %s FOR UPDATE"
_FENCED_SET_VT = (
    "UPDATE {table} SET vt = clock_timestamp() + make_interval(secs => %s)"
    " WHERE msg_id = %s AND read_ct = %s RETURNING msg_id"
)

_Moves = dict[str, list[tuple[Pending, Message]]]


@dataclass(frozen=True, slots=True)
class ReadStatement:
    """A consumer's read, rendered once (see ``_sql.rendered``).

    Attributes:
        query: The read statement.
        params: Read size -> the statement's parameters.
        full_query: The statement of a read of ``batch_size`` messages with every value
            written in (a plain read only), else ``None``.
        batch_size: The consumer's batch size.
    """

    query: bytes
    params: Callable[[int], tuple[Any, ...]]
    full_query: bytes | None
    batch_size: int

    def rows(self, conn: psycopg.Connection[Any], n: int) -> list[tuple[Any, ...]]:
        """Read up to ``n`` messages on ``conn``; return their rows."""
        if n == self.batch_size and self.full_query is not None:
            cur = conn.execute(self.full_query, prepare=True, binary=True)
        else:
            cur = conn.execute(self.query, self.params(n), prepare=True, binary=True)
        return cur.fetchall()


def read_statement(queue: str, vt: int, batch_size: int, opts: ReadOptions) -> ReadStatement:
    """The read statement for a consumer's options.

    A plain read (no pop, conditional, long poll or FIFO grouping) runs PGMQ's read query
    inline; the others call PGMQ's functions. A plain read of a whole batch has the size
    and timeout written in, so the server plans it once (see ``_sql.read_inline``). Reads
    other than pops commit without waiting for the WAL flush unless
    ``ReadOptions.durable_reads``.
    """
    q, durable, lp = queue, opts.durable_reads, opts.long_poll
    full: sql.Composed | None = None
    stmt: str | sql.Composed
    params: Callable[[int], tuple[Any, ...]]
    if opts.delete_on_read:
        stmt, params = _sql.select_messages(_sql.POP_CALL), lambda n: (q, n)
    elif opts.fifo is not None:
        stmt = _sql.read_grouped(opts.fifo, poll=lp is not None, durable=durable)
        if lp is not None:
            max_s, every_ms = lp.max_seconds, lp.interval_ms
            params = lambda n: (q, vt, n, max_s, every_ms)  # noqa: E731
        else:
            params = lambda n: (q, vt, n)  # noqa: E731
    elif lp is not None:
        max_s, every_ms, cond = lp.max_seconds, lp.interval_ms, opts.conditional_json
        stmt = _sql.select_messages(_sql.READ_WITH_POLL_CALL, durable=durable)
        params = lambda n: (q, vt, n, max_s, every_ms, cond)  # noqa: E731
    elif opts.conditional:
        cond = opts.conditional_json
        stmt = _sql.select_messages(_sql.READ_CALL, durable=durable)
        params = lambda n: (q, vt, n, cond)  # noqa: E731
    else:
        full = _sql.read_inline(q, durable=durable, qty=batch_size, vt=vt)
        stmt, params = _sql.read_inline(q, durable=durable), lambda n: (n, vt)
    return ReadStatement(
        _sql.rendered(stmt), params, None if full is None else _sql.rendered(full), batch_size
    )


class BatchWriter:
    """Applies ack batches of one queue, each in one transaction.

    Args:
        queue: The queue the messages were read from.
        fenced: Touch only a message still holding the ``read_ct`` this consumer saw.
    """

    __slots__ = ("_delete_sql", "fenced", "queue")

    def __init__(self, queue: str, *, fenced: bool) -> None:
        self.queue = queue
        self.fenced = fenced
        self._delete_sql = _sql.rendered(_sql.delete_inline(queue))

    def apply(
        self, conn: psycopg.Connection[Any], batch: Batch, ended: Collection[int] = ()
    ) -> tuple[set[int], set[int]]:
        """Apply one batch; return (lost-lease ids, ids not applied).

        Args:
            conn: The acknowledger's connection.
            batch: The batch to apply.
            ended: Ids of ``MoveTo`` requests whose delivery ended meanwhile (not moved).
        """
        moves, skipped = self._moves(conn, batch, ended)
        if self.fenced:
            return self._apply_fenced(conn, batch, moves), skipped
        if batch.delete and not (batch.archive or batch.set_vt or moves):
            # One statement is atomic on its own: no BEGIN/COMMIT round trips.
            deleted = _sql.id_array(batch.delete)
            conn.execute(self._delete_sql, (deleted,), prepare=True).fetchall()
            return set(), skipped
        q = self.queue
        # BEGIN and COMMIT ride in the pipeline: one round trip for the whole batch (a
        # move's send and delete stay in that one transaction).
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            if batch.delete:
                cur.execute(self._delete_sql, (_sql.id_array(batch.delete),), prepare=True)
            if batch.archive:
                cur.execute(_sql.ARCHIVE_MANY, (q, _sql.id_array(batch.archive)), prepare=True)
            for vt, ids in batch.set_vt.items():
                cur.execute(_sql.SET_VT_MANY, (q, _sql.id_array(ids), vt), prepare=True)
            for dest, pairs in moves.items():
                self._move(cur, dest, pairs)
        return set(), skipped

    def _moves(
        self, conn: psycopg.Connection[Any], batch: Batch, ended: Collection[int]
    ) -> tuple[_Moves, set[int]]:
        """The moves of a batch with their messages, and the ids that cannot move.

        A destination queue that does not exist fails only its own moves (logged), not
        the rest of the batch.
        """
        if not batch.move:
            return {}, set()
        rows = conn.execute(_sql.QUEUES_EXISTING, (list(batch.move),)).fetchall()
        existing = {r[0] for r in rows}
        moves: _Moves = {}
        skipped: set[int] = set()
        for dest, items in batch.move.items():
            for p in items:
                m = p.message
                if m is None or p.msg_id in ended or dest not in existing:
                    skipped.add(p.msg_id)
                else:
                    moves.setdefault(dest, []).append((p, m))
            if dest not in existing:
                _log.error(
                    "MoveTo(%r): queue %r does not exist; %d messages of queue %r stay and "
                    "reappear after their visibility timeout",
                    dest,
                    dest,
                    len(items),
                    self.queue,
                )
        return moves, skipped

    def _move(
        self, cur: psycopg.Cursor[Any], dest: str, pairs: list[tuple[Pending, Message]]
    ) -> None:
        """Copy messages to ``dest`` and delete exactly those here (caller's transaction)."""
        q = self.queue
        bodies, heads = [], []
        for p, m in pairs:
            body, headers = moved_json(m, q, p.reason)
            bodies.append(body)
            heads.append(headers)
        if bodies:
            cur.execute(_sql.SEND_BATCH, (dest, bodies, heads, 0))
            cur.execute(self._delete_sql, (_sql.id_array([p.msg_id for p, _m in pairs]),))

    def _apply_fenced(self, conn: psycopg.Connection[Any], batch: Batch, moves: _Moves) -> set[int]:
        """Acks that only touch a message still holding the read_ct this consumer saw."""
        q = self.queue
        table, archive = _sql.queue_table(q), _sql.queue_table(q, "a")
        movable = {p.msg_id: (dest, p, m) for dest, pairs in moves.items() for p, m in pairs}
        lost: set[int] = set()
        with conn.transaction(), conn.cursor() as cur:
            for p in batch.items:
                action = p.action
                name = action.name
                if name == "nothing" or (name == "move" and p.msg_id not in movable):
                    continue  # no SQL, or skipped: the destination is missing
                key = (p.msg_id, p.read_ct)
                if name == "move":
                    locked = cur.execute(sql.SQL(_FENCED_LOCK).format(table=table), key)
                    if locked.fetchone() is None:
                        lost.add(p.msg_id)
                    else:
                        dest, pending, message = movable[p.msg_id]
                        self._move(cur, dest, [(pending, message)])
                    continue
                params: tuple[int, ...] = key
                if name == "delete":
                    stmt = sql.SQL(_FENCED_DELETE).format(table=table)
                elif name == "archive":
                    stmt = sql.SQL(_FENCED_ARCHIVE).format(table=table, archive=archive)
                else:
                    assert action.name == "set_vt"
                    stmt = sql.SQL(_FENCED_SET_VT).format(table=table)
                    params = (action.vt, *key)
                if cur.execute(stmt, params).fetchone() is None:
                    lost.add(p.msg_id)
        return lost
