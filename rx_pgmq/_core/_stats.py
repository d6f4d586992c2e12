"""Counters of a consumer, shown by notebooks and the CLI."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ConsumerStats", "StatsRecorder"]


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """A snapshot of a consumer's counters (or of all consumers of one source).

    Attributes:
        reads: Read statements issued.
        empty_reads: Reads that returned nothing.
        messages: Messages emitted.
        in_flight: Messages emitted and not yet settled, now.
        notifications: Insert notifications received.
        reconnects: Reconnections after a connection failure (reader, acker, listener).
        settled: Messages settled, by action name (``delete``, ``archive``, ``nothing``,
            ``set_vt``, ``move``, ``release``, ``ignored``).
        ack_flushes: Ack batches committed.
        ack_failures: Messages whose ack could not be applied.
        extended: Visibility timeouts extended by the heartbeat.
        consumers: Subscriptions counted.
        held_rereads: Messages a read returned with the ``read_ct`` of a delivery the
            consumer still held, because a server crash forgot the earlier read (see
            ``ReadOptions.durable_reads``); not emitted a second time.
        dropped: Messages the pipeline dropped without settling them (no reference left),
            released by the consumer (``set_vt`` 0); see ``pgops.skip``.
    """

    reads: int = 0
    empty_reads: int = 0
    messages: int = 0
    in_flight: int = 0
    notifications: int = 0
    reconnects: int = 0
    settled: dict[str, int] = field(default_factory=dict)
    ack_flushes: int = 0
    ack_failures: int = 0
    extended: int = 0
    consumers: int = 0
    held_rereads: int = 0
    dropped: int = 0

    @property
    def settled_total(self) -> int:
        """All settled messages, whatever the action."""
        return sum(self.settled.values())


class StatsRecorder:
    """Thread-safe mutable counters behind :class:`ConsumerStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._settled: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (a ConsumerStats field)."""
        with self._lock:
            self._counts[name] += n

    def settled(self, action: str, n: int = 1) -> None:
        """Count ``n`` messages settled with ``action``."""
        with self._lock:
            self._settled[action] += n

    def snapshot(self, in_flight: int) -> ConsumerStats:
        """The counters now, with ``in_flight`` read from the live consumers' demand."""
        with self._lock:
            c = self._counts
            return ConsumerStats(
                reads=c["reads"],
                empty_reads=c["empty_reads"],
                messages=c["messages"],
                in_flight=in_flight,
                notifications=c["notifications"],
                reconnects=c["reconnects"],
                settled=dict(self._settled),
                ack_flushes=c["ack_flushes"],
                ack_failures=c["ack_failures"],
                extended=c["extended"],
                consumers=c["consumers"],
                held_rereads=c["held_rereads"],
                dropped=c["dropped"],
            )
