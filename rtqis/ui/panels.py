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
    "SINK_LAG_BAD_S",
    "Toast",
    "Warmup",
    "adf_html",
    "alerts_html",
    "board_html",
    "coint_html",
    "latest_signal",
    "signal_html",
    "sink_lag_html",
    "warmup",
    "warmup_text",
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


#: the sink's lag (seconds behind the broker's end) shown in the bad colour from this many seconds
SINK_LAG_BAD_S = 30.0


def sink_lag_html(messages: int | None, seconds: float | None) -> str:
    """The sink's lag, "sink behind N msgs · T s" (the sink group's lag over the topics the dashboard reads), in the bad
    colour from :data:`SINK_LAG_BAD_S`; empty when unknown (no sink group, or not measured yet).
    ``seconds`` is how long ago the broker's end was where the sink is now (None: longer than measured)."""
    if messages is None:
        return ""
    if messages == 0:
        return "<span>sink <b>up to date</b></span>"
    age = "over the measured window" if seconds is None else f"{seconds:,.0f} s"
    bad = seconds is None or seconds >= SINK_LAG_BAD_S
    color = BAD if bad else "inherit"
    b = f'<b style="color:{color}">'
    return f"<span>sink behind {b}{messages:,}</b> msgs · {b}{age}</b></span>"


def status_html(st: HubStats, now_ms: int, history_note: str = "", *, dropped: int = 0) -> str:
    """The status bar: broker connection and consumer state, rates, age of the last message, dead letters,
    the sink's lag (:func:`sink_lag_html`), viewers, updates this tab dropped because it did not read
    them in time (``dropped``: its charts were loaded again), and why there is no history (if there is none)."""
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
        sink_lag_html(st.sink_lag, st.sink_lag_s),
        f"<span>viewers <b>{st.sessions}</b></span>",
    ]
    if dropped:
        note = f"this tab fell behind: {dropped:,} updates dropped, charts reloaded"
        parts.append(f'<span style="color:{BAD}">{note}</span>')
    if history_note:
        parts.append(f'<span class="rtqis-muted">{html.escape(history_note)}</span>')
    return f'<div class="rtqis-status" id="rtqis-status">{"".join(p for p in parts if p)}</div>'


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


class Warmup(NamedTuple):
    """How far a pair's analytics are from publishing (samples of the pair, 1 s each by default)."""

    n: int  # samples the pair model has seen
    z_needs: int  # before zscore, hedge and half-life are published (PairParams.level_min_samples)
    coint_needs: int  # before the cointegration verdict (PairParams.coint_min)


def latest_signal(cols: Mapping[str, np.ndarray]) -> dict[str, object] | None:
    """The newest PairSignal row of a hub signal table as plain Python values (NaN -> None), or None."""
    n = tb.length(cols)
    if not n:
        return None
    out: dict[str, object] = {}
    for k, v in cols.items():
        x = v[n - 1]
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, float) and not np.isfinite(x):
            x = None
        out[k] = x
    return out


def warmup_text(sig: Mapping[str, object] | None, w: Warmup, sample_s: float = 1.0) -> str:
    """The note on the pair charts while they cannot show anything yet ("" once the z-score is defined)."""
    if sig is None:
        return "waiting for the first pair signal…"
    if sig.get("zscore") is not None or w.n >= w.z_needs:
        return ""
    left = (w.z_needs - w.n) * sample_s
    return f"warming up: {w.n:,} of {w.z_needs:,} samples (about {_dur(left)} to go)"


def warmup(sig: Mapping[str, object] | None, z_needs: int, coint_needs: int) -> Warmup:
    n = sig.get("n_obs") if sig else 0
    return Warmup(int(n) if isinstance(n, int | float) else 0, z_needs, coint_needs)


def _num(sig: Mapping[str, object], name: str) -> float | None:
    v = sig.get(name)
    return float(v) if isinstance(v, int | float) and np.isfinite(v) else None


def _dur(seconds: float) -> str:
    """A duration for a trader: ``42 s``, ``3.5 min``, ``2.1 h``, ``4.0 d``."""
    a = abs(seconds)
    if a < 120:
        return f"{seconds:.0f} s"
    if a < 7200:
        return f"{seconds / 60:.1f} min"
    if a < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _flags(sig: Mapping[str, object]) -> set[str]:
    f = sig.get("flags")
    return {x for x in str(f).split(";") if x} if f else set()


COINT_VERDICTS = {
    "cointegrated": ("cointegrated", GOOD),
    "not_cointegrated": ("not cointegrated", BAD),
    "insufficient_data": ("insufficient data", MUTED),
}


def coint_html(sig: Mapping[str, object] | None, pair: str, w: Warmup) -> str:
    """The Engle-Granger card: verdict, statistic and p-value (MacKinnon), half-life ± SE and the hedge
    ratio ± SE ("uncertain" when its error is too large to trade on), from the pair's latest PairSignal;
    while the model warms up, how many samples it has of how many it needs."""
    y_sym, x_sym = pair.split("/") if "/" in pair else (pair, "x")
    if sig is None:
        return (
            '<div class="rtqis-card"><div class="rtqis-verdict" id="rtqis-coint-verdict" '
            f'style="color:{MUTED}">waiting for the first {html.escape(pair)} signal</div></div>'
        )
    coint = sig.get("coint")
    stat, p = _num(sig, "coint_stat"), _num(sig, "coint_pvalue")
    if isinstance(coint, str) and coint in COINT_VERDICTS and coint != "insufficient_data":
        verdict, color = COINT_VERDICTS[coint]
        head = f"{verdict}"
    elif coint is None and w.n < w.coint_needs or coint == "insufficient_data":
        verdict, color = "insufficient data", MUTED
        head = f"warming up: {min(w.n, w.coint_needs):,} of {w.coint_needs:,} samples"
        if w.n < w.coint_needs:
            head += f" (about {_dur(w.coint_needs - w.n)} to go)"
    else:
        verdict, color = "no verdict", MUTED
        head = "no verdict (older worker?)"
    stat_s = "–" if stat is None else f"{stat:.2f}"
    p_s = "–" if p is None else (f"{p:.4f}" if p >= 1e-4 else "<0.0001")
    parts = [
        f'<div><span class="rtqis-verdict" style="color:{color}" id="rtqis-coint-verdict" '
        f'data-verdict="{html.escape(str(coint or ""))}">{html.escape(head)}</span> '
        '<span class="rtqis-muted">Engle-Granger test of the spread</span></div>',
        f'<div>EG stat <b id="rtqis-coint-stat">{stat_s}</b> · p-value <b>{p_s}</b> '
        '<span class="rtqis-muted">(MacKinnon; &lt; 0.05: the spread reverts)</span></div>',
    ]
    hl, hl_se = _num(sig, "half_life_s"), _num(sig, "half_life_se_s")
    if hl is None:
        hl_s = f"warming up: {min(w.n, w.z_needs):,} of {w.z_needs:,} samples" if w.n < w.z_needs else "–"
    else:
        hl_s = f"<b>{_dur(hl)}</b>" + ("" if hl_se is None else f" ± {_dur(hl_se)}")
    parts.append(
        f'<div>half-life <span id="rtqis-half-life">{hl_s}</span> '
        '<span class="rtqis-muted">(time for the spread to halve)</span></div>'
    )
    hedge, se = _num(sig, "hedge"), _num(sig, "hedge_se")
    if hedge is not None:
        se_s = "" if se is None else f" ± {se:.4g}"
        unit = f"{ch.split_symbol(x_sym)[0]} per {ch.split_symbol(y_sym)[0]}"
        h_s = f"<b>{hedge:.4g}</b>{se_s} {html.escape(unit)}"
    elif "hedge_uncertain" in _flags(sig):
        h_s = f'<b style="color:{BAD}">uncertain</b> <span class="rtqis-muted">(SE &gt; 100 %: not published)</span>'
    else:
        h_s = f"warming up: {min(w.n, w.z_needs):,} of {w.z_needs:,} samples" if w.n < w.z_needs else "–"
    parts.append(f'<div>hedge <span id="rtqis-hedge">{h_s}</span></div>')
    return f'<div class="rtqis-card">{"".join(parts)}</div>'


_POSITIONS = {1: ("LONG spread", GOOD), -1: ("SHORT spread", BAD), 0: ("flat", MUTED)}


def signal_html(sig: Mapping[str, object] | None, w: Warmup, rule: str, entry: float, exit_: float) -> str:
    """The signal card: z-score, position, spread and its σ in bp, and whether an entry now would pay:
    the expected reversion against the round-trip cost (fees both legs in and out, plus quoted spreads),
    and the count of entries withheld below cost."""
    if sig is None:
        return '<div class="rtqis-card rtqis-muted" id="rtqis-signal">no pair signal yet</div>'
    z = _num(sig, "zscore")
    pos_v = sig.get("position")
    pos = int(pos_v) if isinstance(pos_v, int | float) and np.isfinite(pos_v) else None
    rule_s = f"stop-and-reverse at ±{entry:g}" if rule == "reverse" else f"enter at ±{entry:g}, exit at ±{exit_:g}"
    if z is None:
        head = (
            f"warming up: {min(w.n, w.z_needs):,} of {w.z_needs:,} samples"
            if w.n < w.z_needs
            else "z-score not defined (stale leg or flat spread)"
        )
        parts = [f'<div class="rtqis-verdict" style="color:{MUTED}" id="rtqis-z-now">{head}</div>']
    else:
        pname, pcolor = _POSITIONS.get(pos if pos is not None else 0, ("flat", MUTED))
        parts = [
            f'<div><span class="rtqis-verdict" id="rtqis-z-now">z {z:+.2f}</span> · position '
            f'<b style="color:{pcolor}" id="rtqis-position">{pname}</b></div>'
        ]
    sp, sd = _num(sig, "spread_bp"), _num(sig, "spread_std_bp")
    if sp is not None:
        parts.append(
            f"<div>spread <b>{sp:+.1f} bp</b> from equilibrium" + ("" if sd is None else f" · σ {sd:.1f} bp") + "</div>"
        )
    exp, cost = _num(sig, "expected_reversion_bp"), _num(sig, "round_trip_cost_bp")
    if exp is not None and cost is not None:
        pays = exp > cost
        color = GOOD if pays else BAD
        waiting = z is not None and abs(z) < entry and not pos
        note = f"no entry while |z| &lt; {entry:g}" if waiting else ("pays" if pays else "below cost")
        parts.append(
            f'<div>entry now: expected reversion <b style="color:{color}">{exp:.1f} bp</b> vs round trip '
            f'<b>{cost:.1f} bp</b> <span class="rtqis-muted">({note})</span></div>'
        )
    bc = sig.get("below_cost")
    n_bc = int(bc) if isinstance(bc, int | float) and np.isfinite(bc) else None
    parts.append(
        f'<div class="rtqis-muted">rule: {rule_s} · entries withheld below cost: '
        f'<b id="rtqis-below-cost">{"–" if n_bc is None else f"{n_bc:,}"}</b></div>'
    )
    return f'<div class="rtqis-card" id="rtqis-signal">{"".join(parts)}</div>'


def _verdict(mean_reverting: bool) -> tuple[str, str]:
    return ("mean-reverting", GOOD) if mean_reverting else ("random walk", BAD)


def adf_html(agent: m.AdfResult | None, manual: ManualAdf | None, error: str, tz: str, diagnostic: bool = False) -> str:
    """The ADF lines: the pair agent's latest periodic ADF, the last on-demand one, and its error.

    ``diagnostic``: the periodic ADF is shown as a muted line without a verdict (under the Engle-Granger
    card, whose verdict uses the right critical values and enough samples: a plain ADF on 600 samples
    calls a cointegrated pair a random walk most of the time, notes/signals.md)."""
    parts = []
    if agent is not None and diagnostic:
        parts.append(
            f'<div class="rtqis-muted" id="rtqis-adf-verdict">periodic ADF (last {agent.window:,}, plain '
            f"p-values, diagnostic) · stat {agent.stat:.2f} · p {agent.pvalue:.4f} · {fmt_time(agent.time, tz)}</div>"
        )
    elif agent is not None:
        verdict, color = _verdict(agent.mean_reverting)
        parts.append(
            f'<div><span class="rtqis-verdict" style="color:{color}" id="rtqis-adf-verdict">{verdict}</span> '
            f'<span class="rtqis-muted">pair agent · {fmt_time(agent.time, tz)} · last {agent.window:,}</span></div>'
            f'<div class="rtqis-muted">stat {agent.stat:.2f} vs 5% critical {agent.crit_5:.2f} · '
            f"p {agent.pvalue:.4f}</div>"
        )
    elif not diagnostic:
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


def _alert_bp(a: m.Alert) -> str:
    """The cost cell of an alert of #20: an entry's expected reversion against the round-trip cost, an
    exit's spread; nothing for an older alert without them."""
    exp, cost, sp = a.expected_reversion_bp, a.round_trip_cost_bp, a.spread_bp
    if a.kind != "exit" and exp is not None and cost is not None:
        return f"<td title='expected reversion / round-trip cost'>{exp:.0f} / {cost:.0f} bp</td>"
    if sp is not None:
        return f"<td title='spread from equilibrium'>{sp:+.0f} bp</td>"
    return ""


def alerts_html(alerts: Sequence[m.Alert], tz: str, rows: int = 4) -> str:
    """The last ``rows`` alerts of the pair, newest first, with what an entry expects against its cost."""
    if not alerts:
        return '<div class="rtqis-muted rtqis-card">no alert for this pair yet</div>'
    out = []
    for al in reversed(alerts[-rows:]):
        color = MUTED if al.kind == "exit" else (GOOD if al.kind == "enter_long_spread" else BAD)
        out.append(
            f"<tr><td>{fmt_time(al.time, tz)}</td><td style='color:{color};text-align:left'>"
            f"{html.escape(al.kind.replace('_', ' '))}</td><td>z {al.zscore:+.2f}</td>{_alert_bp(al)}</tr>"
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
