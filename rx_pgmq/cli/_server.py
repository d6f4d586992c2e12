"""``rx-pgmq server``: see, start and stop the embedded PostgreSQL that keeps running.

The demo, the notebooks and every command run without ``--dsn`` use an embedded PostgreSQL in
the user data folder. It keeps running after the command ends, so the next command starts in
milliseconds; these commands show where it is and let the user stop it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from rx_pgmq import embedded

__all__ = ["running_note", "server"]

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The server's data folder (default: the user data folder, as the demo uses).",
)


def _duration(delta: dt.timedelta) -> str:
    """``1 d 02:03:04`` style, whole seconds."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock


def _state(found: embedded.ServerStatus) -> str:
    if found.running:
        return "running"
    return (
        "stopped"
        if found.initialized
        else "not created (the first command without --dsn creates it)"
    )


def _lines(found: embedded.ServerStatus) -> list[tuple[str, str]]:
    rows = [("data folder", str(found.data_dir)), ("state", _state(found))]
    if found.major_version is not None:
        rows.append(("major version", found.major_version))
    if found.running:
        uptime = found.uptime()
        rows += [
            ("pid", str(found.pid)),
            ("version", found.server_version or "(not answering)"),
            ("started", f"{found.started_at:%Y-%m-%d %H:%M:%S %z}"),
            ("uptime", _duration(uptime) if uptime is not None else "?"),
            ("socket", str(found.socket_dir)),
            ("dsn", str(found.dsn)),
        ]
    return rows


def _record(found: embedded.ServerStatus) -> dict[str, object]:
    uptime = found.uptime()
    return {
        "data_dir": str(found.data_dir),
        "initialized": found.initialized,
        "running": found.running,
        "major_version": found.major_version,
        "pid": found.pid,
        "server_version": found.server_version,
        "started_at": None if found.started_at is None else found.started_at.isoformat(),
        "uptime_seconds": None if uptime is None else round(uptime.total_seconds(), 3),
        "socket_dir": None if found.socket_dir is None else str(found.socket_dir),
        "dsn": found.dsn,
    }


def _show(found: embedded.ServerStatus, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_record(found)))
        return
    width = max(len(key) for key, _ in _lines(found))
    for key, value in _lines(found):
        click.echo(f"{key:<{width}}  {value}")


def running_note(data_dir: Path | None = None) -> str | None:
    """One line telling that the embedded server keeps running, where, and how to stop it.

    Args:
        data_dir: The data folder; default the user data folder.

    Returns:
        The line, or None when no server runs in the folder.
    """
    found = embedded.status(data_dir)
    if not found.running:
        return None
    option = "" if data_dir is None else f" --data-dir {found.data_dir}"
    return (
        f"The embedded PostgreSQL keeps running in {found.data_dir} (pid {found.pid}) for the "
        f"next command; stop it with: rx-pgmq server stop{option}"
    )


@click.group()
def server() -> None:
    """See, start and stop the embedded PostgreSQL (used when no --dsn is given)."""


@server.command()
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """Show the data folder, state, pid, version, uptime and socket of the server."""
    _show(embedded.status(data_dir), as_json)


@server.command()
@_data_dir_option
def start(data_dir: Path | None) -> None:
    """Start the server (create its data folder and install PGMQ if needed)."""
    embedded.start(data_dir)
    _show(embedded.status(data_dir), as_json=False)


@server.command()
@_data_dir_option
def stop(data_dir: Path | None) -> None:
    """Stop the server (fast shutdown); its data folder and databases are kept."""
    before = embedded.status(data_dir)
    if not before.running:
        click.echo(f"no server runs in {before.data_dir}")
        return
    embedded.stop(data_dir)
    click.echo(f"stopped the server in {before.data_dir} (was pid {before.pid})")
