"""The consumer's Python cost per message, without a database: CPU time or instructions.

Drives the real ``read_queue -> process(no-op) -> ack(Delete())`` pipeline of one
subscription on one thread: rows shaped like the drain benchmark's are turned into messages
(``messages_from_rows``), emitted with the reader's ``_deliver``, and each ack batch is
finished with the acknowledger's ``_finish`` as if its ``DELETE`` had committed. No SQL, no
threads, no waits: what is left is the Python work per message that every drain pays.

Wall-clock drains on a shared 2-core machine swing by 20-30 % between runs; this harness
counts what the noise does not move. ``--instructions`` runs it under valgrind's callgrind
for two sizes and prints the difference per message (interpreter start-up cancels)::

    python benchmarks/hotpath.py -n 100000 --repeat 5      # CPU microseconds per message
    python benchmarks/hotpath.py --instructions            # instructions per message
    python benchmarks/hotpath.py --instructions --batch-op # the process_batch pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import rx_pgmq
from rx_pgmq import operators as pgops
from rx_pgmq._consumer._facade import Consumer
from rx_pgmq._core._planner import ReadPlanner
from rx_pgmq._pg import _sql
from rx_pgmq._values._slots import decode_json_text
from rx_pgmq.actions import Delete

BODY = json.dumps(
    {
        "order_id": 12345,
        "customer": "c-000042",
        "items": [{"sku": "A-1", "qty": 2}],
        "total": 99.5,
        "note": "benchmark",
    }
)


def run(n: int, batch: int, batch_op: bool) -> float:
    """Push ``n`` messages through one subscription; return CPU microseconds per message."""
    start = Consumer.start
    Consumer.start = lambda self: None  # type: ignore[method-assign]  # no threads
    try:
        source = rx_pgmq.read_queue(
            "dbname=hotpath", "q", visibility_timeout=30, batch_size=batch, max_in_flight=4 * batch
        )
        received = [0]

        def sink(_record: object) -> None:
            received[0] += 1

        op = (
            pgops.process_batch(lambda _ms: None, max_size=batch)
            if batch_op
            else pgops.process(lambda _m: None)
        )
        subscription = source.pipe(op, pgops.ack(on_success=Delete())).subscribe(sink)
        consumer = source._consumers[0]
    finally:
        Consumer.start = start  # type: ignore[method-assign]
    reader, acker = consumer.reader, consumer.acker
    reader.planner = ReadPlanner(read_interval=5.0, listening=False, throttle=0.0)
    reader.planner.on_start(time.monotonic())
    now = datetime.now(UTC)
    loads = decode_json_text  # what a connection with psycopg's default jsonb loader gives
    msg_id = 0
    cpu = time.process_time()
    for _ in range(n // batch):
        rows: list[tuple[Any, ...]] = []
        for _i in range(batch):
            msg_id += 1
            rows.append((msg_id, 1, now, now, now, BODY, None))
        reader._deliver(batch, _sql.messages_from_rows(rows, "q", consumer, loads))
        acker._finish(consumer.batcher.take(), lost=set(), failed=set())
    cpu = time.process_time() - cpu
    if received[0] != n // batch * batch:
        raise RuntimeError(f"{received[0]} records for {n // batch * batch} messages")
    del subscription  # not disposed: the consumer never started, there is nothing to close
    return cpu / (n // batch * batch) * 1e6


def instructions(batch: int, batch_op: bool) -> float:
    """Instructions per message under callgrind: the difference of 11,000 and 1,000."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")

    def count(n: int) -> int:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "-n",
            str(n),
            "--batch",
            str(batch),
            *(["--batch-op"] if batch_op else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
        return int(found.group(1))

    return (count(11_000) - count(1_000)) / 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="messages per run")
    parser.add_argument("--batch", type=int, default=100, help="read and ack batch size")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest is printed")
    parser.add_argument("--batch-op", action="store_true", help="process_batch, not process")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions with callgrind"
    )
    args = parser.parse_args()
    if args.instructions:
        figure = instructions(args.batch, args.batch_op)
        print(f"{figure:,.0f} instructions per message (batch {args.batch})")
        return
    best = min(run(args.n, args.batch, args.batch_op) for _ in range(args.repeat))
    print(f"{best:.2f} us CPU per message (batch {args.batch}, best of {args.repeat})")


if __name__ == "__main__":
    main()
