"""Smoke runs of the benchmark scripts with tiny sizes, so they never rot.

Each script runs in a subprocess against the test database and must exit 0 and print its
table. No timing assertions: figures from a busy CI machine mean nothing here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("drain.py", "latency.py", "idle.py", "memory.py", "concurrency.py", "scale.py")


def run_script(script: str, *args: str, timeout: float = 100.0) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args``; return the finished process."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``stdout`` (header and rule excluded)."""
    rows = []
    for line in stdout.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:] if rows else rows


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_explains_itself_with_help(script: str) -> None:
    """``python benchmarks/<name>.py --help`` exits 0 and documents --dsn and --json."""
    proc = run_script(script, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--dsn" in proc.stdout
    assert "--json" in proc.stdout


def test_drain_prints_a_row_per_implementation_and_writes_json(
    pgmq_dsn: str, tmp_path: Path
) -> None:
    """A tiny drain measures all ten implementations (#16: four asyncio rows; #17:
    process_batch; #18 item 4: typed bodies) and reports ratios, table and JSON."""
    out = tmp_path / "drain.json"
    proc = run_script(
        "drain.py",
        "--dsn",
        pgmq_dsn,
        "-n",
        "60",
        "--batch-sizes",
        "10",
        "--rounds",
        "1",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert {r[1] for r in rows} == {
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
    }
    assert all(r[0] == "10" for r in rows)
    assert "target batch 10" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["benchmark"] == "drain"
    assert len(figures["results"]) == 10


def test_latency_prints_percentiles_for_every_mode(pgmq_dsn: str) -> None:
    """A tiny latency run reports p50/p99/max for each mode (with #16's async handler row)
    and the raw LISTEN floor, and each row's time from the send's commit to ``on_next``
    (below the row's p50: each message's figure leaves its send's duration out)."""
    proc = run_script(
        "latency.py", "--dsn", pgmq_dsn, "--sends", "5", "--warmup", "1", "--interval", "0.01"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert [r[0] for r in rows] == [
        "notification",
        "notification async",
        "hybrid",
        "poll 1 s",
        "raw LISTEN floor",
    ]
    assert all(r[1] == "5" for r in rows)
    assert "after commit p50 ms" in proc.stdout
    for r in rows:
        p50, after_commit = float(r[2].replace(",", "")), float(r[-1].replace(",", ""))
        assert after_commit < p50, r


def test_idle_counts_server_statements_per_mode(pgmq_dsn: str) -> None:
    """A short idle run counts each mode's statements in its own scratch database."""
    proc = run_script(
        "idle.py",
        "--dsn",
        pgmq_dsn,
        "--window",
        "1",
        "--warmup",
        "0.3",
        "--modes",
        "poll 5 s",
        "hybrid 30 s",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert [r[0] for r in rows] == ["poll 5 s", "hybrid 30 s"]
    assert all(int(r[1]) >= 0 and int(r[3]) >= 0 for r in rows)


def test_memory_reports_rss_and_in_flight_peaks(pgmq_dsn: str) -> None:
    """A tiny memory run settles every message and reports RSS and in-flight peaks."""
    proc = run_script(
        "memory.py",
        "--dsn",
        pgmq_dsn,
        "--messages",
        "300",
        "--work-ms",
        "0",
        "--max-in-flight",
        "20",
        "--batch-size",
        "10",
        "--sample-ms",
        "5",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {r[0]: r[1] for r in table_rows(proc.stdout)}
    assert cells["messages settled"] == "300"
    assert "RSS growth MB" in cells
    assert int(cells["peak in flight (consumer)"]) <= 20


def test_concurrency_drains_with_an_async_handler(pgmq_dsn: str) -> None:
    """#16: a tiny concurrency run drains with many async handlers at once."""
    proc = run_script(
        "concurrency.py", "--dsn", pgmq_dsn, "-n", "200", "--sleep", "0.01", "--concurrency", "50"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert len(rows) == 1 and int(rows[0][3]) > 1


def test_scale_drains_with_every_consumer_count_and_writes_the_chart(
    pgmq_dsn: str, tmp_path: Path
) -> None:
    """#17 item 4: a tiny scaled drain (1 and 2 consumer processes, 1 and 2 queues) gives a
    row per implementation with 0 duplicates, and writes the SVG chart and the JSON."""
    svg, out = tmp_path / "scale.svg", tmp_path / "scale.json"
    proc = run_script(
        "scale.py",
        "--dsn",
        pgmq_dsn,
        "-n",
        "200",
        "--consumers",
        "1",
        "2",
        "--queues",
        "1",
        "2",
        "--batch",
        "20",
        "--svg",
        str(svg),
        "--json",
        str(out),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert len(rows) == 2 * 2 * 3
    assert {r[2] for r in rows} == {"rx_pgmq", "pgmq-py", "server loop"}
    assert all(r[4] == "0" for r in rows)  # duplicates
    assert svg.read_text().startswith("<svg") and "polyline" in svg.read_text()
    assert json.loads(out.read_text())["benchmark"] == "scale"


@pytest.mark.parametrize("batch_op", [False, True])
def test_hotpath_pushes_messages_through_the_real_pipeline_without_a_database(
    batch_op: bool,
) -> None:
    """``benchmarks/hotpath.py`` drives ``read_queue -> process (or process_batch) -> ack``
    with tiny sizes and no server: every message gets its record (the script checks it)
    and a CPU figure is printed."""
    proc = run_script(
        "hotpath.py", "-n", "200", "--batch", "10", *(["--batch-op"] if batch_op else [])
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "us CPU per message (batch 10, best of 1)" in proc.stdout
