"""``process``'s event-loop engine: each message's handler runs as a task on an event loop.

Used for ``async def`` handlers, and for any handler when the scheduler is an
``AsyncIOThreadSafeScheduler``. A :class:`~rx_pgmq._operators._gate.Gate` decides what runs;
this module only hands messages to the loop (one wake-up per burst) and runs their tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Run ``fn`` as a task per message on ``given`` (or on a loop thread the subscription
    owns and closes), at most ``limit`` at once, one per key."""

    def subscribe(
        observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        gate = Gate(observer, limit, key)
        own = LoopThread("rx_pgmq-process-loop") if given is None else None
        loop = given if given is not None else own.loop  # type: ignore[union-attr]
        tasks: set[asyncio.Task[None]] = set()  # touched on the loop only
        starting: list[Task] = []  # admitted, waiting for the loop to create its task
        kicked = False  # a kick is scheduled on the loop and has not run yet

        async def run(task: Task) -> None:  # one asyncio task per message, on the loop
            # The task reports its own end (no done-callback: one loop step less).
            k, message = task
            try:
                if message.decode_error is not None:  # fails without calling fn (#14 item 7)
                    outcome = Outcome(message, False, error=message.decode_error)
                else:
                    result = fn(message)
                    if getattr(type(result), "__await__", None) is not None:
                        result = await result
                    outcome = outcome_of(message, result)
            except Exception as exc:
                outcome = Outcome(message, False, error=exc)
            except asyncio.CancelledError:
                release(message)
                for following in gate.done(k, None):  # none once the gate stopped (a dispose)
                    spawn(following)
                raise
            except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit
                gate.fatal(message, exc)  # re-raised on the main thread (asyncio stops)
                return
            finally:
                tasks.discard(asyncio.current_task())
            for following in gate.done(k, outcome):
                spawn(following)

        def spawn(task: Task) -> None:  # on the loop
            tasks.add(loop.create_task(run(task)))

        def kick() -> None:  # on the loop: start what on_next admitted
            nonlocal kicked
            with gate.lock:
                batch = starting.copy()
                starting.clear()
                kicked = False
                stopped = gate.stopped
            for task in batch:
                if stopped:
                    release(task[1])
                else:
                    spawn(task)

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

        def cancel_all() -> None:  # on the loop
            for t in list(tasks):
                t.cancel()

        def stop() -> None:
            if own is not None:
                own.close()  # cancels every task of its loop
                return
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nothing runs
                loop.call_soon_threadsafe(cancel_all)

        gate.on_stop = stop
        subscription = source.subscribe(
            on_next, gate.upstream_ended, gate.completed, scheduler=scheduler
        )
        return CompositeDisposable(subscription, Disposable(gate.dispose))

    return Observable(subscribe)
