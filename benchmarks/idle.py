"""Idle cost: statements per minute that a consumer of an empty queue sends, per mode.

Each mode gets its own scratch database (cloned from a template with PGMQ installed), so
nothing else on the server is counted, and its own consumer on an empty queue. All modes
run at the same time. After ``--warmup`` seconds (startup statements excluded) the window
of ``--window`` seconds starts; it ends when the consumers are disposed and their server
processes have exited (which flushes their statistics).

Counting, on the server (``--counter``):

- ``transactions``: transactions of the scratch database in ``pg_stat_database``
  (``xact_commit + xact_rollback``). Every statement of an autocommit consumer is one
  transaction, whether it calls a PGMQ function or (like rx_pgmq's plain reads) runs PGMQ's
  query inline; the counts are read from another database, so counting adds nothing.
- ``statements``: every statement in ``pg_stat_statements`` (only when the server preloads
  it: ``shared_preload_libraries``); the window then ends before disposing.
- ``auto`` (default): ``statements`` when available, else ``transactions``.

The consumer's own ``stats.reads`` over the window is shown beside the server's count.
Needs a role that may ``CREATE DATABASE``. Example::

    python benchmarks/idle.py                      # 60 s window after a 12 s warm-up
    python benchmarks/idle.py --window 3 --warmup 1    # a quick look
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import _common as bench
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from reactivex import abc

import rx_pgmq

MODES: dict[str, dict[str, Any]] = {
    "poll 5 s": {"listener": None, "read_interval": 5.0},
    "notification": {"listener": True, "read_interval": None},
    "hybrid 5 s": {"listener": True, "read_interval": 5.0},
    "hybrid 30 s": {"listener": True, "read_interval": 30.0},
}
TRANSACTIONS = (
    "SELECT coalesce(sum(xact_commit + xact_rollback), 0)::bigint FROM pg_stat_database"
    " WHERE datname = %s"
)
STATEMENT_CALLS = (
    "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s"
    " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
)


@dataclass
class Mode:
    """One measured mode: its database, queue, consumer and counts."""

    name: str
    database: str
    dsn: str
    queue: str = "idle"
    subscription: abc.DisposableBase | None = None
    source: rx_pgmq.QueueSource | None = None
    counts: list[int] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def errors_to_list(self, exc: Exception) -> None:
        """``on_error`` of the consumer: keep the error for the report."""
        self.errors.append(repr(exc))


def settle(message: rx_pgmq.Message) -> None:
    """``on_next`` of an idle consumer (never called unless a message shows up)."""
    message.settle()


def db_dsn(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo("", **params)


def pick_counter(admin: psycopg.Connection[Any], wanted: str) -> str:
    """``statements`` if pg_stat_statements is usable (and wanted), else ``transactions``."""
    if wanted == "transactions":
        return "transactions"
    row = admin.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    preloaded = row is not None and "pg_stat_statements" in row[0]
    if preloaded:
        try:
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            admin.execute(STATEMENT_CALLS, ("postgres",)).fetchone()
            return "statements"
        except psycopg.Error:
            pass
    if wanted == "statements":
        raise SystemExit(
            "pg_stat_statements is not available on this server (it must be in "
            "shared_preload_libraries); use --counter transactions"
        )
    return "transactions"


def backends(admin: psycopg.Connection[Any], database: str) -> int:
    """Server processes connected to ``database`` (other than ``admin``)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchone()
    return int(row[0]) if row else 0


def count(admin: psycopg.Connection[Any], mode: Mode, counter: str) -> int:
    """The mode's counter now (statements, or transactions of its database)."""
    admin.execute("SELECT pg_stat_clear_snapshot()")
    if counter == "statements":
        row = admin.execute(STATEMENT_CALLS, (mode.database,)).fetchone()
    else:
        row = admin.execute(TRANSACTIONS, (mode.database,)).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def scratch_databases(admin: psycopg.Connection[Any], dsn: str, n: int) -> Iterator[list[str]]:
    """A template database with PGMQ and ``n`` clones of it; all dropped afterwards."""
    template = bench.unique_name("idle_tpl")
    names = [bench.unique_name("idle") for _ in range(n)]
    created: list[str] = []
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        created.append(template)
        rx_pgmq.install_pgmq(db_dsn(dsn, template))
        with psycopg.connect(db_dsn(dsn, template), autocommit=True) as conn:
            conn.execute("SELECT pgmq.create('idle')")
            conn.execute("SELECT pgmq.enable_notify_insert('idle', 0)")
        bench.wait_until(lambda: backends(admin, template) == 0, 10)
        for name in names:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
            created.append(name)
        yield names
    finally:
        for name in reversed(created):
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(args: Any) -> int:
    """Measure every mode at once; print the table."""
    dsn = bench.resolve(args.dsn, args.synchronous_commit)
    info = bench.machine(dsn)
    names = args.modes
    with bench.connect(dsn) as admin:
        counter = pick_counter(admin, args.counter)
        with scratch_databases(admin, dsn, len(names)) as databases:
            modes = [
                Mode(name, db, db_dsn(dsn, db)) for name, db in zip(names, databases, strict=True)
            ]
            measure(admin, modes, counter, args)
    bench.print_header(
        f"Idle: statements per minute of one consumer on an empty queue; window "
        f"{args.window:g} s after a {args.warmup:g} s warm-up; counter: {counter}",
        info,
    )
    table = bench.Table("mode", "server count", "per minute", "consumer reads", "reads per minute")
    results = []
    status = 0
    for mode in modes:
        server = mode.counts[1] - mode.counts[0] if len(mode.counts) == 2 else -1
        reads = mode.reads[1] - mode.reads[0] if len(mode.reads) == 2 else -1
        table.add(
            mode.name,
            server,
            f"{server * 60.0 / args.window:.1f}",
            reads,
            f"{reads * 60.0 / args.window:.1f}",
        )
        results.append(
            {
                "mode": mode.name,
                "server_count": server,
                "consumer_reads": reads,
                "window_s": args.window,
                "errors": mode.errors,
            }
        )
        if mode.errors:
            status = 1
    table.print()
    for mode in modes:
        for error in mode.errors:
            print(f"- {mode.name}: ERROR {error}")
        if mode.name == "hybrid 30 s" and len(mode.counts) == 2:
            rate = (mode.counts[1] - mode.counts[0]) * 60.0 / args.window
            print(
                f"- target hybrid (read_interval=30) <= 2 queries/min: {rate:.1f} "
                f"({'met' if rate <= 2 else 'MISSED'})\n"
            )
    bench.emit_json(
        args.json,
        {
            "benchmark": "idle",
            "machine": info,
            "counter": counter,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "results": results,
        },
    )
    return status


def measure(admin: psycopg.Connection[Any], modes: list[Mode], counter: str, args: Any) -> None:
    """Start every consumer, wait out the warm-up, count over the window, stop them."""
    for mode in modes:
        source = rx_pgmq.read_queue(mode.dsn, mode.queue, visibility_timeout=30, **MODES[mode.name])
        mode.source = source
        mode.subscription = source.subscribe(settle, mode.errors_to_list)
    try:
        time.sleep(args.warmup)
        for mode in modes:
            assert mode.source is not None
            mode.reads.append(mode.source.stats.reads)
            mode.counts.append(count(admin, mode, counter))
        time.sleep(args.window)
        for mode in modes:
            assert mode.source is not None
            mode.reads.append(mode.source.stats.reads)
            if counter == "statements":
                mode.counts.append(count(admin, mode, counter))
    finally:
        for mode in modes:
            if mode.subscription is not None:
                mode.subscription.dispose()
    if counter == "transactions":
        for mode in modes:
            # Server processes flush their statistics when they exit.
            if not bench.wait_until(lambda db=mode.database: backends(admin, db) == 0, 15):
                mode.errors.append("consumer connections still open after dispose")
            mode.counts.append(count(admin, mode, counter))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = bench.base_parser(__doc__.split("\n\n")[0] if __doc__ else "idle")
    parser.add_argument("--window", type=float, default=60.0, help="seconds counted")
    parser.add_argument(
        "--warmup",
        type=float,
        default=12.0,
        help="seconds before the window (> 10 s lets startup statistics reach the server)",
    )
    parser.add_argument("--counter", choices=("auto", "statements", "transactions"), default="auto")
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="modes to run"
    )
    args = parser.parse_args(argv)
    if args.window <= 0 or args.warmup < 0:
        parser.error("--window must be > 0 and --warmup >= 0")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
