"""Backtest of a pair position series against quotes: the judge of a signal (pure numpy, no I/O).

What
    ``position[i]`` is the target held after the decision at row ``i`` (+1 long the spread: long
    ``qty`` of y, short ``qty * hedge`` of x; -1 short the spread; 0 flat). The hedge is frozen at the
    entry row of each trade (a live trader does not rebalance the x leg every second). The decision at
    row ``i`` is filled at the quotes ``fill_*[i]``, which must be the first quotes AFTER the signal
    time (:func:`next_row_quotes` for one quote per row, :func:`first_quote_after` for a quote stream):
    a buy pays the ask, a sell receives the bid, and every fill pays ``fee_bps`` of its notional
    (per leg per side). Holdings are marked to the mid of the fill quotes. The book is flat at the end
    (the last row's target is forced to 0).

Why separate "gross", "spread cost" and "fees"
    ``gross_pnl`` is the PnL had every fill been at the mid (the signal's edge); ``spread_cost`` the
    half-spreads paid; ``fees`` the commissions; ``net_pnl = gross_pnl - spread_cost - fees``. A
    signal is worth trading only when ``gross_bp_per_trip`` beats the round-trip cost, which is what
    ``break_even_fee_bps`` says: the fee per leg per side at which ``net_pnl`` would be zero.

Units: PnL in quote currency (USD for USDT pairs) for ``qty`` units of y per trade; bp relative to
the y leg's entry notional; times epoch ms; Sharpe and Sortino annualised (``periods_per_year``,
default from the median sample step on a 24/7 calendar).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "METRICS",
    "BacktestResult",
    "backtest",
    "first_quote_after",
    "next_row_quotes",
    "positions_from_alerts",
]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_MS_PER_YEAR = 365.25 * 86_400_000.0

#: Metric names, the keys of :meth:`BacktestResult.metrics` (and of ``rtqis backtest --json``).
METRICS = (
    "round_trips", "mean_hold_s", "gross_pnl", "net_pnl", "spread_cost", "fees", "gross_bp_per_trip",
    "net_bp_per_trip", "break_even_fee_bps", "sharpe_gross", "sharpe_net", "sortino_gross", "sortino_net",
    "max_drawdown", "max_drawdown_duration_s", "turnover", "hit_rate", "fee_bps", "crossed_spread",
)  # fmt: skip


@dataclass
class BacktestResult:
    """Metrics (see :data:`METRICS`), the equity curves per row and the trade list."""

    round_trips: int
    mean_hold_s: float
    gross_pnl: float
    net_pnl: float
    spread_cost: float
    fees: float
    gross_bp_per_trip: float
    net_bp_per_trip: float
    break_even_fee_bps: float
    sharpe_gross: float
    sharpe_net: float
    sortino_gross: float
    sortino_net: float
    max_drawdown: float
    max_drawdown_duration_s: float
    turnover: float  # traded notional, both legs, both sides, quote currency
    hit_rate: float  # share of round trips with net PnL > 0
    fee_bps: float
    crossed_spread: bool  # False when no bid/ask was given (fills at the mid)
    time: I64 = field(repr=False)
    equity_gross: F64 = field(repr=False)
    equity_net: F64 = field(repr=False)
    trades: dict[str, npt.NDArray[Any]] = field(repr=False)

    def metrics(self) -> dict[str, Any]:
        """The metrics as plain JSON-able numbers (NaN -> None)."""
        d = asdict(self)
        out: dict[str, Any] = {}
        for k in METRICS:
            v = d[k]
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out


def positions_from_alerts(n: int, rows: Any, kinds: Any) -> npt.NDArray[np.int8]:
    """Target position per row from alerts at ``rows`` (``enter_long_spread`` -> +1,
    ``enter_short_spread`` -> -1, ``exit`` -> 0), held until the next alert."""
    target = np.zeros(n, np.int8)
    level = np.full(n, -1, np.int64)
    val = {"enter_long_spread": 1, "enter_short_spread": -1, "exit": 0}
    r = np.asarray(rows, np.int64)
    if len(r):
        v = np.array([val[k] for k in kinds], np.int8)
        level[r] = np.arange(len(r))  # the last alert of a row wins
        last = np.maximum.accumulate(level)
        has = last >= 0
        target[has] = v[last[has]]
    return target


def next_row_quotes(*cols: Any) -> list[F64]:
    """Quotes one row later (the first quote after each row's signal time); the last row keeps its own
    (nothing later exists: the closing fill at the end of the data)."""
    out = []
    for c in cols:
        a = np.asarray(c, np.float64)
        out.append(np.concatenate([a[1:], a[-1:]]) if len(a) else a)
    return out


def first_quote_after(times: Any, q_time: Any, *cols: Any) -> list[F64]:
    """For each time, the first quote with ``q_time`` strictly after it (the last quote when none is)."""
    t, qt = np.asarray(times, np.int64), np.asarray(q_time, np.int64)
    j = np.minimum(np.searchsorted(qt, t, side="right"), len(qt) - 1)
    return [np.asarray(c, np.float64)[j] for c in cols]


def _annualised(r: F64, per_year: float) -> tuple[float, float]:
    if len(r) < 2:
        return math.nan, math.nan
    mu, sd = float(r.mean()), float(r.std())
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    k = math.sqrt(per_year)
    return (mu / sd * k if sd > 0 else math.nan), (mu / down * k if down > 0 else math.nan)


def _drawdown(t: I64, eq: F64) -> tuple[float, float]:
    """Largest fall from a running peak, and the longest time (s) spent below a previous peak."""
    if not len(eq):
        return 0.0, 0.0
    peak = np.maximum.accumulate(eq)
    dd = float(np.max(peak - eq))
    under = eq < peak
    longest = 0.0
    if under.any():
        # runs of "under water": from the row of the peak to the first row back at or above it
        edges = np.flatnonzero(np.diff(np.concatenate([[0], under.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start = t[max(a - 1, 0)]
            end = t[min(b, len(t) - 1)]
            longest = max(longest, float(end - start) / 1000.0)
    return dd, longest


def backtest(
    time: Any,
    position: Any,
    hedge: Any,
    x_bid: Any,
    x_ask: Any,
    y_bid: Any,
    y_ask: Any,
    *,
    fee_bps: float = 10.0,
    qty: float = 1.0,
    periods_per_year: float | None = None,
    crossed_spread: bool = True,
) -> BacktestResult:
    """Run the position series (see the module doc); ``*_bid``/``*_ask`` are the FILL quotes per row
    (first quotes after the row's time). ``hedge`` is x units per unit of y (price units)."""
    t = np.asarray(time, np.int64)
    n = len(t)
    p = np.asarray(position, np.float64).copy()
    h = np.asarray(hedge, np.float64)
    xb, xa, yb, ya = (np.asarray(a, np.float64) for a in (x_bid, x_ask, y_bid, y_ask))
    if not all(len(a) == n for a in (p, h, xb, xa, yb, ya)):
        raise ValueError("time, position, hedge and the four quote columns must have the same length")
    if not math.isfinite(fee_bps) or fee_bps < 0:
        raise ValueError(f"fee_bps must be a finite number >= 0, got {fee_bps!r}")
    p = np.nan_to_num(p, nan=0.0)
    if n:
        p[-1] = 0.0  # flat at the end
    prev = np.concatenate([[0.0], p[:-1]])
    change = np.flatnonzero(p != prev)
    starts = change[p[change] != 0]
    # each position's exit is the next change row (one exists: the last row is flat)
    ends = change[np.searchsorted(change, starts, side="right")] if len(starts) else starts
    h_entry = h[starts]
    bad = ~np.isfinite(h_entry)
    if bad.any():  # no hedge known at entry: trade y alone would be a different strategy; skip the trade
        logger.info("backtest: %d entries without a hedge ratio skipped", int(bad.sum()))
        keep = ~bad
        for s in starts[bad]:
            seg_end = change[np.searchsorted(change, s, side="right")]
            p[s:seg_end] = 0.0
        starts, ends, h_entry = starts[keep], ends[keep], h_entry[keep]
        prev = np.concatenate([[0.0], p[:-1]])
    side = p[starts]
    xm, ym = (xb + xa) / 2, (yb + ya) / 2
    # per trip (entry at a, exit at b): y leg qty*side, x leg -qty*side*h
    a_, b_ = starts, ends
    qy, qx = qty * side, -qty * side * h_entry
    gross_trip = qy * (ym[b_] - ym[a_]) + qx * (xm[b_] - xm[a_])
    spread_trip = np.abs(qy) * ((ya - yb)[a_] + (ya - yb)[b_]) / 2 + np.abs(qx) * ((xa - xb)[a_] + (xa - xb)[b_]) / 2

    def paid(q: F64, bid: F64, ask: F64, rows: I64) -> F64:  # fill price of a trade of signed size q
        return np.where(q > 0, ask[rows], bid[rows])

    notional_trip = np.abs(qy) * (paid(qy, yb, ya, a_) + paid(-qy, yb, ya, b_)) + np.abs(qx) * (
        paid(qx, xb, xa, a_) + paid(-qx, xb, xa, b_)
    )
    fee_rate = fee_bps * 1e-4
    fees_trip = fee_rate * notional_trip
    net_trip = gross_trip - spread_trip - fees_trip
    entry_notional = np.abs(qy) * ym[a_]

    # equity per row: holdings after the decision at row i, marked at the mid of its fill quote
    hold = np.zeros(n)
    seg = np.searchsorted(starts, np.arange(n), side="right") - 1  # latest entry at or before each row
    held = (seg >= 0) & (p != 0)
    hold_h = np.where(held, h_entry[np.maximum(seg, 0)] if len(starts) else 0.0, 0.0)
    hold = p * qty
    hold_x = -hold * hold_h
    dy, dx = np.diff(np.concatenate([[0.0], hold])), np.diff(np.concatenate([[0.0], hold_x]))
    cash_mid = -np.cumsum(dy * ym + dx * xm)
    eq_gross = cash_mid + hold * ym + hold_x * xm
    fy, fx = np.where(dy > 0, ya, yb), np.where(dx > 0, xa, xb)
    costs = np.cumsum(np.abs(dy) * np.abs(fy - ym) + np.abs(dx) * np.abs(fx - xm))
    fees_row = np.cumsum(fee_rate * (np.abs(dy) * fy + np.abs(dx) * fx))
    eq_net = eq_gross - costs - fees_row

    trips = len(starts)
    gross, spread_cost, fees = float(gross_trip.sum()), float(spread_trip.sum()), float(fees_trip.sum())
    turnover = float(notional_trip.sum())
    if periods_per_year is None:
        step = float(np.median(np.diff(t))) if n > 1 else math.nan
        periods_per_year = _MS_PER_YEAR / step if step > 0 else math.nan
    sh_g, so_g = _annualised(np.diff(eq_gross), periods_per_year)
    sh_n, so_n = _annualised(np.diff(eq_net), periods_per_year)
    mdd, mdd_s = _drawdown(t, eq_net)
    bp = 1e4 / float(entry_notional.mean()) if trips else math.nan
    return BacktestResult(
        round_trips=trips,
        mean_hold_s=float((t[ends] - t[starts]).mean()) / 1000.0 if trips else math.nan,
        gross_pnl=gross,
        net_pnl=gross - spread_cost - fees,
        spread_cost=spread_cost,
        fees=fees,
        gross_bp_per_trip=gross / trips * bp if trips else math.nan,
        net_bp_per_trip=(gross - spread_cost - fees) / trips * bp if trips else math.nan,
        break_even_fee_bps=(gross - spread_cost) / turnover * 1e4 if turnover > 0 else math.nan,
        sharpe_gross=sh_g,
        sharpe_net=sh_n,
        sortino_gross=so_g,
        sortino_net=so_n,
        max_drawdown=mdd,
        max_drawdown_duration_s=mdd_s,
        turnover=turnover,
        hit_rate=float((net_trip > 0).mean()) if trips else math.nan,
        fee_bps=float(fee_bps),
        crossed_spread=bool(crossed_spread),
        time=t,
        equity_gross=eq_gross,
        equity_net=eq_net,
        trades={
            "entry_time": t[starts],
            "exit_time": t[ends],
            "side": side.astype(np.int64),
            "hedge": h_entry,
            "entry_y": np.where(side > 0, ya[a_], yb[a_]),
            "exit_y": np.where(side > 0, yb[b_], ya[b_]),
            "gross": gross_trip,
            "net": net_trip,
        },
    )
