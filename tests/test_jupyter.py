"""The Jupyter front end: HTML builders, the live view, peek and metrics tables.

HTML is checked as a string (no browser). Behaviour that touches the database uses the real
test server from the ``rx_pgmq.testing`` plugin.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.subject import BehaviorSubject, Subject

import rx_pgmq
from rx_pgmq import jupyter
from rx_pgmq import operators as pgops
from rx_pgmq._front import _html
from rx_pgmq.actions import Archive, Delete, SetVisibilityTimeout
from rx_pgmq.errors import InvalidArgument, QueueNotFound

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_message(msg_id: int = 1, body: object = None, *, read_ct: int = 1) -> rx_pgmq.Message:
    return rx_pgmq.Message(
        msg_id=msg_id,
        read_ct=read_ct,
        enqueued_at=NOW - timedelta(seconds=5),
        last_read_at=NOW,
        vt=NOW + timedelta(seconds=12.5),
        body={"n": msg_id} if body is None else body,
        headers=None,
        queue="orders",
    )


def counters(html: str) -> dict[str, str]:
    """The live view's counters, read back from its HTML."""
    return dict(re.findall(r'data-counter="([^"]+)">([^<]+)<', html))


# -- HTML builders (no I/O) ---------------------------------------------------------------


def test_messages_table_shows_fields_and_escapes_bodies() -> None:
    """A message table lists msg_id, read_ct, time before vt and an escaped body preview."""
    html = _html.messages_table([make_message(7, {"x": "<script>alert(1)</script>"})], now=NOW)
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html
    assert ">7<" in html
    assert "12.5s" in html


def test_time_left_says_visible_once_vt_passed() -> None:
    """time_left counts down to vt and then reports the message as visible."""
    assert _html.time_left(NOW + timedelta(seconds=3), NOW) == "3.0s"
    assert _html.time_left(NOW - timedelta(seconds=1), NOW) == "visible"
    assert _html.time_left(NOW.replace(tzinfo=None), NOW) == "visible"


def test_body_preview_is_compact_json_cut_to_the_limit() -> None:
    """Previews are compact JSON, shortened with an ellipsis."""
    assert _html.body_preview({"a": 1, "b": [1, 2]}) == '{"a":1,"b":[1,2]}'
    cut = _html.body_preview({"text": "x" * 100}, limit=20)
    assert len(cut) == 20
    assert cut.endswith("…")


def test_message_repr_html_shows_queue_headers_and_body() -> None:
    """Message._repr_html_ renders every field, escaped."""
    message = make_message(3, {"note": "a & b"})
    html = message._repr_html_()
    assert "orders" in html
    assert "a &amp; b" in html
    assert html.startswith('<div class="rx-pgmq">')


def test_metrics_repr_html_and_table_list_each_queue() -> None:
    """QueueMetrics._repr_html_ and metrics_table show one row per queue."""
    metrics = [
        rx_pgmq.QueueMetrics("alpha", 3, 1, 9, 10, NOW, 2),
        rx_pgmq.QueueMetrics("beta", 0, None, None, 0, NOW, 0),
    ]
    one = metrics[0]._repr_html_()
    assert "alpha" in one and ">3<" in one
    both = _html.metrics_table(metrics)
    assert "alpha" in both and "beta" in both
    assert _html.metrics_table([]).count("(no queues)") == 1


def test_outcome_and_settled_html_show_verdict_reason_and_action() -> None:
    """Outcome/Settled HTML helpers show success or failure, the reason, action and status."""
    message = make_message(4)
    ok = rx_pgmq.succeeded(message, {"total": 3})
    bad = rx_pgmq.failed(message, ValueError("bad <total>"))
    by_reason = rx_pgmq.failed(message, "customer unknown")
    assert "success" in _html.outcome_html(ok) and "total" in _html.outcome_html(ok)
    assert "bad &lt;total&gt;" in _html.outcome_html(bad)
    assert "customer unknown" in _html.outcome_html(by_reason)
    settled = rx_pgmq.Settled(bad, SetVisibilityTimeout(5), "acked")
    html = _html.settled_html(settled)
    assert "set_vt(5s)" in html and "acked" in html and "ValueError" in html


def test_live_html_renders_counters_status_and_rows() -> None:
    """live_html shows the status, every counter (None as '-') and the recent messages."""
    snapshot = _html.LiveSnapshot(
        title="orders",
        status="running",
        counters=[("received", 12), ("in flight", None)],
        rate=3.5,
        rows=[_html.LiveRow(make_message(9), "failed: boom", bad=True)],
    )
    html = _html.live_html(snapshot, now=NOW)
    assert counters(html) == {"received": "12", "in flight": "-"}
    assert 'data-status="running"' in html
    assert "3.5 msg/s" in html
    assert "failed: boom" in html


# -- the live view, counted from what flows -----------------------------------------------


def test_live_counts_messages_outcomes_and_settled_from_the_stream() -> None:
    """Without a source, live counts received/succeeded/failed/acked from the items."""
    m1, m2, m3 = make_message(1), make_message(2), make_message(3)
    items: list[object] = [
        m1,
        rx_pgmq.succeeded(m2, 2),
        rx_pgmq.failed(m3, "boom"),
        rx_pgmq.Settled(rx_pgmq.succeeded(m1), Delete(), "acked"),
        rx_pgmq.Settled(rx_pgmq.failed(m3, "boom"), Archive(), "acked"),
    ]
    view = jupyter.live(reactivex.from_iterable(items), rows=3)
    assert view.wait(5)
    html = view.html()
    got = counters(html)
    assert got["received"] == "5"
    assert got["succeeded"] == "2"
    assert got["failed"] == "2"
    assert got["acked delete"] == "1"
    assert got["acked archive"] == "1"
    assert got["in flight"] == "-"  # unknown without a source
    assert view.status == "completed"
    assert html.count('<tr><td class="num">') == 3  # only the last `rows` messages


def test_live_reports_a_failed_stream() -> None:
    """An error ends the view with a 'failed' status naming the error."""
    view = jupyter.live(reactivex.throw(RuntimeError("db gone")))
    assert view.wait(5)
    assert view.status.startswith("failed: RuntimeError: db gone")
    assert 'class="bad"' in view.html()


def test_live_rejects_bad_arguments() -> None:
    """live checks its arguments before subscribing."""
    with pytest.raises(InvalidArgument):
        jupyter.live([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        jupyter.live(reactivex.empty(), rows=0)
    with pytest.raises(InvalidArgument):
        jupyter.live(reactivex.empty(), hz=0)
    view = jupyter.live(reactivex.empty())
    with pytest.raises(InvalidArgument):
        view.pause()  # no pauser
    with pytest.raises(InvalidArgument):
        view.step(1)  # no controlled source


def test_live_redraws_at_most_hz_times_a_second_and_stops_at_the_end() -> None:
    """A flood of items is counted, but the widget is redrawn at most ~hz times a second,
    the last redraw shows the final counts, and redrawing stops once the stream ends."""
    subject: Subject[object] = Subject()
    view = jupyter.live(subject, hz=5)
    widget_html = view.widget.children[-1]  # the HTML widget under the controls
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 1.2:
        for _ in range(200):
            subject.on_next(make_message(sent + 1))
            sent += 1
    subject.on_completed()
    elapsed = time.monotonic() - started
    assert view.wait(5)
    view._thread.join(5)
    assert not view._thread.is_alive()
    assert view.renders <= 5 * elapsed + 3
    assert counters(widget_html.value)["received"] == str(sent)
    assert 'data-status="completed"' in widget_html.value


# -- the live view on a real consumer -----------------------------------------------------


@pytest.fixture
def filled_queue(pgmq: rx_pgmq.PGMQ, pgmq_queue: str) -> Iterator[str]:
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(20)])
    yield pgmq_queue


def test_live_shows_the_sources_stats(pgmq_dsn: str, filled_queue: str) -> None:
    """With a read_queue source, received/in flight/acked/reads come from source.stats."""
    source = rx_pgmq.read_queue(pgmq_dsn, filled_queue, visibility_timeout=30, read_interval=0.2)
    pipeline = source.pipe(pgops.process(lambda m: m.body["n"]), pgops.ack(), ops.take(20))
    view = jupyter.live(pipeline, source=source)
    assert view.wait(30), view.html()
    got = counters(view.html())
    assert got["received"] == "20"
    assert got["in flight"] == "0"
    assert got["succeeded"] == "20"
    assert got["acked delete"] == "20"
    assert int(got["reads"]) >= 1
    assert got["notifications"] == "0" and got["reconnects"] == "0"
    assert view.title == filled_queue


def test_pause_resume_buttons_drive_the_pausable_gate(pgmq_dsn: str, filled_queue: str) -> None:
    """Pause/Resume send False/True to the pauser; while paused nothing is read."""
    gate = BehaviorSubject(False)
    source = rx_pgmq.read_queue(
        pgmq_dsn, filled_queue, visibility_timeout=30, read_interval=0.2
    ).pipe(pgops.pausable(gate, start_paused=True))
    view = jupyter.live(source.pipe(pgops.ack(), ops.take(20)), source=source, pauser=gate)
    pause, resume = view.widget.children[0].children[:2]
    try:
        pause.click()
        assert gate.value is False
        assert view.status == "paused"
        assert not view.wait(0.5)
        assert source.stats.reads == 0
        resume.click()
        assert gate.value is True
        assert view.wait(30)
        assert counters(view.html())["acked delete"] == "20"
    finally:
        view.dispose()


def test_step_button_requests_n_from_a_controlled_source(pgmq_dsn: str, filled_queue: str) -> None:
    """Step(n) reads exactly n more messages from a controlled source; Stop unsubscribes."""
    source = rx_pgmq.read_queue(
        pgmq_dsn, filled_queue, visibility_timeout=30, read_interval=0.2
    ).pipe(pgops.controlled())
    got: list[object] = []
    three = threading.Event()

    def record(item: object) -> None:
        got.append(item)
        if len(got) == 3:
            three.set()

    view = jupyter.live(source.pipe(pgops.ack(), ops.do_action(record)), source=source)
    controls = view.widget.children[0].children
    step = next(b for b in controls if getattr(b, "description", "") == "Step")
    count = next(b for b in controls if type(b).__name__ == "BoundedIntText")
    stop = next(b for b in controls if getattr(b, "description", "") == "Stop")
    count.value = 3
    step.click()
    assert three.wait(30)
    assert not view.wait(0.5)  # no credit left: nothing more is read
    assert source.stats.messages == 3
    stop.click()
    assert view.wait(15)
    assert view.status == "stopped"


def test_widgets_carry_stable_css_classes(pgmq_dsn: str, filled_queue: str) -> None:
    """#13 item 4: the view and each control have a CSS class (``rx-pgmq-live``,
    ``rx-pgmq-pause``, ...) the browser test and user styles can rely on."""
    gate = BehaviorSubject(True)
    source = rx_pgmq.read_queue(
        pgmq_dsn, filled_queue, visibility_timeout=30, read_interval=0.2
    ).pipe(pgops.controlled(), pgops.pausable(gate))
    view = jupyter.live(source.pipe(pgops.ack()), source=source, pauser=gate)
    try:
        box = view.widget
        controls, out = box.children
        assert "rx-pgmq-live" in box._dom_classes
        assert "rx-pgmq-live-html" in out._dom_classes
        classes = [c._dom_classes for c in controls.children]
        assert classes == [
            ("rx-pgmq-pause",),
            ("rx-pgmq-resume",),
            ("rx-pgmq-step",),
            ("rx-pgmq-step-count",),
            ("rx-pgmq-stop",),
        ]
    finally:
        view.dispose()


# -- peek and metrics ---------------------------------------------------------------------


def _rows(dsn: str, queue: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        query = psycopg.sql.SQL("SELECT msg_id, read_ct, vt FROM {} ORDER BY msg_id").format(
            psycopg.sql.Identifier("pgmq", f"q_{queue}")
        )
        return conn.execute(query).fetchall()


def test_peek_leaves_read_ct_and_vt_unchanged(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """peek shows visible and invisible messages without claiming them: read_ct and vt of
    every row are the same before and after."""
    pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(5)])
    claimed = pgmq.read(pgmq_queue, vt=60, qty=2)  # two invisible messages
    before = _rows(pgmq_dsn, pgmq_queue)
    table = jupyter.peek(pgmq_dsn, pgmq_queue, n=10)
    assert _rows(pgmq_dsn, pgmq_queue) == before
    assert [m.msg_id for m in table] == [r[0] for r in before]
    assert [m.read_ct for m in table] == [1, 1, 0, 0, 0]
    assert {m.msg_id for m in claimed} == {table[0].msg_id, table[1].msg_id}
    html = table._repr_html_()
    assert "not claimed" in html and "visible" in html


def test_peek_limits_reads_the_archive_and_takes_a_client(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """peek returns the first n messages; archive=True browses pgmq.a_<queue>."""
    ids = pgmq.send_batch(pgmq_queue, [{"n": i} for i in range(5)])
    assert [m.msg_id for m in jupyter.peek(pgmq, pgmq_queue, n=2)] == ids[:2]
    pgmq.archive(pgmq_queue, ids[4])
    archived = jupyter.peek(pgmq_dsn, pgmq_queue, archive=True)
    assert [m.msg_id for m in archived] == [ids[4]]
    assert f"pgmq.a_{pgmq_queue}" in archived.html()


def test_peek_rejects_unknown_queues_and_bad_names(pgmq_dsn: str) -> None:
    """peek raises QueueNotFound for a missing queue, InvalidArgument for a bad name."""
    with pytest.raises(QueueNotFound):
        jupyter.peek(pgmq_dsn, "no_such_queue_here")
    with pytest.raises(InvalidArgument):
        jupyter.peek(pgmq_dsn, "Bad-Name")
    with pytest.raises(InvalidArgument):
        jupyter.peek(pgmq_dsn, "orders", n=0)


def test_metrics_table_lists_every_queue(
    pgmq: rx_pgmq.PGMQ, pgmq_dsn: str, pgmq_queue: str
) -> None:
    """metrics_table holds pgmq.metrics of each queue and renders them."""
    pgmq.send(pgmq_queue, {"n": 1})
    table = jupyter.metrics_table(pgmq_dsn)
    mine = next(m for m in table if m.queue_name == pgmq_queue)
    assert mine.queue_length == 1
    assert pgmq_queue in table._repr_html_()
