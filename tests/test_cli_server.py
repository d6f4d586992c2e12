"""``rx-pgmq server status|start|stop`` and the demo's closing line (#13 item 6).

The embedded PostgreSQL that the demo starts keeps running by design; these tests check that
the user is told so, and can see and stop it, on a real server in a folder of the test's own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from rx_pgmq import embedded
from rx_pgmq.cli import cli
from rx_pgmq.cli._server import _duration


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def user_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user data folder of the test's own, no DSN in the environment: commands go embedded.

    Yields the data folder the embedded default uses there; its server is stopped afterwards.
    """
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    for name in ("RX_PGMQ_DSN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    folder = embedded.default_data_dir()
    assert folder.is_relative_to(tmp_path)
    try:
        yield folder
    finally:
        embedded.stop(folder)


def status_json(*extra: str) -> dict[str, object]:
    result = run("server", "status", "--json", *extra)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert isinstance(record, dict)
    return record


def test_duration_is_clock_style_with_days() -> None:
    """Uptime reads as hh:mm:ss, with a day count once it passes a day."""
    assert _duration(dt.timedelta(seconds=3725.9)) == "01:02:05"
    assert _duration(dt.timedelta(days=2, seconds=61)) == "2 d 00:01:01"


def test_uptime_counts_from_the_start_and_is_none_when_stopped() -> None:
    """ServerStatus.uptime measures from started_at; a stopped server has none."""
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    found = embedded.ServerStatus(Path("/x"), True, "18", 1, start, None, None, None)
    assert found.uptime(start + dt.timedelta(minutes=5)) == dt.timedelta(minutes=5)
    stopped = embedded.ServerStatus(Path("/x"), True, "18", None, None, None, None, None)
    assert stopped.uptime() is None and not stopped.running


@pytest.mark.slow
def test_demo_says_the_server_keeps_running_and_server_commands_manage_it(
    user_data_home: Path,
) -> None:
    """#13 item 6: the demo on the embedded default ends with one line naming the folder,
    the pid and `rx-pgmq server stop`; `server status` shows that server (pid, version,
    socket); `server stop` stops it and `status` then says stopped; `server start` brings it
    back."""
    result = run("demo", "--messages", "20", "--queue", "cli_server_demo")
    assert result.exit_code == 0, result.output + result.stderr
    last = result.output.strip().splitlines()[-1]
    record = status_json()
    assert record["running"] is True
    assert last == (
        f"The embedded PostgreSQL keeps running in {user_data_home} (pid {record['pid']}) "
        "for the next command; stop it with: rx-pgmq server stop"
    )
    assert record["data_dir"] == str(user_data_home)
    assert record["socket_dir"] == str(user_data_home)
    with psycopg.connect(str(record["dsn"])) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    assert version is not None and record["server_version"] == version[0]
    postmaster_pid = (user_data_home / "postmaster.pid").read_text().splitlines()[0]
    assert record["pid"] == int(postmaster_pid)
    assert isinstance(record["uptime_seconds"], float) and record["uptime_seconds"] >= 0

    text = run("server", "status").output
    assert "state          running" in text and f"pid            {record['pid']}" in text

    stopped = run("server", "stop")
    assert (
        stopped.output.strip()
        == f"stopped the server in {user_data_home} (was pid {record['pid']})"
    )
    after = status_json()
    assert after["running"] is False and after["initialized"] is True and after["pid"] is None
    assert "state          stopped" in run("server", "status").output
    assert run("server", "stop").output.strip() == f"no server runs in {user_data_home}"

    started = run("server", "start")
    assert started.exit_code == 0 and "state          running" in started.output
    assert status_json()["running"] is True


def test_status_of_a_folder_never_created(tmp_path: Path) -> None:
    """`server status --data-dir` on a new folder says it is not created, and creates nothing."""
    folder = tmp_path / "nothing"
    record = status_json("--data-dir", str(folder))
    assert record["running"] is False and record["initialized"] is False
    assert "not created" in run("server", "status", "--data-dir", str(folder)).output
    assert not folder.exists()
