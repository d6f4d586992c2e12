"""The live view of a running stream in a notebook: counters, rate, the last messages.

IPython and ipywidgets (extra ``jupyter``) are imported only when the view is displayed.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections import deque
from typing import Any

from reactivex import Observable, abc

from rx_pgmq._consumer._source import ControlledSource, QueueSource
from rx_pgmq._front import _html
from rx_pgmq._front._tally import Tally
from rx_pgmq._values._validate import check_positive_int
from rx_pgmq.errors import InvalidArgument

__all__ = ["LiveView", "live"]

_JUPYTER_MISSING = 'the live view needs IPython; run: pip install "rx-pgmq[jupyter]"'


def _ipython_display() -> Any:
    """``IPython.display``, imported on first use.

    Raises:
        InvalidArgument: If IPython is not installed.
    """
    try:
        return importlib.import_module("IPython.display")
    except ImportError as exc:
        raise InvalidArgument("IPython", _JUPYTER_MISSING) from exc


class LiveView:
    """A live view of a running stream; made by :func:`live`.

    Counting happens on the pipeline's thread and only updates counters; rendering
    happens on a timer thread at most ``hz`` times a second from a snapshot, so a slow
    notebook never slows the pipeline (latest value wins).

    Attributes:
        title: The heading.
        source: The ``read_queue`` source whose ``stats`` are shown, if any.
        pauser: The observer Pause/Resume send ``False``/``True`` to, if any.
    """

    def __init__(
        self,
        observable: Observable[Any],
        *,
        source: QueueSource | None,
        pauser: abc.ObserverBase[bool] | None,
        rows: int,
        hz: float,
        title: str,
    ) -> None:
        self.title = title
        self.source = source
        self.pauser = pauser
        self._observable = observable
        self._period = 1.0 / hz
        self._lock = threading.Lock()
        self._tally = Tally(rows)
        self._status = "running"
        self._started = time.monotonic()
        self._ended: float | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._subscription: abc.DisposableBase | None = None
        self._widget: Any = None
        self._html_widget: Any = None
        self._buttons: list[Any] = []
        self._handle: Any = None
        self._last_pushed = ""
        self._renders = 0
        self._thread = threading.Thread(target=self._run, name="rx_pgmq-live", daemon=True)

    # -- lifecycle ------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()
        subscription = self._observable.subscribe(
            on_next=self._on_next, on_error=self._on_error, on_completed=self._on_completed
        )
        with self._lock:
            self._subscription = subscription
        if self._done.is_set():  # a synchronous stream already ended
            subscription.dispose()

    def _on_next(self, item: Any) -> None:
        with self._lock:
            self._tally.add(item)

    def _end(self, status: str) -> None:
        with self._lock:
            if self._ended is None:
                self._ended = time.monotonic()
                self._status = status
        self._done.set()
        self._wake.set()

    def _on_error(self, error: Exception) -> None:
        self._end(f"failed: {type(error).__name__}: {error}")

    def _on_completed(self) -> None:
        self._end("completed")

    @property
    def done(self) -> bool:
        """Whether the stream ended (completed, failed or stopped)."""
        return self._done.is_set()

    @property
    def status(self) -> str:
        """``running``, ``paused``, ``completed``, ``stopped`` or ``failed: ...``."""
        with self._lock:
            return self._status

    @property
    def renders(self) -> int:
        """How many times the view was pushed to the notebook (for tests and tuning)."""
        return self._renders

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stream ends; return whether it did within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def dispose(self) -> None:
        """Stop: unsubscribe from the stream (a consumer releases what is in flight)."""
        with self._lock:
            subscription = self._subscription
        self._end("stopped")
        if subscription is not None:
            subscription.dispose()
        self._thread.join(2.0)

    stop = dispose

    # -- controls -------------------------------------------------------------------

    def pause(self) -> None:
        """Stop reading (sends ``False`` to the pauser).

        Raises:
            InvalidArgument: If the view has no pauser.
        """
        self._gate(False)

    def resume(self) -> None:
        """Read again (sends ``True`` to the pauser).

        Raises:
            InvalidArgument: If the view has no pauser.
        """
        self._gate(True)

    def _gate(self, running: bool) -> None:
        """Send ``running`` to the pauser and show the view as running or paused."""
        if self.pauser is None:
            verb = "resume" if running else "pause"
            raise InvalidArgument("pauser", f"live(..., pauser=...) was not given; cannot {verb}")
        self.pauser.on_next(running)
        with self._lock:
            if self._ended is None:
                self._status = "running" if running else "paused"
        self._wake.set()

    def step(self, n: int = 1) -> None:
        """Read ``n`` more messages from a controlled source (``source.request(n)``).

        Raises:
            InvalidArgument: If the source is not controlled or ``n`` < 1.
        """
        if not isinstance(self.source, ControlledSource):
            raise InvalidArgument(
                "source", "is not a controlled source; apply rx_pgmq.operators.controlled()"
            )
        self.source.request(n)
        self._wake.set()

    # -- rendering ------------------------------------------------------------------

    def snapshot(self) -> _html.LiveSnapshot:
        """The counters, rates and recent messages now."""
        stats = self.source.stats if self.source is not None else None
        now = time.monotonic()
        with self._lock:
            t = self._tally
            end = self._ended if self._ended is not None else now
            elapsed = max(end - self._started, 1e-9)
            received = stats.messages if stats is not None else t.messages
            acked: dict[str, int] = dict(stats.settled) if stats is not None else dict(t.acked)
            rate = self._rate(now, received, elapsed)
            counters: list[tuple[str, int | None]] = [
                ("received", received),
                ("in flight", stats.in_flight if stats is not None else None),
                ("succeeded", t.succeeded),
                ("failed", t.failed),
            ]
            for action in sorted(acked):
                counters.append((f"acked {action}", acked[action]))
            if stats is None and t.not_acked:
                counters.append(("not acked", t.not_acked))
            counters += [
                ("reads", stats.reads if stats is not None else None),
                ("notifications", stats.notifications if stats is not None else None),
                ("reconnects", stats.reconnects if stats is not None else None),
            ]
            return _html.LiveSnapshot(
                title=self.title,
                status=self._status,
                counters=counters,
                rate=rate,
                average=received / elapsed,
                elapsed=elapsed,
                rows=tuple(reversed(t.recent)),
            )

    def _rate(self, now: float, received: int, elapsed: float) -> float:
        """Messages per second over the last ~3 s (lock held)."""
        self._samples.append((now, received))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.popleft()
        t0, n0 = self._samples[0]
        if self._ended is not None:
            return 0.0
        if now - t0 > 0.2:
            return (received - n0) / (now - t0)
        return received / elapsed

    def html(self) -> str:
        """The view now, as an HTML string (what the notebook shows)."""
        return _html.live_html(self.snapshot())

    def _repr_html_(self) -> str:
        return self.html()

    def _run(self) -> None:
        """Timer thread: push the latest HTML at most ``hz`` times a second until the end."""
        next_at = time.monotonic()
        while True:
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            if now < next_at and not self._done.is_set():
                continue  # woken early (a button): keep to the rate limit
            self._push()
            next_at = max(now, next_at) + self._period
            if self._done.is_set():
                self._push()
                self._disable_buttons()
                return

    def _push(self) -> None:
        if self._html_widget is None and self._handle is None:
            return
        text = self.html()
        if text == self._last_pushed:
            return
        self._last_pushed = text
        self._renders += 1
        try:
            if self._html_widget is not None:
                self._html_widget.value = text
            elif self._handle is not None:
                self._handle.update(_ipython_display().HTML(text))
        except Exception:  # the front end went away; keep counting
            pass

    def _disable_buttons(self) -> None:
        for button in self._buttons:
            button.disabled = True

    # -- display --------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box (controls + view), created on first use.

        Raises:
            InvalidArgument: If ipywidgets is not installed.
        """
        if self._widget is None:
            try:
                import ipywidgets as w
            except ImportError as exc:
                raise InvalidArgument(
                    "ipywidgets", 'is not installed; run: pip install "rx-pgmq[jupyter]"'
                ) from exc
            out = w.HTML(value=self.html())
            out.add_class("rx-pgmq-live-html")
            controls = self._controls(w)
            self._widget = w.VBox([controls, out]) if controls is not None else w.VBox([out])
            self._widget.add_class("rx-pgmq-live")
            self._html_widget = out
            self._last_pushed = out.value
            self._wake.set()
        return self._widget

    def _controls(self, w: Any) -> Any:
        """The buttons; each control has a stable CSS class (``rx-pgmq-pause``, ...) so
        front-end tests and user styles can find it."""
        buttons: list[Any] = []
        if self.pauser is not None:
            pause = w.Button(description="Pause", icon="pause", tooltip="stop reading")
            resume = w.Button(description="Resume", icon="play", tooltip="read again")
            pause.add_class("rx-pgmq-pause")
            resume.add_class("rx-pgmq-resume")
            pause.on_click(lambda _b: self.pause())
            resume.on_click(lambda _b: self.resume())
            buttons += [pause, resume]
        extra: list[Any] = []
        if isinstance(self.source, ControlledSource):
            count = w.BoundedIntText(value=1, min=1, max=100_000, layout=w.Layout(width="80px"))
            step = w.Button(description="Step", icon="step-forward", tooltip="read n more")
            count.add_class("rx-pgmq-step-count")
            step.add_class("rx-pgmq-step")
            step.on_click(lambda _b: self.step(int(count.value)))
            buttons.append(step)
            extra.append(count)
        stop = w.Button(description="Stop", icon="stop", tooltip="unsubscribe")
        stop.add_class("rx-pgmq-stop")
        stop.on_click(lambda _b: threading.Thread(target=self.dispose, daemon=True).start())
        buttons.append(stop)
        self._buttons = buttons
        if self._done.is_set():
            self._disable_buttons()
        return w.HBox([*buttons[:-1], *extra, buttons[-1]])

    def _ipython_display_(self) -> None:
        ipd = _ipython_display()
        try:
            widget = self.widget
        except InvalidArgument:
            self._handle = ipd.display(ipd.HTML(self.html()), display_id=True)
            self._wake.set()
            return
        ipd.display(widget)

    def __repr__(self) -> str:
        return f"LiveView({self.title!r}, status={self.status!r})"


def live(
    source_or_observable: Observable[Any],
    *,
    rows: int = 10,
    hz: float = 4,
    source: QueueSource | None = None,
    pauser: abc.ObserverBase[bool] | None = None,
    title: str | None = None,
) -> LiveView:
    """Subscribe to a stream and show it live: counters, rate and the last messages.

    The stream may carry messages, ``Outcome`` values or ``Settled`` values (or a mix).
    Counters: received, in flight, succeeded, failed, acked by action, reads,
    notifications, reconnects. They come from the ``read_queue`` source's ``stats`` when
    the stream is one (or when ``source=`` names it); otherwise they are counted from what
    flows (``-`` when unknown). The view updates in place at most ``hz`` times a second and
    stops when the stream ends.

    Controls (ipywidgets): Pause/Resume send ``False``/``True`` to ``pauser`` (the
    ``BehaviorSubject`` given to ``operators.pausable``); Step(n) calls ``request(n)`` on a
    controlled source; Stop unsubscribes.

    Args:
        source_or_observable: The stream to subscribe to (a ``read_queue`` source, or a
            pipeline built on one).
        rows: How many recent messages to show, >= 1.
        hz: Most updates per second, > 0.
        source: The ``read_queue`` source under a pipeline, for its ``stats`` and Step.
        pauser: Where Pause/Resume send ``False``/``True``.
        title: The heading (default: the queue name).

    Returns:
        A :class:`LiveView`; display it (last expression of a cell), ``wait()`` for the end,
        or ``dispose()`` it.

    Raises:
        InvalidArgument: On a bad ``rows``, ``hz``, ``source`` or ``pauser``.

    Example:
        >>> gate = BehaviorSubject(True)  # doctest: +SKIP
        >>> src = read_queue(dsn, "orders", visibility_timeout=30).pipe(pgops.pausable(gate))
        ... # doctest: +SKIP
        >>> live(src.pipe(pgops.process(handle), pgops.ack()), source=src, pauser=gate)
        ... # doctest: +SKIP
    """
    if not isinstance(source_or_observable, Observable):
        raise InvalidArgument(
            "source_or_observable",
            f"must be an Observable, got {type(source_or_observable).__name__}",
        )
    check_positive_int(rows, "rows")
    if not isinstance(hz, int | float) or isinstance(hz, bool) or not math.isfinite(hz) or hz <= 0:
        raise InvalidArgument("hz", f"must be a number > 0, got {hz!r}")
    if source is None and isinstance(source_or_observable, QueueSource):
        source = source_or_observable
    if source is not None and not isinstance(source, QueueSource):
        raise InvalidArgument("source", f"must be a read_queue source, got {source!r}")
    if pauser is not None and not callable(getattr(pauser, "on_next", None)):
        raise InvalidArgument("pauser", f"must be an observer such as a Subject, got {pauser!r}")
    heading = title if title is not None else (source.queue if source is not None else "stream")
    view = LiveView(
        source_or_observable, source=source, pauser=pauser, rows=rows, hz=hz, title=heading
    )
    view._start()
    return view
