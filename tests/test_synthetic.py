"""Tests of the synthetic market generator (no broker; statistical properties on fixed seeds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from statsmodels.tsa.stattools import adfuller

from rtqis.producers.synthetic import (
    DEFAULT_START_MS,
    DEFAULT_SYMBOLS,
    GRID_MS,
    BookBatch,
    SymbolSpec,
    SyntheticMarket,
    TradeBatch,
)

TWO_HOURS_S = 7200


def adf_p(x: np.ndarray) -> float:
    return float(adfuller(x, maxlag=10, autolag="AIC", result_object=True).pvalue)


def ols(y: np.ndarray, x: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Intercept, slope, residual of y = a + b x."""
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(coef[0]), float(coef[1]), y - design @ coef


def on_grid(values: np.ndarray, step: float) -> bool:
    k = values / step
    return bool(np.all(np.abs(k - np.rint(k)) <= 1e-9 * np.maximum(np.abs(k), 1.0)))


@dataclass
class Sampled:
    log_mid: np.ndarray  # (n_symbols, n_seconds): log of the last book mid at each whole second
    betas: np.ndarray  # true_beta after each chunk
    n_trades: np.ndarray  # per symbol


def sample_mids(market: SyntheticMarket, seconds: int, chunk_s: int = 60) -> Sampled:
    """Run ``seconds`` of market time; sample the last quote mid of every symbol at each second."""
    rows: list[np.ndarray] = []
    betas: list[float] = []
    n_trades: np.ndarray | None = None
    for _ in range(seconds // chunk_s):
        t0 = market.now_ms
        trades, books = market.advance(chunk_s * 1000)
        counts = np.array([len(t) for t in trades])
        n_trades = counts if n_trades is None else n_trades + counts
        secs = t0 + 1000 * np.arange(1, chunk_s + 1)
        per_symbol = []
        for b in books:
            j = np.searchsorted(b.event_time, secs, side="right") - 1
            assert j.min() >= 0, "a second without any quote"
            per_symbol.append(np.log(0.5 * (b.bid_price[j] + b.ask_price[j])))
        rows.append(np.vstack(per_symbol))
        betas.append(market.true_beta)
    assert n_trades is not None
    return Sampled(np.hstack(rows), np.array(betas), n_trades)


@pytest.fixture(scope="module")
def two_hours() -> Sampled:
    return sample_mids(SyntheticMarket(seed=7), TWO_HOURS_S)


# -- API, determinism, invariants ---------------------------------------------------------------------


def run(market: SyntheticMarket, steps: list[int]) -> list[tuple[list[TradeBatch], list[BookBatch]]]:
    return [market.advance(dt) for dt in steps]


def test_defaults_and_clock() -> None:
    assert DEFAULT_SYMBOLS[0] == SymbolSpec("BTCUSDT", 90_000.0)
    assert DEFAULT_SYMBOLS[1].symbol == "ETHUSDT"
    assert int(datetime(2024, 8, 9, tzinfo=UTC).timestamp() * 1000) == DEFAULT_START_MS
    m = SyntheticMarket()
    assert m.now_ms == DEFAULT_START_MS
    trades, books = m.advance(1500)
    assert m.now_ms == DEFAULT_START_MS + 1500
    assert [t.symbol for t in trades] == ["BTCUSDT", "ETHUSDT"]
    assert [b.symbol for b in books] == ["BTCUSDT", "ETHUSDT"]
    # prices start at the specs' start prices (a few bp of drift at most in 1.5 s)
    for spec, b in zip(DEFAULT_SYMBOLS, books, strict=True):
        mid = 0.5 * (b.bid_price[0] + b.ask_price[0])
        assert abs(mid / spec.start_price - 1) < 10e-4
    assert SyntheticMarket(start_ms=1_000_000).now_ms == 1_000_000


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    steps = [1000, 7, 0, 2500, 10, 60_000, 333]
    a = run(SyntheticMarket(seed=123), steps)
    b = run(SyntheticMarket(seed=123), steps)
    c = run(SyntheticMarket(seed=124), steps)
    for (ta, ba), (tb, bb) in zip(a, b, strict=True):
        for x, y in zip([*ta, *ba], [*tb, *bb], strict=True):
            for f in fields(x):
                va, vb = getattr(x, f.name), getattr(y, f.name)
                if isinstance(va, np.ndarray):
                    assert va.dtype == vb.dtype
                    np.testing.assert_array_equal(va, vb)
                else:
                    assert va == vb
    # a different seed gives a different market
    prices_a = np.concatenate([t[0].price for t, _ in a])
    prices_c = np.concatenate([t[0].price for t, _ in c])
    assert len(prices_a) != len(prices_c) or not np.array_equal(prices_a, prices_c)
    times_a = np.concatenate([bk[1].event_time for _, bk in a])
    times_c = np.concatenate([bk[1].event_time for _, bk in c])
    assert len(times_a) != len(times_c) or not np.array_equal(times_a, times_c)


def test_invariants_across_calls() -> None:
    specs = (
        SymbolSpec("BTCUSDT", 90_000.0),
        SymbolSpec("ETHUSDT", 3_000.0),
        SymbolSpec("SOLUSDT", 150.0, tick_size=0.01, lot_size=0.001),
        SymbolSpec("XYZUSDT", 2.5, tick_size=0.0001, lot_size=1.0),
    )
    m = SyntheticMarket(specs, seed=5, trade_rate=300.0, first_trade_id=1000)
    next_tid = [1000] * len(specs)
    last_uid = [0] * len(specs)
    spreads: list[np.ndarray] = [np.empty(0)] * len(specs)
    n_trades = np.zeros(len(specs), dtype=np.int64)
    n_bm = np.zeros(len(specs), dtype=np.int64)
    for dt in [1, 9, 10, 11, 0, 999, 1000, 4321, 20_000, 7, 60_000]:
        t0 = m.now_ms
        trades, books = m.advance(dt)
        assert m.now_ms == t0 + dt
        assert len(trades) == len(books) == len(specs)
        for i, (spec, t, b) in enumerate(zip(specs, trades, books, strict=True)):
            assert t.symbol == b.symbol == spec.symbol
            n = len(t)
            for arr, dtype in [
                (t.trade_id, np.int64),
                (t.price, np.float64),
                (t.qty, np.float64),
                (t.event_time, np.int64),
                (t.buyer_maker, np.bool_),
            ]:
                assert arr.dtype == dtype and arr.shape == (n,)
            nb = len(b)
            for arr, dtype in [
                (b.update_id, np.int64),
                (b.bid_price, np.float64),
                (b.bid_qty, np.float64),
                (b.ask_price, np.float64),
                (b.ask_qty, np.float64),
                (b.event_time, np.int64),
            ]:
                assert arr.dtype == dtype and arr.shape == (nb,)
            # every trade comes with its own quote update
            assert nb >= n
            if dt == 0:
                assert n == nb == 0
            # ids: trade ids consecutive across calls, update ids strictly increasing across calls
            np.testing.assert_array_equal(t.trade_id, np.arange(next_tid[i], next_tid[i] + n))
            next_tid[i] += n
            if nb:
                assert b.update_id[0] > last_uid[i] and np.all(np.diff(b.update_id) > 0)
                last_uid[i] = int(b.update_id[-1])
            # times: inside (t0, t0 + dt], sorted
            for et in (t.event_time, b.event_time):
                if len(et):
                    assert et.min() > t0 and et.max() <= t0 + dt
                    assert np.all(np.diff(et) >= 0)
            # prices and sizes
            for px in (t.price, b.bid_price, b.ask_price):
                assert np.all(px > 0) and on_grid(px, spec.tick_size)
            for q in (t.qty, b.bid_qty, b.ask_qty):
                assert np.all(q >= spec.lot_size * (1 - 1e-12)) and on_grid(q, spec.lot_size)
            assert np.all(b.bid_price < b.ask_price)
            spreads[i] = np.concatenate([spreads[i], np.rint((b.ask_price - b.bid_price) / spec.tick_size)])
            # a trade prints at the bid (buyer maker: seller aggressed) or at the ask of a quote
            # published at the same millisecond
            quotes = set(zip(b.event_time.tolist(), b.bid_price.tolist(), b.ask_price.tolist(), strict=True))
            bids = {(q[0], q[1]) for q in quotes}
            asks = {(q[0], q[2]) for q in quotes}
            for et, px, bm in zip(t.event_time.tolist(), t.price.tolist(), t.buyer_maker.tolist(), strict=True):
                assert ((et, px) in bids) if bm else ((et, px) in asks)
            n_trades[i] += n
            n_bm[i] += int(t.buyer_maker.sum())
    for i in range(len(specs)):
        s = spreads[i]
        assert s.min() >= 1
        assert np.median(s) == 1  # mostly one tick
        assert np.mean(s <= 3) > 0.85  # 1..3 ticks typical
        assert s.max() > 3  # occasionally wider
        # buyer maker ~ Bernoulli(0.5): within 5 sigma
        assert abs(n_bm[i] - 0.5 * n_trades[i]) < 5 * math.sqrt(0.25 * n_trades[i])


def test_trade_sizes_scale_with_price() -> None:
    m = SyntheticMarket(seed=3, trade_rate=2000.0)
    trades, _ = m.advance(10_000)
    for spec, t in zip(DEFAULT_SYMBOLS, trades, strict=True):
        median = float(np.median(t.qty))
        target = 900.0 / spec.start_price
        assert target / 1.5 < median < target * 1.5, (spec.symbol, median)
        assert t.qty.std() > 0  # random, not constant


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SyntheticMarket(())
    with pytest.raises(ValueError):
        SyntheticMarket((SymbolSpec("A", 1.0), SymbolSpec("A", 2.0)))
    with pytest.raises(ValueError):
        SymbolSpec("A", -1.0)
    with pytest.raises(ValueError):
        SymbolSpec("A", 1.0, tick_size=0.0)
    with pytest.raises(ValueError):
        SyntheticMarket(trade_rate=-1.0)
    with pytest.raises(ValueError):
        SyntheticMarket(spread_half_life_s=0.0)
    with pytest.raises(ValueError):
        SyntheticMarket().advance(-1)


def test_leader_only_market() -> None:
    m = SyntheticMarket((SymbolSpec("BTCUSDT", 90_000.0),), seed=1)
    trades, books = m.advance(5000)
    assert len(trades) == len(books) == 1 and len(trades[0]) > 0
    assert math.isnan(m.true_beta)


# -- rates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("trade_rate", "book_rate"), [(20.0, None), (5.0, 50.0), (100.0, 0.0)])
def test_rates_over_600_seconds(trade_rate: float, book_rate: float | None) -> None:
    m = SyntheticMarket(seed=11, trade_rate=trade_rate, book_rate=book_rate)
    n_tr = np.zeros(2)
    n_bk = np.zeros(2)
    for _ in range(10):
        trades, books = m.advance(60_000)
        n_tr += [len(t) for t in trades]
        n_bk += [len(b) for b in books]
    expected_tr = trade_rate * 600
    expected_bk = (trade_rate + (2 * trade_rate if book_rate is None else book_rate)) * 600
    for i in range(2):
        assert abs(n_tr[i] - expected_tr) < 5 * math.sqrt(expected_tr)
        # quotes = one per trade + independent Poisson updates
        assert abs(n_bk[i] - expected_bk) < 5 * math.sqrt(expected_bk)


# -- price dynamics ------------------------------------------------------------------------------------


def test_leader_returns_are_fat_tailed(two_hours: Sampled) -> None:
    r = np.diff(two_hours.log_mid[0])
    z = (r - r.mean()) / r.std()
    excess_kurtosis = float(np.mean(z**4) - 3.0)
    assert excess_kurtosis > 1.0
    # and the volatility is of the configured order (0.8 bp per sqrt second)
    assert 0.5e-4 < r.std() < 1.2e-4


def test_cointegration_and_leader_random_walk(two_hours: Sampled) -> None:
    lx, ly = two_hours.log_mid
    assert len(lx) == TWO_HOURS_S
    _, _, resid = ols(ly, lx)
    assert adf_p(resid) < 0.05
    assert adf_p(lx) > 0.05
    # residual scale and persistence match the OU spread (15 bp, half-life 60 s), loosely
    assert 7e-4 < resid.std() < 30e-4
    phi = float(np.corrcoef(resid[:-1], resid[1:])[0, 1])
    half_life = math.log(0.5) / math.log(phi)
    assert 20 < half_life < 180


def test_spread_zscore_crosses_both_bands(two_hours: Sampled) -> None:
    lx, ly = two_hours.log_mid
    _, _, resid = ols(ly, lx)
    win = sliding_window_view(resid, 300)[:-1]  # window of the 300 s before each point
    z = (resid[300:] - win.mean(axis=1)) / win.std(axis=1)
    above = z > 2
    below = z < -2
    # crossings: entries into each band
    assert np.count_nonzero(above[1:] & ~above[:-1]) >= 1
    assert np.count_nonzero(below[1:] & ~below[:-1]) >= 1


def test_true_beta_drifts_within_bounds(two_hours: Sampled) -> None:
    betas = two_hours.betas
    assert np.all((betas >= 0.7) & (betas <= 1.3))
    assert np.ptp(betas) > 1e-3  # it moves
    assert np.max(np.abs(np.diff(betas))) < 0.05  # slowly: < 0.05 per minute


def test_hedge_beta_shows_in_returns() -> None:
    s = sample_mids(SyntheticMarket(seed=21, hedge_beta=0.6, trade_rate=5.0), TWO_HOURS_S, chunk_s=600)
    rx, ry = np.diff(s.log_mid, axis=1)
    _, beta_hat, _ = ols(ry, rx)
    assert abs(beta_hat - 0.6) < 0.15
    assert np.all((s.betas >= 0.3) & (s.betas <= 0.9))


def test_many_followers_are_each_cointegrated() -> None:
    specs = (
        SymbolSpec("BTCUSDT", 90_000.0),
        SymbolSpec("ETHUSDT", 3_000.0),
        SymbolSpec("SOLUSDT", 150.0, lot_size=0.001),
    )
    s = sample_mids(SyntheticMarket(specs, seed=9, trade_rate=5.0), 3600, chunk_s=600)
    lx = s.log_mid[0]
    for ly in s.log_mid[1:]:
        _, _, resid = ols(ly, lx)
        assert adf_p(resid) < 0.05
    # followers have independent spreads
    res_eth = ols(s.log_mid[1], lx)[2]
    res_sol = ols(s.log_mid[2], lx)[2]
    assert abs(np.corrcoef(res_eth, res_sol)[0, 1]) < 0.5


@pytest.mark.parametrize("dt_ms", [7, 1000, 60_000])
def test_chunking_gives_the_same_kind_of_market(dt_ms: int) -> None:
    """advance(1000) once ~ advance(10) x 100: same rates and same volatility whatever the chunk size."""
    seconds = 120
    m = SyntheticMarket(seed=17, vol_of_vol=0.0, trade_rate=20.0, book_rate=500.0)
    t0 = m.now_ms
    times: list[np.ndarray] = []
    mids: list[np.ndarray] = []
    n_trades = 0
    while m.now_ms < t0 + seconds * 1000:
        trades, books = m.advance(min(dt_ms, t0 + seconds * 1000 - m.now_ms))
        n_trades += len(trades[0])
        times.append(books[0].event_time)
        mids.append(0.5 * (books[0].bid_price + books[0].ask_price))
    et = np.concatenate(times)
    mid = np.concatenate(mids)
    assert abs(n_trades - 20 * seconds) < 5 * math.sqrt(20 * seconds)
    samples = t0 + 100 * np.arange(1, seconds * 10 + 1)  # every 100 ms
    j = np.searchsorted(et, samples, side="right") - 1
    assert j.min() >= 0
    r = np.diff(np.log(mid[j]))
    expected = 0.8e-4 * math.sqrt(0.1)
    assert 0.8 * expected < r.std() < 1.25 * expected
    # the latent mid only changes on the grid: within one 10 ms cell the mid moves by less than a
    # spread change (half a tick per tick of spread change), never by a price step
    cell = et // GRID_MS
    same = cell[1:] == cell[:-1]
    assert np.all(np.abs(np.diff(mid))[same] <= 0.5 * 50 * 0.01 + 1e-9)


# -- load ------------------------------------------------------------------------------------------------


def test_one_million_trades() -> None:
    m = SyntheticMarket(seed=99, trade_rate=50_000.0)
    total = 0
    next_tid = [1, 1]
    for _ in range(11):  # 11 s x 2 symbols x 50k/s = 1.1M expected
        t0 = m.now_ms
        trades, books = m.advance(1000)
        for i, (t, b) in enumerate(zip(trades, books, strict=True)):
            assert t.trade_id[0] == next_tid[i] and t.trade_id[-1] == next_tid[i] + len(t) - 1
            next_tid[i] += len(t)
            assert t.event_time[0] > t0 and t.event_time[-1] <= t0 + 1000
            assert np.all(np.diff(t.event_time) >= 0)
            assert len(b) >= len(t)
            assert np.all(b.bid_price < b.ask_price)
            total += len(t)
    assert total >= 1_000_000
    assert total == sum(n - 1 for n in next_tid)


# -- ground truth ---------------------------------------------------------------------------------------


def test_record_truth_keeps_the_ticks_and_explains_them() -> None:
    steps = [1000, 7, 0, 2500, 10, 60_000, 333]
    plain = run(SyntheticMarket(seed=5, hedge_beta=0.8), steps)
    market = SyntheticMarket(seed=5, hedge_beta=0.8, record_truth=True)
    rec = run(market, steps)
    for (ta, ba), (tb, bb) in zip(plain, rec, strict=True):
        for x, y in zip([*ta, *ba], [*tb, *bb], strict=True):
            for f in fields(x):
                va, vb = getattr(x, f.name), getattr(y, f.name)
                if isinstance(va, np.ndarray):
                    np.testing.assert_array_equal(va, vb)
                else:
                    assert va == vb
    # every quote lies around the latent mid of its grid cell: the truth is the state the events read
    books = {i: [b for _, bk in rec for b in [bk[i]]] for i in (0, 1)}
    bx = [b for b in books[0] if len(b)]
    by = [b for b in books[1] if len(b)]
    tx = np.concatenate([b.event_time for b in bx])
    ty = np.concatenate([b.event_time for b in by])
    mid_x = np.concatenate([(b.bid_price + b.ask_price) / 2 for b in bx])
    mid_y = np.concatenate([(b.bid_price + b.ask_price) / 2 for b in by])
    tr_y = market.truth_at("ETHUSDT", ty + 1)  # "just before t+1" = the cell an event at t reads
    tr_x = market.truth_at("ETHUSDT", tx + 1)
    assert np.max(np.abs(tr_y.y_mid - mid_y)) <= 0.5 * 50 * 0.01 + 0.01
    assert np.median(np.abs(tr_y.y_mid - mid_y)) < 0.02
    assert np.median(np.abs(tr_x.x_mid - mid_x)) < 0.02
    # beta near its centre, the hedge in price units is beta * y / x, the spread a few bp
    assert np.all(np.abs(tr_y.beta - 0.8) < 0.3)
    np.testing.assert_allclose(tr_y.hedge, tr_y.beta * tr_y.y_mid / tr_y.x_mid, rtol=1e-12)
    assert 0.02 < float(np.median(tr_y.hedge)) < 0.03  # 0.8 * 3000 / 90000
    assert 0 < np.std(tr_y.spread) < 100e-4


def test_truth_needs_recording_and_a_follower() -> None:
    with pytest.raises(ValueError, match="record_truth"):
        SyntheticMarket(seed=1).truth_at("ETHUSDT", [1])
    m = SyntheticMarket(seed=1, record_truth=True)
    with pytest.raises(ValueError, match="advance"):
        m.truth_at("ETHUSDT", [1])
    m.advance(1000)
    with pytest.raises(ValueError, match="follower"):
        m.truth_at("BTCUSDT", [m.now_ms])
    one = m.truth_at("ETHUSDT", [m.now_ms + 1])
    assert one.beta.shape == (1,) and one.beta[0] == m.true_beta


def test_not_cointegrated_control_market_has_a_wandering_spread() -> None:
    m = SyntheticMarket(seed=2, record_truth=True, cointegrated=False)
    m.advance(3_600_000)
    s = m.truth_at("ETHUSDT", DEFAULT_START_MS + 1000 * np.arange(1, 3601)).spread
    c = SyntheticMarket(seed=2, record_truth=True)
    c.advance(3_600_000)
    sc = c.truth_at("ETHUSDT", DEFAULT_START_MS + 1000 * np.arange(1, 3601)).spread
    # same shocks; one hour of a random walk with 60 s-OU steps wanders ~ 15 bp * sqrt(3600 / 87) ~ 1 %
    assert np.std(s) > 3 * np.std(sc)
    assert adf_p(sc) < 0.01 and adf_p(s) > 0.05


def test_depth_book_is_around_the_last_quote_and_keeps_the_ticks() -> None:
    a, b = SyntheticMarket(seed=3), SyntheticMarket(seed=3)
    assert a.depth("ETHUSDT") is None  # nothing quoted yet
    ta, ba = a.advance(2000)
    a.depth("BTCUSDT", 20)
    a.depth("ETHUSDT", 20)
    tb_, bb = b.advance(2000)
    d = a.depth("ETHUSDT", 20)
    assert d is not None and len(d.bid_price) == len(d.ask_price) == 20
    assert d.bid_price[0] == ba[1].bid_price[-1] and d.ask_price[0] == ba[1].ask_price[-1]
    assert d.event_time == ba[1].event_time[-1] and d.update_id == ba[1].update_id[-1]
    assert np.all(np.diff(d.bid_price) < 0) and np.all(np.diff(d.ask_price) > 0)
    assert min(d.bid_qty + d.ask_qty) > 0
    # asking for depth draws nothing from the ticks' generator
    ta2, _ = a.advance(1000)
    tb2, _ = b.advance(1000)
    assert np.array_equal(ta2[0].price, tb2[0].price) and np.array_equal(ta[1].price, tb_[1].price)
    with pytest.raises(ValueError):
        a.depth("XRPUSDT")


def test_synthetic_feed_publishes_the_depth_book_as_the_binance_source_does() -> None:
    from types import SimpleNamespace
    from typing import Any

    from rtqis.producers.feed import _publish_depth
    from rtqis.schemas.models import DepthSnapshot
    from rtqis.topics import DEPTH

    sent: list[tuple[Any, Any, str, int]] = []
    producer = SimpleNamespace(send=lambda topic, v, key, timestamp_ms: sent.append((topic, v, key, timestamp_ms)))
    market = SyntheticMarket(seed=5)
    settings = SimpleNamespace(symbols=["BTCUSDT", "ETHUSDT"], depth_levels=7)
    _publish_depth(producer, market, settings)  # type: ignore[arg-type]
    assert sent == []  # nothing quoted yet
    market.advance(1000)
    _publish_depth(producer, market, settings)  # type: ignore[arg-type]
    assert [(t, k) for t, _, k, _ in sent] == [(DEPTH, "BTCUSDT"), (DEPTH, "ETHUSDT")]
    snap = sent[1][1]
    assert isinstance(snap, DepthSnapshot) and len(snap.bid_price) == len(snap.ask_qty) == 7
    assert snap.bid_price[0] < snap.ask_price[0] and sent[1][3] == snap.event_time
