"""Raw Bokeh figures of the dashboard (one set per browser session; models are never shared between sessions).

Times are epoch milliseconds UTC in every data source. They are shown in the page's time zone by a
``CustomJSTickFormatter`` / ``CustomJSHover`` that format with the browser's ``Intl.DateTimeFormat``
(Bokeh's own datetime formatter has no time-zone option, bokeh#1135): changing the zone changes one
argument of these formatters, the data is not re-sent.

Colours are fixed per series across charts: OLS amber, Kalman blue, Huber purple, bid/buy green,
ask/sell red, and one colour per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from bokeh.core.enums import LegendLocationType
from bokeh.models import (
    Axis,
    ColumnDataSource,
    ContinuousTicker,
    CustomJSHover,
    CustomJSTickFormatter,
    DataRange1d,
    HoverTool,
    LinearAxis,
    LinearColorMapper,
    NumeralTickFormatter,
)
from bokeh.models.annotations.geometry import BoxAnnotation, Span
from bokeh.models.annotations.labels import Label, Title
from bokeh.models.renderers.glyph_renderer import GlyphRenderer
from bokeh.plotting import figure
from bokeh.transform import transform

__all__ = [
    "ASK",
    "BID",
    "DOWN",
    "HUBER",
    "KALMAN",
    "OLS",
    "UP",
    "FAST_VISUALS_JS",
    "alert_marks",
    "CandleChart",
    "PairCharts",
    "TickCharts",
    "TimeFormat",
    "symbol_color",
]

UP, DOWN = "#26a69a", "#ef5350"
BID, ASK = "#26a69a", "#ef5350"
OLS, KALMAN, HUBER = "#f2a93b", "#4fc3f7", "#ce93d8"
ENTRY, EXIT = "#ef5350", "#9e9e9e"
_SYMBOL_COLORS = {"BTCUSDT": "#f7931a", "ETHUSDT": "#8c9eff"}
_PALETTE = ("#ffd54f", "#81c784", "#f06292", "#4dd0e1", "#a1887f", "#90a4ae")

_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"

_M = TypeVar("_M")


def _model(value: object, kind: type[_M]) -> _M:
    """``value`` as a ``kind``: Bokeh types some properties wider than what ``figure()`` puts there (a title
    is always a Title, a y range here a DataRange1d, a datetime axis's ticker a continuous one); a mismatch
    would be a bug, raised here rather than hidden."""
    if not isinstance(value, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(value).__name__}")
    return value


# Intl.DateTimeFormat objects are cached per (zone, precision): formatting a tick costs a map lookup
_TICK_JS = """
const span = ticks.length > 1 ? Math.abs(ticks[ticks.length - 1] - ticks[0]) : 0;
const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 0;  // seconds shown when ticks are < 1 min apart
const prec = span > 2 * 86400000 ? 'd' : (step >= 60000 ? 'm' : 's');
const cache = (window._rtqis_fmt = window._rtqis_fmt || {});
const key = tz + '|' + prec;
let f = cache[key];
if (f === undefined) {
  const o = {timeZone: tz, hourCycle: 'h23'};
  if (prec === 'd') { o.month = 'short'; o.day = '2-digit'; o.hour = '2-digit'; o.minute = '2-digit'; }
  else if (prec === 'm') { o.hour = '2-digit'; o.minute = '2-digit'; }
  else { o.hour = '2-digit'; o.minute = '2-digit'; o.second = '2-digit'; }
  f = cache[key] = new Intl.DateTimeFormat('en-GB', o);
}
return f.format(new Date(tick));
"""

_HOVER_JS = """
const cache = (window._rtqis_fmt = window._rtqis_fmt || {});
const key = tz + '|full';
let f = cache[key];
if (f === undefined) {
  f = cache[key] = new Intl.DateTimeFormat('en-GB', {timeZone: tz, hourCycle: 'h23', year: 'numeric',
    month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    fractionalSecondDigits: 3});
}
return f.format(new Date(value));
"""


# BokehJS 3.9 reads every visual property (colours, widths, fonts of axes, grids, labels, glyphs) through
# getComputedStyle(...).getPropertyValue("--bk-...") on every paint, in case a stylesheet overrides it
# (bokeh#15286, open; a cache is in bokeh#15205). Most renderer elements are not in the document, so each
# read recomputes styles: with nine live charts that alone made 50-100 ms main-thread tasks every second.
# The dashboard styles no canvas visual through CSS, so the lookup is answered "not set" (the model's value
# is used, exactly as when no stylesheet defines the variable). Applied once per page, when the document is
# ready; a BokehJS without this internal module is left alone.
FAST_VISUALS_JS = """
try {
  const visual = Bokeh.require("core/visuals/visual");
  const proto = visual.VisualProperties.prototype;
  if (!proto._rtqis_css_off) {
    proto._get_css_value = function () { return ""; };
    proto._rtqis_css_off = true;
  }
} catch (e) {
  console.warn("rtqis: BokehJS visuals left as they are", e);
}
"""


def symbol_color(symbol: str, symbols: list[str] | None = None) -> str:
    if symbol in _SYMBOL_COLORS:
        return _SYMBOL_COLORS[symbol]
    i = (symbols or []).index(symbol) if symbols and symbol in symbols else sum(map(ord, symbol))
    return _PALETTE[i % len(_PALETTE)]


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) of a Binance symbol, e.g. BTCUSDT -> (BTC, USDT)."""
    for q in ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "EUR", "BTC", "ETH", "BNB"):
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol, ""


class TimeFormat:
    """The session's time-zone formatters: one tick formatter and one hover formatter, shared by all charts."""

    def __init__(self, tz: str) -> None:
        self.tz = tz
        self.ticks = CustomJSTickFormatter(code=_TICK_JS, args={"tz": tz})
        self.hover = CustomJSHover(code=_HOVER_JS, args={"tz": tz})
        self.axes: list[Axis] = []

    def set_tz(self, tz: str) -> None:
        self.tz = tz
        self.ticks.args = {"tz": tz}
        self.hover.args = {"tz": tz}
        for ax in self.axes:
            ax.axis_label = f"time ({tz})"


def _figure(title: str, height: int, tf: TimeFormat, *, x_range: object = None, y_label: str = "") -> figure:
    kw: dict[str, Any] = {}
    if x_range is not None:
        kw["x_range"] = x_range
    p = figure(
        title=title,
        height=height,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        tools=_TOOLS,
        active_drag="xpan",
        active_scroll="xwheel_zoom",
        toolbar_location="right",
        min_border_left=70,
        min_border_right=20,
        output_backend="canvas",
        **kw,
    )
    p.xaxis.formatter = tf.ticks
    _model(p.xaxis[0].ticker, ContinuousTicker).desired_num_ticks = 5
    p.xaxis.axis_label = f"time ({tf.tz})"
    tf.axes.append(p.xaxis[0])
    p.yaxis.axis_label = y_label
    p.toolbar.logo = None
    # y ranges are recomputed in the browser at every update: no need to send them back to the server
    p.y_range = DataRange1d(range_padding=0.08, only_visible=True, syncable=False)
    _model(p.title, Title).text_font_size = "13px"
    return p


def _legend(p: figure, location: LegendLocationType = "top_left") -> None:
    p.legend.location = location
    p.legend.click_policy = "hide"
    p.legend.label_text_font_size = "11px"
    p.legend.background_fill_alpha = 0.5
    p.legend.spacing = 0
    p.legend.padding = 4  # type: ignore[assignment]  # bokeh's stub types Legend.padding as the Property itself
    p.legend.orientation = "horizontal"


def _live_x_range(window_ms: int, name: str) -> DataRange1d:
    """A time axis that follows the newest data with a window of ``window_ms`` until the user pans or zooms."""
    return DataRange1d(follow="end", follow_interval=window_ms, range_padding=0.02, only_visible=True, name=name)


CANDLE_COLUMNS = ("open_time", "x", "open", "high", "low", "close", "volume", "top", "bottom", "up")


@dataclass
class CandleChart:
    """Candlesticks and volume bars of one symbol and interval (switchable), sharing one source and time axis."""

    source: ColumnDataSource
    price: figure
    x_range: DataRange1d
    volume_axis: LinearAxis

    @classmethod
    def build(cls, tf: TimeFormat, interval_ms: int, bars: int = 120) -> CandleChart:
        src = ColumnDataSource({c: np.empty(0) for c in CANDLE_COLUMNS}, name="src-candles")
        x_range = _live_x_range(bars * interval_ms, "xr-candles")
        price = _figure("Candles", 400, tf, x_range=x_range, y_label="price")
        colors = LinearColorMapper(palette=[DOWN, UP], low=0, high=1)
        # volume bars in the bottom quarter, on their own scale (right axis): one canvas, not two charts
        # (range_padding 6 with start 0 puts the largest bar at a quarter of the height)
        vol_range = DataRange1d(start=0, range_padding=6.0, only_visible=True)
        vol_range.syncable = False
        price.extra_y_ranges = {"volume": vol_range}
        vol = price.vbar(
            "x", width=0.7 * interval_ms, top="volume", bottom=0, source=src, fill_color=transform("up", colors),
            line_color=None, fill_alpha=0.35, y_range_name="volume", level="underlay",
        )  # fmt: skip
        vol_range.renderers = [vol]
        seg = price.segment("x", "high", "x", "low", source=src, color=transform("up", colors), line_width=1)
        body = price.vbar(
            "x",
            width=0.7 * interval_ms,
            top="top",
            bottom="bottom",
            source=src,
            fill_color=transform("up", colors),
            line_color=transform("up", colors),
        )
        _model(price.y_range, DataRange1d).renderers = [seg, body]  # the price axis ignores the volume bars
        price.yaxis.formatter = NumeralTickFormatter(format="0,0.[00]")
        volume_axis = LinearAxis(
            y_range_name="volume",
            axis_label="volume",
            # bokeh's stub narrows LinearAxis.formatter to its default's class; any TickFormatter is accepted
            formatter=NumeralTickFormatter(format="0.[00]a"),  # type: ignore[arg-type]
        )
        volume_axis.ticker.desired_num_ticks = 3
        price.add_layout(volume_axis, "right")
        price.add_tools(
            HoverTool(
                renderers=[body],
                tooltips=[
                    ("open time", "@open_time{custom}"),
                    ("O / H", "@open{0,0.00[00]} / @high{0,0.00[00]}"),
                    ("L / C", "@low{0,0.00[00]} / @close{0,0.00[00]}"),
                    ("volume", "@volume{0,0.[0000]}"),
                ],
                formatters={"@open_time": tf.hover},
                mode="vline",
            )
        )
        return cls(src, price, x_range, volume_axis)

    def set_series(self, symbol: str, interval: str, interval_ms: int, bars: int = 120) -> None:
        base, quote = split_symbol(symbol)
        _model(self.price.title, Title).text = f"{symbol} · {interval} candles and volume (live candle updating)"
        self.price.yaxis[0].axis_label = f"price ({quote or 'quote'})"
        self.volume_axis.axis_label = f"volume ({base})"
        for r in self.price.renderers:
            if not isinstance(r, GlyphRenderer):
                continue
            g = r.glyph
            if hasattr(g, "width"):
                g.width = 0.7 * interval_ms
        self.x_range.follow_interval = bars * interval_ms


def candle_display(cols: dict[str, np.ndarray], interval_ms: int) -> dict[str, np.ndarray]:
    """Candle columns (``open_time``, OHLCV) -> the chart's columns (bar centre, body top/bottom, up flag)."""
    o, c = cols["open"], cols["close"]
    return {
        "open_time": cols["open_time"],
        "x": cols["open_time"] + interval_ms / 2.0,
        "open": o,
        "high": cols["high"],
        "low": cols["low"],
        "close": c,
        "volume": cols["volume"],
        "top": np.maximum(o, c),
        "bottom": np.minimum(o, c),
        "up": (c >= o).astype(np.float64),
    }


BOOK_COLUMNS = ("t", "bid", "ask", "bid_qty", "ask_qty")
TRADE_COLUMNS = ("t", "price", "qty", "size", "sell", "trade_id")
DEPTH_COLUMNS = ("price", "cum")


@dataclass
class TickCharts:
    """Top of book (bid/ask steps) with trade prints, and the cumulative depth ladder, of one symbol."""

    book: ColumnDataSource
    trades: ColumnDataSource
    bids: ColumnDataSource
    asks: ColumnDataSource
    quotes: figure
    depth: figure
    no_depth: Label

    @classmethod
    def build(cls, tf: TimeFormat, window_ms: int = 120_000) -> TickCharts:
        book = ColumnDataSource({c: np.empty(0) for c in BOOK_COLUMNS}, name="src-book")
        trades = ColumnDataSource({c: np.empty(0) for c in TRADE_COLUMNS}, name="src-trades")
        q = _figure("Top of book and trades", 280, tf, x_range=_live_x_range(window_ms, "xr-ticks"), y_label="price")
        side = LinearColorMapper(palette=[BID, ASK], low=0, high=1)
        # trades as dots sized by quantity, under the solid bid/ask steps (filled: cheaper to draw than rings)
        prints = q.scatter(
            "t", "price", size="size", source=trades, fill_color=transform("sell", side), line_color=None,
            fill_alpha=0.45, legend_label="trades (green buy, red sell)",
        )  # fmt: skip
        q.step("t", "bid", source=book, mode="after", color=BID, line_width=2.2, legend_label="best bid")
        q.step("t", "ask", source=book, mode="after", color=ASK, line_width=2.2, legend_label="best ask")
        q.add_tools(
            HoverTool(
                renderers=[prints],
                tooltips=[("time", "@t{custom}"), ("price", "@price{0,0.00[00]}"), ("qty", "@qty{0,0.[0000]}")],
                formatters={"@t": tf.hover},
            )
        )
        q.yaxis.formatter = NumeralTickFormatter(format="0,0.[00]")
        _legend(q)

        bids = ColumnDataSource({c: np.empty(0) for c in DEPTH_COLUMNS}, name="src-bids")
        asks = ColumnDataSource({c: np.empty(0) for c in DEPTH_COLUMNS}, name="src-asks")
        d = figure(
            title="Market depth (cumulative)",
            height=400,
            sizing_mode="stretch_width",
            tools="pan,wheel_zoom,reset,save",
            toolbar_location="right",
            min_border_left=60,
            x_range=DataRange1d(range_padding=0.02),
            y_range=DataRange1d(start=0, range_padding=0.05),
        )
        d.x_range.syncable = False
        d.y_range.syncable = False
        d.toolbar.logo = None
        _model(d.title, Title).text_font_size = "13px"
        # the ladders come as explicit staircases (varea_step hangs BokehJS 3.9 on an empty source)
        d.varea("price", y1=0, y2="cum", source=bids, fill_color=BID, fill_alpha=0.3)
        d.line("price", "cum", source=bids, color=BID, line_width=2, legend_label="bids")
        d.varea("price", y1=0, y2="cum", source=asks, fill_color=ASK, fill_alpha=0.3)
        d.line("price", "cum", source=asks, color=ASK, line_width=2, legend_label="asks")
        d.xaxis.axis_label = "price"
        d.yaxis.axis_label = "cumulative size"
        d.xaxis.formatter = NumeralTickFormatter(format="0,0.[00]")
        _model(d.xaxis[0].ticker, ContinuousTicker).desired_num_ticks = 4  # prices are wide labels
        d.yaxis.formatter = NumeralTickFormatter(format="0,0.[000]")
        _legend(d, "top_center")
        no_depth = Label(
            x=10,
            y=200,
            x_units="screen",
            y_units="screen",
            text="No order book yet: waiting for ticks.depth\n(published by the synthetic and Binance sources)",
            text_font_size="12px",
            text_color="#9e9e9e",
        )
        d.add_layout(no_depth)
        return cls(book, trades, bids, asks, q, d, no_depth)

    def set_symbol(self, symbol: str) -> None:
        base, quote = split_symbol(symbol)
        _model(self.quotes.title, Title).text = f"{symbol} · top of book and trades"
        self.quotes.yaxis.axis_label = f"price ({quote or 'quote'})"
        _model(self.depth.title, Title).text = f"{symbol} · order book depth (cumulative)"
        self.depth.xaxis.axis_label = f"price ({quote or 'quote'})"
        self.depth.yaxis.axis_label = f"cumulative size ({base})"


def trade_display(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    qty = cols["qty"]
    return {
        "t": cols["t"],
        "price": cols["price"],
        "qty": qty,
        "size": np.clip(2.5 + 2.5 * np.log1p(qty / max(float(np.median(qty)) if len(qty) else 1.0, 1e-12)), 2.5, 10),
        "sell": cols["buyer_maker"].astype(np.float64),  # buyer is maker = the aggressor sold
        "trade_id": cols["trade_id"],
    }


def depth_display(prices: list[float], qtys: list[float], side: str) -> dict[str, np.ndarray]:
    """Cumulative ladder of one side as a staircase, prices ascending.

    Bids: the size available at price x or better is the sum over levels >= x, a step that drops to 0
    past the best bid; asks: the sum over levels <= x, rising from 0 at the best ask.
    """
    p = np.asarray(prices, dtype=np.float64)
    q = np.asarray(qtys, dtype=np.float64)
    order = np.argsort(p)
    p, q = p[order], q[order]
    if not len(p):
        return {"price": p, "cum": p.copy()}
    xs = np.repeat(p, 2)
    if side == "bid":
        cum = np.cumsum(q[::-1])[::-1]
        ys = np.append(np.repeat(cum, 2)[1:], 0.0)
    else:
        cum = np.cumsum(q)
        ys = np.insert(np.repeat(cum, 2)[:-1], 0, 0.0)
    return {"price": xs, "cum": ys}


# one source per pair chart: each is streamed on its own turn, so one browser frame redraws one of them
SIGNAL_CHARTS: dict[str, tuple[str, ...]] = {
    "z": ("t", "zscore"),
    "hedge": ("t", "hedge", "hedge_lo", "hedge_hi"),
    "spread": ("t", "spread_bp", "expected_reversion_bp", "round_trip_cost_bp"),
    "fair": ("t", "y", "fair_value"),
}
ALERT_COLUMNS = ("t", "zscore", "kind", "color", "marker")
_ALERT_MARKS = {
    "enter_long_spread": (BID, "triangle"),
    "enter_short_spread": (ASK, "inverted_triangle"),
    "exit": ("#e0e0e0", "circle_x"),
}
COST = "#ffb74d"


def _hedge_unit(pair: str) -> str:
    """``BTC per ETH`` for ``ETHUSDT/BTCUSDT``: units of x to hold against one unit of y."""
    y_sym, x_sym = pair.split("/")
    return f"{split_symbol(x_sym)[0]} per {split_symbol(y_sym)[0]}"


def _hedge_title(pair: str) -> str:
    return f"Hedge ratio ± 1 SE ({_hedge_unit(pair)})"


def _warmup_label(name: str) -> Label:
    return Label(
        x=80, y=120, x_units="screen", y_units="screen", text="", text_font_size="14px", text_color="#9e9e9e",
        name=name,
    )  # fmt: skip


@dataclass
class PairCharts:
    """Z-score with bands and alert markers, hedge ratio ± SE, spread in bp against the round-trip cost,
    and the Huber fair value of one pair."""

    sources: dict[str, ColumnDataSource]
    alerts: ColumnDataSource
    hedge: figure
    spread: figure
    zscore: figure
    fair: figure
    x_range: DataRange1d
    entry: tuple[Span, Span]
    exit: tuple[Span, Span]
    zones: tuple[BoxAnnotation, BoxAnnotation]
    warmup: tuple[Label, Label, Label]  # on the z, hedge and spread charts
    pair: str
    rule: str = "bands"

    @classmethod
    def build(cls, tf: TimeFormat, pair: str, window_ms: int = 30 * 60_000) -> PairCharts:
        y_sym, x_sym = pair.split("/")
        srcs = {
            k: ColumnDataSource({c: np.empty(0) for c in cols}, name=f"src-{k}") for k, cols in SIGNAL_CHARTS.items()
        }
        # text columns as lists: an empty float array is an "invalid color array" to BokehJS
        alerts = ColumnDataSource(alert_marks([]), name="src-alerts")
        warm = (_warmup_label("warmup-z"), _warmup_label("warmup-hedge"), _warmup_label("warmup-spread"))
        # one time axis per chart, not a shared one: a shared range changed by one chart's new point makes
        # all four redraw in the next frame, undoing the one-chart-per-frame schedule (see page.py)
        xr = _live_x_range(window_ms, "xr-signals")  # the z-score's; "visible range" of the CSV download
        h = _figure(
            _hedge_title(pair), 260, tf, x_range=_live_x_range(window_ms, "xr-hedge"), y_label=_hedge_unit(pair)
        )
        h.varea("t", y1="hedge_lo", y2="hedge_hi", source=srcs["hedge"], fill_color=KALMAN, fill_alpha=0.2,
                legend_label="± 1 standard error")  # fmt: skip
        r1 = h.line("t", "hedge", source=srcs["hedge"], color=KALMAN, line_width=1.8, legend_label="hedge ratio")
        h.add_tools(
            HoverTool(
                renderers=[r1],
                tooltips=[("time", "@t{custom}"), ("hedge", "@hedge{0.0000}"),
                          ("band", "@hedge_lo{0.0000} – @hedge_hi{0.0000}")],
                formatters={"@t": tf.hover},
                mode="vline",
            )
        )  # fmt: skip
        h.add_layout(warm[1])
        _legend(h)

        s = _figure(
            f"Spread of {pair} vs the cost of a round trip", 260, tf, x_range=_live_x_range(window_ms, "xr-spread"),
            y_label="bp of y",
        )  # fmt: skip
        s.add_layout(Span(location=0, dimension="width", line_color="#757575", line_dash="dotted"))
        r2 = s.line("t", "spread_bp", source=srcs["spread"], color=KALMAN, line_width=1.6,
                    legend_label="spread from equilibrium")  # fmt: skip
        s.line("t", "expected_reversion_bp", source=srcs["spread"], color=UP, line_width=1.3,
               legend_label="expected reversion of an entry")  # fmt: skip
        s.line("t", "round_trip_cost_bp", source=srcs["spread"], color=COST, line_width=1.6, line_dash="dashed",
               legend_label="round-trip cost", name="cost-line")  # fmt: skip
        s.add_tools(
            HoverTool(
                renderers=[r2],
                tooltips=[("time", "@t{custom}"), ("spread", "@spread_bp{0.0} bp"),
                          ("expected reversion", "@expected_reversion_bp{0.0} bp"),
                          ("round trip cost", "@round_trip_cost_bp{0.0} bp")],
                formatters={"@t": tf.hover},
                mode="vline",
            )
        )  # fmt: skip
        s.add_layout(warm[2])
        _legend(s)

        z = _figure(f"Z-score of the {pair} spread", 280, tf, x_range=xr, y_label="z-score (σ)")
        _model(z.y_range, DataRange1d).range_padding = 0.25  # room around the ±entry bands z often touches
        hi = BoxAnnotation(bottom=2.0, fill_color=ENTRY, fill_alpha=0.07, level="underlay")
        lo = BoxAnnotation(top=-2.0, fill_color=ENTRY, fill_alpha=0.07, level="underlay")
        entry = (
            Span(location=2.0, dimension="width", line_color=ENTRY, line_dash="dashed", line_width=1.5, name="z-entry"),
            Span(location=-2.0, dimension="width", line_color=ENTRY, line_dash="dashed", line_width=1.5,
                 name="z-entry-low"),
        )  # fmt: skip
        ex = (
            Span(location=0.5, dimension="width", line_color=EXIT, line_dash="dotted", line_width=1.5, name="z-exit"),
            Span(location=-0.5, dimension="width", line_color=EXIT, line_dash="dotted", line_width=1.5,
                 name="z-exit-low"),
        )  # fmt: skip
        for a in (hi, lo, *entry, *ex, warm[0]):
            z.add_layout(a)
        rz = z.line("t", "zscore", source=srcs["z"], color=KALMAN, line_width=1.6, legend_label="z")
        z.scatter("t", "zscore", source=alerts, marker="marker", size=11, fill_color="color", line_color="color",
                  legend_label="alerts (▲ long, ▼ short, ⊗ exit)")  # fmt: skip
        z.add_tools(
            HoverTool(
                renderers=[rz], tooltips=[("time", "@t{custom}"), ("z", "@zscore{0.00}")], formatters={"@t": tf.hover},
                mode="vline",
            )
        )  # fmt: skip
        _legend(z)

        base_y, quote_y = split_symbol(y_sym)
        f = _figure(
            f"{y_sym} vs Huber fair value", 260, tf, x_range=_live_x_range(window_ms, "xr-fair"),
            y_label=f"price ({quote_y or 'quote'})",
        )  # fmt: skip
        rf = f.line("t", "y", source=srcs["fair"], color=symbol_color(y_sym), line_width=1.6, legend_label=f"{y_sym}")
        f.line(
            "t",
            "fair_value",
            source=srcs["fair"],
            color=HUBER,
            line_width=1.6,
            line_dash="dashed",
            legend_label="Huber fair",
        )
        f.yaxis.formatter = NumeralTickFormatter(format="0,0.[00]")
        f.add_tools(
            HoverTool(
                renderers=[rf],
                tooltips=[("time", "@t{custom}"), (y_sym, "@y{0,0.00}"), ("fair value", "@fair_value{0,0.00}")],
                formatters={"@t": tf.hover},
                mode="vline",
            )
        )
        _legend(f)
        return cls(srcs, alerts, h, s, z, f, xr, entry, ex, (hi, lo), warm, pair)

    def set_pair(self, pair: str) -> None:
        y_sym, _ = pair.split("/")
        self.pair = pair
        _model(self.spread.title, Title).text = f"Spread of {pair} vs the cost of a round trip"
        _model(self.fair.title, Title).text = f"{y_sym} vs Huber fair value"
        _model(self.hedge.title, Title).text = _hedge_title(pair)
        self.hedge.yaxis[0].axis_label = _hedge_unit(pair)
        _model(self.zscore.title, Title).text = f"Z-score of the {pair} spread"

    def set_thresholds(self, entry: float, exit_: float, rule: str | None = None) -> None:
        """Bands at ``±entry`` and ``±exit_``; under the stop-and-reverse rule (``reverse``) there is no exit
        band (a position is held until the opposite entry band), so the exit lines are hidden."""
        if rule is not None:
            self.rule = rule
        rev = self.rule == "reverse"
        how = f"stop-and-reverse at ±{entry:g}" if rev else f"entry ±{entry:g}, exit ±{exit_:g}"
        _model(self.zscore.title, Title).text = f"{self.pair} z-score · {how}"
        self.entry[0].location, self.entry[1].location = entry, -entry
        self.exit[0].location, self.exit[1].location = exit_, -exit_
        for sp in self.exit:
            sp.visible = not rev
        self.zones[0].bottom, self.zones[1].top = entry, -entry

    def set_warmup(self, text: str) -> None:
        """The warm-up note on the z, hedge and spread charts ("" hides it)."""
        for lab in self.warmup:
            if lab.text != text:
                lab.text = text
            vis = bool(text)
            if lab.visible != vis:
                lab.visible = vis


def alert_marks(alerts: list[Any]) -> dict[str, Any]:
    """Markers of alerts (:class:`rtqis.schemas.models.Alert`) on the z-score chart: at the alert's time
    and z, green ▲ entering long the spread, red ▼ entering short, grey ⊗ exiting."""
    known = [a for a in alerts if a.kind in _ALERT_MARKS]
    return {
        "t": np.array([a.time for a in known], dtype=np.int64),
        "zscore": np.array([a.zscore for a in known], dtype=np.float64),
        "kind": [a.kind.replace("_", " ") for a in known],
        "color": [_ALERT_MARKS[a.kind][0] for a in known],
        "marker": [_ALERT_MARKS[a.kind][1] for a in known],
    }


def signal_display(cols: dict[str, np.ndarray], chart: str) -> dict[str, np.ndarray]:
    """The columns of one pair chart (``SIGNAL_CHARTS``) from PairSignal columns (a column the rows lack,
    from an older worker, is drawn as gaps); the hedge band is ``hedge ± hedge_se``."""
    n = len(cols["time"])

    def col(name: str) -> np.ndarray:
        return cols[name] if name in cols else np.full(n, np.nan)

    if chart == "hedge":
        h, se = col("hedge"), col("hedge_se")
        return {"t": cols["time"], "hedge": h, "hedge_lo": h - se, "hedge_hi": h + se}
    return {c: cols["time"] if c == "t" else col(c) for c in SIGNAL_CHARTS[chart]}
