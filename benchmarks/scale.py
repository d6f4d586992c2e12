"""Scaling with consumers: N messages drained by 1, 2, 4, 8 consumer processes at once.

Rows, for each consumer count and each queue layout (one queue; the same N spread over 4
queues, every consumer serving every queue), each on fresh queues:

- ``rx_pgmq``: each process runs ``read_queue -> process(no-op) -> ack(Delete)`` per queue
  (``rx_pgmq._front._scalebench.rx_worker``; batch b, window 4 x b), the queues merged.
- ``pgmq-py``: each process loops ``read_batch`` then ``delete_batch`` over the queues in
  turn (the official client on a one-connection pool).
- ``server loop``: each "consumer" is a session calling a PL/pgSQL procedure that reads
  and deletes in the server, a COMMIT per batch, until a round over the queues is empty.

All processes open their connections first; the clock starts when they are all ready and
stops at the last settle. Every row reports msg/s, the messages handled twice (must be 0)
and the CPU the database used (the postmaster and its children, by psutil: only when the
server runs on this machine) and the consumers used, as a share of all this machine's
CPUs. ``--svg`` writes the chart (msg/s against consumers, one line per implementation).
Example::

    python benchmarks/scale.py -n 100000 --svg scale.svg     # the figures of BENCHMARKS.md
    python benchmarks/scale.py -n 2000 --consumers 1 2       # a quick look
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common as bench
import _svgchart
import psutil
from pgmq import PGMQueue
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

import rx_pgmq
from rx_pgmq._front._scalebench import DrainResult, Tally, WorkerSpec, rx_worker, scaled_drain

IMPLS = ("rx_pgmq", "pgmq-py", "server loop")
PROC_NAME = f"rx_pgmq_bench_scale_{os.getpid()}"  # one per run
PROCEDURE = sql.Identifier(PROC_NAME)
CREATE_PROCEDURE = sql.SQL("""
CREATE OR REPLACE PROCEDURE {name}(qs text[], vt integer, qty integer, INOUT ids bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    got bigint[];
    busy boolean;
BEGIN
    ids := '{{}}';
    LOOP
        busy := false;
        FOR i IN 1 .. cardinality(qs) LOOP
            SELECT array_agg(msg_id) INTO got FROM pgmq.read(qs[i], vt, qty);
            CONTINUE WHEN got IS NULL;
            PERFORM pgmq.delete(qs[i], got);
            ids := ids || ARRAY(SELECT ((i - 1)::bigint << 40) | m FROM unnest(got) AS m);
            busy := true;
            COMMIT;
        END LOOP;
        EXIT WHEN NOT busy;
    END LOOP;
END
$$""").format(name=PROCEDURE)
DROP_PROCEDURE = sql.SQL("DROP PROCEDURE IF EXISTS {}(text[], integer, integer, bigint[])").format(
    PROCEDURE
)


def pgmq_py_worker(spec: WorkerSpec, tally: Tally) -> None:
    """pgmq-py: ``read_batch`` then ``delete_batch``, over the queues in turn."""
    pool = ConnectionPool(spec.dsn, min_size=1, max_size=1, open=True, name="bench-pgmq-py")
    try:
        pool.wait(timeout=60)
        client = PGMQueue(pool=pool, init_extension=False, vt=spec.visibility_timeout)
        tally.go()
        while not tally.stopping:
            busy = False
            for q in spec.queues:
                msgs = client.read_batch(q, vt=spec.visibility_timeout, batch_size=spec.batch_size)
                if not msgs:
                    continue
                busy = True
                client.delete_batch(q, [m.msg_id for m in msgs])
                tally.add([spec.key(q, m.msg_id) for m in msgs])
            if not busy:
                tally.wait_stop(0.01)
    finally:
        pool.close()


def server_worker(spec: WorkerSpec, tally: Tally) -> None:
    """One session running the procedure until a round over the queues reads nothing."""
    with bench.connect(spec.dsn) as conn:
        call = sql.SQL("CALL {}(%s, %s, %s, NULL)").format(sql.Identifier(spec.options["proc"]))
        tally.go()
        row = conn.execute(
            call, (list(spec.queues), spec.visibility_timeout, spec.batch_size)
        ).fetchone()
        tally.add(row[0] if row and row[0] else [])
        tally.wait_stop()  # the session (its CPU time) lives until the drain is over


WORKERS: dict[str, Callable[[WorkerSpec, Tally], None]] = {
    "rx_pgmq": rx_worker,
    "pgmq-py": pgmq_py_worker,
    "server loop": server_worker,
}


def wal_bytes(dsn: str) -> int:
    """The server's WAL position in bytes (the whole cluster). ``pg_stat_wal.wal_bytes``
    counts the same bytes but lags (backends flush their statistics about once a second)."""
    with bench.connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


class CpuMeter:
    """CPU seconds used by the database server (postmaster and children) and by the
    consumer processes, and WAL bytes written, between :meth:`start` and :meth:`stop`."""

    def __init__(self, postmaster: psutil.Process | None, dsn: str) -> None:
        self.postmaster = postmaster
        self.dsn = dsn
        self.wal_start = 0
        self.wal_drain = 0
        self.wal_sent = 0
        self.consumers: list[psutil.Process] = []
        self._begin: dict[int, float] = {}
        self._t0 = 0.0
        self.db_share = float("nan")
        self.client_share = float("nan")

    def _server(self) -> list[psutil.Process]:
        if self.postmaster is None:
            return []
        return [self.postmaster, *self.postmaster.children(recursive=True)]

    @staticmethod
    def _cpu(procs: Sequence[psutil.Process]) -> dict[int, float]:
        used = {}
        for p in procs:
            try:
                t = p.cpu_times()
                used[p.pid] = t.user + t.system
            except psutil.Error:  # ended meanwhile
                continue
        return used

    def start(self, pids: Sequence[int]) -> None:
        self.consumers = [psutil.Process(pid) for pid in pids]
        self.wal_start = wal_bytes(self.dsn)
        self._begin = self._cpu([*self._server(), *self.consumers])
        self._t0 = time.monotonic()

    def stop(self) -> None:
        wall = (time.monotonic() - self._t0) * (os.cpu_count() or 1)
        server = self._cpu(self._server())
        client = self._cpu(self.consumers)
        if self.postmaster is not None:
            self.db_share = sum(v - self._begin.get(k, 0.0) for k, v in server.items()) / wall
        self.client_share = sum(v - self._begin.get(k, 0.0) for k, v in client.items()) / wall
        self.wal_drain = wal_bytes(self.dsn) - self.wal_start


def postmaster_of(dsn: str) -> psutil.Process | None:
    """The server's postmaster process when it runs on this machine, else ``None``."""
    host = str(conninfo_to_dict(dsn).get("host") or "")
    if host not in ("", "localhost", "127.0.0.1", "::1") and not host.startswith("/"):
        return None
    with bench.connect(dsn) as conn:  # the backend must live while its parent is looked up
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            return psutil.Process(int(row[0])).parent() if row else None
        except psutil.Error:
            return None


def measure(
    impl: str,
    dsn: str,
    client: rx_pgmq.PGMQ,
    n: int,
    queues: int,
    consumers: int,
    batch: int,
    postmaster: psutil.Process | None,
) -> tuple[DrainResult, CpuMeter]:
    """Fill ``queues`` fresh queues with ``n`` messages in all; drain them with ``impl``."""
    names = [bench.unique_name("scale") for _ in range(queues)]
    for name in names:
        client.create_queue(name)
    try:
        wal_sent = wal_bytes(dsn)
        for i, name in enumerate(names):
            bench.fill(client, name, n // queues + (1 if i < n % queues else 0))
        wal_sent = wal_bytes(dsn) - wal_sent
        meter = CpuMeter(postmaster, dsn)
        spec = WorkerSpec(
            dsn,
            tuple(names),
            batch_size=batch,
            max_in_flight=4 * batch,
            options={"proc": PROC_NAME},
        )
        result = scaled_drain(
            spec,
            n,
            consumers,
            worker=WORKERS[impl],
            timeout=max(300.0, n / 100.0),
            on_start=meter.start,
            on_done=meter.stop,
        )
        left = sum(client.metrics(name).queue_length for name in names)
        if left or result.lost:
            raise RuntimeError(f"{impl}: {left} messages left, {result.lost} never handled")
        meter.wal_sent = wal_sent
        return result, meter
    finally:
        for name in names:
            client.drop_queue(name)


def run(args: Any) -> int:
    """Measure every implementation at every consumer count and queue layout."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    client = rx_pgmq.PGMQ(dsn)
    postmaster = postmaster_of(dsn)
    impls = [i for i in IMPLS if i in args.only] if args.only else list(IMPLS)
    with bench.connect(dsn) as conn:
        conn.execute(CREATE_PROCEDURE)
    rows: list[dict[str, Any]] = []
    try:
        for queues in args.queues:
            for consumers in args.consumers:
                for impl in impls:
                    result, meter = measure(
                        impl, dsn, client, args.n, queues, consumers, args.batch, postmaster
                    )
                    rows.append(
                        {
                            "queues": queues,
                            "consumers": consumers,
                            "impl": impl,
                            "msg_per_s": result.rate,
                            "duplicates": result.duplicates,
                            "lost": result.lost,
                            "db_cpu": meter.db_share,
                            "client_cpu": meter.client_share,
                            "wal_send_per_msg": meter.wal_sent / args.n,
                            "wal_drain_per_msg": meter.wal_drain / args.n,
                            "per_consumer": result.per_consumer,
                        }
                    )
                    if args.verbose:
                        print(
                            f"{queues} queue(s) {consumers} consumer(s) {impl:<12} "
                            f"{result.rate:>10,.0f} msg/s",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        with bench.connect(dsn) as conn:
            conn.execute(DROP_PROCEDURE)
        client.close()

    bench.print_header(
        f"Scale: {args.n:,} messages drained by 1..{max(args.consumers)} consumer processes, "
        f"batch {args.batch} (rx_pgmq window 4 x batch)",
        info,
    )
    table = bench.Table(
        "queues",
        "consumers",
        "implementation",
        "msg/s",
        "duplicates",
        "db CPU",
        "client CPU",
        "WAL B/msg send",
        "WAL B/msg drain",
    )
    for r in rows:
        table.add(
            r["queues"],
            r["consumers"],
            r["impl"],
            bench.fmt_rate(r["msg_per_s"]),
            r["duplicates"],
            _pct(r["db_cpu"]),
            _pct(r["client_cpu"]),
            f"{r['wal_send_per_msg']:,.0f}",
            f"{r['wal_drain_per_msg']:,.0f}",
        )
    table.print()
    print(
        "CPU: share of all this machine's CPUs (100% = every core busy). WAL: bytes of WAL "
        "per message while the queues were filled (send) and drained (the whole cluster).\n"
    )
    if args.svg:
        panels = [
            _svgchart.Panel(
                f"{q} queue{'s' if q > 1 else ''}, {args.n:,} messages",
                {
                    impl: [
                        (r["consumers"], r["msg_per_s"])
                        for r in rows
                        if r["queues"] == q and r["impl"] == impl
                    ]
                    for impl in impls
                },
            )
            for q in args.queues
        ]
        with open(args.svg, "w", encoding="utf-8") as fh:
            fh.write(_svgchart.render(panels, x_label="consumer processes", y_label="msg/s"))
        print(f"chart: {args.svg}\n")
    bench.emit_json(
        args.json,
        {"benchmark": "scale", "machine": info, "n": args.n, "batch": args.batch, "rows": rows},
    )
    return 0


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value:.0%}"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "scale")
    parser.add_argument("-n", type=int, default=100_000, help="messages per drain (all queues)")
    parser.add_argument(
        "--consumers", type=int, nargs="+", default=[1, 2, 4, 8], help="consumer processes"
    )
    parser.add_argument("--queues", type=int, nargs="+", default=[1, 4], help="queue layouts")
    parser.add_argument("--batch", type=int, default=100, help="messages per read")
    parser.add_argument(
        "--only", nargs="+", choices=IMPLS, default=None, help="measure only these rows"
    )
    parser.add_argument("--svg", metavar="PATH", default=None, help="write the chart here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each run")
    args = parser.parse_args(argv)
    if args.n < 1 or min(args.consumers) < 1 or min(args.queues) < 1 or args.batch < 1:
        parser.error("-n, --consumers, --queues and --batch must be >= 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
