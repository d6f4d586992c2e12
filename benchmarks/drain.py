"""Drain throughput: one consumer reading and deleting N queued messages, five ways.

Rows, measured in the same run and alternating (the order rotates every round), median of
``--rounds`` runs, each run on a fresh queue of N messages (~120-byte JSON bodies):

- ``rx_pgmq``: ``read_queue(batch_size=b, max_in_flight=window) -> process(no-op) ->
  ack(on_success=Delete())``, timed until the N-th ``Settled`` arrives (its delete committed).
- ``rx_pgmq typed``: the ``rx_pgmq`` row with ``read_queue(..., body_type=BenchOrder)``, a
  ``msgspec.Struct`` of the body's fields: each body is decoded into it (issue #18 item 4).
- ``rx_pgmq batch``: the same with ``process_batch(no-op, max_size=b)`` in place of
  ``process``: one handler call per group of b messages, still one ``Outcome`` per message.
- ``raw psycopg``: one autocommit connection, prepared statements, ``pgmq.read(q, vt, b)``
  then ``pgmq.delete(q, ids[])``, repeat.
- ``pgmq-py``: the official client (``PGMQueue.read_batch`` then ``delete_batch``) on a
  one-connection pool.
- ``server loop``: a PL/pgSQL procedure that reads and deletes with a COMMIT per batch
  (no client round trips: the database's own limit).

asyncio rows (issue #16), each on its own event loop (``asyncio.run``):

- ``rx_pgmq async``: the ``rx_pgmq`` row with an ``async def`` no-op handler and
  ``max_concurrency=16`` (tasks on the subscription's event loop thread).
- ``async for``: ``async for message in read_queue(...)`` settling each message with
  ``message.asettle()``, whose futures are awaited at the end (awaiting each settle in
  turn would wait for each commit).
- ``pgmq-py async``: the official async client (asyncpg) ``read_batch`` then
  ``delete_batch`` on a one-connection pool.
- ``raw async``: a psycopg ``AsyncConnection`` loop of read then delete.

Connections are opened before the clock starts for every row. Example::

    python benchmarks/drain.py                       # 50,000 messages, batches 10/100/1000
    python benchmarks/drain.py -n 2000 --batch-sizes 10 100 --rounds 1   # a quick look
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import _common as bench
import asyncpg  # type: ignore[import-untyped]
import msgspec
import psycopg
from pgmq import PGMQueue
from pgmq.async_queue import PGMQueue as AsyncPGMQueue
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

import rx_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq.actions import Delete

IMPLS = (
    "rx_pgmq",
    "rx_pgmq typed",
    "rx_pgmq batch",
    "raw psycopg",
    "pgmq-py",
    "server loop",
    "rx_pgmq async",
    "async for",
    "pgmq-py async",
    "raw async",
)

READ = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.read(%s, %s::integer, %s::integer)"
)
DELETE = "SELECT * FROM pgmq.delete(%s, %s::bigint[])"
PROCEDURE = sql.Identifier(f"rx_pgmq_bench_drain_{os.getpid()}")  # one per run
CREATE_PROCEDURE = sql.SQL("""
CREATE OR REPLACE PROCEDURE {name}(q text, vt integer, qty integer, INOUT total bigint)
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    total := 0;
    LOOP
        SELECT array_agg(msg_id) INTO ids FROM pgmq.read(q, vt, qty);
        EXIT WHEN ids IS NULL;
        PERFORM pgmq.delete(q, ids);
        total := total + cardinality(ids);
        COMMIT;
    END LOOP;
END
$$""").format(name=PROCEDURE)
CALL_PROCEDURE = sql.SQL("CALL {}(%s, %s, %s, NULL)").format(PROCEDURE)
DROP_PROCEDURE = sql.SQL("DROP PROCEDURE IF EXISTS {}(text, integer, integer, bigint)").format(
    PROCEDURE
)

VT = 60


class BenchOrder(msgspec.Struct):
    """The fields of a benchmark body (:func:`_common.body`), for the typed row."""

    order_id: int
    customer: str
    sku: str
    qty: int
    price_cents: int
    note: str


class DrainError(RuntimeError):
    """A drain did not end with every message read and deleted exactly once."""


async def _async_noop(_message: rx_pgmq.Message) -> None:
    return None


def drain_rx_pgmq(
    dsn: str,
    queue: str,
    n: int,
    batch: int,
    window: int,
    *,
    handler: Any = None,
    batched: bool = False,
    body_type: type[Any] | None = None,
) -> float:
    """Drain with ``read_queue -> process(no-op) -> ack(Delete)``; return seconds.

    With ``handler`` (an async no-op) the handler runs as up to 16 tasks on an event loop;
    ``batched``: ``process_batch(no-op, max_size=batch)`` instead of ``process``;
    ``body_type``: bodies decoded into it.
    """
    pool = ConnectionPool(
        dsn, min_size=2, max_size=2, kwargs={"autocommit": True}, open=True, name="bench"
    )
    try:
        pool.wait(timeout=30)
        source = rx_pgmq.read_queue(
            pool,
            queue,
            visibility_timeout=VT,
            batch_size=batch,
            max_in_flight=window,
            read_interval=5.0,
            body_type=body_type,
        )
        done = threading.Event()
        count = 0
        bad: list[str] = []
        end = 0.0

        def on_next(settled: rx_pgmq.Settled) -> None:
            nonlocal count, end
            if settled.status != "acked" or not settled.outcome.ok:
                bad.append(settled.status if settled.outcome.ok else f"failed: {settled.reason}")
            count += 1
            if count == n:
                end = time.perf_counter()
                done.set()

        def on_error(exc: Exception) -> None:
            bad.append(repr(exc))
            done.set()

        if batched:
            operator = pgops.process_batch(lambda _ms: None, max_size=batch)
        elif handler is None:
            operator = pgops.process(lambda _m: None)
        else:
            operator = pgops.process(handler, max_concurrency=16)
        start = time.perf_counter()
        subscription = source.pipe(operator, pgops.ack(on_success=Delete())).subscribe(
            on_next, on_error
        )
        try:
            if not done.wait(timeout=max(120.0, n / 200.0)):
                raise DrainError(f"rx_pgmq settled {count} of {n} messages before the timeout")
        finally:
            subscription.dispose()
        if bad:
            raise DrainError(f"rx_pgmq: {len(bad)} messages not acked: {bad[:3]}")
        return end - start
    finally:
        pool.close()


def drain_async_for(dsn: str, queue: str, n: int, batch: int, window: int) -> float:
    """Drain with ``async for`` over ``read_queue`` and ``asettle``; return seconds."""

    async def drain(pool: ConnectionPool) -> float:
        source = rx_pgmq.read_queue(
            pool, queue, visibility_timeout=VT, batch_size=batch, max_in_flight=window
        )
        settles: list[asyncio.Future[Any]] = []
        start = time.perf_counter()
        async with aclosing(aiter(source)) as messages:
            async for message in messages:
                settles.append(message.asettle())  # requested at once, awaited below
                if len(settles) == n:
                    break
            statuses = await asyncio.gather(*settles)
        elapsed = time.perf_counter() - start
        bad = [s for s in statuses if s != "acked"]
        if bad:
            raise DrainError(f"async for: {len(bad)} messages not acked: {bad[:3]}")
        return elapsed

    pool = ConnectionPool(
        dsn, min_size=2, max_size=2, kwargs={"autocommit": True}, open=True, name="bench"
    )
    try:
        pool.wait(timeout=30)
        return asyncio.run(drain(pool))
    finally:
        pool.close()


def drain_pgmq_py_async(dsn: str, queue: str, n: int, batch: int) -> float:
    """Drain with pgmq-py's async client (asyncpg); return seconds."""

    async def drain() -> float:
        params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
        pool = await asyncpg.create_pool(
            min_size=1,
            max_size=1,
            host=params.get("host"),
            port=int(params.get("port", 5432)),
            user=params.get("user"),
            password=params.get("password"),
            database=params.get("dbname"),
        )
        try:
            client = AsyncPGMQueue(pool=pool, vt=VT)
            done = 0
            start = time.perf_counter()
            while done < n:
                msgs = await client.read_batch(queue, vt=VT, batch_size=batch)
                if not msgs:
                    raise DrainError(f"pgmq-py async: queue empty after {done} of {n}")
                deleted = await client.delete_batch(queue, [m.msg_id for m in msgs])
                if len(deleted) != len(msgs):
                    raise DrainError(f"pgmq-py async: deleted {len(deleted)} of {len(msgs)}")
                done += len(msgs)
            return time.perf_counter() - start
        finally:
            await pool.close()

    return asyncio.run(drain())


def drain_raw_async(dsn: str, queue: str, n: int, batch: int) -> float:
    """Drain with a psycopg ``AsyncConnection`` loop of read then delete; return seconds."""

    async def drain() -> float:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            done = 0
            start = time.perf_counter()
            while done < n:
                cur = await conn.execute(READ, (queue, VT, batch), prepare=True)
                rows = await cur.fetchall()
                if not rows:
                    raise DrainError(f"raw async: queue empty after {done} of {n}")
                ids = [r[0] for r in rows]
                cur = await conn.execute(DELETE, (queue, ids), prepare=True)
                if len(await cur.fetchall()) != len(ids):
                    raise DrainError("raw async: not every message was deleted")
                done += len(rows)
            return time.perf_counter() - start

    return asyncio.run(drain())


def drain_raw(dsn: str, queue: str, n: int, batch: int) -> float:
    """Drain with a plain psycopg loop: read ``batch``, delete their ids; return seconds."""
    with bench.connect(dsn) as conn:
        done = 0
        start = time.perf_counter()
        while done < n:
            rows = conn.execute(READ, (queue, VT, batch), prepare=True).fetchall()
            if not rows:
                raise DrainError(f"raw loop: queue empty after {done} of {n}")
            ids = [r[0] for r in rows]
            deleted = conn.execute(DELETE, (queue, ids), prepare=True).fetchall()
            if len(deleted) != len(ids):
                raise DrainError(f"raw loop: deleted {len(deleted)} of {len(ids)}")
            done += len(rows)
        return time.perf_counter() - start


def drain_pgmq_py(dsn: str, queue: str, n: int, batch: int) -> float:
    """Drain with the official pgmq-py client (read_batch -> delete_batch); return seconds."""
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True, name="bench-pgmq-py")
    try:
        pool.wait(timeout=30)
        client = PGMQueue(pool=pool, init_extension=False, vt=VT)
        done = 0
        start = time.perf_counter()
        while done < n:
            msgs = client.read_batch(queue, vt=VT, batch_size=batch)
            if not msgs:
                raise DrainError(f"pgmq-py: queue empty after {done} of {n}")
            deleted = client.delete_batch(queue, [m.msg_id for m in msgs])
            if len(deleted) != len(msgs):
                raise DrainError(f"pgmq-py: deleted {len(deleted)} of {len(msgs)}")
            done += len(msgs)
        return time.perf_counter() - start
    finally:
        pool.close()


def drain_server(dsn: str, queue: str, n: int, batch: int) -> float:
    """Drain inside the server with the PL/pgSQL procedure; return seconds."""
    with bench.connect(dsn) as conn:
        start = time.perf_counter()
        row = conn.execute(CALL_PROCEDURE, (queue, VT, batch)).fetchone()
        elapsed = time.perf_counter() - start
    total = row[0] if row else None
    if total != n:
        raise DrainError(f"server loop drained {total} of {n}")
    return elapsed


def drain_once(impl: str, dsn: str, queue: str, n: int, batch: int, window: int) -> float:
    """Drain ``queue`` (holding ``n`` messages) with ``impl``; return seconds."""
    if impl in ("rx_pgmq", "rx_pgmq batch"):
        return drain_rx_pgmq(dsn, queue, n, batch, window, batched=impl == "rx_pgmq batch")
    if impl == "rx_pgmq typed":
        return drain_rx_pgmq(dsn, queue, n, batch, window, body_type=BenchOrder)
    if impl == "rx_pgmq async":
        return drain_rx_pgmq(dsn, queue, n, batch, window, handler=_async_noop)
    if impl == "async for":
        return drain_async_for(dsn, queue, n, batch, window)
    runners: dict[str, Callable[[str, str, int, int], float]] = {
        "raw psycopg": drain_raw,
        "pgmq-py": drain_pgmq_py,
        "server loop": drain_server,
        "pgmq-py async": drain_pgmq_py_async,
        "raw async": drain_raw_async,
    }
    return runners[impl](dsn, queue, n, batch)


def run(args: Any) -> int:
    """Measure every implementation for every batch size; print the table."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    client = rx_pgmq.PGMQ(dsn)
    impls = [i for i in IMPLS if i in args.only] if args.only else list(IMPLS)
    with bench.connect(dsn) as conn:
        conn.execute(CREATE_PROCEDURE)
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for rnd in range(args.rounds):
            for bi, batch in enumerate(args.batch_sizes):
                window = args.window_factor * batch
                shift = (rnd + bi) % len(impls)
                for impl in impls[shift:] + impls[:shift]:
                    with bench.scratch_queue(client, "drain") as queue:
                        bench.fill(client, queue, args.n)
                        seconds = drain_once(impl, dsn, queue, args.n, batch, window)
                        left = client.metrics(queue).queue_length
                    if left:
                        raise DrainError(f"{impl}: {left} messages left in the queue")
                    rate = args.n / seconds
                    samples.setdefault((impl, batch), []).append(rate)
                    if args.verbose:
                        print(
                            f"round {rnd + 1} batch {batch:>4} {impl:<12} {rate:>10,.0f} msg/s",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        with bench.connect(dsn) as conn:
            conn.execute(DROP_PROCEDURE)
        client.close()

    bench.print_header(
        f"Drain: {args.n:,} messages, one consumer, median of {args.rounds} "
        f"round(s); rx_pgmq window = {args.window_factor} x batch",
        info,
    )
    table = bench.Table(
        "batch", "implementation", "msg/s (median)", "min..max", "vs raw", "vs server"
    )
    results: list[dict[str, Any]] = []
    for batch in args.batch_sizes:
        raw = bench.median(samples.get(("raw psycopg", batch), []))
        server = bench.median(samples.get(("server loop", batch), []))
        for impl in impls:
            values = samples[(impl, batch)]
            med = bench.median(values)
            table.add(
                batch,
                impl,
                bench.fmt_rate(med),
                f"{min(values):,.0f}..{max(values):,.0f}",
                f"{med / raw:.2f}x" if raw == raw else "n/a",
                f"{med / server:.2f}x" if server == server else "n/a",
            )
            results.append({"batch": batch, "impl": impl, "msg_per_s": values, "median": med})
    table.print()
    targets = _targets(samples, args.batch_sizes)
    for line in targets:
        print(line)
    bench.emit_json(
        args.json,
        {
            "benchmark": "drain",
            "machine": info,
            "n": args.n,
            "rounds": args.rounds,
            "window_factor": args.window_factor,
            "results": results,
            "targets": targets,
        },
    )
    return 0


def _targets(samples: dict[tuple[str, int], list[float]], batches: list[int]) -> list[str]:
    lines = []
    checks = (
        (100, "rx_pgmq", "raw psycopg", 1.2),
        (100, "rx_pgmq", "pgmq-py", 2.0),
        (100, "rx_pgmq typed", "rx_pgmq", 0.9),  # issue #18 item 4: within 10%
        (10, "rx_pgmq", "raw psycopg", 1.5),
        (1000, "rx_pgmq batch", "raw psycopg", 1.5),  # issue #17 item 3
        (100, "rx_pgmq async", "rx_pgmq", 0.8),
        (100, "rx_pgmq async", "pgmq-py async", 2.0),
        (100, "async for", "pgmq-py async", 1.5),
    )
    for batch, row, other, want in checks:
        if batch not in batches or (row, batch) not in samples or (other, batch) not in samples:
            continue
        ratio = bench.median(samples[(row, batch)]) / bench.median(samples[(other, batch)])
        verdict = "met" if ratio >= want else f"MISSED by {(want - ratio) / want:.0%}"
        lines.append(f"- target batch {batch}: {row} >= {want}x {other}: {ratio:.2f}x ({verdict})")
    if lines:
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "drain")
    parser.add_argument("-n", type=int, default=50_000, help="messages per drain")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[10, 100, 1000], help="batch sizes"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per row (median)")
    parser.add_argument(
        "--window-factor",
        type=int,
        default=4,
        help="rx_pgmq max_in_flight = factor x batch size (4: reads run up to three "
        "batches ahead of the acks)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=IMPLS, default=None, help="measure only these rows"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each run")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or min(args.batch_sizes) < 1 or args.window_factor < 1:
        parser.error("-n, --rounds, --batch-sizes and --window-factor must be >= 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
