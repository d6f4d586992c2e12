"""The acknowledger loop of one consumer: flush batched settle requests, beat leases.

It runs on the consumer's acknowledger thread with a connection of its own, so reads and
acks overlap. Under the consumer's lock it asks the core
(:class:`~rx_pgmq._core._ackbatch.AckBatcher`: is a flush due?;
:class:`~rx_pgmq._core._ledger.Ledger`:
which leases need extending?), releases the lock for the SQL
(:class:`~rx_pgmq._pg._consumer_sql.BatchWriter`), then tells the ledger what ended and
reports each request's status.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import psycopg

from rx_pgmq._core._ackbatch import Batch, Pending
from rx_pgmq._core._backoff import Backoff
from rx_pgmq._core._settle import resolve
from rx_pgmq._pg import _sql
from rx_pgmq._pg._consumer_sql import BatchWriter
from rx_pgmq._pg._dberrors import first_line, is_transient, translate
from rx_pgmq._pg._link import Link
from rx_pgmq._values import _telemetry
from rx_pgmq.actions import AckStatus

if TYPE_CHECKING:
    from rx_pgmq._consumer._facade import Consumer

__all__ = ["Acker"]

_log = logging.getLogger("rx_pgmq")


class Acker:
    """The acknowledger loop of ``consumer`` (one per subscription)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = c = consumer
        cfg = c.config
        self._queue, self._vt = cfg.queue, cfg.vt
        self._cond, self._stats, self._ledger, self._batcher = c.cond, c.stats, c.ledger, c.batcher
        self.link = Link(cfg.conninfo, "acker", cfg.connect_timeout)
        self._writer = BatchWriter(cfg.queue, fenced=cfg.fenced)
        self._fenced = cfg.fenced
        self._heartbeat = cfg.vt / 2.0 if cfg.extend_visibility else None
        self.flushing = False  # a batch was taken and is not finished yet

    def run(self) -> None:
        """Flush and beat until the consumer's shutdown stops the ledger."""
        try:
            self._loop()
        except Exception as exc:  # never die in silence: end the stream with it (#14 item 7)
            self._failed(exc)
        finally:
            # Only this thread uses the acknowledger's connection, so only it closes it
            # (shutdown may stop waiting for it after close_timeout while a flush runs).
            self.link.close()

    def _failed(self, exc: Exception) -> None:
        """An unexpected error stopped the acknowledger: report it to the subscriber.

        Nothing flushes any more, so shutdown need not wait: queued requests are reported
        ``unacked``, later ones too, and every unsettled message is released at shutdown.
        """
        _log.error("acknowledger of queue %r failed: %r", self._queue, exc)
        leftovers: list[Pending] = []
        with self._cond:
            self._ledger.flushes_abandoned()
            self.flushing = False
            try:
                if len(self._batcher):
                    rest = self._batcher.take()
                    leftovers = [*rest.items, *rest.duplicates]
            except Exception:  # the queued requests themselves are broken: nothing to report
                pass
            self._cond.notify_all()
        resolve([(p.token, "unacked") for p in leftovers])
        self._consumer.fail(exc)

    def _loop(self) -> None:
        # Retried while the leases last (see _retry): short steps, so that the first ack
        # after an outage commits soon after the server is back (issue 14 item 10).
        backoff = Backoff(initial=0.05, maximum=0.25)
        heartbeat = self._heartbeat
        next_beat = time.monotonic() + heartbeat if heartbeat else None
        while True:
            with self._cond:
                now = self._wait(next_beat)
                if now is None:
                    return
                batch = self._batcher.take() if len(self._batcher) else None
                self.flushing = batch is not None
                beat_ids: list[int] = []
                if batch is None and next_beat is not None and heartbeat is not None:
                    beat_ids = self._ledger.lease_expiring(now - heartbeat)
                    if beat_ids:
                        self._ledger.extension_started(beat_ids)
                    next_beat = now + heartbeat / 2.0
            if batch is not None:
                self._flush(batch, backoff)
            elif beat_ids:
                self._extend(beat_ids)

    def _wait(self, next_beat: float | None) -> float | None:
        """Wait (lock held) until a flush or a heartbeat is due; return the time, or None
        once the ledger stopped."""
        consumer, batcher, demand = self._consumer, self._batcher, self._consumer.demand
        while not self._ledger.stopped:
            now = time.monotonic()
            if len(batcher) and batcher.due(now, demand.starved, consumer.closing):
                return now
            if next_beat is not None and now >= next_beat:
                return now
            deadlines = [d for d in (batcher.deadline(), next_beat) if d]
            self._cond.wait(max(0.0, min(deadlines) - now) if deadlines else None)
        return None

    def _extend(self, ids: list[int]) -> None:
        """Extend the leases of ``ids``; record the ``vt`` PostgreSQL gave each (the fence
        of ``process_in_transaction`` compares it), and wake a fence waiting for it."""
        try:
            conn = self.link.get()
            params = (self._queue, _sql.id_array(ids), self._vt)
            rows = conn.execute(_sql.SET_VT_MANY, params).fetchall()
        except psycopg.Error as exc:
            self.link.drop()
            with self._cond:
                if self._ledger.extension_failed():
                    self._cond.notify_all()
            _log.warning("visibility heartbeat of queue %r failed: %s", self._queue, exc)
            return
        with self._cond:
            vts = ((r[0], r[1], r[4]) for r in rows)  # msg_id, read_ct, vt (MESSAGE_COLUMNS)
            if self._ledger.lease_extended(ids, time.monotonic(), vts):
                self._cond.notify_all()
        self._stats.add("extended", len(ids))

    def _flush(self, batch: Batch, backoff: Backoff) -> None:
        try:
            hooks = _telemetry.hooks
            if hooks is not None and batch.sql_needed:
                lost, skipped = hooks.settle(self._queue, batch.items, partial(self._apply, batch))
            else:
                lost, skipped = self._apply(batch) if batch.sql_needed else (set(), set())
        except psycopg.Error as exc:
            self.link.drop()
            if is_transient(exc) and not self._ledger.stopped:
                self._retry(batch, backoff, exc)
                return
            _log.error(
                "could not acknowledge %d messages of queue %r (%s); they stay unsettled "
                "and reappear after their visibility timeout",
                len(batch.items),
                self._queue,
                translate(exc, self._queue),  # named errors carry a hint
            )
            backoff.reset()
            self._finish(batch, lost=set(), failed={p.msg_id for p in batch.items})
            return
        backoff.reset()
        self._stats.add("ack_flushes")
        self._finish(batch, lost=lost, failed=skipped)

    def _retry(self, batch: Batch, backoff: Backoff, exc: psycopg.Error) -> None:
        """A flush failed for a reason that passes (an outage): retry it after a delay.

        A request is retried while its message's lease can still be valid at the next
        attempt (read, or last extended, less than ``visibility_timeout`` before it);
        after that another reader may hold the message, so an unfenced ack is given up
        and reported ``unacked``. A fenced ack is always retried: the fence decides when
        it commits (``lost_lease`` if the message was read again meanwhile).
        """
        delay = backoff.next_delay()
        assert delay is not None  # no max_attempts
        self._stats.add("reconnects")
        attempt = backoff.attempts  # log at 1, 2, 4, 8, ... failures in a row
        (_log.warning if attempt & (attempt - 1) == 0 else _log.debug)(
            "ack flush for queue %r failed (%s); retrying in %.2fs (attempt %d)",
            self._queue,
            first_line(exc),
            delay,
            attempt,
        )
        with self._cond:
            now = time.monotonic()
            retry_at = now + delay
            requests = [*batch.items, *batch.duplicates]
            expired = [] if self._fenced else self._ledger.outlived(requests, retry_at - self._vt)
            if expired:
                gone = {id(p) for p in expired}
                batch = Batch.of([p for p in requests if id(p) not in gone])
                self._ledger.settled(expired)  # no longer held by this consumer
                self._stats.add("ack_failures", len(expired))
                self._consumer.reader.on_demand()
            self._batcher.requeue(batch, now, retry_at=retry_at)
            self.flushing = False
            self._cond.notify_all()
        if expired:
            _log.error(
                "could not acknowledge %d messages of queue %r before their visibility "
                "timeout ended (%s); they stay unsettled and reappear",
                len(expired),
                self._queue,
                first_line(exc),
            )
            resolve([(p.token, "unacked") for p in expired])

    def _apply(self, batch: Batch) -> tuple[set[int], set[int]]:
        """Apply ``batch`` in one transaction; return (lost-lease ids, ids not applied)."""
        conn = self.link.get()
        ended: set[int] = set()
        if batch.move:
            with self._cond:  # a delivery no longer held (closed meanwhile) does not move
                ended = {
                    p.msg_id
                    for items in batch.move.values()
                    for p in items
                    if (p.msg_id, p.read_ct) not in self._ledger
                }
        return self._writer.apply(conn, batch, ended)

    def _finish(self, batch: Batch, *, lost: set[int], failed: set[int]) -> None:
        """Record a flushed batch: credit back, counters, then report each request's status.

        ``failed`` ids were not applied (flush failed, or a move had nowhere to go): they
        stay hidden until their timeout and are reported ``unacked``. Their credit returns
        too, since this consumer no longer holds them.
        """
        results: list[tuple[object, AckStatus]] = []
        with self._cond:
            self._ledger.settled(batch.items)
            counts: dict[str, int] = {}  # settled per action name, counted once per batch
            failures = 0
            for p in batch.items:
                msg_id = p.msg_id
                if failed and msg_id in failed:
                    status: AckStatus = "unacked"
                    failures += 1
                elif lost and msg_id in lost:
                    status = "lost_lease"
                    counts["lost_lease"] = counts.get("lost_lease", 0) + 1
                else:
                    status = "acked"
                    action_name = p.action.name
                    counts[action_name] = counts.get(action_name, 0) + 1
                results.append((p.token, status))
            for name, k in counts.items():
                self._stats.settled(name, k)
            if failures:
                self._stats.add("ack_failures", failures)
            for p in batch.duplicates:
                # Another delivery of a message in this batch (one SQL action per msg_id
                # and flush): it goes into the next flush, if there is one.
                if self._ledger.stopped:
                    results.append((p.token, "unacked"))
                else:
                    self._batcher.add(p, time.monotonic())
            self.flushing = False
            self._consumer.reader.on_demand()
        resolve(results)
