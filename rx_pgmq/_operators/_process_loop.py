"""``process``'s event-loop engine: handlers run on an event loop, up to ``limit`` at once.

Used for ``async def`` handlers, and for any handler when the scheduler is an
``AsyncIOThreadSafeScheduler``. A :class:`~rx_pgmq._operators._gate.Gate` decides what runs;
this module only hands messages to the loop (one wake-up per burst) and runs them on worker
tasks. What it does per message is kept small, because an async no-op handler otherwise
costs more here than the whole sync pipeline:

- A worker takes admitted messages one after another and runs each handler's coroutine up
  to its first suspension itself (``send(None)``, what ``await`` does first, inside the
  worker's task): a handler that finishes without suspending costs no task, no loop step
  and no extra coroutine. Only when one suspends does the worker hire others for the
  messages behind it (up to ``limit``), then goes on awaiting it (:func:`_resume`).
- The outcomes a worker finished without suspending are reported to the gate together,
  before it suspends or runs out of messages: one lock for their slots, and one settle
  request per consumer for all of them (:func:`~rx_pgmq._operators._ack.settle_group`).
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections import deque
from collections.abc import Callable, Generator, Hashable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rx_pgmq._operators._gate import Gate, KeyFn, Task, outcome_of, release
from rx_pgmq._values._loop import LoopThread
from rx_pgmq._values._outcome import Outcome, success_of
from rx_pgmq.message import Message

__all__ = ["on_loop"]

_AWAIT = object()  # the handler returned an awaitable that is not a coroutine: await it
_RAISE = object()  # the call raised a BaseException: raise it again

_Rest = tuple[Any, Any]
"""What is left of a handler call: ``(coroutine, what its first step yielded)``,
``(awaitable, _AWAIT)`` or ``(exception, _RAISE)``."""
_NOTHING: _Rest = (None, None)


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on with ``await coro`` after its first step yielded ``yielded``: every yield goes
    to the task, what the task sends or throws (a cancellation) goes to ``coro``."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:  # the task is closed: so is the handler (as ``yield from``)
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def _begin(fn: Callable[[Message], Any], message: Message) -> tuple[Outcome | None, _Rest]:
    """Call ``fn`` and run its coroutine up to its first suspension: ``(outcome, _)`` if it
    finished, else ``(None, rest)`` for :func:`_finish`. An exception is a failed outcome; a
    ``BaseException`` (a cancellation, ``KeyboardInterrupt``) is left for :func:`_finish` to
    raise."""
    if message.decode_error is not None:  # fails without calling fn (#14 item 7)
        return Outcome(message, False, error=message.decode_error), _NOTHING
    try:
        result = fn(message)
        if type(result) is types.CoroutineType:
            try:
                yielded = result.send(None)
            except StopIteration as stop:
                result = stop.value
            else:
                return None, (result, yielded)
        elif getattr(type(result), "__await__", None) is not None:
            return None, (result, _AWAIT)
        if isinstance(result, Outcome):  # outcome_of, without the call (once per message)
            return result, _NOTHING
        return success_of(message, result), _NOTHING
    except Exception as exc:
        return Outcome(message, False, error=exc), _NOTHING
    except BaseException as exc:
        return None, (exc, _RAISE)


async def _finish(message: Message, rest: _Rest) -> Outcome:
    """Await what :func:`_begin` left of a handler call and give its outcome."""
    awaitable, yielded = rest
    if yielded is _RAISE:
        raise awaitable
    try:
        if yielded is _AWAIT:
            result = await awaitable
        else:
            result = await _resume(awaitable, yielded)
        return outcome_of(message, result)
    except Exception as exc:
        return Outcome(message, False, error=exc)


def _cancelled_here() -> bool:
    """Whether a ``CancelledError`` the worker caught came from its handler alone, not from
    a cancellation of the worker's task (a dispose): the task has none pending."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


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

        def report(keys: list[Hashable], outcomes: list[Outcome]) -> None:
            """Emit the outcomes of finished calls, then free their slots (and keys)."""
            following = gate.done_many(keys, outcomes)
            if following:  # empty once stopped: the queue was cleared
                ready.extend(following)
                hire_one()

        async def work() -> None:  # a worker: admitted messages, one after another
            nonlocal busy
            keys: list[Hashable] = []  # finished here, not yet reported to the gate
            outcomes: list[Outcome] = []
            try:
                while ready or keys:
                    if not ready:
                        report(keys, outcomes)  # frees slots: what waited may be ready now
                        keys, outcomes = [], []
                        continue
                    k, message = ready.popleft()
                    outcome, rest = _begin(fn, message)
                    if outcome is None:  # it suspended (or raised): first what finished
                        report(keys, outcomes)
                        keys, outcomes = [], []
                        busy += 1
                        try:
                            if rest[1] is not _RAISE:
                                hire()  # the messages behind it need workers of their own
                            outcome = await _finish(message, rest)
                        except asyncio.CancelledError:
                            if _cancelled_here():  # the handler's own: released, go on
                                release(message)
                                ready.extend(gate.done(k, None))
                                continue
                            failed(k, message, None)
                            raise
                        except BaseException as exc:
                            failed(k, message, exc)
                            return
                        finally:
                            busy -= 1
                    keys.append(k)
                    outcomes.append(outcome)
            finally:
                workers.discard(asyncio.current_task())
                if ready:  # it ended early (a cancellation): the messages behind it go on
                    hire_one()

        def failed(k: Hashable, message: Message, exc: BaseException | None) -> None:
            if exc is None:  # the worker was cancelled (a dispose): not a failure
                release(message)
                gate.done(k, None)  # starts nothing: the gate stopped
            else:  # KeyboardInterrupt, SystemExit, GeneratorExit
                gate.fatal(message, exc)  # re-raised on the main thread (asyncio stops)

        def hire() -> None:  # on the loop: a worker for each waiting message none will take
            idle = len(workers) - busy
            for _ in range(min(len(ready) - idle, limit - len(workers))):
                workers.add(loop.create_task(work()))

        def hire_one() -> None:  # on the loop: a worker if none will take from ``ready``
            if len(workers) == busy and len(workers) < limit:
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
            hire_one()

        def on_next(message: Message) -> None:  # any thread: one wake-up for a burst
            nonlocal kicked
            task = gate.task_of(message)
            if task is None:
                return
            with gate.lock:  # admission and the hand-over to the loop under one lock
                if gate.stopped or gate.queue.submit(task[0], task) is None:
                    return  # stopped, or waits for a slot (gate.admit_locked, inlined)
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
