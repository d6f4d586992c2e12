"""Memory: RSS of a consumer draining a large queue through a slow subscriber.

One ``read_queue(max_in_flight=100)`` consumer drains ``--messages`` queued messages through
``observe_on(one event-loop thread) -> process(slow handler) -> ack(Delete)``; the handler sleeps
``--work-ms`` per message, so the subscriber is slower than the reads and the demand window
is what keeps messages from piling up. Measured:

- RSS of this process before subscribing, at its peak while draining (sampled), and after
  the drain (subscription disposed, ``gc.collect()``).
- The most messages in flight seen in the database (sampled: rows of the queue table that
  were read and are still hidden, ``vt > now()``) and by the consumer (``stats.in_flight``),
  against the window.

Example::

    python benchmarks/memory.py                          # 200,000 messages
    python benchmarks/memory.py --messages 2000 --work-ms 0     # a quick look
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

import _common as bench
from psycopg import sql
from reactivex import operators as ops
from reactivex.scheduler import EventLoopScheduler

import rx_pgmq
from rx_pgmq import operators as pgops

MB = 1024 * 1024


class Sampler:
    """Samples RSS, the consumer's in-flight count and the database's, on a thread."""

    def __init__(self, dsn: str, queue: str, source: rx_pgmq.QueueSource, every: float) -> None:
        self.dsn = dsn
        self.queue = queue
        self.source = source
        self.every = every
        self.peak_rss = 0
        self.peak_db = 0
        self.peak_client = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        query = sql.SQL("SELECT count(*) FROM {} WHERE vt > clock_timestamp()").format(
            sql.Identifier("pgmq", f"q_{self.queue}")
        )
        with bench.connect(self.dsn) as conn:
            while not self.stop.is_set():
                row = conn.execute(query, prepare=True).fetchone()
                self.peak_db = max(self.peak_db, int(row[0]) if row else 0)
                self.peak_client = max(self.peak_client, self.source.stats.in_flight)
                self.peak_rss = max(self.peak_rss, bench.rss_bytes())
                self.samples += 1
                self.stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def run(args: Any) -> int:
    """Fill, drain through a slow subscriber, report RSS and in-flight peaks."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    client = rx_pgmq.PGMQ(dsn)
    n = args.messages
    work = args.work_ms / 1000.0
    errors: list[str] = []
    try:
        with bench.scratch_queue(client, "mem") as queue:
            bench.fill(client, queue, n)
            source = rx_pgmq.read_queue(
                dsn,
                queue,
                visibility_timeout=120,
                batch_size=args.batch_size,
                max_in_flight=args.max_in_flight,
                read_interval=1.0,
            )
            done = threading.Event()
            settled = 0

            def slow(_message: rx_pgmq.Message) -> None:
                if work > 0:
                    time.sleep(work)

            def on_next(record: rx_pgmq.Settled) -> None:
                nonlocal settled
                settled += 1
                if record.status != "acked" and len(errors) < 5:
                    errors.append(f"message {record.message.msg_id}: {record.status}")
                if settled >= n:
                    done.set()

            def on_error(exc: Exception) -> None:
                errors.append(repr(exc))
                done.set()

            gc.collect()
            rss_before = bench.rss_bytes()
            start = time.perf_counter()
            slow_thread = EventLoopScheduler()
            with Sampler(dsn, queue, source, args.sample_ms / 1000.0) as sampler:
                subscription = source.pipe(
                    ops.observe_on(slow_thread),
                    pgops.process(slow),
                    pgops.ack(),
                ).subscribe(on_next, on_error)
                try:
                    patience = n * (work + 0.002) + 120.0
                    if not done.wait(patience):
                        errors.append(f"only {settled} of {n} settled before the timeout")
                finally:
                    elapsed = time.perf_counter() - start
                    subscription.dispose()
                    slow_thread.dispose()
            gc.collect()
            rss_after = bench.rss_bytes()
            left = client.metrics(queue).queue_length
    finally:
        client.close()
    if left:
        errors.append(f"{left} messages left in the queue")

    bench.print_header(
        f"Memory: drain {n:,} messages through a slow subscriber "
        f"({args.work_ms:g} ms per message), max_in_flight={args.max_in_flight}, "
        f"batch_size={args.batch_size}",
        info,
    )
    growth = (rss_after - rss_before) / MB
    table = bench.Table("measure", "value")
    table.add("messages settled", f"{settled:,}")
    table.add("drain time s", f"{elapsed:.1f}")
    table.add("RSS before MB", f"{rss_before / MB:.1f}")
    table.add("RSS peak MB", f"{max(sampler.peak_rss, rss_after) / MB:.1f}")
    table.add("RSS after MB", f"{rss_after / MB:.1f}")
    table.add("RSS growth MB", f"{growth:.1f}")
    table.add("peak in flight (database)", sampler.peak_db)
    table.add("peak in flight (consumer)", sampler.peak_client)
    table.add("window (max_in_flight)", args.max_in_flight)
    table.add("samples", sampler.samples)
    table.print()
    for error in errors:
        print(f"- ERROR {error}")
    within = max(sampler.peak_db, sampler.peak_client) <= args.max_in_flight
    print(
        f"- target RSS growth <= 30 MB: {growth:.1f} MB ({'met' if growth <= 30 else 'MISSED'});"
        f" in flight never above the window: {'met' if within else 'MISSED'}\n"
    )
    bench.emit_json(
        args.json,
        {
            "benchmark": "memory",
            "machine": info,
            "messages": n,
            "settled": settled,
            "work_ms": args.work_ms,
            "max_in_flight": args.max_in_flight,
            "rss_before": rss_before,
            "rss_peak": max(sampler.peak_rss, rss_after),
            "rss_after": rss_after,
            "peak_in_flight_db": sampler.peak_db,
            "peak_in_flight_consumer": sampler.peak_client,
            "elapsed_s": elapsed,
            "errors": errors,
        },
    )
    return 1 if errors or settled < n else 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "memory")
    parser.add_argument("--messages", type=int, default=200_000, help="messages to drain")
    parser.add_argument("--max-in-flight", type=int, default=100, help="the demand window")
    parser.add_argument("--batch-size", type=int, default=50, help="most messages per read")
    parser.add_argument("--work-ms", type=float, default=0.1, help="handler sleep per message (ms)")
    parser.add_argument("--sample-ms", type=float, default=20.0, help="sampling period (ms)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.max_in_flight < 1 or args.batch_size < 1:
        parser.error("--messages, --max-in-flight and --batch-size must be >= 1")
    if args.work_ms < 0 or args.sample_ms <= 0:
        parser.error("--work-ms must be >= 0 and --sample-ms > 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
