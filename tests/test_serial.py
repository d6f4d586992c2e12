"""``Serial``: one observer called from many threads, never with a lock held (#14 item 3)."""

from __future__ import annotations

import threading

from reactivex import abc

from rx_pgmq._operators._serial import Serial

WAIT = 10.0


class Blocking(abc.ObserverBase[int]):
    """Records calls; ``on_next(0)`` blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, str]] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def on_next(self, value: int) -> None:
        if value == 0:
            self.inside.set()
            assert self.release.wait(WAIT)
        if value < 0:
            raise ValueError(value)
        self.calls.append(("next", value, threading.current_thread().name))

    def on_error(self, error: Exception) -> None:
        self.calls.append(("error", error, threading.current_thread().name))

    def on_completed(self) -> None:
        self.calls.append(("completed", None, threading.current_thread().name))


def test_calls_from_other_threads_return_at_once_while_the_observer_is_busy() -> None:
    """#14 item 3: while one thread is inside on_next, another thread's on_next and
    on_error return at once (no lock held while calling out); the busy thread delivers
    them after its call, in order, and nothing follows the error."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    first = threading.Thread(target=serial.on_next, args=(0,), name="first")
    first.start()
    assert observer.inside.wait(WAIT)

    def other() -> None:
        serial.on_next(1)
        serial.terminal(RuntimeError("x"))
        serial.on_next(2)

    others = threading.Thread(target=other, name="other")
    others.start()
    others.join(WAIT)
    assert not others.is_alive()  # returned while "first" is still inside on_next
    assert serial.stopped and observer.calls == []
    observer.release.set()
    first.join(WAIT)
    kinds = [(kind, thread) for kind, _v, thread in observer.calls]
    assert kinds == [("next", "first"), ("error", "first")]  # 1 dropped behind the error


def test_completion_follows_queued_values_and_a_second_terminal_is_ignored() -> None:
    """A completion is delivered after the values queued before it; later events are not."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    serial.on_next(1)
    assert serial.terminal(None)
    assert not serial.terminal(RuntimeError("late"))
    serial.on_next(3)
    assert [(k, v) for k, v, _t in observer.calls] == [("next", 1), ("completed", None)]


def test_a_subscriber_raising_in_on_next_ends_the_stream_with_its_exception() -> None:
    """As at the source: on_next raising becomes on_error carrying that exception."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    serial.on_next(-1)
    serial.on_next(5)
    assert serial.stopped
    assert len(observer.calls) == 1
    kind, error, _thread = observer.calls[0]
    assert kind == "error" and isinstance(error, ValueError)


def test_dispose_drops_everything_queued_and_later() -> None:
    """After dispose nothing is delivered, not even a terminal event."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    serial.dispose()
    serial.on_next(1)
    assert serial.terminal(None) is False
    assert observer.calls == []


def test_on_next_many_delivers_in_order_and_a_raising_subscriber_drops_the_rest() -> None:
    """#17 item 3: ``on_next_many`` hands several values over with one lock acquisition;
    they arrive in order like single calls, and a subscriber raising on one of them ends
    the stream with its exception, dropping the values after it."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    serial.on_next_many([1, 2, 3])
    serial.on_next_many([])
    assert [(k, v) for k, v, _t in observer.calls] == [("next", 1), ("next", 2), ("next", 3)]
    serial.on_next_many([4, -1, 5])
    kinds = [(k, v if k == "next" else type(v)) for k, v, _t in observer.calls[3:]]
    assert kinds == [("next", 4), ("error", ValueError)]
    assert serial.stopped
    serial.on_next_many([6])
    assert len(observer.calls) == 5


def test_values_queued_by_other_threads_follow_a_direct_delivery_in_order() -> None:
    """#17 item 3: an idle Serial delivers ``on_next`` at once on the calling thread; what
    other threads queue meanwhile (single values and runs) follows it on that thread, in
    order."""
    observer = Blocking()
    serial: Serial[int] = Serial(observer)
    first = threading.Thread(target=serial.on_next, args=(0,), name="first")
    first.start()
    assert observer.inside.wait(WAIT)
    serial.on_next(1)
    serial.on_next_many([2, 3])
    serial.terminal(None)
    observer.release.set()
    first.join(WAIT)
    assert [(k, v, t) for k, v, t in observer.calls] == [
        ("next", 0, "first"),
        ("next", 1, "first"),
        ("next", 2, "first"),
        ("next", 3, "first"),
        ("completed", None, "first"),
    ]


def test_an_error_from_another_thread_drops_the_rest_of_a_run_being_delivered() -> None:
    """#14 item 3: the first terminal event wins also inside a run of ``on_next_many``
    (delivered as one queue entry): once another thread queues an error, the values of the
    run not delivered yet are dropped and the error follows at once; a dispose does the
    same without the error."""
    for end in ("error", "dispose"):
        observer = Blocking()
        serial: Serial[int] = Serial(observer)
        first = threading.Thread(target=serial.on_next_many, args=([0, 1, 2],), name="first")
        first.start()
        assert observer.inside.wait(WAIT)
        if end == "error":
            assert serial.terminal(RuntimeError("upstream failed")) is True
        else:
            serial.dispose()
        observer.release.set()
        first.join(WAIT)
        kinds = [(k, v if k == "next" else type(v)) for k, v, _t in observer.calls]
        expected: list[tuple[str, object]] = [("next", 0)]
        if end == "error":
            expected.append(("error", RuntimeError))
        assert kinds == expected, end
