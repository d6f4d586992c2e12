"""Shared helpers of the benchmark scripts: server, machine, queues, statistics, tables.

The scripts in ``benchmarks/`` are plain programs, not tests: each one measures one thing,
prints a Markdown table (so BENCHMARKS.md can quote it verbatim) and can write its raw
figures as JSON (``--json PATH``, ``-`` for stdout). They use the embedded PostgreSQL by
default (``rx_pgmq.embedded.resolve_dsn``: ``--dsn``, then ``$RX_PGMQ_DSN`` /
``$DATABASE_URL``, else the embedded server).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import rx_pgmq
from rx_pgmq import embedded

__all__ = [
    "BODY_BYTES",
    "Table",
    "base_parser",
    "body",
    "connect",
    "emit_json",
    "fill",
    "fmt_ms",
    "fmt_rate",
    "json_text",
    "machine",
    "median",
    "percentile",
    "print_header",
    "resolve",
    "rss_bytes",
    "scratch_queue",
    "unique_name",
    "wait_until",
]

BODY_BYTES = 120
"""Approximate size of a benchmark message body, as JSON text."""

_names = itertools.count(1)


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares (``--dsn``, ``--json``)."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL conninfo/URI with PGMQ; default: $RX_PGMQ_DSN, $DATABASE_URL, "
        "else the embedded server (started if needed)",
    )
    parser.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default=None,
        help="set synchronous_commit on every benchmark connection (default: the server's)",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write the raw figures as JSON to PATH ('-' for stdout)",
    )
    return parser


def resolve(dsn: str | None, synchronous_commit: str | None = None) -> str:
    """The conninfo to benchmark against (see :func:`rx_pgmq.embedded.resolve_dsn`).

    With ``synchronous_commit`` (``on``/``off``), every connection opened from the returned
    conninfo uses that setting (``options=-c synchronous_commit=...``), so all rows of a
    table share it.
    """
    resolved = embedded.resolve_dsn(dsn)
    if synchronous_commit is None:
        return resolved
    params = conninfo_to_dict(resolved)
    options = str(params.get("options") or "")
    params["options"] = f"{options} -c synchronous_commit={synchronous_commit}".strip()
    return make_conninfo("", **params)


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A plain psycopg connection tagged ``rx_pgmq.bench``."""
    return psycopg.connect(dsn, autocommit=autocommit, application_name="rx_pgmq.bench")


def unique_name(kind: str) -> str:
    """A queue (or database) name no other run uses: ``bench_<kind>_<pid>_<n>``."""
    return f"bench_{kind}_{os.getpid()}_{next(_names)}"


@contextmanager
def scratch_queue(
    client: rx_pgmq.PGMQ, kind: str, *, notify_throttle_ms: int | None = None
) -> Iterator[str]:
    """Create a fresh queue for one measurement and drop it afterwards."""
    name = unique_name(kind)
    client.create_queue(name)
    try:
        if notify_throttle_ms is not None:
            client.enable_notify(name, throttle_ms=notify_throttle_ms)
        yield name
    finally:
        client.drop_queue(name)


def body(i: int) -> dict[str, Any]:
    """A realistic message body of about :data:`BODY_BYTES` bytes of JSON."""
    value: dict[str, Any] = {
        "order_id": i,
        "customer": f"customer-{i % 9973:05d}",
        "sku": f"SKU-{i % 977:04d}",
        "qty": 1 + i % 5,
        "price_cents": 1999,
        "note": "",
    }
    pad = BODY_BYTES - len(json.dumps(value, separators=(",", ":")))
    value["note"] = "x" * max(0, pad)
    return value


def json_text(value: Any) -> str:
    """Compact JSON text for a body."""
    return json.dumps(value, separators=(",", ":"))


def fill(client: rx_pgmq.PGMQ, queue: str, n: int, *, chunk: int = 1000) -> None:
    """Send ``n`` messages of :func:`body` to ``queue`` in batches of ``chunk``."""
    for start in range(0, n, chunk):
        client.send_batch(queue, [body(i) for i in range(start, min(n, start + chunk))])


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile by nearest rank (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt_rate(value: float) -> str:
    """Messages per second, thousands separated."""
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def fmt_ms(seconds_value: float) -> str:
    """Seconds shown as milliseconds."""
    return "n/a" if math.isnan(seconds_value) else f"{seconds_value * 1e3:,.2f}"


def rss_bytes() -> int:
    """The resident set size of this process now (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine(dsn: str) -> dict[str, Any]:
    """What the figures were measured on: CPUs, load, Python, PostgreSQL and its settings."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rx_pgmq": rx_pgmq.__version__,
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "argv": " ".join(["python", *sys.argv]),
    }
    with connect(dsn) as conn:
        for setting in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute("SELECT current_setting(%s)", (setting,)).fetchone()
            info[setting] = row[0] if row else None
        row = conn.execute(
            "SELECT coalesce((SELECT 'extension ' || extversion FROM pg_extension"
            " WHERE extname = 'pgmq'), obj_description('pgmq'::regnamespace, 'pg_namespace'))"
        ).fetchone()
        info["pgmq"] = row[0] if row and row[0] else "unknown"
    return info


def print_header(title: str, info: dict[str, Any]) -> None:
    """Print the title and the machine line above a table."""
    print(f"## {title}\n")
    print(
        f"{info['nproc']} CPUs (load {info['loadavg_1m']} at start), Python {info['python']}, "
        f"PostgreSQL {info['server_version']} (fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}), PGMQ {info['pgmq']}, "
        f"psycopg {info['psycopg']}, rx_pgmq {info['rx_pgmq']}"
    )
    print(f"command: `{info['argv']}`\n")


class Table:
    """A Markdown table: numbers right-aligned, columns padded for reading in a terminal."""

    def __init__(self, *columns: str) -> None:
        self.columns = columns
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: object) -> None:
        """Add one row (cells are converted with ``str``)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(tuple(str(c) for c in cells))

    def render(self) -> str:
        """The table as Markdown text."""
        widths = [
            max(len(col), *(len(r[i]) for r in self.rows)) if self.rows else len(col)
            for i, col in enumerate(self.columns)
        ]
        numeric = [
            bool(self.rows) and all(_numeric(r[i]) for r in self.rows)
            for i in range(len(self.columns))
        ]

        def line(cells: Sequence[str]) -> str:
            out = []
            for cell, width, right in zip(cells, widths, numeric, strict=True):
                out.append(cell.rjust(width) if right else cell.ljust(width))
            return "| " + " | ".join(out) + " |"

        rule = (
            "|"
            + "|".join(
                ("-" * (w + 1) + ":") if right else ("-" * (w + 2))
                for w, right in zip(widths, numeric, strict=True)
            )
            + "|"
        )
        return "\n".join([line(self.columns), rule, *(line(r) for r in self.rows)])

    def print(self) -> None:
        """Print the table followed by an empty line."""
        print(self.render())
        print()


def _numeric(cell: str) -> bool:
    text = cell.replace(",", "").replace("x", "").replace("%", "").strip()
    if text in ("", "n/a", "-"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def emit_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` (``-``: stdout; ``None``: nowhere)."""
    if path is None:
        return
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    if path == "-":
        print(text)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed (for server state)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
