"""OpenTelemetry traces and metrics for rx_pgmq (the ``otel`` extra: ``opentelemetry-api``).

Off by default: until :func:`instrument` runs, rx_pgmq reads one module attribute on its hot
paths and does nothing more (OpenTelemetry need not even be installed).

Traces follow the messaging semantic conventions (``messaging.system = "pgmq"``,
``messaging.destination.name`` = the queue, ``messaging.operation.type`` ``send`` /
``receive`` / ``process`` / ``settle``, ``messaging.message.id``):

- ``send <queue>`` (PRODUCER), around ``PGMQ.send`` / ``send_batch`` (and the asyncio
  client's): it injects the W3C
  ``traceparent`` (and ``tracestate``) into each message's headers;
- ``receive <queue>`` (CLIENT), one per consumer read that returned messages;
- ``process <queue>`` (CONSUMER), around each call of a ``process`` handler: a child of the
  send span found in the message's headers (and linked to it), so one trace shows the
  producer, the time in the queue and the handler;
- ``settle <queue>`` (CLIENT), one per ack flush (``messaging.batch.message_count``).

Metrics (meter ``rx_pgmq``):

- ``messaging.client.sent.messages`` and ``messaging.client.consumed.messages`` (counters);
- ``rx_pgmq.settled.messages`` (counter; ``rx_pgmq.action``, ``rx_pgmq.status``);
- ``rx_pgmq.in_flight`` (gauge: deliveries held by the instrumented consumers);
- ``rx_pgmq.read.duration`` and ``rx_pgmq.ack.duration`` (histograms, seconds: one read,
  one ack flush);
- ``rx_pgmq.queue.lag`` (histogram, seconds: ``now - enqueued_at`` at read, of the oldest
  message of each read that returned messages).

Example:
    >>> from rx_pgmq import telemetry  # doctest: +SKIP
    >>> telemetry.instrument()  # the global tracer and meter providers  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rx_pgmq import __version__
from rx_pgmq._values import _telemetry
from rx_pgmq._values._telemetry import Headers, Settling
from rx_pgmq.actions import Action
from rx_pgmq.errors import RxPgmqError
from rx_pgmq.message import Message

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["TelemetryNotInstalled", "instrument", "uninstrument"]

_F = TypeVar("_F", bound=Callable[..., Any])
SYSTEM = "pgmq"


class TelemetryNotInstalled(RxPgmqError, ImportError):
    """``instrument()`` needs OpenTelemetry: ``pip install 'rx-pgmq[otel]'``."""


def instrument(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Report rx_pgmq's sends, reads, handlers and acks to OpenTelemetry.

    Call it once at start-up, before building pipelines (``process`` wraps its handler
    when the operator is applied). Calling it again replaces the providers.

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
        meter_provider: Where metrics go (default: the global meter provider).

    Raises:
        TelemetryNotInstalled: If ``opentelemetry-api`` is not installed.

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
        >>> rx_pgmq.telemetry.instrument(tracer_provider=TracerProvider())  # doctest: +SKIP
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:  # pragma: no cover - the otel extra is installed in dev
        raise TelemetryNotInstalled(
            "rx_pgmq.telemetry needs OpenTelemetry: pip install 'rx-pgmq[otel]'"
        ) from exc
    tracer = trace.get_tracer("rx_pgmq", __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter("rx_pgmq", __version__, meter_provider=meter_provider)
    _telemetry.hooks = _OtelHooks(tracer, meter)


def uninstrument() -> None:
    """Stop reporting (pipelines built while instrumented keep their process spans)."""
    _telemetry.hooks = None


def _where(queue: str) -> dict[str, Any]:
    """The attributes that name ``queue`` (every metric point and span has them)."""
    return {"messaging.system": SYSTEM, "messaging.destination.name": queue}


def _base(queue: str, operation: str) -> dict[str, Any]:
    return {
        **_where(queue),
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


class _OtelHooks:
    """The hooks of :mod:`rx_pgmq._values._telemetry`, reporting to one tracer and one meter."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._trace = trace
        self._propagate = propagate
        self._consumers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Messages sent"
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages read by consumers",
        )
        self._settled = meter.create_counter(
            "rx_pgmq.settled.messages",
            unit="{message}",
            description="Messages settled, by action and status",
        )
        self._read_s = meter.create_histogram(
            "rx_pgmq.read.duration", unit="s", description="Duration of one consumer read"
        )
        self._ack_s = meter.create_histogram(
            "rx_pgmq.ack.duration", unit="s", description="Duration of one ack flush"
        )
        self._lag_s = meter.create_histogram(
            "rx_pgmq.queue.lag",
            unit="s",
            description="now - enqueued_at of the oldest message of each read",
        )
        meter.create_observable_gauge(
            "rx_pgmq.in_flight",
            callbacks=[self._in_flight],
            unit="{message}",
            description="Deliveries held (read, not settled) by instrumented consumers",
        )

    # -- metrics callbacks -------------------------------------------------------------

    def _in_flight(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        per_queue: dict[str, int] = {}
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            queue = consumer.config.queue
            per_queue[queue] = per_queue.get(queue, 0) + len(consumer.ledger)
        return [Observation(n, _where(q)) for q, n in per_queue.items()]

    # -- hooks ---------------------------------------------------------------------------

    def send(
        self, queue: str, headers: list[Headers], run: Callable[[list[Headers]], list[int]]
    ) -> list[int]:
        with self._send_span(queue, len(headers)) as span:
            ids = run(self._inject(headers))
            self._sent_ids(queue, span, ids)
        return ids

    async def asend(
        self,
        queue: str,
        headers: list[Headers],
        run: Callable[[list[Headers]], Awaitable[list[int]]],
    ) -> list[int]:
        with self._send_span(queue, len(headers)) as span:
            ids = await run(self._inject(headers))
            self._sent_ids(queue, span, ids)
        return ids

    def _send_span(self, queue: str, n: int) -> Any:
        attrs = _base(queue, "send")
        if n > 1:
            attrs["messaging.batch.message_count"] = n
        kind = self._trace.SpanKind.PRODUCER
        return self._tracer.start_as_current_span(f"send {queue}", kind=kind, attributes=attrs)

    def _inject(self, headers: list[Headers]) -> list[Headers]:
        """Each message's headers with the current span's ``traceparent`` added."""
        carried: list[Headers] = []
        for h in headers:
            carrier = dict(h or {})
            self._propagate.inject(carrier)
            carried.append(carrier)
        return carried

    def _sent_ids(self, queue: str, span: Any, ids: list[int]) -> None:
        if len(ids) == 1:
            span.set_attribute("messaging.message.id", str(ids[0]))
        self._sent.add(len(ids), _where(queue))

    def read(self, queue: str, consumer: object, run: Callable[[], list[Message]]) -> list[Message]:
        started_ns = time.time_ns()
        started = time.perf_counter()
        msgs = run()
        seconds = time.perf_counter() - started
        where = _where(queue)
        self._read_s.record(seconds, where)
        with self._lock:
            self._consumers.add(consumer)
        if msgs:
            attrs = _base(queue, "receive")
            attrs["messaging.batch.message_count"] = len(msgs)
            span = self._tracer.start_span(
                f"receive {queue}",
                kind=self._trace.SpanKind.CLIENT,
                attributes=attrs,
                start_time=started_ns,
            )
            span.end()
            self._consumed.add(len(msgs), where)
            oldest = min(m.enqueued_at for m in msgs)  # one record per read: cheap
            self._lag_s.record((datetime.now(UTC) - oldest).total_seconds(), where)
        return msgs

    def settle(
        self,
        queue: str,
        items: Sequence[Settling],
        run: Callable[[], tuple[set[int], set[int]]],
    ) -> tuple[set[int], set[int]]:
        attrs = _base(queue, "settle")
        attrs["messaging.batch.message_count"] = len(items)
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"settle {queue}", kind=self._trace.SpanKind.CLIENT, attributes=attrs
        ):
            lost, skipped = run()
        self._ack_s.record(time.perf_counter() - started, _where(queue))
        counts: dict[tuple[str, str], int] = {}
        for p in items:
            status = (
                "unacked" if p.msg_id in skipped else "lost_lease" if p.msg_id in lost else "acked"
            )
            key = (p.action.name, status)
            counts[key] = counts.get(key, 0) + 1
        for (action, status), n in counts.items():
            self._count_settled(queue, action, status, n)
        return lost, skipped

    def committed(self, queue: str, action: Action | None) -> None:
        if action is None:
            self._count_settled(queue, "none", "lost_lease", 1)
        else:
            self._count_settled(queue, action.name, "acked", 1)

    def _count_settled(self, queue: str, action: str, status: str, n: int) -> None:
        self._settled.add(n, {**_where(queue), "rx_pgmq.action": action, "rx_pgmq.status": status})

    def traced(self, fn: _F) -> _F:
        start = self._process_span
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
        ):

            async def traced_async(message: Message, *args: Any) -> Any:
                with start(message):
                    return await fn(message, *args)

            return functools.wraps(fn)(traced_async)  # type: ignore[return-value]

        def traced_sync(message: Message, *args: Any) -> Any:
            with start(message):
                return fn(message, *args)

        return functools.wraps(fn)(traced_sync)  # type: ignore[return-value]

    def _process_span(self, message: Message) -> Any:
        trace = self._trace
        parent = self._propagate.extract(message.headers or {})
        sent = trace.get_current_span(parent).get_span_context()
        links = [trace.Link(sent)] if sent.is_valid else []
        attrs = _base(message.queue, "process")
        attrs["messaging.message.id"] = str(message.msg_id)
        attrs["messaging.message.delivery_count"] = message.read_ct  # rx_pgmq: read_ct
        return self._tracer.start_as_current_span(
            f"process {message.queue}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes=attrs,
        )
