"""The dashboard's widgets, panes and charts, and where they sit on the page.

Builds only: no handler, no data. :class:`rtqis.ui.page.Dashboard` wires the widgets to its handlers and
fills the panes (text from :mod:`rtqis.ui.panels`) and charts (:mod:`rtqis.ui.charts`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import panel as pn

from rtqis.intervals import stored_interval_ms
from rtqis.settings import Settings
from rtqis.ui import charts as ch
from rtqis.ui.panels import CSS

__all__ = [
    "ADF_WINDOWS",
    "CANDLE_WINDOW_BARS",
    "SIGNAL_WINDOW_MS",
    "TICK_WINDOW_MS",
    "TIME_ZONES",
    "Charts",
    "Controls",
    "Panes",
    "adf_windows",
    "build_charts",
    "build_controls",
    "build_panes",
    "build_template",
    "time_zones",
]

log = logging.getLogger(__name__)

CANDLE_WINDOW_BARS = 120  # shown, until the user zooms out
SIGNAL_WINDOW_MS = 30 * 60_000
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

_CARD = {"border": "1px solid rgba(128,128,128,.25)", "border-radius": "6px", "margin": "4px"}


def time_zones(display_tz: str) -> list[str]:
    """The zones offered: :data:`TIME_ZONES`, with the configured one first when it is not among them."""
    return list(TIME_ZONES) if display_tz in TIME_ZONES else [display_tz, *TIME_ZONES]


def adf_windows(agent_window: int) -> dict[str, int]:
    """The ADF windows offered: :data:`ADF_WINDOWS`, plus the pair agent's own when it is not among them."""
    windows = dict(ADF_WINDOWS)
    if agent_window not in windows.values():
        windows[f"last {agent_window:,} (pair agent's)"] = agent_window
    return windows


@dataclass
class Controls:
    """The sidebar's widgets."""

    symbol: pn.widgets.RadioButtonGroup
    interval: pn.widgets.RadioButtonGroup
    pair: pn.widgets.Select
    tz: pn.widgets.Select
    entry: pn.widgets.FloatInput
    exit: pn.widgets.FloatInput
    adf_window: pn.widgets.Select
    adf_run: pn.widgets.Button
    dl_signals: pn.widgets.FileDownload
    dl_candles: pn.widgets.FileDownload
    up_symbol: pn.widgets.Select
    up_interval: pn.widgets.Select
    upload: pn.widgets.FileInput
    upload_msg: pn.pane.Alert


@dataclass
class Panes:
    """The text panes (HTML from :mod:`rtqis.ui.panels`)."""

    status: pn.pane.HTML
    board: pn.pane.HTML
    adf: pn.pane.HTML  # the Engle-Granger card, with the ADF lines under it
    signal: pn.pane.HTML
    alerts: pn.pane.HTML


@dataclass
class Charts:
    candles: ch.CandleChart
    ticks: ch.TickCharts
    pairs: ch.PairCharts


def build_controls(s: Settings, entry: float, exit_: float) -> Controls:
    """The widgets, at the settings' first symbol, interval and pair, the given thresholds and the pair
    agent's ADF window. The download buttons get their callbacks from the page."""
    symbols, intervals = list(s.symbols), list(s.candle_intervals)
    agent_window = int(getattr(s, "adf_window", 600))
    return Controls(
        symbol=pn.widgets.RadioButtonGroup(
            name="Symbol", options=symbols, value=symbols[0], color="primary", variant="outline",
            sizing_mode="stretch_width",
        ),
        interval=pn.widgets.RadioButtonGroup(
            name="Candles", options=intervals, value=intervals[0], color="primary", variant="outline",
            sizing_mode="stretch_width",
        ),
        pair=pn.widgets.Select(name="Pair (y/x)", options=list(s.pairs), value=s.pairs[0]),
        tz=pn.widgets.Select(
            name="Time zone (display only; data stays UTC)", options=time_zones(s.display_tz), value=s.display_tz,
            sizing_mode="stretch_width",
        ),
        entry=pn.widgets.FloatInput(
            name="Entry |z| ≥", value=entry, step=0.1, start=0.1, end=20, format="0.0[0]",
            sizing_mode="stretch_width",
        ),
        exit=pn.widgets.FloatInput(
            name="Exit |z| ≤", value=exit_, step=0.1, start=0.0, end=20, format="0.0[0]",
            sizing_mode="stretch_width",
        ),
        adf_window=pn.widgets.Select(
            name="ADF window", options=adf_windows(agent_window), value=agent_window, sizing_mode="stretch_width"
        ),
        adf_run=pn.widgets.Button(name="Run ADF now", color="primary", sizing_mode="stretch_width"),
        dl_signals=pn.widgets.FileDownload(
            filename="signals.csv", label="PairSignals of the visible range", color="default",
            sizing_mode="stretch_width",
        ),
        dl_candles=pn.widgets.FileDownload(
            filename="candles.csv", label="Candles of the visible range", color="default",
            sizing_mode="stretch_width",
        ),
        up_symbol=pn.widgets.Select(name="Symbol", options=symbols, value=symbols[0], sizing_mode="stretch_width"),
        up_interval=pn.widgets.Select(
            name="Interval", options=intervals, value=intervals[0], sizing_mode="stretch_width"
        ),
        # Bokeh's own file input: Panel's FileDropper loads FilePond 4, whose draw loop runs at 60 frames/s on
        # every page that loads it (pqina/filepond#243), for as long as the page is open
        upload=pn.widgets.FileInput(accept=".csv,text/csv", sizing_mode="stretch_width"),
        upload_msg=pn.pane.Alert(
            "", alert_type="light", visible=False, sizing_mode="stretch_width", css_classes=["rtqis-upload-msg"]
        ),
    )  # fmt: skip


def _html_pane(height: int, **kw: Any) -> pn.pane.HTML:
    # a fixed height: new text never changes the page's layout, so charts are not re-laid out
    return pn.pane.HTML(
        "", sizing_mode="stretch_width", height=height, stylesheets=[CSS], styles={"overflow": "hidden"}, **kw
    )


def build_panes() -> Panes:
    return Panes(
        status=_html_pane(24, margin=(2, 10)),
        board=_html_pane(92, margin=(4, 10)),
        adf=_html_pane(150, margin=(4, 10)),
        signal=_html_pane(150, margin=(4, 10)),
        alerts=_html_pane(92, margin=(4, 10)),
    )


def build_charts(
    tf: ch.TimeFormat, symbol: str, interval: str, pair: str, entry: float, exit_: float, rule: str = "bands"
) -> Charts:
    """The session's Bokeh figures, titled for the first symbol, interval and pair, bands at the thresholds
    (no exit band under the stop-and-reverse ``rule``)."""
    iv_ms = stored_interval_ms(interval)
    candles = ch.CandleChart.build(tf, iv_ms, CANDLE_WINDOW_BARS)
    candles.set_series(symbol, interval, iv_ms, CANDLE_WINDOW_BARS)
    ticks = ch.TickCharts.build(tf, TICK_WINDOW_MS)
    ticks.set_symbol(symbol)
    pairs = ch.PairCharts.build(tf, pair, SIGNAL_WINDOW_MS)
    pairs.set_thresholds(entry, exit_, rule)
    return Charts(candles, ticks, pairs)


def _bokeh(obj: Any, **kw: Any) -> pn.pane.Bokeh:
    return pn.pane.Bokeh(obj, sizing_mode="stretch_width", **kw)


def _heading(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f'<div class="rtqis-h">{text}</div>', stylesheets=[CSS], margin=(12, 10, 2, 10))


def _card(title: str, *objs: Any, **kw: Any) -> pn.Column:
    return pn.Column(_heading(title), *objs, styles=_CARD, **kw)


def _note(html: str) -> pn.pane.HTML:
    return pn.pane.HTML(f"<div class='rtqis-note'>{html}</div>", stylesheets=[CSS], margin=(0, 10))


def _framed(obj: Any, **kw: Any) -> pn.Column:
    return pn.Column(_bokeh(obj), styles=_CARD, **kw)


def build_template(s: Settings, c: Controls, p: Panes, charts: Charts) -> pn.template.BootstrapTemplate:
    """The page: controls in the sidebar; in the main area the status, top of book and alerts, candles and
    depth, the top of book over time, then the pair: cointegration and signal cards, z-score and spread
    against cost, hedge ratio and fair value."""
    sidebar = [
        _heading("Market"),
        c.symbol,
        _heading("Candle interval"),
        c.interval,
        *([c.pair] if len(s.pairs) > 1 else []),
        c.tz,
        _heading("Pair signals"),
        pn.Row(c.entry, c.exit, sizing_mode="stretch_width"),
        _note("Bands on the z-score chart, and which alerts pop up."),
        c.adf_window,
        c.adf_run,
        _heading("Download CSV"),
        c.dl_signals,
        c.dl_candles,
        _heading("Import OHLC candles (CSV, ≤ 5 MB)"),
        pn.Row(c.up_symbol, c.up_interval, sizing_mode="stretch_width"),
        c.upload,
        c.upload_msg,
        _note(
            "Same rules as <code>rtqis candles import</code>: Binance klines, or a header with "
            "<code>open_time,open,high,low,close,volume</code>. The whole file is checked before anything is "
            "imported."
        ),
    ]
    wide = {"sizing_mode": "stretch_width"}
    main = [
        pn.Column(p.status, styles=_CARD, **wide),
        pn.Row(_card("Top of book", p.board, **wide), _card("Recent alerts", p.alerts, width=360), **wide),
        pn.Row(_framed(charts.candles.price, **wide), _framed(charts.ticks.depth, width=430), **wide),
        pn.Row(_framed(charts.ticks.quotes, **wide), **wide),
        pn.Row(
            _card("Cointegration (Engle-Granger) · half-life · hedge ratio", p.adf, **wide),
            _card("Signal now · does an entry pay its costs?", p.signal, **wide),
            **wide,
        ),
        pn.Row(_framed(charts.pairs.zscore, **wide), _framed(charts.pairs.spread, **wide), **wide),
        pn.Row(_framed(charts.pairs.hedge, **wide), _framed(charts.pairs.fair, **wide), **wide),
    ]
    # Bootstrap design: no font or icon fetched from the internet (the page works offline)
    return pn.template.BootstrapTemplate(
        title="RT-QIS · live market and pair analytics",
        sidebar=sidebar,
        main=main,
        theme="dark",
        header_background="#17202a",
        sidebar_width=330,
        busy_indicator=None,
    )
