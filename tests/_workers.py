"""A consumer in a child process, for the fault scenarios (SIGKILL, competing processes).

Run as ``python tests/_workers.py '<json config>'``. It subscribes
``read_queue(...).pipe(process(handle), ack())``, prints ``ready`` on stdout, and runs until
its stdin closes (then it disposes the subscription, which flushes acks and releases
unsettled messages, and exits 0) or it is killed.

Everything it does goes to the file ``config["out"]``, one line per event, flushed at once
(so a SIGKILL loses at most a half-written last line, which readers ignore):

- ``P <msg_id> <read_ct> <n>``: processed the message with body ``{"n": n}`` (written at
  the end of processing, right before the ack is requested);
- ``S <msg_id> <status>``: its ack finished with that ``Settled.status``;
- ``E <error>``: the pipeline ended with an error.

Config keys: ``dsn``, ``queue``, ``out``; optional ``vt`` (default 10), ``batch_size``
(10), ``max_in_flight`` (20), ``read_interval`` (0.2), ``work`` (seconds per message, 0),
``slow_every`` / ``slow_seconds`` (messages whose ``n`` is a multiple of ``slow_every``
take ``slow_seconds`` on their first delivery: an injected lease overrun), ``concurrency``
(``process``'s ``max_concurrency``, 1), ``fenced``, ``extend_visibility``; ``effects`` (a
table ``(msg_id bigint, n int)``: each processing inserts one row) with ``transactional``
(insert and ack in one transaction through ``process_in_transaction``; else the row is
written on a connection of its own, committed before the ack is requested).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from reactivex import Observable

import rx_pgmq
from rx_pgmq import Message, Outcome, Settled
from rx_pgmq import operators as pgops


def main(config: dict[str, Any]) -> int:
    out = open(config["out"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()
    work = float(config.get("work", 0.0))
    slow_every = int(config.get("slow_every", 0))
    slow_seconds = float(config.get("slow_seconds", 0.0))

    def write(line: str) -> None:
        with lock:
            out.write(line + "\n")
            out.flush()

    def handle(message: Message) -> int:
        n = int(message.body["n"])
        if slow_every and n % slow_every == 0 and message.read_ct == 1:
            time.sleep(slow_seconds)
        elif work:
            time.sleep(work)
        write(f"P {message.msg_id} {message.read_ct} {n}")
        return n

    def settled(record: Settled) -> None:
        write(f"S {record.message.msg_id} {record.status}")

    def failed(error: Exception) -> None:
        write(f"E {type(error).__name__}: {error}".replace("\n", " "))

    source = rx_pgmq.read_queue(
        config["dsn"],
        config["queue"],
        visibility_timeout=int(config.get("vt", 10)),
        read_interval=float(config.get("read_interval", 0.2)),
        batch_size=int(config.get("batch_size", 10)),
        max_in_flight=int(config.get("max_in_flight", 20)),
        fenced=bool(config.get("fenced", False)),
        extend_visibility=bool(config.get("extend_visibility", False)),
    )
    concurrency = int(config.get("concurrency", 1))
    processing = pgops.process(handle, max_concurrency=concurrency)
    if config.get("effects"):
        processing = _effects(config, handle, concurrency)
    subscription = source.pipe(processing, pgops.ack()).subscribe(on_next=settled, on_error=failed)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    subscription.dispose()
    out.close()
    return 0


def _effects(
    config: dict[str, Any], handle: Callable[[Message], int], concurrency: int
) -> Callable[[Observable[Message]], Observable[Outcome]]:
    """Processing that inserts one row per message into ``config["effects"]``."""
    insert = sql.SQL("INSERT INTO {} (msg_id, n) VALUES (%s, %s)").format(
        sql.Identifier(config["effects"])
    )
    if config.get("transactional"):

        def in_transaction(message: Message, conn: psycopg.Connection[Any]) -> int:
            conn.execute(insert, (message.msg_id, message.body["n"]))
            return handle(message)

        return pgops.process_in_transaction(in_transaction, max_concurrency=concurrency)
    own = psycopg.connect(config["dsn"], autocommit=True)
    lock = threading.Lock()

    def plain(message: Message) -> int:
        with lock:
            own.execute(insert, (message.msg_id, message.body["n"]))
        return handle(message)

    return pgops.process(plain, max_concurrency=concurrency)


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
