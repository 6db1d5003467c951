"""One browser session of the dashboard: widgets, raw Bokeh charts, history + live streaming, actions.

Life of a session:
1. built when the page is requested (``pn.state.curdoc`` is captured: other threads cannot see it);
2. on load it subscribes to the process's :class:`~rtqis.ui.hub.LiveHub` (a snapshot of its live buffers
   plus every later batch, scheduled with ``doc.add_next_tick_callback``) and reads history from DuckDB in
   a thread; batches arriving meanwhile are kept;
3. the charts are filled with history upserted with the live snapshot by time key (no gap, no duplicate
   at the seam), then the kept batches and every new one are queued per chart, and a 100 ms turn redraws
   one chart: ``stream(..., rollover=N)`` for new keys, ``patch`` for keys already drawn (the forming
   candle, a correction), all changes of a turn in one websocket message (``pn.io.hold``);
4. on session destroy it unsubscribes.

Thresholds on the page decide where the z-score bands are drawn and which alerts pop up as toasts: an
entry alert toasts when its |z| is at least the page's entry threshold, an exit alert when its |z| is at
most the page's exit threshold (the pair agent's own thresholds decide when an Alert is published).
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import panel as pn
from bokeh.models import CustomJS

from rtqis.analytics.pairs import AdfResult
from rtqis.errors import RtqisError
from rtqis.intervals import stored_interval_ms as interval_ms
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.ui import charts as ch
from rtqis.ui import data
from rtqis.ui import tables as tb
from rtqis.ui.hub import Batch, HubSnapshot, LiveHub

__all__ = ["DEFAULT_ENTRY_Z", "DEFAULT_EXIT_Z", "Dashboard"]

log = logging.getLogger(__name__)

DEFAULT_ENTRY_Z = 2.0
DEFAULT_EXIT_Z = 0.5
CANDLE_HISTORY_BARS = 600  # read from DuckDB at open / on a switch
CANDLE_ROLLOVER = 1500
CANDLE_WINDOW_BARS = 120  # shown, until the user zooms out
SIGNAL_HISTORY_MS = 3600_000
SIGNAL_ROLLOVER = 3600  # 1 h of 1 s samples
SIGNAL_WINDOW_MS = 30 * 60_000
BOOK_ROLLOVER = 900  # 90 s of 100 ms quotes
TRADE_ROLLOVER = 600
TICK_WINDOW_MS = 90_000
ADF_WINDOWS = {"last 120 samples": 120, "last 300": 300, "last 600": 600, "last 1,800": 1800, "last 3,600": 3600}
TIME_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Zurich",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Hong_Kong",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
)

# charts redrawn on odd turns, one per turn, when they have new rows (see Dashboard._on_turn)
_ROTATION = ("z", "candles", "hedge", "z", "candles", "spread", "depth", "fair")

# history reads, CSV building, uploads and ADF runs: never on the server's event loop
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rtqis-ui-io")

_CARD = {"border": "1px solid rgba(128,128,128,.25)", "border-radius": "6px", "margin": "4px"}
_CSS = """
.rtqis-h { font: 600 13px system-ui, sans-serif; letter-spacing: .02em; text-transform: uppercase; opacity: .8; }
.rtqis-note { font: 12px/1.35 system-ui, sans-serif; opacity: .7; }
.rtqis-status { font: 13px/1.4 system-ui, sans-serif; display: flex; flex-wrap: wrap; gap: 6px 18px;
  align-items: center; padding: 2px 4px; }
.rtqis-status b { font-weight: 600; }
.rtqis-dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 5px; }
.rtqis-board { font: 13px/1.35 system-ui, sans-serif; display: flex; gap: 12px; flex-wrap: wrap; }
.rtqis-quote { border: 1px solid rgba(128,128,128,.35); border-radius: 6px; padding: 4px 8px; min-width: 175px;
  flex: 1; }
.rtqis-quote .sym { font-weight: 700; font-size: 14px; }
.rtqis-quote .px { font: 600 16px ui-monospace, SFMono-Regular, Menlo, monospace; }
.rtqis-quote .muted, .rtqis-muted { opacity: .7; font-size: 12px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.rtqis-card { font: 13px/1.4 system-ui, sans-serif; }
.rtqis-verdict { font-weight: 700; font-size: 14px; }
.rtqis-alerts table { border-collapse: collapse; font: 12px ui-monospace, monospace; width: 100%; }
.rtqis-alerts td, .rtqis-alerts th { padding: 1px 6px; text-align: right; white-space: nowrap; }
.rtqis-alerts th { opacity: .7; font-weight: 500; }
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fmt_px(v: float) -> str:
    if not np.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.2f}"
    if abs(v) >= 1:
        return f"{v:,.4f}"
    return f"{v:.6g}"


class _View:
    """Load state of one view: batches kept while its history loads, and the hub batch its data includes."""

    def __init__(self) -> None:
        self.pending: list[Batch] | None = []  # None once loaded
        self.seq = -1  # batches up to this one are already in the drawn data

    def start_loading(self) -> None:
        self.pending = []

    def loaded(self, seq: int) -> list[Batch]:
        kept, self.pending, self.seq = self.pending or [], None, seq
        return [b for b in kept if b.seq > seq]


class Dashboard:
    """The page of one browser session."""

    def __init__(self, settings: Settings, hub: LiveHub) -> None:
        self.settings = settings
        self.hub = hub
        self.doc = pn.state.curdoc
        self.notifications = pn.state.notifications
        self.pair = settings.pairs[0]
        self.symbols = list(settings.symbols)
        self.intervals = [iv for iv in settings.candle_intervals]
        self.tf = ch.TimeFormat(settings.display_tz)
        # the page starts from the pair agent's thresholds (RTQIS_Z_ENTER / RTQIS_Z_EXIT) when configured
        self.default_entry = float(getattr(settings, "z_enter", DEFAULT_ENTRY_Z))
        self.default_exit = float(getattr(settings, "z_exit", DEFAULT_EXIT_Z))
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self._history_note = ""
        # state fed by batches
        self.quotes: dict[str, tuple[int, float, float, float, float]] = {}
        self.last_trade: dict[str, tuple[int, float, float, bool]] = {}
        self.adf_agent: m.AdfResult | None = None
        self.adf_manual: tuple[int, int, AdfResult] | None = None
        self.adf_error = ""
        self.alerts: list[m.Alert] = []
        self.depth: dict[str, m.DepthSnapshot] = {}
        self.imported: dict[tuple[str, str], tb.Cols] = {}
        self._board_dirty = True
        self._cards_dirty = True
        self.candles_view, self.signals_view = _View(), _View()
        self.pending: dict[str, tb.Cols] = {}  # rows waiting for their chart's turn (see _on_turn)
        self._turn = self._rotation = 0
        self._depth_dirty = False
        self._build()

    # ---------------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        s = self.settings
        self.w_symbol = pn.widgets.RadioButtonGroup(
            name="Symbol", options=self.symbols, value=self.symbols[0], button_type="primary", button_style="outline",
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.w_interval = pn.widgets.RadioButtonGroup(
            name="Candles", options=self.intervals, value=self.intervals[0], button_type="primary",
            button_style="outline", sizing_mode="stretch_width",
        )  # fmt: skip
        self.w_pair = pn.widgets.Select(name="Pair (y/x)", options=list(s.pairs), value=self.pair)
        zones = list(TIME_ZONES) if s.display_tz in TIME_ZONES else [s.display_tz, *TIME_ZONES]
        self.w_tz = pn.widgets.Select(
            name="Time zone (display only; data stays UTC)", options=zones, value=s.display_tz,
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.w_entry = pn.widgets.FloatInput(
            name="Entry |z| ≥", value=self.default_entry, step=0.1, start=0.1, end=20, format="0.0[0]",
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.w_exit = pn.widgets.FloatInput(
            name="Exit |z| ≤", value=self.default_exit, step=0.1, start=0.0, end=20, format="0.0[0]",
            sizing_mode="stretch_width",
        )  # fmt: skip
        default_window = int(getattr(s, "adf_window", 600))
        windows = dict(ADF_WINDOWS)
        if default_window not in windows.values():
            windows[f"last {default_window:,} (pair agent's)"] = default_window
        self.w_adf_window = pn.widgets.Select(
            name="ADF window", options=windows, value=default_window, sizing_mode="stretch_width"
        )
        self.w_adf_run = pn.widgets.Button(name="Run ADF now", button_type="primary", sizing_mode="stretch_width")
        self.dl_signals = pn.widgets.FileDownload(
            callback=self._signals_file, filename="signals.csv", label="PairSignals of the visible range",
            button_type="default", sizing_mode="stretch_width",
        )  # fmt: skip
        self.dl_candles = pn.widgets.FileDownload(
            callback=self._candles_file, filename="candles.csv", label="Candles of the visible range",
            button_type="default", sizing_mode="stretch_width",
        )  # fmt: skip
        self.w_up_symbol = pn.widgets.Select(
            name="Symbol", options=self.symbols, value=self.symbols[0], sizing_mode="stretch_width"
        )
        self.w_up_interval = pn.widgets.Select(
            name="Interval", options=self.intervals, value=self.intervals[0], sizing_mode="stretch_width"
        )
        # Bokeh's own file input: Panel's FileDropper loads FilePond 4, whose draw loop runs at 60 frames/s on
        # every page that loads it (pqina/filepond#243), for as long as the page is open
        self.w_upload = pn.widgets.FileInput(accept=".csv,text/csv", sizing_mode="stretch_width")
        self.upload_msg = pn.pane.Alert(
            "", alert_type="light", visible=False, sizing_mode="stretch_width", css_classes=["rtqis-upload-msg"]
        )

        def html_pane(height: int, **kw: Any) -> pn.pane.HTML:
            # a fixed height: new text never changes the page's layout, so charts are not re-laid out
            return pn.pane.HTML(
                "", sizing_mode="stretch_width", height=height, stylesheets=[_CSS], styles={"overflow": "hidden"}, **kw
            )

        self.status = html_pane(24, margin=(2, 10))
        self.board = html_pane(92, margin=(4, 10))
        self.adf_card = html_pane(92, margin=(4, 10))
        self.alert_card = html_pane(92, margin=(4, 10))

        iv_ms = interval_ms(self.w_interval.value)
        self.candles = ch.CandleChart.build(self.tf, iv_ms, CANDLE_WINDOW_BARS)
        self.candles.set_series(self.w_symbol.value, self.w_interval.value, iv_ms, CANDLE_WINDOW_BARS)
        self.ticks = ch.TickCharts.build(self.tf, TICK_WINDOW_MS)
        self.ticks.set_symbol(self.w_symbol.value)
        self.pairs = ch.PairCharts.build(self.tf, self.pair, SIGNAL_WINDOW_MS)
        self.pairs.set_thresholds(self.default_entry, self.default_exit)

        self.w_symbol.param.watch(self._on_symbol, "value")
        self.w_interval.param.watch(self._on_series, "value")
        self.w_pair.param.watch(self._on_pair, "value")
        self.w_tz.param.watch(self._on_tz, "value")
        self.w_entry.param.watch(self._on_thresholds, "value")
        self.w_exit.param.watch(self._on_thresholds, "value")
        self.w_adf_run.on_click(self._on_adf)
        self.w_upload.param.watch(self._on_upload, "value")

        def bokeh(obj: Any, **kw: Any) -> pn.pane.Bokeh:
            return pn.pane.Bokeh(obj, sizing_mode="stretch_width", **kw)

        def heading(text: str) -> pn.pane.HTML:
            return pn.pane.HTML(f'<div class="rtqis-h">{text}</div>', stylesheets=[_CSS], margin=(12, 10, 2, 10))

        def card(title: str, *objs: Any, **kw: Any) -> pn.Column:
            return pn.Column(heading(title), *objs, styles=_CARD, **kw)

        candle_block = bokeh(self.candles.price)
        sidebar = [
            heading("Market"),
            self.w_symbol,
            heading("Candle interval"),
            self.w_interval,
            *([self.w_pair] if len(s.pairs) > 1 else []),
            self.w_tz,
            heading("Pair signals"),
            pn.Row(self.w_entry, self.w_exit, sizing_mode="stretch_width"),
            pn.pane.HTML(
                "<div class='rtqis-note'>Bands on the z-score chart, and which alerts pop up.</div>",
                stylesheets=[_CSS],
                margin=(0, 10),
            ),  # fmt: skip
            self.w_adf_window,
            self.w_adf_run,
            heading("Download CSV"),
            self.dl_signals,
            self.dl_candles,
            heading("Import OHLC candles (CSV, ≤ 5 MB)"),
            pn.Row(self.w_up_symbol, self.w_up_interval, sizing_mode="stretch_width"),
            self.w_upload,
            self.upload_msg,
            pn.pane.HTML(
                "<div class='rtqis-note'>Same rules as <code>rtqis candles import</code>: Binance klines, or a header "
                "with <code>open_time,open,high,low,close,volume</code>. The whole file is checked before anything "
                "is imported.</div>",
                stylesheets=[_CSS],
                margin=(0, 10),
            ),  # fmt: skip
        ]
        main = [
            pn.Column(self.status, sizing_mode="stretch_width", styles=_CARD),
            pn.Row(
                card("Top of book", self.board, sizing_mode="stretch_width"),
                card("Cointegration: ADF test of the spread", self.adf_card, width=360),
                card("Recent alerts", self.alert_card, width=300),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.Column(candle_block, sizing_mode="stretch_width", styles=_CARD),
                pn.Column(bokeh(self.ticks.depth), width=430, styles=_CARD),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.Column(bokeh(self.pairs.zscore), sizing_mode="stretch_width", styles=_CARD),
                pn.Column(bokeh(self.ticks.quotes), sizing_mode="stretch_width", styles=_CARD),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                pn.Column(bokeh(self.pairs.hedge), sizing_mode="stretch_width", styles=_CARD),
                pn.Column(bokeh(self.pairs.spread), sizing_mode="stretch_width", styles=_CARD),
                pn.Column(bokeh(self.pairs.fair), sizing_mode="stretch_width", styles=_CARD),
                sizing_mode="stretch_width",
            ),
        ]
        # Bootstrap design: no font or icon fetched from the internet (the page works offline)
        self.template = pn.template.BootstrapTemplate(
            title="RT-QIS · live market and pair analytics",
            sidebar=sidebar,
            main=main,
            theme="dark",
            header_background="#17202a",
            sidebar_width=330,
            busy_indicator=None,
        )
        self._render_status()
        self._render_cards()

    def servable(self) -> Any:
        pn.state.onload(self._on_load)
        if self.doc is not None:
            self.doc.on_session_destroyed(self._on_destroyed)
            self.doc.js_on_event("document_ready", CustomJS(code=ch.FAST_VISUALS_JS))
        return self.template.servable(title="RT-QIS dashboard")

    # ---------------------------------------------------------------------------------------- threads

    def _in_thread(self, fn: Callable[[], Any], done: Callable[[Future[Any]], None]) -> None:
        """Run ``fn`` in the I/O pool, then ``done(future)`` on this session's event loop (document locked)."""
        doc = self.doc

        def back(f: Future[Any]) -> None:
            if not self._closed and doc is not None:
                doc.add_next_tick_callback(partial(done, f))

        _POOL.submit(fn).add_done_callback(back)

    # ---------------------------------------------------------------------------------------- life cycle

    def _on_load(self) -> None:
        snap, self._unsubscribe = self.hub.subscribe(self._from_hub)
        sym, iv = self.w_symbol.value, self.w_interval.value
        end = max(
            _now_ms(), _newest(snap.candles.get((sym, iv)), "open_time"), _newest(snap.signals.get(self.pair), "time")
        )
        s = self.settings
        self._fill_ticks(snap)
        self._in_thread(
            lambda: data.load_history(
                s, symbol=sym, interval=iv, pair=self.pair, end_ms=end, bars=CANDLE_HISTORY_BARS,
                signals_ms=SIGNAL_HISTORY_MS,
            ),
            partial(self._on_history, snap, (sym, iv), self.pair),
        )  # fmt: skip
        pn.state.add_periodic_callback(self._on_turn, period=100)

    def _on_destroyed(self, _ctx: Any) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _from_hub(self, batch: Batch) -> None:
        """Hub thread: hand the batch to this session's event loop (the only thread-safe way in)."""
        if self._closed or self.doc is None:
            return
        self.doc.add_next_tick_callback(partial(self._on_batch, batch))

    def _on_history(self, snap: HubSnapshot, key: tuple[str, str], pair: str, fut: Future[data.History]) -> None:
        try:
            hist = fut.result()
        except Exception as e:  # a broken snapshot file must not leave the page empty of live data
            log.exception("history read failed")
            hist = data.History(note=f"history unavailable: {e}")
        self._history_note = hist.note
        with pn.io.hold(self.doc):
            if key == (self.w_symbol.value, self.w_interval.value):
                self._fill_candles(key, hist.candles, snap)
            if pair == self.pair:
                self._fill_signals(hist.signals, snap)
            agent = [a for a in (hist.adf, snap.adf.get(self.pair)) if a is not None]
            if agent:
                self.adf_agent = max(agent, key=lambda a: a.time)
            seen = {(a.time, a.kind) for a in hist.alerts}
            self.alerts = (
                hist.alerts
                + [
                    e.alert
                    for e in snap.alerts
                    if (e.alert.time, e.alert.kind) not in seen and e.alert.pair == self.pair
                ]
            )[-20:]
            self._cards_dirty = True
            self._render_cards()
            self._render_status()

    # ---------------------------------------------------------------------------------------- fills

    def _fill_candles(self, key: tuple[str, str], hist: tb.Cols, snap: HubSnapshot) -> None:
        iv_ms = interval_ms(key[1])
        rows = tb.upsert(hist, snap.candles.get(key, {}), "open_time")
        if key in self.imported:
            rows = tb.upsert(rows, self.imported[key], "open_time")
        if tb.length(rows):  # the live window only: bars far older than the newest stay in DuckDB
            rows = tb.time_window(rows, "open_time", int(rows["open_time"][-1]) - CANDLE_ROLLOVER * iv_ms, None)
        n = tb.length(rows)
        rows = tb.slice_rows(rows, max(0, n - CANDLE_ROLLOVER))
        self.candles.source.data = (
            ch.candle_display(rows, iv_ms) if tb.length(rows) else {c: np.empty(0) for c in ch.CANDLE_COLUMNS}
        )
        self.pending.pop("candles", None)
        for b in self.candles_view.loaded(snap.seq):
            self._queue_candles(b)
        self._flush("candles")

    def _fill_signals(self, hist: tb.Cols, snap: HubSnapshot) -> None:
        rows = tb.upsert(hist, snap.signals.get(self.pair, {}), "time")
        n = tb.length(rows)
        rows = tb.slice_rows(rows, max(0, n - SIGNAL_ROLLOVER))
        for chart, src in self.pairs.sources.items():
            self.pending.pop(chart, None)
            src.data = (
                ch.signal_display(rows, chart) if tb.length(rows) else {c: np.empty(0) for c in ch.SIGNAL_CHARTS[chart]}
            )
        for b in self.signals_view.loaded(snap.seq):
            self._queue_signals(b)
        for chart in ch.SIGNAL_CHARTS:
            self._flush(chart)

    def _fill_ticks(self, snap: HubSnapshot) -> None:
        sym = self.w_symbol.value
        book = tb.slice_rows(snap.book.get(sym, {}), -BOOK_ROLLOVER)
        self.ticks.book.data = (
            {c: book[c] for c in ch.BOOK_COLUMNS} if tb.length(book) else {c: np.empty(0) for c in ch.BOOK_COLUMNS}
        )
        trades = tb.slice_rows(snap.trades.get(sym, {}), -TRADE_ROLLOVER)
        self.ticks.trades.data = (
            ch.trade_display(trades) if tb.length(trades) else {c: np.empty(0) for c in ch.TRADE_COLUMNS}
        )
        self.pending.pop("book", None)
        self.pending.pop("trades", None)
        for s, cols in snap.book.items():
            if tb.length(cols):
                self._quote(s, cols)
        for s, cols in snap.trades.items():
            if tb.length(cols):
                self._trade(s, cols)
        self.depth.update(snap.depth)
        self._draw_depth(sym)

    # ---------------------------------------------------------------------------------------- batches
    #
    # A batch only queues rows per chart; a 100 ms turn (periodic callback) redraws at most one chart.
    # The browser paints every chart whose data changed in the same animation frame, and with a software
    # canvas each chart costs several ms of main thread (paint, canvas upload, style): nine charts in one
    # frame took 50-100 ms. One chart per turn keeps a frame far under 50 ms. Even turns redraw the top of
    # book (5 Hz); odd turns the text panels (1 Hz) or the next chart with new rows, in a rotation where the
    # z-score and the candles come twice as often as the depth, hedge ratio, spread and fair value.

    def _on_batch(self, batch: Batch) -> None:
        if self._closed:
            return
        with pn.io.hold(self.doc):
            if self.candles_view.pending is not None:
                self.candles_view.pending.append(batch)
            else:
                self._queue_candles(batch)
            if self.signals_view.pending is not None:
                self.signals_view.pending.append(batch)
            else:
                self._queue_signals(batch)
            self._queue_ticks(batch)
            for pair, adf in batch.adf.items():
                if pair == self.pair and (self.adf_agent is None or adf.time >= self.adf_agent.time):
                    self.adf_agent = adf
                    self._cards_dirty = True
            for ev in batch.alerts:
                if ev.alert.pair != self.pair or any(
                    (a.time, a.kind) == (ev.alert.time, ev.alert.kind) for a in self.alerts
                ):
                    continue  # another pair, or read again after a reconnect
                self.alerts = (self.alerts + [ev.alert])[-20:]
                self._cards_dirty = True
                if ev.live:
                    self._toast(ev.alert)

    def _queue(self, chart: str, cols: tb.Cols | None, key: str) -> None:
        if cols is None or not tb.length(cols):
            return
        # always through upsert: one batch can hold a key twice (at-least-once delivery: a signal sent
        # again after a worker restart, two producers of one pair) or out of order, and the tail plan
        # streams its rows as they are (a duplicate point, a line that runs backwards)
        self.pending[chart] = tb.upsert(self.pending.get(chart) or {}, cols, key)

    def _queue_candles(self, batch: Batch) -> None:
        if batch.seq > self.candles_view.seq:
            self._queue("candles", batch.candles.get((self.w_symbol.value, self.w_interval.value)), "open_time")

    def _queue_signals(self, batch: Batch) -> None:
        if batch.seq > self.signals_view.seq:
            for chart in ch.SIGNAL_CHARTS:
                self._queue(chart, batch.signals.get(self.pair), "time")

    def _queue_ticks(self, batch: Batch) -> None:
        sym = self.w_symbol.value
        for s, cols in batch.book.items():
            self._quote(s, cols)
            if s == sym:
                self._queue("book", cols, "t")
        for s, cols in batch.trades.items():
            self._trade(s, cols)
            if s == sym:
                self._queue("trades", cols, "trade_id")
        if batch.depth:
            self.depth.update(batch.depth)
            self._depth_dirty = self._depth_dirty or sym in batch.depth

    def _on_turn(self) -> None:
        """Every 100 ms: redraw one chart (or the text panels), all its changes in one websocket message."""
        if self._closed:
            return
        turn = self._turn
        self._turn += 1
        with pn.io.hold(self.doc):
            if turn % 2 == 0:
                self._flush("book")
                self._flush("trades")
            elif turn % 10 == 1:
                self._render_text()
            else:
                for i in range(len(_ROTATION)):
                    chart = _ROTATION[(self._rotation + i) % len(_ROTATION)]
                    if chart in self.pending or (chart == "depth" and self._depth_dirty):
                        self._rotation = (self._rotation + i + 1) % len(_ROTATION)
                        if chart == "depth":
                            self._draw_depth(self.w_symbol.value)
                        else:
                            self._flush(chart)
                        break

    def _flush(self, chart: str) -> None:
        cols = self.pending.pop(chart, None)
        if not cols:
            return
        if chart == "candles":
            iv_ms = interval_ms(self.w_interval.value)
            self._upsert_tail(self.candles.source, ch.candle_display(cols, iv_ms), "open_time", CANDLE_ROLLOVER)
        elif chart == "book":
            self._upsert_tail(self.ticks.book, {c: cols[c] for c in ch.BOOK_COLUMNS}, "t", BOOK_ROLLOVER)
        elif chart == "trades":
            self._upsert_tail(self.ticks.trades, ch.trade_display(cols), "trade_id", TRADE_ROLLOVER, patch=False)
        else:
            self._upsert_tail(self.pairs.sources[chart], ch.signal_display(cols, chart), "t", SIGNAL_ROLLOVER)

    def _upsert_tail(self, src: Any, cols: tb.Cols, key: str, rollover: int, patch: bool = True) -> None:
        drawn = np.asarray(src.data[key])
        plan = tb.tail_plan(drawn, cols, key)
        if patch and plan.patches:
            patches: dict[str, list[tuple[int, Any]]] = {}
            for idx, row in plan.patches:
                for c, v in cols.items():
                    patches.setdefault(c, []).append((idx, v[row].item()))
            src.patch(patches)
        if plan.stream:
            src.stream(plan.stream, rollover=rollover)

    def _quote(self, sym: str, cols: tb.Cols) -> None:
        i = tb.length(cols) - 1
        self.quotes[sym] = (
            int(cols["t"][i]),
            float(cols["bid"][i]),
            float(cols["ask"][i]),
            float(cols["bid_qty"][i]),
            float(cols["ask_qty"][i]),
        )
        self._board_dirty = True

    def _trade(self, sym: str, cols: tb.Cols) -> None:
        i = tb.length(cols) - 1
        self.last_trade[sym] = (
            int(cols["t"][i]),
            float(cols["price"][i]),
            float(cols["qty"][i]),
            bool(cols["buyer_maker"][i]),
        )
        self._board_dirty = True

    def _draw_depth(self, sym: str) -> None:
        self._depth_dirty = False
        d = self.depth.get(sym)
        if d is None or not (d.bid_price or d.ask_price):
            self.ticks.bids.data = {c: np.empty(0) for c in ch.DEPTH_COLUMNS}
            self.ticks.asks.data = {c: np.empty(0) for c in ch.DEPTH_COLUMNS}
            self.ticks.no_depth.visible = True
            return
        self.ticks.bids.data = ch.depth_display(d.bid_price, d.bid_qty, "bid")
        self.ticks.asks.data = ch.depth_display(d.ask_price, d.ask_qty, "ask")
        if self.ticks.no_depth.visible:
            self.ticks.no_depth.visible = False

    def _toast(self, a: m.Alert) -> None:
        entry, exit_ = float(self.w_entry.value or self.default_entry), float(self.w_exit.value or 0.0)
        is_exit = a.kind == "exit"
        if (is_exit and abs(a.zscore) > exit_) or (not is_exit and abs(a.zscore) < entry):
            return
        if self.notifications is None:
            return
        direction = {
            "enter_long_spread": "enter LONG spread (buy y, sell β·x)",
            "enter_short_spread": "enter SHORT spread (sell y, buy β·x)",
            "exit": "EXIT (spread back near its mean)",
        }.get(a.kind, a.kind)
        text = f"{a.pair}: z = {a.zscore:+.2f} → {direction}"
        kind = "info" if is_exit else ("warning" if a.kind == "enter_short_spread" else "success")
        getattr(self.notifications, kind)(html.escape(text), duration=8000)

    # ---------------------------------------------------------------------------------------- periodic

    def _render_text(self) -> None:
        self._render_status()
        if self._board_dirty:
            self._render_board()
        if self._cards_dirty:
            self._render_cards()

    def _fmt_time(self, ms: int, with_date: bool = False) -> str:
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(self.tf.tz))
        return dt.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")

    def _render_status(self) -> None:
        st = self.hub.stats
        now = _now_ms()
        color = "#26a69a" if st.connected else "#ef5350"
        age = "–" if st.last_msg_wall_ms is None else f"{max(0, now - st.last_msg_wall_ms) / 1000:.1f} s"
        dl_color = "#ef5350" if st.deadletters else "inherit"
        parts = [
            f'<span><span class="rtqis-dot" style="background:{color}"></span>'
            f"<b>Broker</b> {'connected' if st.connected else 'disconnected'} · {html.escape(st.bootstrap)}"
            f" · {html.escape(st.state)}</span>",
            f"<span><b>{st.msgs_per_s:,.0f}</b> msg/s · <b>{st.ticks_per_s:,.0f}</b> ticks/s</span>",
            f"<span>last message <b>{age}</b> ago</span>",
            f'<span>dead letters <b style="color:{dl_color}">{st.deadletters:,}</b></span>',
            f"<span>viewers <b>{st.sessions}</b></span>",
        ]
        if self._history_note:
            parts.append(f'<span class="rtqis-muted">{html.escape(self._history_note)}</span>')
        self.status.object = f'<div class="rtqis-status" id="rtqis-status">{"".join(parts)}</div>'

    def _render_board(self) -> None:
        self._board_dirty = False
        cards = []
        for sym in self.symbols:
            color = ch.symbol_color(sym, self.symbols)
            q = self.quotes.get(sym)
            t = self.last_trade.get(sym)
            if q is None:
                body = '<div class="muted">no quote yet</div>'
            else:
                _, bid, ask, bq, aq = q
                spread = ask - bid
                mid = (ask + bid) / 2
                bps = 1e4 * spread / mid if mid else float("nan")
                body = (
                    f'<div><span class="px" style="color:{ch.BID}">{_fmt_px(bid)}</span> / '
                    f'<span class="px" style="color:{ch.ASK}">{_fmt_px(ask)}</span></div>'
                    f'<div class="muted">spread {_fmt_px(spread)} ({bps:.2f} bp) · {bq:,.3g} / {aq:,.3g}</div>'
                )
            if t is not None:
                tc = ch.ASK if t[3] else ch.BID
                body += (
                    f'<div class="muted">last <span style="color:{tc}">{_fmt_px(t[1])}</span> × {t[2]:,.4g} '
                    f"at {self._fmt_time(t[0])}</div>"
                )
            cards.append(
                f'<div class="rtqis-quote" style="border-left:4px solid {color}">'
                f'<div class="sym" style="color:{color}">{sym}</div>{body}</div>'
            )
        self.board.object = f'<div class="rtqis-board" id="rtqis-board">{"".join(cards)}</div>'

    def _render_cards(self) -> None:
        self._cards_dirty = False
        parts = []
        a = self.adf_agent
        if a is not None:
            verdict, color = ("mean-reverting", "#26a69a") if a.mean_reverting else ("random walk", "#ef5350")
            parts.append(
                f'<div><span class="rtqis-verdict" style="color:{color}" id="rtqis-adf-verdict">{verdict}</span> '
                f'<span class="rtqis-muted">pair agent · {self._fmt_time(a.time)} · last {a.window:,}</span></div>'
                f'<div class="rtqis-muted">stat {a.stat:.2f} vs 5% critical {a.crit_5:.2f} · p {a.pvalue:.4f}</div>'
            )
        else:
            parts.append('<div class="rtqis-muted">no periodic ADF result from the pair agent yet</div>')
        if self.adf_manual is not None:
            at, window, r = self.adf_manual
            verdict, color = ("mean-reverting", "#26a69a") if r.mean_reverting else ("random walk", "#ef5350")
            parts.append(
                f'<div style="margin-top:3px"><span class="rtqis-verdict" style="color:{color}" id="rtqis-adf-manual">'
                f'{verdict}</span> <span class="rtqis-muted">on demand · {self._fmt_time(at)} · last {window:,}</span>'
                f'</div><div class="rtqis-muted">stat {r.stat:.2f} vs 5% critical {r.crit.get("5%", float("nan")):.2f}'
                f" · p {r.pvalue:.4f} · {r.lags} lags</div>"
            )
        if self.adf_error:
            parts.append(f'<div style="color:#ef5350">{html.escape(self.adf_error)}</div>')
        self.adf_card.object = f'<div class="rtqis-card">{"".join(parts)}</div>'
        if not self.alerts:
            self.alert_card.object = '<div class="rtqis-muted rtqis-card">no alert for this pair yet</div>'
            return
        rows = []
        for al in reversed(self.alerts[-4:]):
            color = "#9e9e9e" if al.kind == "exit" else ("#26a69a" if al.kind == "enter_long_spread" else "#ef5350")
            rows.append(
                f"<tr><td>{self._fmt_time(al.time)}</td><td style='color:{color};text-align:left'>"
                f"{html.escape(al.kind.replace('_', ' '))}</td><td>z {al.zscore:+.2f}</td></tr>"
            )
        self.alert_card.object = f'<div class="rtqis-alerts"><table>{"".join(rows)}</table></div>'

    # ---------------------------------------------------------------------------------------- controls

    def _on_symbol(self, _e: Any) -> None:
        sym = self.w_symbol.value
        self.ticks.set_symbol(sym)
        self._fill_ticks(self.hub.snapshot())
        self._on_series()

    def _on_series(self, *_e: Any) -> None:
        sym, iv = self.w_symbol.value, self.w_interval.value
        iv_ms = interval_ms(iv)
        self.candles.set_series(sym, iv, iv_ms, CANDLE_WINDOW_BARS)
        self.candles_view.start_loading()
        snap = self.hub.snapshot()
        end = max(_now_ms(), _newest(snap.candles.get((sym, iv)), "open_time"))
        s = self.settings

        def done(f: Future[tb.Cols]) -> None:
            if (sym, iv) != (self.w_symbol.value, self.w_interval.value):
                return  # switched again meanwhile: that load will fill
            try:
                hist = f.result()
            except Exception:
                log.exception("candle history read failed")
                hist = {}
            with pn.io.hold(self.doc):
                self._fill_candles((sym, iv), hist, snap)

        self._in_thread(lambda: data.load_candles(s, sym, iv, end, CANDLE_HISTORY_BARS), done)

    def _on_pair(self, _e: Any) -> None:
        self.pair = self.w_pair.value
        self.pairs.set_pair(self.pair)
        self.pairs.set_thresholds(float(self.w_entry.value or self.default_entry), float(self.w_exit.value or 0.0))
        self.signals_view.start_loading()
        snap = self.hub.snapshot()
        s, sym, iv, pair = self.settings, self.w_symbol.value, self.w_interval.value, self.pair
        end = max(_now_ms(), _newest(snap.signals.get(pair), "time"))
        self.adf_agent, self.adf_manual, self.alerts = None, None, []
        self._in_thread(
            lambda: data.load_history(
                s, symbol=sym, interval=iv, pair=pair, end_ms=end, bars=0, signals_ms=SIGNAL_HISTORY_MS
            ),
            partial(self._on_history, snap, ("", ""), pair),
        )

    def _on_tz(self, _e: Any) -> None:
        self.tf.set_tz(self.w_tz.value)
        self._board_dirty = self._cards_dirty = True
        self._render_text()

    def _on_thresholds(self, _e: Any) -> None:
        entry = float(self.w_entry.value or self.default_entry)
        exit_ = float(self.w_exit.value or 0.0)
        if exit_ >= entry:
            self.w_exit.value = exit_ = max(0.0, round(entry / 2, 2))
        self.pairs.set_thresholds(entry, exit_)

    def _on_adf(self, _e: Any) -> None:
        window = int(self.w_adf_window.value)
        live = self.hub.snapshot().signals.get(self.pair, {})
        s, pair = self.settings, self.pair
        self.w_adf_run.loading = True
        self.adf_error = ""

        def done(f: Future[tuple[AdfResult, int]]) -> None:
            self.w_adf_run.loading = False
            try:
                r, n = f.result()
                self.adf_manual = (_now_ms(), n, r)
            except RtqisError as e:
                self.adf_error = str(e)
            except Exception as e:
                log.exception("ADF failed")
                self.adf_error = f"ADF failed: {e}"
            self._render_cards()

        self._in_thread(lambda: data.pair_adf(s, pair, live, window), done)

    def _visible(self, x_range: Any, shift: float = 0.0) -> tuple[int | None, int | None]:
        start, end = getattr(x_range, "start", None), getattr(x_range, "end", None)
        if start is None or end is None or not np.isfinite(start) or not np.isfinite(end):
            return None, None
        return int(start - shift), int(end - shift)

    async def _signals_file(self) -> Any:
        start, end = self._visible(self.pairs.x_range)
        live = self.hub.snapshot().signals.get(self.pair, {})
        pair = self.pair
        body, n = await asyncio.get_running_loop().run_in_executor(
            _POOL, lambda: data.signals_csv(self.settings, pair, live, start, end)
        )
        self.dl_signals.filename = f"signals-{pair.replace('/', '-')}-{_stamp(start)}-{_stamp(end)}.csv"
        log.info("signals CSV: %d rows", n)
        return io.BytesIO(body)

    async def _candles_file(self) -> Any:
        sym, iv = self.w_symbol.value, self.w_interval.value
        start, end = self._visible(self.candles.x_range, interval_ms(iv) / 2)
        live = self.hub.snapshot().candles.get((sym, iv), {})
        body, n = await asyncio.get_running_loop().run_in_executor(
            _POOL, lambda: data.candles_csv(self.settings, sym, iv, live, start, end)
        )
        self.dl_candles.filename = f"candles-{sym}-{iv}-{_stamp(start)}-{_stamp(end)}.csv"
        log.info("candles CSV: %d rows", n)
        return io.BytesIO(body)

    def _on_upload(self, _e: Any) -> None:
        raw, name = self.w_upload.value, self.w_upload.filename or "upload.csv"
        if raw is None:
            return
        data_bytes = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        sym, iv = self.w_up_symbol.value, self.w_up_interval.value
        self.upload_msg.param.update(object=f"Checking {html.escape(name)} …", alert_type="info", visible=True)

        def done(f: Future[data.UploadResult]) -> None:
            try:
                r = f.result()
            except data.UploadError as e:
                self.upload_msg.param.update(object=html.escape(str(e)), alert_type="danger", visible=True)
                return
            except Exception as e:
                log.exception("upload failed")
                self.upload_msg.param.update(object=f"import failed: {html.escape(str(e))}", alert_type="danger")
                return
            span = ""
            if tb.length(r.candles):
                t = r.candles["open_time"]
                first, last = self._fmt_time(int(t[0]), True), self._fmt_time(int(t[-1]), True)
                span = f" from {first} to {last} ({self.tf.tz})"
            self.upload_msg.param.update(
                object=f"Imported {r.rows:,} {sym} {iv} candles{span} ({html.escape(r.how)}).",
                alert_type="success",
                visible=True,
            )
            self.imported[(sym, iv)] = tb.upsert(self.imported.get((sym, iv), {}), r.candles, "open_time")
            if (sym, iv) == (self.w_symbol.value, self.w_interval.value):
                self._on_series()

        s = self.settings
        self._in_thread(partial(data.upload_candles, s, name, data_bytes, symbol=sym, interval=iv), done)


def _newest(cols: tb.Cols | None, key: str) -> int:
    if not cols or not tb.length(cols):
        return 0
    return int(cols[key][-1])


def _stamp(ms: int | None) -> str:
    if ms is None:
        return "all"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
