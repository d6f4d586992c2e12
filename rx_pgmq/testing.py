"""pytest plugin: a real PostgreSQL with PGMQ for your tests.

Loaded automatically (entry point ``pytest11``) once rx_pgmq is installed. It picks one
server per test session, in this order:

1. ``--pgmq-dsn=CONNINFO`` on the command line, else the ``RX_PGMQ_DSN`` environment variable;
2. ``RX_PGMQ_TEST_BACKEND=testcontainers``: a container of the official PGMQ image
   (``ghcr.io/pgmq/pg18-pgmq``, override with ``RX_PGMQ_TEST_IMAGE``), needs Docker;
3. otherwise (``RX_PGMQ_TEST_BACKEND`` unset or ``embedded``): an embedded PostgreSQL
   (:mod:`rx_pgmq.embedded`) in a temporary folder, stopped and deleted after the session.

The server is started the first time a test needs it, and PGMQ is installed into it if
missing (:func:`rx_pgmq.install_pgmq`). The header shows the backend; the line after
collection shows the server and PGMQ versions.

Fixtures:
    pgmq_dsn: (session) the conninfo string of the test database.
    pgmq: (function) an :class:`rx_pgmq.PGMQ` client, closed after the test.
    pgmq_queue: (function) the name of a fresh queue ``t_<12 hex>``, dropped after the test.
    apgmq: (function, async) an :class:`rx_pgmq.aio.AsyncPGMQ` client, closed after the test.
        An async fixture: it needs an async test plugin, e.g. anyio's (tests marked
        ``@pytest.mark.anyio``) or pytest-asyncio; the plugin loads without one.

Tests marked ``@pytest.mark.docker`` are skipped, with the reason, when no Docker engine
answers.

Test doubles, for pipelines tested without a database (in virtual time with
``reactivex.testing``): :func:`make_message` builds a message bound to an acknowledger,
:class:`RecordingAcknowledger` records every settle request and resolves it at once, after
a (virtual) delay, or when the test says so. See "Testing your pipeline" in the README.

Example:
    >>> def test_send(pgmq, pgmq_queue):  # doctest: +SKIP
    ...     msg_id = pgmq.send(pgmq_queue, {"id": 1})
    ...     assert pgmq.read(pgmq_queue, vt=30)[0].msg_id == msg_id
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from rx_pgmq._front._fakes import RecordingAcknowledger, SettleRequest, make_message
from rx_pgmq._pg._install import install_pgmq, pgmq_version

if TYPE_CHECKING:
    from rx_pgmq.aio import AsyncPGMQ
    from rx_pgmq.client import PGMQ

__all__ = [
    "BACKEND_ENV",
    "DEFAULT_IMAGE",
    "DSN_ENV",
    "IMAGE_ENV",
    "Backend",
    "RecordingAcknowledger",
    "SettleRequest",
    "apgmq",
    "docker_available",
    "make_message",
    "pgmq",
    "pgmq_dsn",
    "pgmq_queue",
    "start_testcontainers",
]

DSN_ENV = "RX_PGMQ_DSN"
BACKEND_ENV = "RX_PGMQ_TEST_BACKEND"
IMAGE_ENV = "RX_PGMQ_TEST_IMAGE"
DEFAULT_IMAGE = "ghcr.io/pgmq/pg18-pgmq:v1.13.0"
_BACKENDS = ("embedded", "testcontainers")
_SERVER_FLAGS = ("-c", "track_functions=all", "-c", "max_connections=200")
_backend_key = pytest.StashKey["Backend"]()
_docker_lock = threading.Lock()
_docker_status: tuple[bool, str] | None = None


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine answers, and why not (checked once per process).

    The check runs the Docker SDK's ``ping`` in a subprocess so a failed connection leaves
    no unclosed sockets (or warnings) behind in the test process.

    Returns:
        ``(True, "")`` or ``(False, reason)``.
    """
    global _docker_status
    with _docker_lock:
        if _docker_status is None:
            probe = "import docker; docker.from_env(timeout=5).ping()"
            try:
                done = subprocess.run(
                    [sys.executable, "-W", "ignore", "-c", probe],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                _docker_status = (False, f"no Docker engine: {exc}")
            else:
                if done.returncode == 0:
                    _docker_status = (True, "")
                else:
                    lines = done.stderr.strip().splitlines()
                    _docker_status = (False, f"no Docker engine ({lines[-1] if lines else ''})")
        return _docker_status


def start_testcontainers(image: str | None = None) -> tuple[str, Callable[[], None]]:
    """Start a PostgreSQL container of the official PGMQ image.

    Args:
        image: The image; default ``$RX_PGMQ_TEST_IMAGE`` or :data:`DEFAULT_IMAGE`.

    Returns:
        ``(dsn, stop)``: the container's conninfo URI and a function that removes it.

    Raises:
        RuntimeError: If Docker is unavailable or testcontainers is not installed.
    """
    ok, reason = docker_available()
    if not ok:
        raise RuntimeError(f"{BACKEND_ENV}=testcontainers needs Docker: {reason}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from testcontainers.community.postgres import PostgresContainer
    except ImportError as exc:
        raise RuntimeError(
            'testcontainers is not installed; run: pip install "rx-pgmq[testcontainers]"'
        ) from exc
    container = PostgresContainer(
        image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE,
        username="postgres",
        password="postgres",
        dbname="postgres",
        driver=None,
    )
    container.with_command(["postgres", *_SERVER_FLAGS])
    container.start()
    dsn = str(container.get_connection_url(driver=None))
    return dsn, container.stop


class Backend:
    """The session's database server, started on first use.

    Attributes:
        name: ``"dsn"``, ``"embedded"`` or ``"testcontainers"``.
    """

    def __init__(self, name: str, dsn: str | None = None) -> None:
        self.name = name
        self._dsn = dsn
        self._lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self._ready = False
        self._error: Exception | None = None
        self.detail = ""

    @classmethod
    def from_config(cls, config: pytest.Config) -> Backend:
        """Choose the backend from ``--pgmq-dsn``, ``RX_PGMQ_DSN``, ``RX_PGMQ_TEST_BACKEND``."""
        dsn = config.getoption("pgmq_dsn") or os.environ.get(DSN_ENV)
        if dsn:
            return cls("dsn", dsn)
        wanted = os.environ.get(BACKEND_ENV, "").strip().lower() or "embedded"
        if wanted not in _BACKENDS:
            raise pytest.UsageError(
                f"{BACKEND_ENV}={wanted!r} is not one of {', '.join(_BACKENDS)}; "
                f"or give a server with --pgmq-dsn / {DSN_ENV}"
            )
        return cls(wanted)

    @property
    def started(self) -> bool:
        """Whether :meth:`dsn` has been called successfully."""
        return self._ready

    def dsn(self) -> str:
        """Start the server if needed, install PGMQ if missing, return its conninfo.

        A failure is remembered: later calls raise it again instead of retrying.
        """
        with self._lock:
            if self._error is not None:
                raise self._error
            if not self._ready:
                try:
                    if self._dsn is None:
                        self._dsn = self._start()
                    install_pgmq(self._dsn)
                except Exception as exc:
                    self._error = exc
                    raise
                self._ready = True
            assert self._dsn is not None
            return self._dsn

    def _start(self) -> str:
        if self.name == "testcontainers":
            dsn, stop = start_testcontainers()
            self._cleanups.append(stop)
            self.detail = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
            return dsn
        from rx_pgmq import embedded

        folder = Path(tempfile.mkdtemp(prefix="rx_pgmq-pytest-"))
        self._cleanups.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        # Registered before start(): also stops a server whose start failed half-way.
        self._cleanups.append(lambda: embedded.stop(folder / "pg"))
        server = embedded.start(folder / "pg", durable=False)
        self.detail = str(server.data_dir)
        return server.dsn

    def versions(self) -> str:
        """``PostgreSQL <version>, PGMQ <version>`` of the server (connects to it)."""
        assert self._dsn is not None
        with psycopg.connect(self._dsn, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        server = row[0] if row else "?"
        pgmq = pgmq_version(self._dsn) or "not installed yet (installed on first use)"
        return f"PostgreSQL {server}, PGMQ {pgmq}"

    def close(self) -> None:
        """Stop what this backend started (last started, first stopped)."""
        with self._lock:
            cleanups, self._cleanups = self._cleanups, []
            self._ready = False
        errors: list[BaseException] = []
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _describe_dsn(dsn: str) -> str:
    """The conninfo without its password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable conninfo)"
    params.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in params.items())


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--pgmq-dsn``."""
    group = parser.getgroup("rx_pgmq", "rx_pgmq test database")
    group.addoption(
        "--pgmq-dsn",
        dest="pgmq_dsn",
        default=None,
        metavar="CONNINFO",
        help=f"PostgreSQL to test against (default: ${DSN_ENV}, else a server chosen by "
        f"${BACKEND_ENV}: embedded (default) or testcontainers). PGMQ is installed if missing.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Choose the backend (starts nothing) and register the ``docker`` marker."""
    config.addinivalue_line("markers", "docker: needs a Docker engine (skipped without one)")
    config.stash[_backend_key] = Backend.from_config(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's server if this plugin started one."""
    backend = config.stash.get(_backend_key, None)
    if backend is not None:
        backend.close()


def pytest_report_header(config: pytest.Config) -> str:
    """Show which backend the session uses."""
    backend = config.stash[_backend_key]
    if backend.name == "dsn":
        where = _describe_dsn(backend._dsn or "")
        try:
            return f"rx_pgmq: backend dsn ({where}), {backend.versions()}"
        except Exception as exc:
            return f"rx_pgmq: backend dsn ({where}), unreachable: {str(exc).strip()}"
    return f"rx_pgmq: backend {backend.name} (started when a test first needs it)"


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: list[pytest.Item]
) -> str | list[str]:
    """Start the server if a collected test needs it and show its versions."""
    backend = config.stash[_backend_key]
    if (
        backend.name == "dsn"
        or config.getoption("collectonly")
        or not any("pgmq_dsn" in getattr(item, "fixturenames", ()) for item in items)
    ):
        return []
    try:
        backend.dsn()
        return f"rx_pgmq: {backend.name} server {backend.detail}: {backend.versions()}"
    except Exception as exc:
        return f"rx_pgmq: {backend.name} server failed to start: {exc}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``docker`` when no Docker engine answers."""
    if item.get_closest_marker("docker") is not None:
        ok, reason = docker_available()
        if not ok:
            pytest.skip(f"needs Docker: {reason}")


@pytest.fixture(scope="session")
def pgmq_dsn(pytestconfig: pytest.Config) -> str:
    """Conninfo of the session's PostgreSQL, with PGMQ installed."""
    backend = pytestconfig.stash[_backend_key]
    try:
        return backend.dsn()
    except Exception as exc:
        pytest.fail(f"rx_pgmq: the {backend.name} test database is unavailable: {exc}")


@pytest.fixture
def pgmq(pgmq_dsn: str) -> Iterator[PGMQ]:
    """An :class:`rx_pgmq.PGMQ` client on the test database, closed after the test."""
    from rx_pgmq.client import PGMQ

    client = PGMQ(pgmq_dsn)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def apgmq(pgmq_dsn: str) -> AsyncIterator[AsyncPGMQ]:
    """An :class:`rx_pgmq.aio.AsyncPGMQ` client on the test database, closed after the test.

    Example:
        >>> @pytest.mark.anyio  # doctest: +SKIP
        ... async def test_send(apgmq, pgmq_queue):
        ...     msg_id = await apgmq.send(pgmq_queue, {"id": 1})
        ...     assert (await apgmq.read(pgmq_queue, vt=30))[0].msg_id == msg_id
    """
    from rx_pgmq.aio import AsyncPGMQ

    async with AsyncPGMQ(pgmq_dsn) as client:
        yield client


@pytest.fixture
def pgmq_queue(pgmq_dsn: str) -> Iterator[str]:
    """Name of a fresh queue (``t_<12 hex digits>``), dropped after the test."""
    from rx_pgmq.client import PGMQ

    name = f"t_{uuid.uuid4().hex[:12]}"
    with PGMQ(pgmq_dsn) as admin:
        admin.create_queue(name)
    try:
        yield name
    finally:
        with PGMQ(pgmq_dsn) as admin:
            admin.drop_queue(name)
