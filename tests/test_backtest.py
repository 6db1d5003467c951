"""Backtest engine: PnL by hand, zero-edge costs, no look-ahead in fills."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtqis.analytics.backtest import (
    METRICS,
    backtest,
    first_quote_after,
    next_row_quotes,
    positions_from_alerts,
)


def test_hand_built_round_trip() -> None:
    t = np.arange(6) * 1000
    pos = [0, 1, 1, 0, 0, 0]
    y_bid = [0, 99, 101, 104, 0, 0]
    y_ask = [0, 101, 103, 106, 0, 0]
    x_bid = [0, 999, 999, 1009, 0, 0]
    x_ask = [0, 1001, 1001, 1011, 0, 0]
    hedge = [0.5, 0.1, 0.7, 0.9, 0.9, 0.9]  # frozen at the entry row: 0.1
    r = backtest(t, pos, hedge, x_bid, x_ask, y_bid, y_ask, fee_bps=10.0)
    # gross at mids: +1 y from 100 to 105, -0.1 x from 1000 to 1010
    assert r.gross_pnl == pytest.approx(5.0 - 1.0)
    assert r.spread_cost == pytest.approx(1 * (1 + 1) + 0.1 * (1 + 1))
    # fees on the fill notional: y bought at 101, sold at 104; x sold at 999, bought at 1011
    assert r.fees == pytest.approx(1e-3 * (101 + 104 + 0.1 * (999 + 1011)))
    assert r.net_pnl == pytest.approx(4.0 - 2.2 - 0.406)
    assert r.equity_net[-1] == pytest.approx(r.net_pnl)
    assert r.equity_gross[-1] == pytest.approx(r.gross_pnl)
    assert r.round_trips == 1 and r.mean_hold_s == 2.0 and r.hit_rate == 1.0
    assert r.gross_bp_per_trip == pytest.approx(400.0)
    assert r.turnover == pytest.approx(406.0)
    assert r.break_even_fee_bps == pytest.approx((4.0 - 2.2) / 406.0 * 1e4)
    assert list(r.trades["hedge"]) == [0.1]
    assert set(r.metrics()) == set(METRICS)


def test_stop_and_reverse_and_flat_at_the_end() -> None:
    t = np.arange(5) * 1000
    q = np.array([100.0, 101.0, 102.0, 103.0, 104.0])
    r = backtest(t, [1, -1, -1, -1, -1], np.ones(5), q, q, q, q, fee_bps=0.0, crossed_spread=False)
    assert r.round_trips == 2  # long row 0 -> 1, short row 1 -> forced exit at the last row
    assert r.gross_pnl == 0.0 and r.net_pnl == 0.0  # x and y move together with hedge 1


def test_zero_edge_strategy_pays_fees_and_half_spreads() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    t = np.arange(n) * 1000
    pos = rng.integers(-1, 2, n)
    half_x, half_y = 0.5, 0.02
    # constant mids: no edge at all, exactly
    xm, ym = np.full(n, 1000.0), np.full(n, 30.0)
    r = backtest(t, pos, np.full(n, 0.03), xm - half_x, xm + half_x, ym - half_y, ym + half_y, fee_bps=7.0)
    assert r.gross_pnl == 0.0
    assert r.fees == pytest.approx(7e-4 * r.turnover)
    trips = r.round_trips
    assert r.spread_cost == pytest.approx(trips * 2 * (half_y + 0.03 * half_x))
    assert r.net_pnl == pytest.approx(-(r.fees + r.spread_cost))
    # random-walk mids, the same random strategy: the gross is noise around zero
    xm = 1000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    ym = 30 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    r2 = backtest(t, pos, np.full(n, 0.03), xm - half_x, xm + half_x, ym - half_y, ym + half_y, fee_bps=7.0)
    noise = math.sqrt(r2.round_trips * 2) * 30 * 1e-4 * 2  # per-trip sd ~ 1e-4 * sqrt(hold) * notional
    assert abs(r2.gross_pnl) < 5 * noise
    assert r2.net_pnl == pytest.approx(r2.gross_pnl - 7e-4 * r2.turnover - r2.spread_cost)
    assert r2.net_pnl < 0


def test_shifting_a_signal_earlier_does_not_improve_fills() -> None:
    """A jump at row k is seen by a signal at row k; the fill comes after it. Pretending the signal came
    one row earlier must not buy before the jump (a look-ahead engine would)."""
    n, k = 50, 20
    t = np.arange(n) * 1000
    y = np.where(np.arange(n) >= k, 110.0, 100.0)
    x = np.full(n, 1000.0)
    bid_x, ask_x, bid_y, ask_y = next_row_quotes(x - 0.5, x + 0.5, y - 0.05, y + 0.05)
    for entry in range(k - 3, k + 1):
        pos = np.zeros(n)
        pos[entry : entry + 10] = 1
        r = backtest(t, pos, np.zeros(n), bid_x, ask_x, bid_y, ask_y, fee_bps=0.0)
        honest = entry >= k  # the signal has seen the jump
        if honest:
            assert r.gross_pnl == 0.0
            pos_early = np.roll(pos, -1)
            early = backtest(t, pos_early, np.zeros(n), bid_x, ask_x, bid_y, ask_y, fee_bps=0.0)
            assert early.gross_pnl <= r.gross_pnl
    # first_quote_after: strictly after
    qt = np.array([10, 20, 30])
    (b,) = first_quote_after([5, 10, 19, 20, 40], qt, np.array([1.0, 2.0, 3.0]))
    assert list(b) == [1.0, 2.0, 2.0, 3.0, 3.0]


def test_positions_from_alerts_and_bad_input() -> None:
    p = positions_from_alerts(8, [1, 3, 5, 5], ["enter_long_spread", "exit", "exit", "enter_short_spread"])
    assert list(p) == [0, 1, 1, 0, 0, -1, -1, -1]
    with pytest.raises(ValueError, match="same length"):
        backtest([0, 1], [0], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="fee_bps"):
        backtest([0, 1], [0, 0], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1], fee_bps=-1)
    # no trade: zeros, no NaN in the JSON numbers except the per-trip ratios
    r = backtest([0, 1000], [0, 0], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    assert r.round_trips == 0 and r.net_pnl == 0.0 and r.metrics()["gross_bp_per_trip"] is None
