"""Latency: time from send to ``on_next`` for one consumer, per consumption mode.

A producer thread sends one message every ``--interval`` seconds on its own autocommit
connection and stamps each body with the time just before the send. The consumer records
``on_next time - stamp`` for every message it emits, then settles it. Rows:

- ``notification``: ``read_queue(listener=True, read_interval=None)``, notify throttle 0.
- ``notification async``: the same source piped into ``process`` with an ``async def``
  handler (``max_concurrency=16``); the time is taken when the handler starts on its event
  loop, then ``ack`` settles the message (issue #16).
- ``hybrid``: ``read_queue(listener=True, read_interval=5.0)``, notify throttle 0.
- ``poll 1 s``: ``read_queue(listener=None, read_interval=1.0)``.
- ``raw LISTEN floor``: psycopg only: ``LISTEN``, wait for a notification, ``pgmq.read``
  on the same connection, delete; what a notified consumer written with psycopg alone
  does. Not a lower bound: ``pgmq.read`` is planned on every call and its commit waits
  for the WAL flush, which the consumer's own reads do not.

Every queue has insert notifications on (throttle 0), so sends cost the same in every row.
"send itself" is the send statement's own duration (its round trip and durable commit);
"after commit" is, per message, the time from the send's return to ``on_next``: the part
a consumer can change, without the commit's disk wait, which varies from run to run.
The first ``--warmup`` sends of each row are not counted. Example::

    python benchmarks/latency.py                   # 300 sends per mode, one every 20 ms
    python benchmarks/latency.py --sends 30 --interval 0.01    # a quick look
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _common as bench
from psycopg import sql

import rx_pgmq
from rx_pgmq import operators as pgops

SEND = "SELECT * FROM pgmq.send(%s, %s::jsonb)"
READ = (
    "SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers"
    " FROM pgmq.read(%s, 30, 100)"
)
DELETE = "SELECT * FROM pgmq.delete(%s, %s::bigint[])"
MODES: dict[str, dict[str, Any]] = {
    "notification": {"listener": True, "read_interval": None},
    "notification async": {"listener": True, "read_interval": None, "async_handler": True},
    "hybrid": {"listener": True, "read_interval": 5.0},
    "poll 1 s": {"listener": None, "read_interval": 1.0},
}
FLOOR = "raw LISTEN floor"


class Recorder:
    """Collects latencies (seconds) by sequence number; signals when all arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latency: dict[int, float] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.errors: list[str] = []

    def record(self, body: dict[str, Any], now: float) -> None:
        """Record one received body (``{"seq": n, "t": send time, ...}``)."""
        with self.lock:
            self.latency.setdefault(int(body["seq"]), now - float(body["t"]))
            if len(self.latency) >= self.expected:
                self.done.set()

    def fail(self, error: str) -> None:
        """Record an error and stop waiting."""
        self.errors.append(error)
        self.done.set()


def produce(
    dsn: str,
    queue: str,
    sends: int,
    interval: float,
    stop: threading.Event,
    send_times: list[float],
) -> None:
    """Send ``sends`` stamped messages, one every ``interval`` seconds (absolute schedule).

    Appends each send statement's own duration (round trip and commit) to ``send_times``.
    """
    with bench.connect(dsn) as conn:
        conn.execute(SEND, (queue, '{"warm": true}'), prepare=True)  # prepare before timing
        conn.execute(DELETE, (queue, []), prepare=True)
        start = time.perf_counter()
        for seq in range(sends):
            if stop.is_set():
                return
            due = start + seq * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            payload = bench.body(seq)
            payload["seq"] = seq
            payload["t"] = stamp = time.perf_counter()
            conn.execute(SEND, (queue, bench.json_text(payload)), prepare=True)
            send_times.append(time.perf_counter() - stamp)


def consume_rx(dsn: str, queue: str, rec: Recorder, mode: dict[str, Any]) -> Callable[[], None]:
    """Start an rx_pgmq consumer that records latencies; return its stopper."""
    options = dict(mode)
    async_handler = options.pop("async_handler", False)
    source = rx_pgmq.read_queue(
        dsn, queue, visibility_timeout=30, batch_size=10, max_in_flight=100, **options
    )
    if async_handler:

        async def handle(message: rx_pgmq.Message) -> None:
            now = time.perf_counter()
            if isinstance(message.body, dict) and "seq" in message.body:
                rec.record(message.body, now)

        pipeline = source.pipe(pgops.process(handle, max_concurrency=16), pgops.ack())
        return pipeline.subscribe(on_error=lambda exc: rec.fail(repr(exc))).dispose

    def on_next(message: rx_pgmq.Message) -> None:
        now = time.perf_counter()
        if isinstance(message.body, dict) and "seq" in message.body:
            rec.record(message.body, now)
        message.settle()

    subscription = source.subscribe(on_next, lambda exc: rec.fail(repr(exc)))
    return subscription.dispose


def consume_floor(dsn: str, queue: str, rec: Recorder) -> Callable[[], None]:
    """Start the raw LISTEN-then-read loop on a thread; return its stopper."""
    stop = threading.Event()
    ready = threading.Event()

    def loop() -> None:
        try:
            with bench.connect(dsn) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"pgmq.q_{queue}.INSERT")))
                conn.execute(READ, (queue,), prepare=True).fetchall()
                ready.set()
                while not stop.is_set():
                    notified = False
                    for _ in conn.notifies(timeout=0.2, stop_after=1):
                        notified = True
                    if not notified:
                        continue
                    rows = conn.execute(READ, (queue,), prepare=True).fetchall()
                    now = time.perf_counter()
                    for row in rows:
                        if isinstance(row[5], dict) and "seq" in row[5]:
                            rec.record(row[5], now)
                    if rows:
                        conn.execute(DELETE, (queue, [r[0] for r in rows]), prepare=True)
        except Exception as exc:
            rec.fail(repr(exc))
            ready.set()

    thread = threading.Thread(target=loop, name="floor", daemon=True)
    thread.start()
    ready.wait(30)

    def stopper() -> None:
        stop.set()
        thread.join(5)

    return stopper


def measure(dsn: str, client: rx_pgmq.PGMQ, name: str, args: Any) -> dict[str, Any]:
    """Run one mode; return its latencies (seconds, warm-up sends excluded)."""
    total = args.sends + args.warmup
    rec = Recorder(total)
    with bench.scratch_queue(client, "lat", notify_throttle_ms=0) as queue:
        if name == FLOOR:
            stopper = consume_floor(dsn, queue, rec)
        else:
            stopper = consume_rx(dsn, queue, rec, MODES[name])
            time.sleep(0.2)  # let the consumer connect, LISTEN and do its first read
        stop = threading.Event()
        send_times: list[float] = []
        producer = threading.Thread(
            target=produce,
            args=(dsn, queue, total, args.interval, stop, send_times),
            daemon=True,
        )
        try:
            producer.start()
            patience = total * args.interval + 30.0
            if not rec.done.wait(patience):
                rec.errors.append(f"only {len(rec.latency)} of {total} messages arrived")
        finally:
            stop.set()
            producer.join(10)
            stopper()
    counted = [(seq, v) for seq, v in sorted(rec.latency.items()) if seq >= args.warmup]
    return {
        "mode": name,
        "latency_s": [v for _seq, v in counted],
        "send_s": send_times[args.warmup :],
        # per message, from the send's commit to on_next: the consumer's own part
        "after_commit_s": [v - send_times[seq] for seq, v in counted if seq < len(send_times)],
        "errors": rec.errors,
    }


def run(args: Any) -> int:
    """Measure every mode in turn; print the table."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    client = rx_pgmq.PGMQ(dsn)
    names = args.modes
    results = []
    try:
        for name in names:
            results.append(measure(dsn, client, name, args))
    finally:
        client.close()
    bench.print_header(
        f"Latency: send -> on_next, {args.sends} sends per mode, one every "
        f"{args.interval * 1e3:g} ms ({args.warmup} warm-up sends not counted)",
        info,
    )
    table = bench.Table(
        "mode",
        "received",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "send itself p50 ms",
        "after commit p50 ms",
    )
    status = 0
    for res in results:
        values = res["latency_s"]
        table.add(
            res["mode"],
            len(values),
            bench.fmt_ms(bench.percentile(values, 50)),
            bench.fmt_ms(bench.percentile(values, 90)),
            bench.fmt_ms(bench.percentile(values, 99)),
            bench.fmt_ms(max(values) if values else math.nan),
            bench.fmt_ms(bench.percentile(res["send_s"], 50)),
            bench.fmt_ms(bench.percentile(res["after_commit_s"], 50)),
        )
        if res["errors"]:
            status = 1
    table.print()
    for res in results:
        for error in res["errors"]:
            print(f"- {res['mode']}: ERROR {error}")
    by_mode = {res["mode"]: res["latency_s"] for res in results if res["latency_s"]}
    if "notification" in by_mode and "notification async" in by_mode:
        gap = (
            bench.percentile(by_mode["notification async"], 50)
            - bench.percentile(by_mode["notification"], 50)
        ) * 1e3
        print(
            f"- target notification async p50 within 0.5 ms of notification: {gap:+.2f} ms "
            f"({'met' if gap <= 0.5 else 'MISSED'})\n"
        )
    for res in results:
        if res["mode"] == "notification" and res["latency_s"]:
            p50 = bench.percentile(res["latency_s"], 50) * 1e3
            p99 = bench.percentile(res["latency_s"], 99) * 1e3
            print(
                f"- target notification p50 <= 3 ms: {p50:.2f} ms "
                f"({'met' if p50 <= 3 else 'MISSED'}); p99 <= 15 ms: {p99:.2f} ms "
                f"({'met' if p99 <= 15 else 'MISSED'})\n"
            )
    bench.emit_json(
        args.json,
        {
            "benchmark": "latency",
            "machine": info,
            "sends": args.sends,
            "interval_s": args.interval,
            "results": results,
        },
    )
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "latency")
    parser.add_argument("--sends", type=int, default=300, help="counted sends per mode")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted sends first")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between sends")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=[*MODES, FLOOR],
        default=["notification", "notification async", "hybrid", "poll 1 s", FLOOR],
        help="modes to measure, in this order",
    )
    args = parser.parse_args(argv)
    if args.sends < 1 or args.warmup < 0 or args.interval <= 0:
        parser.error("--sends must be >= 1, --warmup >= 0 and --interval > 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
