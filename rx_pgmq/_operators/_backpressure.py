"""Backpressure operators: they shape a ``read_queue`` source's demand."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable

from rx_pgmq._consumer._source import ControlledSource, QueueSource
from rx_pgmq._values._validate import check_bool, check_positive_int
from rx_pgmq.message import BodyT, Message

__all__ = ["controlled", "pausable", "stop_and_wait", "windowed"]


def _source(value: Observable[Message], operator: str) -> QueueSource:
    if not isinstance(value, QueueSource):
        raise TypeError(
            f"{operator} applies only to a read_queue source (it changes how much the "
            f"consumer reads), got {type(value).__name__}; apply it right after "
            "rx_pgmq.read_queue(...), before other operators"
        )
    return value


def windowed(n: int) -> Callable[[Observable[Message[BodyT]]], QueueSource[BodyT]]:
    """At most ``n`` messages in flight (emitted and not yet settled).

    The window is capped by the source's ``max_in_flight``.

    Args:
        n: The window size, >= 1.

    Returns:
        An operator for a ``read_queue`` source.

    Raises:
        InvalidArgument: If ``n`` is not an int >= 1.
        TypeError: If applied to anything but a ``read_queue`` source.

    Example:
        >>> read_queue(dsn, "orders", visibility_timeout=30).pipe(windowed(5))  # doctest: +SKIP
    """
    check_positive_int(n, "n")

    def apply(source: Observable[Message]) -> QueueSource:
        src = _source(source, "windowed")
        return src.derive(window=n, batch_size=min(src.config.batch_size, n))

    return apply


def stop_and_wait() -> Callable[[Observable[Message[BodyT]]], QueueSource[BodyT]]:
    """One message at a time: the next is read only once the previous one is settled.

    Returns:
        An operator for a ``read_queue`` source (``windowed(1)``).

    Example:
        >>> read_queue(dsn, "orders", visibility_timeout=30).pipe(stop_and_wait())  # doctest: +SKIP
    """
    inner = windowed(1)

    def apply(source: Observable[Message]) -> QueueSource:
        _source(source, "stop_and_wait")
        return inner(source)

    return apply


def pausable(
    pauser: Observable[bool], *, start_paused: bool = False
) -> Callable[[Observable[Message[BodyT]]], QueueSource[BodyT]]:
    """Read while ``pauser``'s latest value is True; no reads while it is False.

    Pausing stops reads; messages already in flight stay in flight (nothing is buffered
    or dropped). Resuming reads at once.

    Args:
        pauser: An observable of booleans (True = read, False = pause), e.g. a
            ``BehaviorSubject``; subscribed once per subscription of the source.
        start_paused: Start paused until ``pauser`` emits True.

    Returns:
        An operator for a ``read_queue`` source.

    Raises:
        TypeError: If ``pauser`` is not an Observable, or if applied to anything but a
            ``read_queue`` source.
        InvalidArgument: If ``start_paused`` is not a bool.

    Example:
        >>> gate = BehaviorSubject(True)  # doctest: +SKIP
        >>> read_queue(dsn, "orders", visibility_timeout=30).pipe(pausable(gate))  # doctest: +SKIP
        >>> gate.on_next(False)  # pause  # doctest: +SKIP
    """
    if not isinstance(pauser, Observable):
        raise TypeError(f"pausable needs an Observable[bool] pauser, got {type(pauser).__name__}")
    check_bool(start_paused, "start_paused")

    def apply(source: Observable[Message]) -> QueueSource:
        return _source(source, "pausable").derive(pauser=pauser, start_paused=start_paused)

    return apply


def controlled() -> Callable[[Observable[Message[BodyT]]], ControlledSource[BodyT]]:
    """A source that reads only what ``.request(n)`` asks for.

    Returns:
        An operator turning a ``read_queue`` source into a :class:`ControlledSource`.

    Raises:
        TypeError: If applied to anything but a ``read_queue`` source.

    Example:
        >>> src = read_queue(dsn, "q", visibility_timeout=30).pipe(controlled())  # doctest: +SKIP
        >>> src.subscribe(print)  # doctest: +SKIP
        >>> src.request(3)  # reads 3 messages  # doctest: +SKIP
    """

    def apply(source: Observable[Message]) -> ControlledSource:
        result = _source(source, "controlled").derive(controlled=True)
        assert isinstance(result, ControlledSource)
        return result

    return apply
