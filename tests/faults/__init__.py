"""Shared helpers of the fault-injection scenarios (``tests/test_faults_*.py``).

The scenarios run real pipelines against a real PostgreSQL and check the queue tables
directly. Helpers here: a recording pipeline (``Run``), table queries, waiting with
deadlines, and child-process consumers (``tests/_workers.py``) that can be SIGKILLed.
Waiting, table names and backend termination are ``tests/_support.py``'s, re-exported.

Every scenario prints the figures it measured on one line starting with ``FIGURE``
(``pytest -m faults -s`` shows them); RELIABILITY.md quotes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from _support import table as table
from _support import terminate as terminate
from _support import wait_until as wait_until
from psycopg import sql
from reactivex import Observable, abc

from rx_pgmq import Settled
from rx_pgmq.client import PGMQ

WORKER = Path(__file__).resolve().parent.parent / "_workers.py"
REPO = WORKER.parent.parent


def figure(scenario: str, **values: object) -> None:
    """Print one line of measured figures (shown with ``pytest -s``)."""
    text = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\nFIGURE {scenario}: {text}", flush=True)


# -- the database, seen directly ----------------------------------------------------------


def query(dsn: str, statement: sql.Composable | str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on a fresh autocommit connection; return its rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def queue_rows(dsn: str, queue: str, prefix: Literal["q", "a"] = "q") -> dict[int, int]:
    """msg_id -> read_ct of every row of the queue table (or archive), visible or not."""
    found = query(dsn, sql.SQL("SELECT msg_id, read_ct FROM {}").format(table(queue, prefix)))
    return {int(r[0]): int(r[1]) for r in found}


def send_numbered(client: PGMQ, queue: str, n: int, chunk: int = 1000) -> dict[int, int]:
    """Send bodies ``{"n": 0..n-1}``; return msg_id -> n."""
    ids: dict[int, int] = {}
    for start in range(0, n, chunk):
        numbers = list(range(start, min(n, start + chunk)))
        sent = client.send_batch(queue, [{"n": i} for i in numbers])
        ids.update(zip(sent, numbers, strict=True))
    return ids


# -- in-process pipelines ------------------------------------------------------------------


@dataclass
class Records(abc.ObserverBase[Settled]):
    """Collects the Settled records of one pipeline with the time each arrived."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    settled: list[tuple[float, Settled]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    completed: bool = False

    def on_next(self, value: Settled) -> None:
        with self.cond:
            self.settled.append((time.monotonic(), value))
            self.cond.notify_all()

    def on_error(self, error: Exception) -> None:
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()

    def on_completed(self) -> None:
        with self.cond:
            self.completed = True
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.settled)

    def records(self) -> list[Settled]:
        with self.cond:
            return [s for _t, s in self.settled]

    def wait(self, predicate: Callable[[list[Settled]], bool], timeout: float) -> bool:
        """Wait until ``predicate(records)`` holds (False on timeout); fail on an error."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: bool(self.errors) or predicate([s for _t, s in self.settled]), timeout
            )
            assert not self.errors, self.errors
            return ok

    def wait_count(self, n: int, timeout: float) -> bool:
        return self.wait(lambda rs: len(rs) >= n, timeout)


Run = Callable[[Observable[Settled]], tuple[Records, abc.DisposableBase]]


def running() -> Iterator[Run]:
    """Body of the ``run`` fixture: subscribe pipelines, dispose them all at the end."""
    subs: list[abc.DisposableBase] = []

    def start(pipeline: Observable[Settled]) -> tuple[Records, abc.DisposableBase]:
        records = Records()
        sub = pipeline.subscribe(records)
        subs.append(sub)
        return records, sub

    yield start
    for sub in subs:
        sub.dispose()


class ThreadCrashes:
    """Collects exceptions that escape any thread (``threading.excepthook``)."""

    def __init__(self) -> None:
        self.crashes: list[str] = []
        self._previous = threading.excepthook

    def __enter__(self) -> ThreadCrashes:
        def hook(args: threading.ExceptHookArgs) -> None:
            name = args.thread.name if args.thread is not None else "?"
            self.crashes.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

        threading.excepthook = hook
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self._previous


# -- child-process consumers ----------------------------------------------------------------


@dataclass(frozen=True)
class Processed:
    """One line ``P msg_id read_ct n`` a worker wrote after processing a message."""

    worker: int
    msg_id: int
    read_ct: int
    n: int


class Worker:
    """A consumer in a child process (``tests/_workers.py``), writing what it does to a file.

    ``stop()`` closes its stdin: it disposes its subscription (flushing acks, releasing
    unsettled messages) and exits. ``kill()`` sends SIGKILL: nothing is flushed.
    """

    def __init__(self, index: int, folder: Path, config: dict[str, Any]) -> None:
        self.index = index
        self.out = folder / f"worker{index}.log"
        self.err_path = folder / f"worker{index}.err"
        cfg = {**config, "out": str(self.out)}
        self._err: IO[bytes] = open(self.err_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._ready = threading.Event()
        self._watcher = threading.Thread(target=self._watch_stdout, daemon=True)
        self._watcher.start()

    def _watch_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == b"ready":
                self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise AssertionError(f"worker {self.index} not ready: {self.stderr()}")

    def lines(self) -> list[list[str]]:
        """The complete lines written so far, split into fields."""
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        return [line.split() for line in complete.splitlines() if line]

    def processed(self) -> list[Processed]:
        return [
            Processed(self.index, int(f[1]), int(f[2]), int(f[3]))
            for f in self.lines()
            if f[0] == "P"
        ]

    def statuses(self) -> Counter[str]:
        return Counter(f[2] for f in self.lines() if f[0] == "S")

    def errors(self) -> list[str]:
        return [" ".join(f[1:]) for f in self.lines() if f[0] == "E"]

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        self.proc.kill()
        self.wait(10.0)

    def stop(self, timeout: float = 20.0) -> int:
        """Close stdin (the worker disposes and exits); return its exit code."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # already gone
                self.proc.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10.0)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):  # already gone
                self.proc.stdin.close()
        self._watcher.join(5.0)  # reads stdout to its end (the process is gone)
        if self.proc.stdout is not None and not self._watcher.is_alive():
            self.proc.stdout.close()
        if not self._err.closed:
            self._err.close()
        return code


def workers(folder: Path) -> Iterator[Callable[[dict[str, Any]], Worker]]:
    """Body of a fixture starting workers; every worker still alive is killed at the end."""
    started: list[Worker] = []

    def start(config: dict[str, Any]) -> Worker:
        worker = Worker(len(started), folder, config)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()
        else:
            worker.wait(1.0)
