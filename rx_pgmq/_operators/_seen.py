"""The consumers whose messages passed through an operator, told when its stream fails.

A consumer's close lets messages still held downstream settle for up to ``close_timeout``
(issue 14 item 2). Once a pipeline ends with an error nothing downstream settles any more,
and an exception's traceback may keep a message referenced for as long as the user keeps
the exception: the operators that end a stream with an error tell the consumers they saw,
so the close releases what is unsettled at once (issue 14 item 3).
"""

from __future__ import annotations

from rx_pgmq._consumer._facade import Consumer
from rx_pgmq.message import Message

__all__ = ["SeenConsumers"]


class SeenConsumers:
    """The distinct consumers of the messages an operator saw (usually one)."""

    __slots__ = ("_consumers",)

    def __init__(self) -> None:
        self._consumers: list[object] = [None]

    def note(self, message: Message) -> None:
        """Remember ``message``'s consumer (one identity check when it is the last one)."""
        acker = message._acknowledger
        consumers = self._consumers
        if acker is not consumers[-1] and acker not in consumers:
            consumers.append(acker)

    def stream_failed(self) -> None:
        """The operator's stream ended with an error: no grace at their close."""
        for consumer in self._consumers:
            if isinstance(consumer, Consumer):
                consumer.abandon_grace()
