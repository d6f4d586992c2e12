"""OpenTelemetry traces and metrics (issue #19 item 2), with the SDK's in-memory exporters
against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from _support import Subscribe, source_of, wait_until
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rx_pgmq import Message, Settled, telemetry
from rx_pgmq import operators as pgops
from rx_pgmq._values import _telemetry
from rx_pgmq.aio import AsyncPGMQ
from rx_pgmq.client import PGMQ


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for p in m.data.data_points
        ]


@pytest.fixture
def otel() -> Iterator[Otel]:
    """rx_pgmq instrumented with in-memory exporters; uninstrumented after the test."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry.instrument(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield Otel(spans, reader)
    telemetry.uninstrument()
    tracer_provider.shutdown()


def test_off_by_default_nothing_is_hooked() -> None:
    """#19 item 2: without instrument() the hot paths see no hooks (one attribute read)."""
    assert _telemetry.hooks is None

    def fn(m: Message) -> None:
        return None

    assert _telemetry.traced(fn) is fn


def test_send_injects_traceparent_and_process_span_is_its_child(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel, subscribe: Subscribe
) -> None:
    """#19 item 2: a send span (PRODUCER) injects traceparent into the headers; the
    consumer's process span (CONSUMER) is its child in the same trace and links to it; a
    receive span and a settle span follow the messaging conventions."""
    msg_id = pgmq.send(pgmq_queue, {"n": 1}, headers={"kept": "yes"})
    (sent,) = otel.finished(f"send {pgmq_queue}")
    assert sent.kind is SpanKind.PRODUCER
    assert sent.attributes is not None
    assert sent.attributes["messaging.system"] == "pgmq"
    assert sent.attributes["messaging.destination.name"] == pgmq_queue
    assert sent.attributes["messaging.operation.type"] == "send"
    assert sent.attributes["messaging.message.id"] == str(msg_id)

    seen: list[Message] = []
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue).pipe(pgops.process(seen.append), pgops.ack()))
    records: list[Settled] = sink.collect(1)
    assert records[0].status == "acked"
    headers = seen[0].headers
    assert headers is not None and headers["kept"] == "yes"
    assert headers["traceparent"].split("-")[1] == format(sent.context.trace_id, "032x")

    (processed,) = otel.finished(f"process {pgmq_queue}")
    assert processed.kind is SpanKind.CONSUMER
    assert processed.context.trace_id == sent.context.trace_id
    assert processed.parent is not None and processed.parent.span_id == sent.context.span_id
    assert [link.context.span_id for link in processed.links] == [sent.context.span_id]
    assert processed.attributes is not None
    assert processed.attributes["messaging.message.id"] == str(msg_id)
    assert processed.attributes["messaging.operation.type"] == "process"

    (received,) = otel.finished(f"receive {pgmq_queue}")
    assert received.kind is SpanKind.CLIENT
    assert received.attributes is not None
    assert received.attributes["messaging.batch.message_count"] == 1
    assert wait_until(lambda: len(otel.finished(f"settle {pgmq_queue}")) == 1)
    (settled,) = otel.finished(f"settle {pgmq_queue}")
    assert settled.attributes is not None
    assert settled.attributes["messaging.operation.type"] == "settle"


def test_a_failing_handler_marks_its_process_span_as_an_error(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel, subscribe: Subscribe
) -> None:
    """#19 item 2: the exception of a handler is recorded on its process span."""
    pgmq.send(pgmq_queue, {"n": 1})

    def boom(message: Message) -> None:
        raise ValueError("boom")

    sink = subscribe(source_of(pgmq_dsn, pgmq_queue).pipe(pgops.process(boom), pgops.ack()))
    sink.collect(1)
    (processed,) = otel.finished(f"process {pgmq_queue}")
    assert processed.status.status_code is StatusCode.ERROR
    assert [e.name for e in processed.events] == ["exception"]


def test_metrics_count_reads_settles_by_action_and_status_and_time_reads_acks_and_lag(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel, subscribe: Subscribe
) -> None:
    """#19 item 2: messages read, settled by action and status (ack flushes and
    process_in_transaction commits), in flight, read/ack duration and queue lag."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(10)])
    source = source_of(pgmq_dsn, pgmq_queue, max_in_flight=5)

    def fail_odd(message: Message) -> None:
        if message.body["n"] % 2:
            raise ValueError("odd")

    sink = subscribe(source.pipe(pgops.process(fail_odd), pgops.ack()))
    sink.collect(10)

    def total(metric: str, **attrs: str) -> int:
        return sum(
            int(p.value)
            for p in otel.points(metric)
            if all(p.attributes.get(k) == v for k, v in attrs.items())
        )

    assert total("messaging.client.sent.messages") == 10
    assert total("messaging.client.consumed.messages") == 10
    assert wait_until(lambda: total("rx_pgmq.settled.messages") == 10)
    assert total("rx_pgmq.settled.messages", **{"rx_pgmq.action": "delete"}) == 5
    assert total("rx_pgmq.settled.messages", **{"rx_pgmq.action": "archive"}) == 5
    assert total("rx_pgmq.settled.messages", **{"rx_pgmq.status": "acked"}) == 10
    assert total("rx_pgmq.in_flight", **{"messaging.destination.name": pgmq_queue}) == 0
    (lag,) = otel.points("rx_pgmq.queue.lag")
    assert lag.count >= 2 and lag.min >= 0  # one per read that returned messages
    (reads,) = otel.points("rx_pgmq.read.duration")
    assert reads.count >= 2 and reads.sum > 0  # max_in_flight 5: at least two reads
    assert sum(p.count for p in otel.points("rx_pgmq.ack.duration")) >= 1


def test_in_flight_gauge_shows_held_deliveries(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel, subscribe: Subscribe
) -> None:
    """#19 item 2: messages read and not settled show in rx_pgmq.in_flight."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    sink = subscribe(source_of(pgmq_dsn, pgmq_queue))  # no ack: all stay held
    sink.collect(3)

    def held() -> int:
        return sum(int(p.value) for p in otel.points("rx_pgmq.in_flight"))

    assert wait_until(lambda: held() == 3)


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: rx_pgmq bridges to asyncio."""
    return "asyncio"


@pytest.mark.anyio
async def test_async_client_sends_inject_traceparent_too(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel
) -> None:
    """#19 item 2: AsyncPGMQ.send and send_batch open send spans and put their traceparent
    into every message's headers (kept headers stay)."""
    async with await psycopg.AsyncConnection.connect(pgmq_dsn, autocommit=True) as conn:
        client = AsyncPGMQ(conn)
        await client.send(pgmq_queue, {"n": 0}, headers={"kept": 1})
        await client.send_batch(pgmq_queue, [{"n": 1}, {"n": 2}])
    one, batch = otel.finished(f"send {pgmq_queue}")
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 2
    read = pgmq.read(pgmq_queue, vt=30, qty=3)
    parents = {m.body["n"]: (m.headers or {}).get("traceparent", "").split("-")[2] for m in read}
    assert parents == {
        0: format(one.context.span_id, "016x"),
        1: format(batch.context.span_id, "016x"),
        2: format(batch.context.span_id, "016x"),
    }
    kept = {m.body["n"]: (m.headers or {}).get("kept") for m in read}
    assert kept == {0: 1, 1: None, 2: None}


def test_process_in_transaction_commits_count_as_settled_and_get_process_spans(
    pgmq_dsn: str, pgmq: PGMQ, pgmq_queue: str, otel: Otel, subscribe: Subscribe
) -> None:
    """#19 items 1 and 2: a message settled in its handler's transaction is counted in
    rx_pgmq.settled.messages (action delete, status acked) and its handler has a process
    span; no settle span is needed for it."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(3)])
    sink = subscribe(
        source_of(pgmq_dsn, pgmq_queue).pipe(
            pgops.process_in_transaction(lambda m, conn: None), pgops.ack()
        )
    )
    records: list[Settled] = sink.collect(3)
    assert {r.status for r in records} == {"acked"}
    points = otel.points("rx_pgmq.settled.messages")
    assert [
        (p.attributes["rx_pgmq.action"], p.attributes["rx_pgmq.status"], p.value) for p in points
    ] == [("delete", "acked", 3)]
    assert len(otel.finished(f"process {pgmq_queue}")) == 3
    assert otel.finished(f"settle {pgmq_queue}") == []
