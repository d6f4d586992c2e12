"""The README's tour runs as written against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rx_pgmq.testing import RecordingAcknowledger

README = Path(__file__).resolve().parent.parent / "README.md"


def _example(name: str = "") -> str:
    marker = f"<!-- readme-example {name} -->" if name else "<!-- readme-example -->"
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(marker) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, f"README lost its {marker} python block"
    return match.group(1)


def _run(code: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RX_PGMQ_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_readme_commands_come_first() -> None:
    """The README starts with the demo command and the test command CI runs."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks[0].strip() == 'pip install -e ".[dev]" && rx-pgmq demo'
    assert blocks[1].strip() == 'pip install -e ".[dev]" && pytest'
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "pytest" in ci


def test_readme_tour_runs(pgmq_dsn: str) -> None:
    """The tour's pipeline deletes 9 successes, archives the failure and exits cleanly."""
    proc = _run(_example(), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "(3, 'archive')" in proc.stdout
    assert proc.stdout.count("'delete')") == 9


def test_readme_maps_every_pgmq_function_to_rx_pgmq() -> None:
    """#18: the README's "All of PGMQ" table names every public function (no leading
    underscore) of the PGMQ SQL rx_pgmq installs, each in a row with the rx_pgmq call."""
    from rx_pgmq._pg._install import bundled_sql

    _version, text = bundled_sql()
    functions = set(re.findall(r"CREATE (?:OR REPLACE )?FUNCTION pgmq\.\"?([a-z]\w*)", text))
    readme = README.read_text(encoding="utf-8")
    section = readme.split("## All of PGMQ", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `pgmq.")]
    named = {name for row in rows for name in re.findall(r"`pgmq\.(\w+)`", row.split(" | ")[0])}
    assert len(functions) > 40
    assert functions - named == set(), "PGMQ functions missing from the README table"
    assert named - functions == set(), "README names functions PGMQ does not have"


def test_readme_asyncio_example_runs(pgmq_dsn: str) -> None:
    """#16 item 6: the asyncio section runs as written: the failed request sends nothing,
    worker 1 (async for) takes the first three orders, worker 2 (async process) the rest."""
    env = {**os.environ, "RX_PGMQ_DSN": pgmq_dsn}
    proc = subprocess.run(
        [sys.executable, "-c", _example("asyncio")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "request failed: refunds are not orders"
    assert lines[1:4] == [f"worker 1 got {t}" for t in (10, 20, 30)]
    assert sorted(lines[4:]) == [f"worker 2 charged {t} acked" for t in (40, 50, 60)]


def test_readme_marble_test_of_a_user_pipeline_runs() -> None:
    """#15 item 6: the README's marble test (public test doubles, virtual time) passes."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- readme-marble-test -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its <!-- readme-marble-test --> python block"
    namespace: dict[str, object] = {"__name__": "readme_marble_test"}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    acker = namespace["acker"]
    assert isinstance(acker, RecordingAcknowledger)
    assert len(acker.requests) == 2


def test_readme_batches_example_runs(pgmq_dsn: str) -> None:
    """#17: the "Batches and per-key order" block keeps each account in read order and
    archives the one message its mapping failed."""
    proc = _run(_example("batches"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "{'a0': True, 'a1': True, 'a2': True}" in proc.stdout
    assert "[13]" in proc.stdout


def test_readme_typed_example_runs(pgmq_dsn: str) -> None:
    """#18 item 4: the "Typed bodies" block decodes bodies into an msgspec.Struct in the
    consumer; the body that does not fit is archived as a BodyMismatch, the handler never
    sees it, and the others are handled and deleted."""
    proc = _run(_example("typed"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "TEA delete",
        "BodyMismatch archive",
        "CAKE delete",
    ]


def test_readme_read_queues_example_runs(pgmq_dsn: str) -> None:
    """#19 item 3: the "Several queues, one window" block reads two queues 3:1 and acks
    every message on its own queue."""
    proc = _run(_example("read_queues"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "True [('readme_high', 40), ('readme_low', 40)]" in proc.stdout


def test_readme_exactly_once_example_runs(pgmq_dsn: str) -> None:
    """#19 item 1: the "Exactly-once effects" block books four payments with their deletes
    and rolls back the rejected one's row, which the failure policy archives."""
    proc = _run(_example("exactly-once"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "(3, 'archive', 'acked')" in proc.stdout
    assert "(4, 'delete', 'acked')" in proc.stdout
    assert "[(0,), (1,), (2,), (4,)]" in proc.stdout


def test_readme_otel_example_runs(pgmq_dsn: str) -> None:
    """#19 item 2: the "OpenTelemetry" block's process span is a child of its send span."""
    proc = _run(_example("otel"), pgmq_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "True True" in proc.stdout
