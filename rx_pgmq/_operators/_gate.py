"""The bookkeeping ``process``'s pool and loop engines share: slots, keys, the one terminal.

:class:`Gate` holds, per subscription, which messages run and which wait (a
:class:`~rx_pgmq._operators._keyed.KeyedQueue`: at most ``limit`` at once, one per key, each
key in read order), emits outcomes one at a time and sends the single terminal event. The
engines (``_process`` for threads and schedulers, ``_process_loop`` for an event loop) only
start the messages it hands them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._operators._ack import settle_group
from rx_pgmq._operators._keyed import UNKEYED, KeyedQueue
from rx_pgmq._operators._seen import SeenConsumers
from rx_pgmq._operators._serial import Serial
from rx_pgmq._values._fatal import propagate
from rx_pgmq._values._outcome import NotAnOutcome, Outcome, success_of
from rx_pgmq.message import Message

__all__ = ["Gate", "KeyFn", "Task", "end_fatal", "not_a_message", "outcome_of", "release"]

_log = logging.getLogger("rx_pgmq")

KeyFn = Callable[[Message], Hashable]
"""``Message -> hashable``: messages with equal keys are handled one at a time, in order."""

Task = tuple[Hashable, Message]
"""A message to handle and its key (``UNKEYED`` without a key function)."""


def outcome_of(message: Message, result: Any) -> Outcome:
    """The outcome a handler's ``result`` gives ``message`` (an ``Outcome`` is kept)."""
    if isinstance(result, Outcome):
        return result
    return success_of(message, result)  # message: checked by the caller


def release(message: Message) -> None:
    """Make a message visible again; its handler will not finish (best effort)."""
    if message.acknowledgeable:
        try:
            message.release()
        except Exception as exc:  # the consumer is gone: it released the message itself
            _log.debug("could not release message %s: %s", message.msg_id, exc)


def end_fatal(on_error: Callable[[Any], object], message: Message, exc: BaseException) -> None:
    """A handler raised a fatal exception: release its message, end the stream with it,
    then let the exception do what Python does with it
    (:func:`rx_pgmq._values._fatal.propagate`)."""
    release(message)
    try:
        on_error(exc)  # the original, whatever its class
    except BaseException as raised:  # RxPY's default on_error raises it again
        if raised is not exc:
            _log.error("on_error of a subscriber raised: %r", raised)
    propagate(exc)


def not_a_message(value: object) -> NotAnOutcome:
    return NotAnOutcome(
        f"process expects rx_pgmq.Message values, got {type(value).__name__}: {value!r:.80}; "
        "apply it to a read_queue(...) source"
    )


class Gate:
    """Per-subscription bookkeeping: which calls run, who waits for a slot (or for its
    key), and the one terminal event.

    Args:
        observer: Where outcomes and the terminal event go.
        limit: Most calls running at once.
        key: The key function, or ``None`` (every message may run beside any other).
    """

    def __init__(self, observer: abc.ObserverBase[Outcome], limit: int, key: KeyFn | None) -> None:
        self.observer = observer
        self.key = key
        self.lock = threading.Lock()  # guards the fields below; never held while calling out
        self.serial: Serial[Outcome] = Serial(observer)  # one call at a time, no lock held
        self.seen = SeenConsumers()
        self.queue: KeyedQueue[Task] = KeyedQueue(limit)
        self.upstream_done = False
        self.upstream_error: BaseException | None = None  # sent once the calls finished
        self.stopped = False  # a terminal event was sent, or the subscription was disposed
        self.on_stop: Callable[[], None] = lambda: None

    def task_of(self, message: object) -> Task | None:
        """``(key, message)``, or ``None`` when the stream ended (``message`` is not a
        ``Message``) or the message already failed (its ``key`` raised)."""
        if not isinstance(message, Message):
            self.terminal(not_a_message(message))
            return None
        self.seen.note(message)
        if self.key is None:
            return UNKEYED, message
        try:
            k = self.key(message)
            hash(k)
        except Exception as exc:  # this message alone fails
            self.emit_outcome(Outcome(message, False, error=exc))
            return None
        return k, message

    def admit_locked(self, task: Task) -> bool:
        """Whether ``task`` may start now (else it waits, or the gate is stopped); call
        with :attr:`lock` held."""
        return not self.stopped and self.queue.submit(task[0], task) is not None

    def emit_outcome(self, outcome: Outcome) -> None:
        """Deliver ``outcome`` (no lock held; a subscriber raising ends the stream)."""
        self.emit_outcomes([outcome])

    def emit_outcomes(self, outcomes: list[Outcome]) -> None:
        """Deliver ``outcomes`` in one hand-over to the subscriber (no lock held; a
        subscriber raising ends the stream); the settle requests the ack operators make
        meanwhile are sent together, one call per consumer."""
        if self.stopped:
            return
        serial = self.serial
        try:
            if len(outcomes) == 1:
                serial.on_next(outcomes[0])
            else:
                with settle_group():
                    serial.on_next_many(outcomes)
        finally:
            if serial.stopped:  # the subscriber raised: the stream fails
                self.seen.stream_failed()
                self.stop()

    def done(self, key: Hashable, outcome: Outcome | None) -> list[Task]:
        """Emit ``outcome`` (if any) and free the slot and ``key``; return what starts next."""
        if outcome is not None:
            self.emit_outcome(outcome)
        return self._free((key,))

    def done_many(self, keys: list[Hashable], outcomes: list[Outcome]) -> list[Task]:
        """:meth:`done` for several finished calls: their outcomes in one hand-over
        (:meth:`emit_outcomes`), then their slots and keys freed under one lock."""
        if outcomes:
            self.emit_outcomes(outcomes)
        return self._free(keys)

    def _free(self, keys: Iterable[Hashable]) -> list[Task]:
        """Free the slots and ``keys`` of finished calls; send the terminal event if that
        was the last call after upstream ended; return what starts next."""
        with self.lock:
            queue_done = self.queue.done  # empty once stopped: the queue was cleared
            following = [task for k in keys for task in queue_done(k)]
            finished = self.upstream_done and self.queue.idle
        if finished:
            self.terminal(self.upstream_error)
        return following

    def fatal(self, message: Message, exc: BaseException) -> None:
        """A handler raised ``KeyboardInterrupt``/``SystemExit``/``GeneratorExit``."""
        if not self.stop():
            return
        self.seen.stream_failed()
        end_fatal(self.serial.terminal, message, exc)  # on the main thread: raises exc again

    def completed(self) -> None:
        self.upstream_ended(None)

    def upstream_ended(self, error: BaseException | None) -> None:
        """Upstream completed or failed: the calls it handed over finish first, then the
        terminal event follows. An error too: a ``timeout`` upstream must not drop the
        outcomes of handlers still running, so their messages are acked, not released and
        processed again (#14 item 2)."""
        with self.lock:
            self.upstream_done = True
            self.upstream_error = error
            finished = self.queue.idle
        if finished:
            self.terminal(error)

    def terminal(self, error: BaseException | None) -> None:
        if error is not None:
            self.seen.stream_failed()
        if self.stop():
            self.serial.terminal(error)  # no lock held: other threads go on meanwhile

    def stop(self) -> bool:
        """Stop admitting and shut the engine down; whether this call stopped it."""
        with self.lock:
            if self.stopped:
                return False
            self.stopped = True
            self.queue.clear()
        self.on_stop()
        return True

    def dispose(self) -> None:
        self.serial.dispose()
        with self.lock:
            self.stopped = True
            self.queue.clear()
        self.on_stop()

    def subscribe(
        self, source: Observable[Message], start: Callable[[Task], None], scheduler: Any
    ) -> abc.DisposableBase:
        """Subscribe to ``source``, starting each message the gate admits with ``start``."""

        def on_next(message: Message) -> None:
            task = self.task_of(message)
            if task is None:
                return
            with self.lock:
                admitted = self.admit_locked(task)
            if admitted:
                start(task)

        subscription = source.subscribe(
            on_next, self.upstream_ended, self.completed, scheduler=scheduler
        )
        return CompositeDisposable(subscription, Disposable(self.dispose))
