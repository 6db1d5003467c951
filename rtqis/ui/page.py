"""One browser session of the dashboard: wiring of layout, session data path, panels and actions.

- :mod:`rtqis.ui.layout` builds the widgets, panes and charts and places them;
- :mod:`rtqis.ui.session` holds the data path (history/live seam, per-chart queues, 100 ms turns) and the
  state the text panels show; its docstring tells the life of a session;
- :mod:`rtqis.ui.panels` turns that state into the panes' HTML;
- :mod:`rtqis.ui.actions` runs the ADF on demand, the CSV downloads and the candle upload.

The session's document is captured when the page is built (``pn.state.curdoc``: other threads cannot see
it); every change from another thread (history reads, ADF runs) reaches the page through
``doc.add_next_tick_callback``, and the changes of one callback go out in one websocket message
(``pn.io.hold``). The hub's batches wait in the session's bounded :class:`~rtqis.ui.session.Inbox` and
the 100 ms turn takes them, unless the browser stopped reading its websocket (a stalled tab): then the
session neither draws nor drains, its buffers stay bounded, and when it reads again after batches were
dropped its views are loaded again.

Thresholds on the page decide where the z-score bands are drawn and which alerts pop up as toasts: an
entry alert toasts when its |z| is at least the page's entry threshold, an exit alert when its |z| is at
most the page's exit threshold (the pair agent's own thresholds decide when an Alert is published).
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import numpy as np
import panel as pn
from bokeh.models import CustomJS

from rtqis.analytics.pair_model import PairParams
from rtqis.intervals import stored_interval_ms
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.ui import charts as ch
from rtqis.ui import data
from rtqis.ui import panels as pl
from rtqis.ui import session as ss
from rtqis.ui import tables as tb
from rtqis.ui.actions import Actions
from rtqis.ui.hub import Batch, HubSnapshot, LiveHub
from rtqis.ui.layout import CANDLE_WINDOW_BARS, build_charts, build_controls, build_panes, build_template

__all__ = ["DEFAULT_ENTRY_Z", "DEFAULT_EXIT_Z", "Dashboard"]

log = logging.getLogger(__name__)

DEFAULT_ENTRY_Z = 2.0
DEFAULT_EXIT_Z = 0.5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Dashboard:
    """The page of one browser session."""

    def __init__(self, settings: Settings, hub: LiveHub) -> None:
        self.settings = settings
        self.hub = hub
        self.doc = pn.state.curdoc
        self.notifications = pn.state.notifications
        self.symbols = list(settings.symbols)
        self.tf = ch.TimeFormat(settings.display_tz)
        # the page starts from the pair agent's thresholds (RTQIS_Z_ENTER / RTQIS_Z_EXIT) when configured
        self.default_entry = float(getattr(settings, "z_enter", DEFAULT_ENTRY_Z))
        self.default_exit = float(getattr(settings, "z_exit", DEFAULT_EXIT_Z))
        params = PairParams.from_settings(settings)
        self.rule = str(getattr(settings, "alert_rule", params.alert_rule))
        self.z_needs, self.coint_needs = params.level_min_samples, params.coint_min
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self.state = ss.PageState(pair=settings.pairs[0])
        self.candles_view, self.signals_view = ss.ViewLoad(), ss.ViewLoad()
        self.inbox = ss.Inbox()
        self._dropped_seen = 0  # inbox and view drops already answered by loading the views again
        self._stalled = False
        self.queues = ss.ChartQueues(
            {"candles": ss.CANDLE_ROLLOVER, "book": ss.BOOK_ROLLOVER, "trades": ss.TRADE_ROLLOVER}
            | dict.fromkeys(ch.SIGNAL_CHARTS, ss.SIGNAL_ROLLOVER)
        )
        self.turns = ss.Turns()

        self.controls = c = build_controls(settings, self.default_entry, self.default_exit)
        self.panes = build_panes()
        self.charts = build_charts(
            self.tf, c.symbol.value, c.interval.value, self.state.pair, self.default_entry, self.default_exit,
            self.rule,
        )  # fmt: skip
        self.template = build_template(settings, c, self.panes, self.charts)
        c.symbol.param.watch(self._on_symbol, "value")
        c.interval.param.watch(self.reload_candles, "value")
        c.pair.param.watch(self._on_pair, "value")
        c.tz.param.watch(self._on_tz, "value")
        c.entry.param.watch(self._on_thresholds, "value")
        c.exit.param.watch(self._on_thresholds, "value")
        self.actions = Actions(self)
        self._render_status()
        self.render_cards()

    @property
    def pair(self) -> str:
        return self.state.pair

    def servable(self) -> Any:
        pn.state.onload(self._on_load)
        if self.doc is not None:
            self.doc.on_session_destroyed(self._on_destroyed)
            self.doc.js_on_event("document_ready", CustomJS(code=ch.FAST_VISUALS_JS))
        return self.template.servable(title="RT-QIS dashboard")

    def in_thread(self, fn: Callable[[], Any], done: Callable[[Future[Any]], None]) -> None:
        """Run ``fn`` in the I/O pool, then ``done(future)`` on this session's event loop (document locked)."""
        ss.in_thread(self.doc, lambda: self._closed, fn, done)

    def _thresholds(self) -> tuple[float, float]:
        return float(self.controls.entry.value or self.default_entry), float(self.controls.exit.value or 0.0)

    # ---------------------------------------------------------------------------------------- life cycle

    def _on_load(self) -> None:
        snap, self._unsubscribe = self.hub.subscribe(self.inbox.put)
        sym, iv, pair = self.controls.symbol.value, self.controls.interval.value, self.pair
        end = max(
            _now_ms(), ss.newest(snap.candles.get((sym, iv)), "open_time"), ss.newest(snap.signals.get(pair), "time")
        )
        s = self.settings
        self._fill_ticks(snap)
        self.in_thread(
            lambda: data.load_history(
                s, symbol=sym, interval=iv, pair=pair, end_ms=end, bars=ss.CANDLE_HISTORY_BARS,
                signals_ms=ss.SIGNAL_HISTORY_MS,
            ),
            partial(self._on_history, snap, (sym, iv), pair),
        )  # fmt: skip
        pn.state.add_periodic_callback(self._on_turn, period=100)

    def _on_destroyed(self, _ctx: Any) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @property
    def dropped(self) -> int:
        """Hub batches this session dropped because it did not take them in time (bounded buffers)."""
        return self.inbox.dropped + self.candles_view.dropped + self.signals_view.dropped

    def _on_history(self, snap: HubSnapshot, key: tuple[str, str], pair: str, fut: Future[data.History]) -> None:
        try:
            hist = fut.result()
        except Exception as e:  # a broken snapshot file must not leave the page empty of live data
            log.exception("history read failed")
            hist = data.History(note=f"history unavailable: {e}")
        self.state.history_note = hist.note
        with pn.io.hold(self.doc):
            if key == (self.controls.symbol.value, self.controls.interval.value):
                self._fill_candles(key, hist.candles, snap)
            if pair == self.pair:
                self._fill_signals(hist.signals, snap)
            self.state.history([hist.adf, snap.adf.get(self.pair)], hist.alerts, snap.alerts)
            self.render_cards()
            self._render_status()

    # ---------------------------------------------------------------------------------------- fills

    def _fill_candles(self, key: tuple[str, str], hist: tb.Cols, snap: HubSnapshot) -> None:
        iv_ms = stored_interval_ms(key[1])
        kept = [b.candles.get(key) for b in self.candles_view.loaded(snap.seq)]
        rows = ss.candle_rows(hist, snap.candles.get(key, {}), self.state.imported.get(key), iv_ms, kept)
        self.charts.candles.source.data = (
            ch.candle_display(rows, iv_ms) if tb.length(rows) else {c: np.empty(0) for c in ch.CANDLE_COLUMNS}
        )
        self.queues.pop("candles")

    def _fill_signals(self, hist: tb.Cols, snap: HubSnapshot) -> None:
        kept = [b.signals.get(self.pair) for b in self.signals_view.loaded(snap.seq)]
        rows = ss.signal_rows(hist, snap.signals.get(self.pair, {}), kept)
        self.state.signal(rows)
        for chart, src in self.charts.pairs.sources.items():
            self.queues.pop(chart)
            src.data = (
                ch.signal_display(rows, chart) if tb.length(rows) else {c: np.empty(0) for c in ch.SIGNAL_CHARTS[chart]}
            )

    def _fill_ticks(self, snap: HubSnapshot) -> None:
        sym, ticks = self.controls.symbol.value, self.charts.ticks
        book = tb.slice_rows(snap.book.get(sym, {}), -ss.BOOK_ROLLOVER)
        ticks.book.data = (
            {c: book[c] for c in ch.BOOK_COLUMNS} if tb.length(book) else {c: np.empty(0) for c in ch.BOOK_COLUMNS}
        )
        trades = tb.slice_rows(snap.trades.get(sym, {}), -ss.TRADE_ROLLOVER)
        ticks.trades.data = (
            ch.trade_display(trades) if tb.length(trades) else {c: np.empty(0) for c in ch.TRADE_COLUMNS}
        )
        self.queues.pop("book")
        self.queues.pop("trades")
        for s, cols in snap.book.items():
            self.state.quote(s, cols)
        for s, cols in snap.trades.items():
            self.state.trade(s, cols)
        self.state.depth.update(snap.depth)
        self._draw_depth(sym)

    def _draw_depth(self, sym: str) -> None:
        self.state.depth_dirty = False
        ticks = self.charts.ticks
        d = self.state.depth.get(sym)
        if d is None or not (d.bid_price or d.ask_price):
            ticks.bids.data = {c: np.empty(0) for c in ch.DEPTH_COLUMNS}
            ticks.asks.data = {c: np.empty(0) for c in ch.DEPTH_COLUMNS}
            ticks.no_depth.visible = True
            return
        ticks.bids.data = ch.depth_display(d.bid_price, d.bid_qty, "bid")
        ticks.asks.data = ch.depth_display(d.ask_price, d.ask_qty, "ask")
        if ticks.no_depth.visible:
            ticks.no_depth.visible = False

    # ---------------------------------------------------------------------------------------- batches
    # A batch only queues rows per chart; a 100 ms turn redraws at most one chart (see session.Turns).

    def _on_batch(self, batch: Batch) -> None:
        if self._closed:
            return
        with pn.io.hold(self.doc):
            self._apply(batch)

    def _apply(self, batch: Batch) -> None:
        if self.candles_view.pending is not None:
            self.candles_view.keep(batch)
        else:
            self._queue_candles(batch)
        if self.signals_view.pending is not None:
            self.signals_view.keep(batch)
        else:
            self._queue_signals(batch)
        self._queue_ticks(batch)
        for pair, adf in batch.adf.items():
            self.state.agent_adf(pair, adf)
        for ev in batch.alerts:
            if self.state.alert(ev.alert) and ev.live:
                self._toast(ev.alert)

    def _queue_candles(self, batch: Batch) -> None:
        if batch.seq > self.candles_view.seq:
            key = (self.controls.symbol.value, self.controls.interval.value)
            self.queues.queue("candles", batch.candles.get(key), "open_time")

    def _queue_signals(self, batch: Batch) -> None:
        if batch.seq > self.signals_view.seq:
            rows = batch.signals.get(self.pair)
            for chart in ch.SIGNAL_CHARTS:
                self.queues.queue(chart, rows, "time")
            if rows is not None:
                self.state.signal(rows)

    def _queue_ticks(self, batch: Batch) -> None:
        sym = self.controls.symbol.value
        for s, cols in batch.book.items():
            self.state.quote(s, cols)
            if s == sym:
                self.queues.queue("book", cols, "t")
        for s, cols in batch.trades.items():
            self.state.trade(s, cols)
            if s == sym:
                self.queues.queue("trades", cols, "trade_id")
        if batch.depth:
            self.state.depth.update(batch.depth)
            self.state.depth_dirty = self.state.depth_dirty or sym in batch.depth

    def _toast(self, a: m.Alert) -> None:
        t = pl.toast(a, *self._thresholds())
        if t is not None and self.notifications is not None:
            getattr(self.notifications, t.kind)(html.escape(t.text), duration=8000)

    def _on_turn(self) -> None:
        """Every 100 ms: take the hub's batches, redraw one chart (or the text panels), all the changes in
        one websocket message; nothing while the browser is not reading what was sent (a stalled tab)."""
        if self._closed:
            return
        backlog = ss.socket_backlog(self.doc)
        if backlog > ss.SOCKET_BACKLOG_BYTES:
            if not self._stalled:
                log.info("a browser tab is not reading (%d bytes unsent): not drawing for it meanwhile", backlog)
                self._stalled = True
            return
        self._stalled = False
        if self.dropped > self._dropped_seen:
            log.info("a browser tab fell %d batches behind: loading its views again", self.dropped - self._dropped_seen)
            self._dropped_seen = self.dropped
            self.inbox.take()  # the reload starts from the hub's snapshot, which includes them
            self._resync()
        batches = self.inbox.take()
        todo = self.turns.next(lambda chart: chart in self.queues or (chart == "depth" and self.state.depth_dirty))
        with pn.io.hold(self.doc):
            for batch in batches:
                self._apply(batch)
            for what in todo:
                if what == "text":
                    self._render_text()
                elif what == "depth":
                    self._draw_depth(self.controls.symbol.value)
                else:
                    self._flush(what)

    def _flush(self, chart: str) -> None:
        cols = self.queues.pop(chart)
        if not cols:
            return
        charts = self.charts
        if chart == "candles":
            iv_ms = stored_interval_ms(self.controls.interval.value)
            ss.upsert_tail(charts.candles.source, ch.candle_display(cols, iv_ms), "open_time", ss.CANDLE_ROLLOVER)
        elif chart == "book":
            ss.upsert_tail(charts.ticks.book, {c: cols[c] for c in ch.BOOK_COLUMNS}, "t", ss.BOOK_ROLLOVER)
        elif chart == "trades":
            ss.upsert_tail(charts.ticks.trades, ch.trade_display(cols), "trade_id", ss.TRADE_ROLLOVER, patch=False)
        else:
            ss.upsert_tail(charts.pairs.sources[chart], ch.signal_display(cols, chart), "t", ss.SIGNAL_ROLLOVER)

    # ---------------------------------------------------------------------------------------- text panels

    def _render_text(self) -> None:
        self._render_status()
        if self.state.board_dirty:
            self.state.board_dirty = False
            self.panes.board.object = pl.board_html(self.symbols, self.state.quotes, self.state.trades, self.tf.tz)
        if self.state.cards_dirty:
            self.render_cards()

    def _render_status(self) -> None:
        self.panes.status.object = pl.status_html(
            self.hub.stats, _now_ms(), self.state.history_note, dropped=self.dropped
        )

    def _resync(self) -> None:
        """Load every view again (history + the hub's snapshot): after dropped batches, the charts had gaps."""
        self.queues.pending.clear()
        self._fill_ticks(self.hub.snapshot())
        self.reload_candles()
        self._on_pair(None)

    def render_cards(self) -> None:
        """The cointegration, signal and alert cards, the alert markers and the warm-up notes, now."""
        st = self.state
        st.cards_dirty = False
        w = pl.warmup(st.last_signal, self.z_needs, self.coint_needs)
        self.panes.adf.object = pl.coint_html(st.last_signal, self.pair, w) + pl.adf_html(
            st.adf_agent, st.adf_manual, st.adf_error, self.tf.tz, diagnostic=True
        )
        self.panes.signal.object = pl.signal_html(st.last_signal, w, self.rule, *self._thresholds())
        self.panes.alerts.object = pl.alerts_html(st.alerts, self.tf.tz)
        if st.marks_dirty:
            st.marks_dirty = False
            self.charts.pairs.alerts.data = ch.alert_marks(st.alerts)
        self.charts.pairs.set_warmup(pl.warmup_text(st.last_signal, w))

    # ---------------------------------------------------------------------------------------- controls

    def _on_symbol(self, _e: Any) -> None:
        self.charts.ticks.set_symbol(self.controls.symbol.value)
        self._fill_ticks(self.hub.snapshot())
        self.reload_candles()

    def reload_candles(self, *_e: Any) -> None:
        """Draw the chosen series again: history (and this session's imports) upserted with live candles."""
        sym, iv = self.controls.symbol.value, self.controls.interval.value
        self.charts.candles.set_series(sym, iv, stored_interval_ms(iv), CANDLE_WINDOW_BARS)
        self.candles_view.start_loading()
        snap = self.hub.snapshot()
        end = max(_now_ms(), ss.newest(snap.candles.get((sym, iv)), "open_time"))
        s = self.settings

        def done(f: Future[tb.Cols]) -> None:
            if (sym, iv) != (self.controls.symbol.value, self.controls.interval.value):
                return  # switched again meanwhile: that load will fill
            try:
                hist = f.result()
            except Exception:
                log.exception("candle history read failed")
                hist = {}
            with pn.io.hold(self.doc):
                self._fill_candles((sym, iv), hist, snap)

        self.in_thread(lambda: data.load_candles(s, sym, iv, end, ss.CANDLE_HISTORY_BARS), done)

    def _on_pair(self, _e: Any) -> None:
        self.state.set_pair(self.controls.pair.value)
        pair = self.pair
        self.charts.pairs.set_pair(pair)
        self.charts.pairs.set_thresholds(*self._thresholds())
        self.signals_view.start_loading()
        snap = self.hub.snapshot()
        s, sym, iv = self.settings, self.controls.symbol.value, self.controls.interval.value
        end = max(_now_ms(), ss.newest(snap.signals.get(pair), "time"))
        self.in_thread(
            lambda: data.load_history(
                s, symbol=sym, interval=iv, pair=pair, end_ms=end, bars=0, signals_ms=ss.SIGNAL_HISTORY_MS
            ),
            partial(self._on_history, snap, ("", ""), pair),
        )

    def _on_tz(self, _e: Any) -> None:
        self.tf.set_tz(self.controls.tz.value)
        self.state.board_dirty = self.state.cards_dirty = True
        self._render_text()

    def _on_thresholds(self, _e: Any) -> None:
        entry, exit_ = self._thresholds()
        if exit_ >= entry:
            self.controls.exit.value = exit_ = max(0.0, round(entry / 2, 2))
        self.charts.pairs.set_thresholds(entry, exit_)
        self.state.cards_dirty = True
