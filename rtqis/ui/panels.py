"""What the dashboard's text panels show, as pure functions of the session's state.

Each function takes plain data (hub stats, quotes, ADF results, alerts, a time zone) and returns the HTML
or text a pane shows: no Panel, no Bokeh, no clock read (the caller passes ``now_ms``), so every panel is
tested without a browser (tests/test_ui_panels.py). The page only assigns these strings to its panes.

Times are epoch milliseconds UTC; they are shown in the page's display time zone (``tz``, IANA name).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from rtqis.analytics.pairs import AdfResult
from rtqis.schemas import models as m
from rtqis.ui import charts as ch
from rtqis.ui import tables as tb
from rtqis.ui.hub import HubStats

__all__ = [
    "CSS",
    "LastTrade",
    "ManualAdf",
    "Quote",
    "Toast",
    "adf_html",
    "alerts_html",
    "board_html",
    "fmt_px",
    "fmt_time",
    "last_quote",
    "last_trade",
    "status_html",
    "toast",
    "upload_done_text",
]

GOOD, BAD, MUTED = "#26a69a", "#ef5350", "#9e9e9e"

CSS = """
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
"""Style sheet of the text panes (the classes the functions below emit)."""


class Quote(NamedTuple):
    """The last top of book of one symbol (prices in quote currency, sizes in base)."""

    t: int
    bid: float
    ask: float
    bid_qty: float
    ask_qty: float


class LastTrade(NamedTuple):
    t: int
    price: float
    qty: float
    buyer_maker: bool  # the seller was the aggressor: shown in the ask colour


class ManualAdf(NamedTuple):
    """An on-demand ADF result: when it was run (ms), on how many samples, and the result."""

    at: int
    window: int
    result: AdfResult


class Toast(NamedTuple):
    kind: str  # the notification kind: "info", "success" or "warning"
    text: str  # plain text (escape it for HTML)


def last_quote(cols: Mapping[str, np.ndarray]) -> Quote:
    """The newest row of a book table (hub ``BOOK_FIELDS`` columns)."""
    i = tb.length(cols) - 1
    return Quote(
        int(cols["t"][i]), float(cols["bid"][i]), float(cols["ask"][i]), float(cols["bid_qty"][i]),
        float(cols["ask_qty"][i]),
    )  # fmt: skip


def last_trade(cols: Mapping[str, np.ndarray]) -> LastTrade:
    """The newest row of a trade table (hub ``TRADE_FIELDS`` columns)."""
    i = tb.length(cols) - 1
    return LastTrade(int(cols["t"][i]), float(cols["price"][i]), float(cols["qty"][i]), bool(cols["buyer_maker"][i]))


def fmt_px(v: float) -> str:
    """A price with the decimals its size needs (2 from 1,000, 4 from 1, else 6 significant); "–" if not finite."""
    if not np.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.2f}"
    if abs(v) >= 1:
        return f"{v:,.4f}"
    return f"{v:.6g}"


def fmt_time(ms: int, tz: str, with_date: bool = False) -> str:
    """Epoch ms as wall-clock time in ``tz``: ``HH:MM:SS``, or ``YYYY-MM-DD HH:MM:SS`` with the date."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(tz))
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def status_html(st: HubStats, now_ms: int, history_note: str = "") -> str:
    """The status bar: broker connection and consumer state, rates, age of the last message, dead letters,
    viewers, and why there is no history (if there is none)."""
    color = GOOD if st.connected else BAD
    age = "–" if st.last_msg_wall_ms is None else f"{max(0, now_ms - st.last_msg_wall_ms) / 1000:.1f} s"
    dl_color = BAD if st.deadletters else "inherit"
    parts = [
        f'<span><span class="rtqis-dot" style="background:{color}"></span>'
        f"<b>Broker</b> {'connected' if st.connected else 'disconnected'} · {html.escape(st.bootstrap)}"
        f" · {html.escape(st.state)}</span>",
        f"<span><b>{st.msgs_per_s:,.0f}</b> msg/s · <b>{st.ticks_per_s:,.0f}</b> ticks/s</span>",
        f"<span>last message <b>{age}</b> ago</span>",
        f'<span>dead letters <b style="color:{dl_color}">{st.deadletters:,}</b></span>',
        f"<span>viewers <b>{st.sessions}</b></span>",
    ]
    if history_note:
        parts.append(f'<span class="rtqis-muted">{html.escape(history_note)}</span>')
    return f'<div class="rtqis-status" id="rtqis-status">{"".join(parts)}</div>'


def board_html(symbols: Sequence[str], quotes: Mapping[str, Quote], trades: Mapping[str, LastTrade], tz: str) -> str:
    """Top of book: one card per symbol with bid / ask, spread (also in basis points of the mid), sizes and
    the last trade."""
    cards = []
    for sym in symbols:
        color = ch.symbol_color(sym, list(symbols))
        q = quotes.get(sym)
        t = trades.get(sym)
        if q is None:
            body = '<div class="muted">no quote yet</div>'
        else:
            spread = q.ask - q.bid
            mid = (q.ask + q.bid) / 2
            bps = 1e4 * spread / mid if mid else float("nan")
            body = (
                f'<div><span class="px" style="color:{ch.BID}">{fmt_px(q.bid)}</span> / '
                f'<span class="px" style="color:{ch.ASK}">{fmt_px(q.ask)}</span></div>'
                f'<div class="muted">spread {fmt_px(spread)} ({bps:.2f} bp) · {q.bid_qty:,.3g} / {q.ask_qty:,.3g}</div>'
            )
        if t is not None:
            tc = ch.ASK if t.buyer_maker else ch.BID
            body += (
                f'<div class="muted">last <span style="color:{tc}">{fmt_px(t.price)}</span> × {t.qty:,.4g} '
                f"at {fmt_time(t.t, tz)}</div>"
            )
        cards.append(
            f'<div class="rtqis-quote" style="border-left:4px solid {color}">'
            f'<div class="sym" style="color:{color}">{sym}</div>{body}</div>'
        )
    return f'<div class="rtqis-board" id="rtqis-board">{"".join(cards)}</div>'


def _verdict(mean_reverting: bool) -> tuple[str, str]:
    return ("mean-reverting", GOOD) if mean_reverting else ("random walk", BAD)


def adf_html(agent: m.AdfResult | None, manual: ManualAdf | None, error: str, tz: str) -> str:
    """The cointegration card: the pair agent's latest periodic ADF, the last on-demand one, and its error."""
    parts = []
    if agent is not None:
        verdict, color = _verdict(agent.mean_reverting)
        parts.append(
            f'<div><span class="rtqis-verdict" style="color:{color}" id="rtqis-adf-verdict">{verdict}</span> '
            f'<span class="rtqis-muted">pair agent · {fmt_time(agent.time, tz)} · last {agent.window:,}</span></div>'
            f'<div class="rtqis-muted">stat {agent.stat:.2f} vs 5% critical {agent.crit_5:.2f} · '
            f"p {agent.pvalue:.4f}</div>"
        )
    else:
        parts.append('<div class="rtqis-muted">no periodic ADF result from the pair agent yet</div>')
    if manual is not None:
        r = manual.result
        verdict, color = _verdict(r.mean_reverting)
        parts.append(
            f'<div style="margin-top:3px"><span class="rtqis-verdict" style="color:{color}" id="rtqis-adf-manual">'
            f'{verdict}</span> <span class="rtqis-muted">on demand · {fmt_time(manual.at, tz)} · '
            f"last {manual.window:,}</span></div>"
            f'<div class="rtqis-muted">stat {r.stat:.2f} vs 5% critical {r.crit.get("5%", float("nan")):.2f}'
            f" · p {r.pvalue:.4f} · {r.lags} lags</div>"
        )
    if error:
        parts.append(f'<div style="color:{BAD}">{html.escape(error)}</div>')
    return f'<div class="rtqis-card">{"".join(parts)}</div>'


def alerts_html(alerts: Sequence[m.Alert], tz: str, rows: int = 4) -> str:
    """The last ``rows`` alerts of the pair, newest first."""
    if not alerts:
        return '<div class="rtqis-muted rtqis-card">no alert for this pair yet</div>'
    out = []
    for al in reversed(alerts[-rows:]):
        color = MUTED if al.kind == "exit" else (GOOD if al.kind == "enter_long_spread" else BAD)
        out.append(
            f"<tr><td>{fmt_time(al.time, tz)}</td><td style='color:{color};text-align:left'>"
            f"{html.escape(al.kind.replace('_', ' '))}</td><td>z {al.zscore:+.2f}</td></tr>"
        )
    return f'<div class="rtqis-alerts"><table>{"".join(out)}</table></div>'


_DIRECTIONS = {
    "enter_long_spread": "enter LONG spread (buy y, sell β·x)",
    "enter_short_spread": "enter SHORT spread (sell y, buy β·x)",
    "exit": "EXIT (spread back near its mean)",
}


def toast(a: m.Alert, entry: float, exit_: float) -> Toast | None:
    """The pop-up for a live alert under the page's thresholds, or None: an entry alert pops up when its
    |z| is at least ``entry``, an exit alert when its |z| is at most ``exit_``."""
    is_exit = a.kind == "exit"
    if (is_exit and abs(a.zscore) > exit_) or (not is_exit and abs(a.zscore) < entry):
        return None
    text = f"{a.pair}: z = {a.zscore:+.2f} → {_DIRECTIONS.get(a.kind, a.kind)}"
    kind = "info" if is_exit else ("warning" if a.kind == "enter_short_spread" else "success")
    return Toast(kind, text)


def upload_done_text(rows: int, symbol: str, interval: str, how: str, open_times: np.ndarray, tz: str) -> str:
    """The message after an import (HTML): how many candles, their span in ``tz``, and how they were read."""
    span = ""
    if len(open_times):
        first, last = fmt_time(int(open_times[0]), tz, True), fmt_time(int(open_times[-1]), tz, True)
        span = f" from {first} to {last} ({tz})"
    return f"Imported {rows:,} {symbol} {interval} candles{span} ({html.escape(how)})."
