"""``read_queue``: a PGMQ queue as an Observable of messages."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from psycopg_pool import ConnectionPool
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._consumer._facade import Config, Consumer, wait_closing
from rx_pgmq._consumer._iterate import SourceBase
from rx_pgmq._core._stats import ConsumerStats, StatsRecorder
from rx_pgmq._pg._listener import Listener
from rx_pgmq._values._bodytype import text_decoder
from rx_pgmq._values._loop import check_scheduler
from rx_pgmq._values._options import ReadOptions
from rx_pgmq._values._validate import (
    MAX_INT4,
    check_positive_int,
    check_queue_name,
    seconds,
    whole_seconds,
)
from rx_pgmq.errors import InvalidArgument
from rx_pgmq.message import BodyT, Message

__all__ = ["ControlledSource", "QueueSource", "check_listener", "read_queue"]


def read_queue(
    conninfo_or_pool: str | ConnectionPool,
    queue: str,
    *,
    visibility_timeout: int | timedelta,
    read_interval: float | timedelta | None = 5.0,
    listener: Listener | bool | None = None,
    batch_size: int = 10,
    max_in_flight: int | None = None,
    read_options: ReadOptions | None = None,
    scheduler: abc.SchedulerBase | None = None,
    on_dispose: Literal["release", "keep"] = "release",
    extend_visibility: bool = False,
    fenced: bool = False,
    ack_batch_size: int | None = None,
    ack_max_age: float | timedelta = 0.005,
    close_timeout: float | timedelta = 5.0,
    connect_timeout: float | timedelta = 30.0,
    body_type: type[BodyT] | None = None,
) -> QueueSource[BodyT]:
    """A PGMQ queue as an ``Observable[Message]``; each subscription is a consumer.

    Subscribing starts a competing consumer that reads only as many messages as it has
    room for: at most ``max_in_flight`` messages are emitted and not yet settled, and each
    read asks for ``min(batch_size, room)``. Settling a message (the ack operators of
    :mod:`rx_pgmq.operators` do it, or ``message.settle()``) gives its room back.

    Modes (EctoPGMQ.Producer's): poll (``listener=None``): read when demand arrives and,
    while it is unmet, every ``read_interval``; notification (a listener and
    ``read_interval=None``): read on an insert notification or new demand, drain while
    reads come back full; hybrid (both, recommended).

    Disposing stops reading at once and returns; the subscription then closes in the
    background: messages still held downstream may settle and pending acks flush (up to
    ``close_timeout``), then unsettled messages are released (``set_vt`` 0) unless
    ``on_dispose="keep"``. :meth:`QueueSource.wait_closed` waits for that. A message the
    pipeline drops unsettled (``ops.filter``, ...) is released once nothing references it
    (one WARNING per subscription; ``operators.skip`` settles instead).

    A plain read (no pop, conditional, long poll or FIFO option) runs PGMQ's read query
    inline as one prepared statement. Reads commit without waiting for the WAL flush unless
    ``ReadOptions(durable_reads=True)``: a server crash may forget the last reads, whose
    messages are then read again (never lost; a message this consumer still holds is not
    emitted twice). Acks always wait for the flush (the server's ``synchronous_commit``).

    Args:
        conninfo_or_pool: A conninfo string/URI or a ``psycopg_pool.ConnectionPool``.
        queue: The queue to consume.
        visibility_timeout: How long a read message stays hidden (int seconds or
            timedelta, rounded up); required.
        read_interval: Seconds (or timedelta) between polls while demand is unmet;
            ``None`` disables polling (needs a listener). Durations (this one,
            ``ack_max_age``, ``close_timeout``) are at most 1,000,000 seconds.
        listener: ``None``, a shared :class:`rx_pgmq.Listener`, or ``True``: the reader
            connection LISTENs itself and the reader thread wakes on a notification
            directly (no third connection, no listener thread; a pooled reader connection
            UNLISTENs before it goes back).
        batch_size: Most messages per read (at most 2**31 - 1).
        max_in_flight: Most messages emitted and not yet settled; default
            ``max(100, 4 * batch_size)``, at most 2**31 - 1. A message's room returns
            only once its ack committed, so a window of one batch cannot read the next
            batch while the last one is processed and acked: four batches let a read
            overlap the handler and an ack flush, whatever ``batch_size`` a user picks.
        read_options: Delete-on-read, conditional, long poll, FIFO reads.
        scheduler: Deliver messages on this scheduler instead of the reader thread (for
            asyncio, an ``AsyncIOThreadSafeScheduler``: deliveries then land on its loop).
        on_dispose: ``"release"`` unsettled messages on dispose, or ``"keep"`` them hidden
            until their timeout.
        extend_visibility: Extend the timeout of messages still in flight at ~vt/2
            (one batched ``set_vt``), so slow work is not redelivered.
        fenced: Ack only messages whose ``read_ct`` is still the one read (a message whose
            lease passed to another reader is left alone and reported ``lost_lease``).
        ack_batch_size: Flush acks once this many are pending (default ``batch_size``).
        ack_max_age: Flush acks once the oldest pending is this old (seconds).
        close_timeout: Longest wait, when closing, for pending acks and for messages still
            held downstream to settle (seconds).
        connect_timeout: How long a subscription keeps trying to make its first connection
            when the server is unreachable (refused, starting up, ...) before it reports
            ``ConnectionLost`` to ``on_error`` (seconds, > 0). Errors no retry can fix
            (``AuthenticationFailed``, ``RoleNotFound``, ``DatabaseNotFound``,
            ``InvalidConninfo``) are reported at once. Once connected, outages are retried
            without end (capped backoff; ``stats.reconnects`` counts them).
        body_type: Decode each body into this dataclass, TypedDict, msgspec.Struct or
            pydantic model class: the source emits ``Message[body_type]`` (msgspec, when
            installed, decodes the JSON text straight into it). A body that does not fit
            is a per-message failure, not a stream error: the message arrives with
            ``body`` ``None`` and ``decode_error`` a :class:`~rx_pgmq.errors.BodyMismatch`,
            and ``operators.process`` fails it without calling the handler (default
            ``Archive()``). None keeps parsed JSON.

    Returns:
        A :class:`QueueSource` (an ``Observable[Message]`` with ``stats``).

    Raises:
        InvalidArgument: For a bad queue name, duration, size or combination, a
            scheduler that is not thread-safe (RxPY's plain ``AsyncIOScheduler``), or a
            ``body_type`` that is none of the four kinds or whose library is missing.

    Example:
        >>> source = read_queue(dsn, "orders", visibility_timeout=30)  # doctest: +SKIP
        >>> source.pipe(pgops.process(handle), pgops.ack()).subscribe(print)  # doctest: +SKIP
    """
    _check_conninfo(conninfo_or_pool)
    check_queue_name(queue)
    vt = whole_seconds(visibility_timeout, "visibility_timeout")
    if vt < 1:
        raise InvalidArgument("visibility_timeout", "must be at least 1 second for a consumer")
    interval = (
        None if read_interval is None else seconds(read_interval, "read_interval", allow_zero=False)
    )
    listener = check_listener(listener)
    options = _check_options(read_options)
    if interval is None and listener is None and options.long_poll is None:
        raise InvalidArgument(
            "read_interval",
            "is None (no polling) and there is no listener, so nothing would read after the "
            "queue runs empty; pass listener=True or a read_interval",
        )
    if on_dispose not in ("release", "keep"):
        raise InvalidArgument("on_dispose", f"must be 'release' or 'keep', got {on_dispose!r}")
    for flag, name in ((extend_visibility, "extend_visibility"), (fenced, "fenced")):
        if not isinstance(flag, bool):
            raise InvalidArgument(name, f"must be a bool, got {flag!r}")
    check_scheduler(scheduler)
    if body_type is not None:
        text_decoder(body_type)  # InvalidArgument now, not on subscribe
    config = Config(
        conninfo=conninfo_or_pool,
        queue=queue,
        vt=vt,
        read_interval=interval,
        listener=listener,
        batch_size=(size := check_positive_int(batch_size, "batch_size")),
        max_in_flight=check_positive_int(
            min(MAX_INT4, max(100, 4 * size)) if max_in_flight is None else max_in_flight,
            "max_in_flight",
        ),
        options=options,
        on_dispose=on_dispose,
        extend_visibility=extend_visibility,
        fenced=fenced,
        ack_batch_size=check_positive_int(
            ack_batch_size if ack_batch_size is not None else batch_size, "ack_batch_size"
        ),
        ack_max_age=seconds(ack_max_age, "ack_max_age"),
        close_timeout=seconds(close_timeout, "close_timeout"),
        connect_timeout=seconds(connect_timeout, "connect_timeout", allow_zero=False),
        body_type=body_type,
    )
    return QueueSource(config, scheduler)


def _check_conninfo(conninfo_or_pool: object) -> None:
    if isinstance(conninfo_or_pool, str):
        if not conninfo_or_pool.strip():
            raise InvalidArgument("conninfo_or_pool", "must be a non-empty conninfo string")
    elif not isinstance(conninfo_or_pool, ConnectionPool):
        raise InvalidArgument(
            "conninfo_or_pool",
            "must be a conninfo string or a psycopg_pool.ConnectionPool, got "
            f"{type(conninfo_or_pool).__name__}",
        )


def check_listener(listener: object) -> Listener | Literal[True] | None:
    """``listener`` as a ``Config`` holds it (``False`` means none).

    Raises:
        InvalidArgument: If it is not None, a bool or a :class:`rx_pgmq.Listener`.
    """
    if listener is None or listener is False:
        return None
    if listener is True or isinstance(listener, Listener):
        return listener
    raise InvalidArgument(
        "listener", f"must be None, True or an rx_pgmq.Listener, got {listener!r}"
    )


def _check_options(read_options: object) -> ReadOptions:
    options = read_options if read_options is not None else ReadOptions()
    if not isinstance(options, ReadOptions):
        raise InvalidArgument("read_options", f"must be a ReadOptions, got {read_options!r}")
    if options.long_poll is not None:
        check_positive_int(options.long_poll.max_seconds, "read_options.long_poll.max_seconds")
        check_positive_int(options.long_poll.interval_ms, "read_options.long_poll.interval_ms")
    return options


class QueueSource(SourceBase[Message[BodyT]]):
    """The Observable ``read_queue`` returns: each subscription is one consumer.

    Generic in its messages' body type: ``read_queue(..., body_type=T)`` returns a
    ``QueueSource[T]`` (an ``Observable[Message[T]]``).

    Backpressure operators (``rx_pgmq.operators.windowed``, ``stop_and_wait``,
    ``pausable``, ``controlled``) apply only to a ``QueueSource`` and return a new one.
    """

    def __init__(
        self,
        config: Config,
        scheduler: abc.SchedulerBase | None = None,
        pauser: Observable[bool] | None = None,
        start_paused: bool = False,
    ) -> None:
        super().__init__()
        self._config = config
        self._scheduler = scheduler
        self._pauser = pauser
        self._start_paused = start_paused
        self._lock = threading.Lock()
        self._consumers: list[Consumer] = []
        self._stats = StatsRecorder()
        # The live subscriptions of this source and of the sources derived from it
        # (``windowed`` etc.), shared: ``wait_closed`` on either waits for all of them.
        self._family: list[Consumer] = []

    @property
    def config(self) -> Config:
        """The consumer configuration (read-only)."""
        return self._config

    @property
    def queue(self) -> str:
        """The queue this source reads."""
        return self._config.queue

    @property
    def stats(self) -> ConsumerStats:
        """Counters over every subscription of this source (``in_flight`` is current)."""
        with self._lock:
            in_flight = sum(c.demand.in_flight for c in self._consumers)
        return self._stats.snapshot(in_flight)

    @property
    def consumers(self) -> list[Consumer]:
        """The live subscriptions (for tests and tools)."""
        with self._lock:
            return list(self._consumers)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until every subscription of this source that is closing has closed.

        ``dispose()`` (and a terminating operator such as ``take``) returns at once; the
        subscription then closes in the background: messages still held downstream may
        settle and pending acks flush for up to ``close_timeout``, the rest is released.
        Wait for that here, e.g. before checking the queue in a test. A program may also
        just end: a non-daemon thread keeps it alive until the close is done.

        Args:
            timeout: Most seconds to wait (``None``: no limit).

        Returns:
            True if no subscription is left closing (subscriptions still running are not
            waited for), False if ``timeout`` passed first. Subscriptions of the sources
            derived from this one (``windowed``, ``pausable``, ...) count too.

        Example:
            >>> subscription.dispose()  # doctest: +SKIP
            >>> source.wait_closed(10)  # doctest: +SKIP
            True
        """
        with self._lock:
            family = list(self._family)
        return wait_closing(family, timeout)

    def derive(self, **changes: Any) -> QueueSource[BodyT]:
        """A copy with other consumer settings (used by the backpressure operators)."""
        pauser = changes.pop("pauser", self._pauser)
        start_paused = changes.pop("start_paused", self._start_paused)
        cls = ControlledSource if changes.get("controlled") else type(self)
        derived = cls(replace(self._config, **changes), self._scheduler, pauser, start_paused)
        derived._family = self._family
        return derived

    def _forget(self, consumer: Consumer) -> None:
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)
            if consumer in self._family:
                self._family.remove(consumer)

    def _subscribe_direct(
        self,
        observer: abc.ObserverBase[Message],
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        consumer = Consumer(self._config, observer, self._stats, self._forget)
        with self._lock:
            self._consumers.append(consumer)
            self._family.append(consumer)
        self._on_new_consumer(consumer)
        disposables = CompositeDisposable()
        if self._pauser is not None:
            if self._start_paused:
                consumer.set_paused(True)
            disposables.add(
                self._pauser.subscribe(
                    on_next=lambda reading: consumer.set_paused(not reading),
                    on_error=consumer.fail,
                )
            )
        consumer.start()
        disposables.add(Disposable(consumer.dispose))
        return disposables

    def _on_new_consumer(self, consumer: Consumer) -> None:
        """Hook for subclasses (``ControlledSource`` hands out stored credit)."""


class ControlledSource(QueueSource[BodyT]):
    """A source that reads only what :meth:`request` asks for (``operators.controlled``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._banked = 0

    def request(self, n: int) -> None:
        """Read ``n`` more messages (in total): the oldest live subscription reads them.

        A subscription being disposed (or failing) gets none; credit it was given and did
        not use goes with it. With no live subscription the credit is kept for the next
        one.

        Raises:
            InvalidArgument: If ``n`` is not an int >= 1.
        """
        check_positive_int(n, "n")
        with self._lock:  # checked and banked at once: a new subscription takes the bank
            target = next((c for c in self._consumers if not c.closing), None)
            if target is None:
                self._banked += n
                return
        target.request(n)

    def _on_new_consumer(self, consumer: Consumer) -> None:
        with self._lock:
            banked, self._banked = self._banked, 0
        if banked:
            consumer.request(banked)
