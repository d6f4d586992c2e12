"""The plugin's async fixture ``apgmq`` (#16 item 5), with and without an async test plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ASYNC_TEST = """
import pytest

@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_inner(apgmq, pgmq_queue, anyio_backend):
    msg_id = await apgmq.send(pgmq_queue, {"hello": "async"})
    [message] = await apgmq.read(pgmq_queue, vt=30)
    assert (message.msg_id, message.body) == (msg_id, {"hello": "async"})
"""

SYNC_TEST = """
def test_inner(pgmq, pgmq_queue):
    pgmq.send(pgmq_queue, {"hello": "world"})
    assert pgmq.read(pgmq_queue, vt=30)[0].body == {"hello": "world"}
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:hypothesispytest", *args)


def test_apgmq_is_an_async_client_of_the_test_database(
    pytester: pytest.Pytester, pgmq_dsn: str
) -> None:
    """#16 item 5: a user's anyio test gets an AsyncPGMQ on the test database."""
    pytester.makepyfile(test_inner=ASYNC_TEST)
    _run(pytester, f"--pgmq-dsn={pgmq_dsn}").assert_outcomes(passed=1)


def test_the_plugin_works_without_an_async_test_plugin(
    pytester: pytest.Pytester, pgmq_dsn: str
) -> None:
    """#16 item 5: with anyio's plugin disabled the plugin loads and its sync fixtures work."""
    pytester.makepyfile(test_inner=SYNC_TEST)
    _run(pytester, "-p", "no:anyio", f"--pgmq-dsn={pgmq_dsn}").assert_outcomes(passed=1)


def test_the_plugin_imports_no_async_test_library() -> None:
    """#16 item 5: rx_pgmq.testing imports with anyio and pytest_asyncio unimportable."""
    code = (
        "import sys; sys.modules['anyio'] = None; sys.modules['pytest_asyncio'] = None\n"
        "import rx_pgmq.testing, rx_pgmq.aio\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
