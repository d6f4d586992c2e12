"""Shared test setup.

The database fixtures (``pgmq_dsn``, ``pgmq``, ``pgmq_queue``) come from the ``rx_pgmq.testing``
plugin, loaded through its ``pytest11`` entry point once the package is installed
(``pip install -e ".[dev]"``). ``pytester`` runs inner pytest sessions in the plugin tests.
The integration tests' plain helpers are in ``_support.py``; their fixtures are here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar, cast

import psycopg
import pytest
from _support import Conn, Sink, Subscribe
from anyio.from_thread import BlockingPortal, start_blocking_portal
from reactivex import Observable, abc

import rx_pgmq
from rx_pgmq.aio import AsyncPGMQ

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


class Blocking:
    """An :class:`AsyncPGMQ` called from sync code: each coroutine method runs on the event
    loop of anyio's blocking portal and returns its result, so a test written against
    ``PGMQ`` runs unchanged on the asyncio client (the same arguments, results, errors)."""

    def __init__(self, client: AsyncPGMQ, portal: BlockingPortal) -> None:
        self._client = client
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._portal.call(partial(attr, *args, **kwargs))


@pytest.fixture(params=["PGMQ", "AsyncPGMQ"])
def client(request: pytest.FixtureRequest, pgmq_dsn: str) -> Iterator[rx_pgmq.PGMQ]:
    """The client under test, once ``PGMQ`` and once ``AsyncPGMQ`` (#16 item 3: the asyncio
    client has every method of the sync one, with the same behaviour); the async one runs
    on an asyncio loop of anyio's blocking portal and is typed as ``PGMQ`` for the test."""
    if request.param == "PGMQ":
        with rx_pgmq.PGMQ(pgmq_dsn) as sync:
            yield sync
        return
    with start_blocking_portal("asyncio") as portal:
        aclient = AsyncPGMQ(pgmq_dsn)
        try:
            yield cast(rx_pgmq.PGMQ, Blocking(aclient, portal))
        finally:
            portal.call(aclient.close)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the test database (``pgmq_dsn``, directly or through other
    fixtures) ``database``: CI's PostgreSQL 15 pass runs only those, since the others never
    touch the server that pass is about."""
    for item in items:
        if "pgmq_dsn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)
