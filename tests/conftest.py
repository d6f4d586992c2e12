"""Shared test setup.

The database fixtures (``pgmq_dsn``, ``pgmq``, ``pgmq_queue``) come from the ``rx_pgmq.testing``
plugin, loaded through its ``pytest11`` entry point once the package is installed
(``pip install -e ".[dev]"``). ``pytester`` runs inner pytest sessions in the plugin tests.
The integration tests' plain helpers are in ``_support.py``; their fixtures are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from _support import Conn, Sink, Subscribe
from reactivex import Observable, abc

import rx_pgmq

pytest_plugins = ("pytester",)

T = TypeVar("T")


@pytest.fixture
def db(pgmq_dsn: str) -> Iterator[Conn]:
    """An autocommit connection to inspect the queue tables."""
    with psycopg.connect(pgmq_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def subscribe(pgmq_queue: str) -> Iterator[Subscribe]:
    """Subscribe a new Sink to a source (it keeps the subscription in ``.subscription``).

    Every subscription is disposed after the test and, for a ``QueueSource`` subscribed
    directly, closed (``wait_closed``) before ``pgmq_queue`` is dropped.
    """
    subscriptions: list[abc.DisposableBase] = []
    sources: list[rx_pgmq.QueueSource] = []
    sinks: list[Sink[Any]] = []

    def run(
        source: Observable[T],
        on_message: Callable[[T], object] | None = None,
        *,
        work: float = 0.0,
    ) -> Sink[T]:
        sink = Sink(on_message, work)
        sink.subscription = source.subscribe(sink)
        subscriptions.append(sink.subscription)
        sinks.append(sink)
        if isinstance(source, rx_pgmq.QueueSource):
            sources.append(source)
        return sink

    yield run
    for subscription in subscriptions:
        subscription.dispose()
    for sink in sinks:  # the test is over: what a sink kept is no longer held downstream,
        sink.messages.clear()  # so the close releases it instead of waiting close_timeout
    for source in sources:
        source.wait_closed(15.0)
