"""The Jupyter front in a real browser (#13 item 4).

JupyterLab (headless, loopback, token) serves a copy of ``notebooks/04_live_exploration.ipynb``;
Debian's Chromium opens it, runs every cell through JupyterLab's Run menu, and the test
checks what a person sees on the page: the ``jupyter.live`` views, their counters and
buttons, and the ``peek``/``metrics_table`` tables. The kernel talks to the test database
(``RX_PGMQ_DSN``) and imports this checkout's ``rx_pgmq``.

Skipped when Chromium, chromedriver or JupyterLab are missing, unless
``RX_PGMQ_BROWSER_REQUIRED=1`` (CI), which makes that a failure. On a failed check, the
screenshots, page HTML and logs are in the folder the message names (``tmp_path`` or
``RX_PGMQ_BROWSER_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _browser import (
    ARTIFACTS_ENV,
    REPO,
    REQUIRED_ENV,
    JupyterLab,
    Page,
    missing_prerequisite,
    start_chromium,
    start_jupyterlab,
)
from selenium.webdriver.common.keys import Keys

import rx_pgmq

MISSING = missing_prerequisite()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),  # the waits' own deadlines fail first, with screenshots
    pytest.mark.skipif(
        MISSING is not None and os.environ.get(REQUIRED_ENV) != "1", reason=f"{MISSING}"
    ),
]

NOTEBOOK = REPO / "notebooks" / "04_live_exploration.ipynb"
QUEUES = ("nb_live", "nb_live_loop")  # what the notebook creates
STEP = 4  # what the test types next to Step
FIRST, STEPPER, LOOP = 0, 1, 2  # the notebook's live views, in order
VIEW_NAMES = ("first", "step", "loop")

# One snapshot of every live view on the page, in notebook order.
VIEWS_JS = """
return Array.from(document.querySelectorAll('.rx-pgmq-live')).map((view) => {
  const html = view.querySelector('.rx-pgmq-live-html');
  const counters = {};
  view.querySelectorAll('[data-counter]').forEach((c) => {
    counters[c.getAttribute('data-counter')] = c.textContent;
  });
  const disabled = {};
  view.querySelectorAll('button').forEach((b) => { disabled[b.textContent.trim()] = b.disabled; });
  const status = view.querySelector('[data-status]');
  const title = html ? html.querySelector('b') : null;
  return {
    title: title ? title.textContent : '',
    status: status ? status.getAttribute('data-status') : '',
    line: status ? status.parentElement.textContent : '',
    counters: counters,
    disabled: disabled,
  };
});
"""

# The kernel's state in the status bar, any dialog, the prompts of the code cells and the
# text of any stderr/error output, in notebook order.
CELLS_JS = """
const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'));
const kernel = document.querySelector('.jp-StatusBar-TextItem[title^="Change kernel"]');
return {
  kernel: kernel ? kernel.textContent : '',
  dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map((d) => d.textContent),
  prompts: cells.map((c) => (c.querySelector('.jp-InputPrompt') || {}).textContent || ''),
  errors: Array.from(document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
  )).map((e) => e.textContent),
};
"""

# Every rendered HTML table in the outputs: caption, header cells and body rows.
TABLES_JS = """
return Array.from(document.querySelectorAll('.jp-OutputArea-output table')).map((t) => ({
  caption: t.caption ? t.caption.textContent : '',
  headers: Array.from(t.querySelectorAll('thead th')).map((h) => h.textContent),
  rows: Array.from(t.querySelectorAll('tbody tr')).map(
    (r) => Array.from(r.querySelectorAll('td')).map((d) => d.textContent)),
}));
"""


@dataclass(frozen=True)
class View:
    """What a person sees of one ``jupyter.live`` view.

    Attributes:
        title: The heading (the queue name).
        status: ``running``, ``paused``, ``completed``, ``stopped``...
        line: The status line: title, status, rate and elapsed time.
        counters: Counter label to the text shown.
        disabled: Button label to whether it is disabled.
    """

    title: str
    status: str
    line: str
    counters: dict[str, str]
    disabled: dict[str, bool]

    def count(self, label: str) -> int:
        """A counter's value (``-1`` when it shows ``-`` or is absent)."""
        value = self.counters.get(label, "-")
        return int(value) if value.isdigit() else -1


def views(page: Page) -> list[View]:
    """The live views on the page now, in notebook order."""
    return [View(**raw) for raw in page.script(VIEWS_JS)]


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """The folder for screenshots and logs."""
    chosen = os.environ.get(ARTIFACTS_ENV)
    return Path(chosen) if chosen else tmp_path / "browser-artifacts"


@pytest.fixture
def lab(pgmq_dsn: str, pgmq: rx_pgmq.PGMQ, tmp_path: Path) -> Iterator[JupyterLab]:
    """JupyterLab serving a copy of notebook 04 (saves never touch the repository), its
    kernels on the test database; the queues the notebook makes are dropped afterwards."""
    if MISSING is not None:
        pytest.fail(f"{REQUIRED_ENV}=1 but {MISSING}")
    server = start_jupyterlab(tmp_path / "lab", {"RX_PGMQ_DSN": pgmq_dsn}, files=[NOTEBOOK])
    try:
        yield server
    finally:
        server.stop()
        for queue in QUEUES:
            pgmq.drop_queue(queue)


@pytest.fixture
def page(lab: JupyterLab, tmp_path: Path, artifacts: Path) -> Iterator[Page]:
    """Headless Chromium, started while JupyterLab starts; ready once both are."""
    driver = start_chromium(tmp_path / "chromium")
    try:
        page = Page(driver, artifacts, logs=(lab.log, tmp_path / "chromium" / "chromedriver.log"))
        try:
            lab.wait_ready(30)
        except AssertionError as exc:
            page.fail(str(exc))
        yield page
    finally:
        driver.quit()


def run_all_cells(page: Page) -> None:
    """Run > Run All Cells, through JupyterLab's menu bar."""
    (run,) = [m for m in page.css("#jp-MainMenu .lm-MenuBar-item") if m.text.strip() == "Run"]
    run.click()
    item = '.lm-Menu-item[data-command="runmenu:run-all"]'
    page.wait(lambda: bool(page.css(item)), 5, "the Run menu to open")
    page.css(item)[0].click()


def click(page: Page, view: int, css: str) -> None:
    """Click a control (by its CSS class) of the ``view``-th live view."""
    page.css(".rx-pgmq-live")[view].find_element("css selector", css).click()


def wait_view(page: Page, view: int, predicate: Callable[[View], bool], what: str) -> None:
    """Wait up to 10 s until the ``view``-th live view shows what ``predicate`` wants."""
    page.wait(
        lambda: predicate(views(page)[view]),
        10,
        f"{what} ({VIEW_NAMES[view]} view)",
        state=lambda: views(page)[view],
    )


def run_the_notebook(page: Page, lab: JupyterLab) -> list[View]:
    """Open notebook 04, Run All, check no cell failed; return the live views shown.

    While Run All runs, checks that the first view's ``received`` changes as its 300
    messages flow.
    """
    page.driver.get(lab.notebook_url(NOTEBOOK.name))
    code_cells = sum(c["cell_type"] == "code" for c in json.loads(NOTEBOOK.read_text())["cells"])

    def ready() -> bool:
        cells = page.script(CELLS_JS)
        if cells["dialogs"]:
            page.fail(f"a dialog is in the way: {cells['dialogs']}")
        return bool(cells["kernel"].endswith("| Idle") and len(cells["prompts"]) == code_cells)

    page.wait(ready, 40, f"the notebook's {code_cells} code cells and an idle kernel")
    run_all_cells(page)
    first_received: list[int] = []

    def all_ran() -> bool:
        shown = views(page)
        if shown:
            first_received.append(shown[FIRST].count("received"))
        cells = page.script(CELLS_JS)
        if cells["errors"] or cells["dialogs"]:
            return True  # reported below, at once
        numbered = all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in cells["prompts"])
        return bool(numbered and cells["kernel"].endswith("| Idle"))

    page.wait(all_ran, 45, f"Run All to execute the {code_cells} code cells")
    cells = page.script(CELLS_JS)
    page.check(not cells["errors"], f"a cell wrote to stderr: {cells['errors']}")
    page.check(not cells["dialogs"], f"a dialog is in the way: {cells['dialogs']}")
    page.screenshot("after-run-all")
    flowing = {n for n in first_received if 0 < n < 300}
    page.check(
        len(flowing) >= 2,
        f"the first view's `received` should change while messages flow; saw {first_received}",
    )
    shown = views(page)
    page.check(
        [v.title for v in shown] == ["nb_live", "nb_live", "nb_live_loop"],
        f"three live views expected (pipeline, step, loop), got {shown}",
    )
    return shown


def check_the_tables(page: Page) -> None:
    """Both ``peek`` outputs and the ``metrics_table`` output are HTML tables."""
    tables = page.script(TABLES_JS)
    peeks = [t for t in tables if t["caption"].startswith("pgmq.q_nb_live: first 5")]
    page.check(len(peeks) == 2, f"two peek tables expected, got {[t['caption'] for t in tables]}")
    for table in peeks:
        page.check(
            table["headers"][:2] == ["msg_id", "read_ct"]
            and len(table["rows"]) == 5
            and all(row[1] == "0" for row in table["rows"]),
            f"peek shows 5 unclaimed messages (read_ct 0): {table}",
        )
    queues = [t for t in tables if t["caption"] == "queues"]
    page.check(len(queues) == 1, f"one metrics table expected, got {queues}")
    metrics = queues[0]
    rows = {row[0]: row for row in metrics["rows"]}
    page.check(
        metrics["headers"][:2] == ["queue", "length"] and rows.get("nb_live", [])[1:2] == ["17"],
        f"metrics_table shows nb_live with 17 messages: {metrics}",
    )


def check_pause_resume_stop(page: Page, loop: View) -> None:
    """On the loop view: counters move; Pause stops reads (``reads`` stays put for 1 s
    while the view keeps redrawing); Resume reads again; Stop ends the view."""
    page.check(loop.status == "running", f"the loop view should be running: {loop}")
    before = loop.count("received")
    wait_view(page, LOOP, lambda v: v.count("received") > before, "`received` to grow")
    click(page, LOOP, "button.rx-pgmq-pause")
    wait_view(
        page,
        LOOP,
        lambda v: v.status == "paused" and v.count("in flight") == 0,
        "Pause: `paused`, with the messages in flight settled",
    )
    paused = views(page)[LOOP]
    seen = [paused]
    window = threading.Event()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the 1 s observation window (#13 item 4)
        window.wait(0.1)
        seen.append(views(page)[LOOP])
    page.screenshot("loop-paused")
    page.check(
        {v.count("reads") for v in seen} == {paused.count("reads")},
        f"`reads` must stay put while paused: {[v.counters['reads'] for v in seen]}",
    )
    page.check(
        seen[-1].line != paused.line,
        f"the paused view should keep redrawing (its elapsed time): {paused.line!r}",
    )
    click(page, LOOP, "button.rx-pgmq-resume")
    wait_view(
        page,
        LOOP,
        lambda v: v.status == "running" and v.count("reads") > paused.count("reads"),
        "Resume: `running`, and `reads` grows again",
    )
    click(page, LOOP, "button.rx-pgmq-stop")
    wait_view(page, LOOP, lambda v: v.status == "stopped", "Stop: `stopped`")
    wait_view(page, LOOP, lambda v: all(v.disabled.values()), "Stop to disable the buttons")


def check_step_and_stop(page: Page, stepper: View, pgmq: rx_pgmq.PGMQ) -> None:
    """On the step view (3 read by the notebook): Step(4) delivers exactly 4, on the page
    and in the database; Stop ends the view."""
    page.check(
        stepper.status == "running" and stepper.count("received") == 3,
        f"the step view should be running with the notebook's step(3) done: {stepper}",
    )
    step_view = page.css(".rx-pgmq-live")[STEPPER]
    box = step_view.find_element("css selector", ".rx-pgmq-step-count input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(STEP), Keys.TAB)  # the box sends its value when it loses focus
    page.check(box.get_attribute("value") == str(STEP), f"the Step box should show {STEP}")
    click(page, STEPPER, "button.rx-pgmq-step")
    target = 3 + STEP
    wait_view(
        page,
        STEPPER,
        lambda v: v.count("acked delete") >= target and v.count("in flight") == 0,
        f"Step({STEP}) to be delivered and settled",
    )
    click(page, STEPPER, "button.rx-pgmq-stop")
    wait_view(page, STEPPER, lambda v: v.status == "stopped", "Stop: `stopped`")
    stopped = views(page)[STEPPER]
    page.screenshot("stopped")
    page.check(
        stopped.count("received") == target and stopped.count("acked delete") == target,
        f"Step({STEP}) after step(3) should deliver exactly {target} in all: {stopped}",
    )
    left = pgmq.metrics("nb_live").queue_length
    page.check(left == 17 - STEP, f"the queue should hold {17 - STEP} messages, holds {left}")


def test_notebook_04_in_jupyterlab_shows_live_views_that_answer_their_buttons(
    page: Page, lab: JupyterLab, pgmq: rx_pgmq.PGMQ
) -> None:
    """#13 item 4: notebook 04 opened in JupyterLab in headless Chromium and run with
    Run All: no cell fails; the first live view's counters change while its 300 messages
    flow and it ends ``completed``; ``peek`` and ``metrics_table`` show as tables; on the
    never-dry loop view Pause stops reads (``reads`` stays put for 1 s while the view keeps
    redrawing), Resume restarts them and Stop ends the view; on the step view Step(4)
    delivers exactly 4 (also in the database) and Stop ends it."""
    with page.recording():
        first, stepper, loop = run_the_notebook(page, lab)
        page.check(
            first.status == "completed"
            and first.count("received") == 300
            and first.count("acked archive") > 0
            and first.count("acked delete") > 0
            and all(first.disabled.values()),
            f"the first view should end completed with 300 received, buttons disabled: {first}",
        )
        check_the_tables(page)
        check_pause_resume_stop(page, loop)
        check_step_and_stop(page, stepper, pgmq)
