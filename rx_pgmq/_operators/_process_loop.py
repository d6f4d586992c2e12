"""``process``'s event-loop engine: handlers run on an event loop, up to ``limit`` at once.

Used for ``async def`` handlers, and for any handler when the scheduler is an
``AsyncIOThreadSafeScheduler``. A :class:`~rx_pgmq._operators._gate.Gate` decides what runs;
this module only hands messages to the loop (one wake-up per burst) and runs them on worker
tasks: a worker takes admitted messages one after another from a queue on the loop, so a
burst of messages costs a few tasks, not one task per message (a handler that finishes
without suspending then costs one ``await``, not a task's loop steps).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._operators._gate import Gate, KeyFn, Task, outcome_of, release
from rx_pgmq._values._loop import LoopThread
from rx_pgmq._values._outcome import Outcome
from rx_pgmq.message import Message

__all__ = ["on_loop"]


def on_loop(
    source: Observable[Message],
    fn: Callable[[Message], Any],
    limit: int,
    given: asyncio.AbstractEventLoop | None,
    key: KeyFn | None,
) -> Observable[Outcome]:
    """Run ``fn`` per message on worker tasks of ``given`` (or of a loop thread the
    subscription owns and closes), at most ``limit`` at once, one per key."""

    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        gate = Gate(observer, limit, key)
        own = LoopThread("rx_pgmq-process-loop") if given is None else None
        loop = given if given is not None else own.loop  # type: ignore[union-attr]
        # On the loop only: admitted messages no worker took yet, the worker tasks, and how
        # many workers run a handler now (the others are about to take from ``ready``).
        ready: deque[Task] = deque()
        workers: set[asyncio.Task[None]] = set()
        busy = 0
        starting: list[Task] = []  # admitted on any thread, waiting for the loop (gate.lock)
        kicked = False  # a kick is scheduled on the loop and has not run yet

        async def handle(message: Message) -> Outcome:
            if message.decode_error is not None:  # fails without calling fn (#14 item 7)
                return Outcome(message, False, error=message.decode_error)
            try:
                result = fn(message)
                if getattr(type(result), "__await__", None) is not None:
                    result = await result
                return outcome_of(message, result)
            except Exception as exc:
                return Outcome(message, False, error=exc)

        async def work() -> None:  # a worker: admitted messages, one after another
            nonlocal busy
            try:
                while ready:
                    k, message = ready.popleft()
                    busy += 1
                    try:
                        outcome = await handle(message)
                    except asyncio.CancelledError:  # a dispose: not a failure
                        release(message)
                        gate.done(k, None)  # starts nothing: the gate stopped
                        raise
                    except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
                        gate.fatal(message, exc)  # re-raised on the main thread (asyncio stops)
                        return
                    finally:
                        busy -= 1
                    following = gate.done(k, outcome)
                    if following:
                        ready.extend(following)
                        hire()
            finally:
                workers.discard(asyncio.current_task())

        def hire() -> None:  # on the loop: a worker for each waiting message none will take
            idle = len(workers) - busy
            for _ in range(min(len(ready) - idle, limit - len(workers))):
                workers.add(loop.create_task(work()))

        def kick() -> None:  # on the loop: hand over what on_next admitted
            nonlocal kicked
            with gate.lock:
                batch = starting.copy()
                starting.clear()
                kicked = False
                stopped = gate.stopped
            if stopped:
                for task in batch:
                    release(task[1])
                return
            ready.extend(batch)
            hire()

        def on_next(message: Message) -> None:  # any thread: one wake-up for a burst
            nonlocal kicked
            task = gate.task_of(message)
            if task is None:
                return
            with gate.lock:  # admission and the hand-over to the loop under one lock
                if not gate.admit_locked(task):
                    return
                starting.append(task)
                wake, kicked = not kicked, True
            if wake:
                try:
                    loop.call_soon_threadsafe(kick)
                except RuntimeError:  # the loop is closed: the consumer releases it
                    return

        def cancel_all() -> None:  # on the loop: what waits is released, what runs cancelled
            while ready:
                release(ready.popleft()[1])
            for t in list(workers):
                t.cancel()

        def stop() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing runs
                loop.call_soon_threadsafe(cancel_all)
            if own is not None:
                own.close()  # after cancel_all; cancels every task of its loop

        gate.on_stop = stop
        subscription = source.subscribe(
            on_next, gate.upstream_ended, gate.completed, scheduler=scheduler
        )
        return CompositeDisposable(subscription, Disposable(gate.dispose))

    return Observable(subscribe)
