"""Concurrency without threads: N messages, an async handler that sleeps, many at once.

One consumer drains a queue of ``-n`` messages through ``read_queue -> process(async
handler, max_concurrency=C) -> ack()``, where the handler awaits ``asyncio.sleep(S)``
(an I/O wait such as an HTTP call). All handlers run as tasks on one event loop thread.
Timed from subscribing to the N-th ``Settled``; the ideal is ``N * S / C`` seconds.
Issue #16's target: 10,000 messages, ``S`` = 0.05 s, ``C`` = 500 in under 5 s. Example::

    python benchmarks/concurrency.py                  # 10,000 messages, 0.05 s, 500 at once
    python benchmarks/concurrency.py -n 1000 --concurrency 100   # a quick look
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import _common as bench

import rx_pgmq
from rx_pgmq import operators as pgops


def drain(dsn: str, queue: str, n: int, sleep: float, concurrency: int) -> tuple[float, int]:
    """Drain ``queue``; return seconds and the most handlers seen running at once."""
    running = 0
    most = 0

    async def handle(message: rx_pgmq.Message) -> None:
        nonlocal running, most
        running += 1  # one loop thread: no lock needed
        most = max(most, running)
        await asyncio.sleep(sleep)
        running -= 1

    done = threading.Event()
    count = 0
    bad: list[str] = []
    end = 0.0

    def on_next(settled: rx_pgmq.Settled) -> None:
        nonlocal count, end
        if settled.status != "acked" or not settled.ok:
            bad.append(f"{settled.status} {settled.error!r}")
        count += 1
        if count == n:
            end = time.perf_counter()
            done.set()

    def on_error(exc: Exception) -> None:
        bad.append(repr(exc))
        done.set()

    source = rx_pgmq.read_queue(
        dsn,
        queue,
        visibility_timeout=60,
        batch_size=min(1000, concurrency),
        max_in_flight=2 * concurrency,
        read_interval=1.0,
    )
    start = time.perf_counter()
    subscription = source.pipe(
        pgops.process(handle, max_concurrency=concurrency), pgops.ack()
    ).subscribe(on_next, on_error)
    try:
        if not done.wait(timeout=max(120.0, 4 * n * sleep / concurrency)):
            raise RuntimeError(f"settled {count} of {n} before the timeout")
    finally:
        subscription.dispose()
    if bad:
        raise RuntimeError(f"{len(bad)} messages not acked: {bad[:3]}")
    return end - start, most


def run(args: Any) -> int:
    """Fill a queue, drain it once per round, print the table."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    client = rx_pgmq.PGMQ(dsn)
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(args.rounds):
            with bench.scratch_queue(client, "conc") as queue:
                bench.fill(client, queue, args.n)
                seconds, most = drain(dsn, queue, args.n, args.sleep, args.concurrency)
            rows.append({"seconds": seconds, "most_at_once": most})
    finally:
        client.close()
    bench.print_header(
        f"Concurrency: {args.n:,} messages, async handler sleeping {args.sleep * 1e3:g} ms, "
        f"max_concurrency={args.concurrency}, {args.rounds} round(s)",
        info,
    )
    ideal = args.n * args.sleep / args.concurrency
    table = bench.Table("round", "seconds", "msg/s", "most at once", "vs ideal")
    for i, row in enumerate(rows, 1):
        table.add(
            i,
            f"{row['seconds']:.2f}",
            bench.fmt_rate(args.n / row["seconds"]),
            row["most_at_once"],
            f"{row['seconds'] / ideal:.2f}x",
        )
    table.print()
    best = bench.median([r["seconds"] for r in rows])
    if (args.n, args.sleep, args.concurrency) == (10_000, 0.05, 500):
        print(f"- target under 5 s: {best:.2f} s ({'met' if best < 5 else 'MISSED'})\n")
    bench.emit_json(
        args.json,
        {
            "benchmark": "concurrency",
            "machine": info,
            "n": args.n,
            "sleep_s": args.sleep,
            "concurrency": args.concurrency,
            "results": rows,
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "concurrency")
    parser.add_argument("-n", type=int, default=10_000, help="messages to drain")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds each handler waits")
    parser.add_argument("--concurrency", type=int, default=500, help="max_concurrency")
    parser.add_argument("--rounds", type=int, default=1, help="drains (median reported)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.sleep < 0 or args.concurrency < 1 or args.rounds < 1:
        parser.error("-n, --concurrency and --rounds must be >= 1, --sleep >= 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
