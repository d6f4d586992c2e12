"""JupyterLab in headless Chromium, for ``tests/test_browser.py`` (#13 item 4).

JupyterLab runs as a child process on a free loopback port with a token, with its own
config, data, runtime and home folders (nothing of the user's Jupyter setup leaks in), the
worktree's ``rx_pgmq`` first on ``PYTHONPATH`` and the test database in ``RX_PGMQ_DSN``, so
its kernels use both. Chromium and chromedriver are Debian's packages, named by path: Selenium
Manager is never asked for (nor downloads) a browser or a driver.

Every wait has a deadline; a failed check saves a screenshot, the page's HTML and the server
log to the artifacts folder and names that folder in its message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent
REQUIRED_ENV = "RX_PGMQ_BROWSER_REQUIRED"
"""Set to 1 (CI does) to fail instead of skip when a prerequisite is missing."""
ARTIFACTS_ENV = "RX_PGMQ_BROWSER_ARTIFACTS"
"""A folder for screenshots, page HTML and logs (default: the test's ``tmp_path``)."""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

# JupyterLab settings for a quiet, predictable page: no news or update checks (no requests
# to the internet, no toast over the notebook), the notebook's kernel started without a
# "Select Kernel" dialog, and every cell attached to the DOM.
LAB_SETTINGS: Mapping[str, Mapping[str, object]] = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}


def missing_prerequisite() -> str | None:
    """Why the browser test cannot run on this machine, or None when it can."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing (Debian: apt-get install -y {package})"
    for module in ("jupyterlab", "jupyterlab_widgets", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class JupyterLab:
    """A JupyterLab server started by :func:`start_jupyterlab`.

    Attributes:
        root: The folder it serves.
        url: ``http://127.0.0.1:<port>``.
        token: Its token.
        log: Its stdout and stderr.
        process: The server process (the leader of its own process group).
    """

    root: Path
    url: str
    token: str
    log: Path
    process: subprocess.Popen[bytes]

    def wait_ready(self, timeout: float) -> None:
        """Wait until ``/api/status`` answers.

        Raises:
            AssertionError: If the server exits or does not answer within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(
            f"{self.url}/api/status", headers={"Authorization": f"token {self.token}"}
        )
        pause = threading.Event()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"JupyterLab exited with {self.process.returncode}:\n{_tail(self.log)}"
                )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            pause.wait(0.1)
        raise AssertionError(f"JupyterLab did not answer in {timeout} s:\n{_tail(self.log)}")

    def notebook_url(self, name: str) -> str:
        """The address that opens ``name`` (relative to ``root``) in JupyterLab."""
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def stop(self) -> None:
        """Stop the server (it shuts its kernels down first); kill its group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Jupyter's clean stop
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def _isolated_env(home: Path) -> dict[str, str]:
    """This process's environment with ``home`` as HOME and no Jupyter, IPython or XDG
    setting of the user's."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON", "XDG_"))}
    env["HOME"] = str(home)
    return env


def start_jupyterlab(
    workdir: Path, env: Mapping[str, str], files: Sequence[Path] = ()
) -> JupyterLab:
    """Start JupyterLab serving ``workdir / "root"`` (returns at once; see ``wait_ready``).

    Args:
        workdir: An empty folder for the served root, Jupyter's folders, a home and the log.
        env: Extra environment for the server and its kernels (e.g. ``RX_PGMQ_DSN``).
        files: Files copied into the root first (so saves never touch the originals).

    Returns:
        The server, not yet ready.
    """
    root, home = workdir / "root", workdir / "home"
    config, data, runtime = workdir / "jupyter-config", workdir / "jupyter-data", workdir / "run"
    for folder in (root, home, config, data, runtime):
        folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy(file, root / file.name)
    for plugin, values in LAB_SETTINGS.items():
        settings = config / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values))
    full_env = _isolated_env(home)
    full_env.pop("DATABASE_URL", None)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / ".ipython"),
        PYTHONPATH=path,
    )
    full_env.update(env)
    token = secrets.token_hex(16)
    port = free_port()
    log = workdir / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
    ]
    if os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return JupyterLab(root, f"http://127.0.0.1:{port}", token, log, process)


def start_chromium(workdir: Path) -> WebDriver:
    """Headless Chromium (Debian's binary and driver) with a fresh profile in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'chromium-profile'}")
    service = Service(
        executable_path=str(CHROMEDRIVER),
        log_output=str(workdir / "chromedriver.log"),
        env=_isolated_env(workdir / "home"),
    )
    return webdriver.Chrome(options=options, service=service)


class Page:
    """The browser page under test: waits with deadlines and records evidence on failure.

    Attributes:
        driver: The WebDriver.
        artifacts: Where screenshots, the page's HTML and logs go.
        logs: Files copied into ``artifacts`` when a check fails.
    """

    def __init__(self, driver: WebDriver, artifacts: Path, logs: tuple[Path, ...] = ()) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.logs = logs
        self._shots = 0

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the window as ``<artifacts>/<n>-<name>.png``."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._shots += 1
        path = self.artifacts / f"{self._shots:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def fail(self, message: str) -> NoReturn:
        """Save the evidence and raise ``AssertionError(message + where it is)``."""
        try:
            self.screenshot("failure")
            (self.artifacts / "page.html").write_text(self.driver.page_source)
        except WebDriverException as exc:  # the browser itself is gone
            message += f" (no screenshot: {exc.msg})"
        for log in self.logs:
            if log.exists():
                shutil.copy(log, self.artifacts / log.name)
        raise AssertionError(f"{message}; screenshots, page HTML and logs in {self.artifacts}")

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Turn any other error in the block (a stale element, a browser error...) into
        ``fail``, so it too leaves a screenshot."""
        try:
            yield
        except AssertionError:
            raise
        except Exception as exc:
            detail = exc.msg if isinstance(exc, WebDriverException) else str(exc)
            self.fail(f"{type(exc).__name__}: {detail}")

    def check(self, condition: bool, message: str) -> None:
        """``fail(message)`` unless ``condition``."""
        if not condition:
            self.fail(message)

    def wait(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
        state: Callable[[], object] | None = None,
    ) -> None:
        """Poll ``predicate`` every 0.1 s until it holds; ``fail`` after ``timeout`` s.

        Args:
            predicate: The condition awaited.
            timeout: Seconds before failing.
            what: What was awaited, for the failure message.
            state: What the page showed, for the failure message.
        """
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda _d: predicate())
        except TimeoutException:
            shown = f"; the page shows {state()}" if state is not None else ""
            self.fail(f"waited {timeout} s for {what}{shown}")

    def css(self, selector: str) -> list[WebElement]:
        """The elements matching a CSS selector (maybe none)."""
        return self.driver.find_elements("css selector", selector)

    def script(self, source: str, *args: Any) -> Any:
        """Run JavaScript in the page and return its result."""
        return self.driver.execute_script(source, *args)
