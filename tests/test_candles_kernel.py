"""Candle kernel: real Binance klines, streaming == batch, merge algebra, resampling, late trades, snapshots."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtqis.analytics.candles import (
    INTERVALS,
    CandleAgg,
    CandleState,
    CandleUpdates,
    aggregate,
    interval_ms,
    interval_name,
    merge,
    resample,
    to_rows,
    vwap,
)
from rtqis.schemas.models import Candle
from tests.conftest import BINANCE_DATA

BINANCE = BINANCE_DATA
MINUTE = 60_000
SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
EXACT = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "trades",
    "first_trade_id",
    "last_trade_id",
    "first_time",
    "last_time",
)


@dataclass
class Trades:
    time: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_maker: np.ndarray
    trade_id: np.ndarray

    def cols(self, sel: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, ...]:
        return self.time[sel], self.price[sel], self.qty[sel], self.buyer_maker[sel], self.trade_id[sel]

    def __len__(self) -> int:
        return len(self.time)


def _one(pattern: str) -> Path:
    (path,) = BINANCE.glob(pattern)
    return path


@pytest.fixture(scope="module")
def eth_trades() -> Trades:
    cols: dict[str, list] = {"id": [], "price": [], "qty": [], "time": [], "bm": []}
    with gzip.open(_one("trades/ETHUSDT-um-trades-*.csv.gz"), "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            cols["id"].append(int(row["id"]))
            cols["price"].append(float(row["price"]))
            cols["qty"].append(float(row["qty"]))
            cols["time"].append(int(row["time"]))
            assert row["is_buyer_maker"] in ("true", "false")
            cols["bm"].append(row["is_buyer_maker"] == "true")
    return Trades(
        np.array(cols["time"], dtype=np.int64),
        np.array(cols["price"]),
        np.array(cols["qty"]),
        np.array(cols["bm"], dtype=bool),
        np.array(cols["id"], dtype=np.int64),
    )


@pytest.fixture(scope="module")
def eth_klines() -> dict[int, dict[str, str]]:
    with _one("klines/ETHUSDT-UM-1m-*.csv").open(newline="") as fh:
        return {int(row["open_time"]): row for row in csv.DictReader(fh)}


def assert_agg_equal(a: CandleAgg, b: CandleAgg, *, rel: float | None = None) -> None:
    """Exact equality of every column; with ``rel`` the sums only to that relative tolerance."""
    assert len(a) == len(b)
    for name in EXACT:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in SUMS:
        if rel is None:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            np.testing.assert_array_equal(getattr(a, f"{name}_comp"), getattr(b, f"{name}_comp"), err_msg=name)
        else:
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rel, atol=0, err_msg=name)


def concat(aggs: list[CandleAgg]) -> CandleAgg:
    cols = aggs[0].columns()
    return CandleAgg(**{k: np.concatenate([getattr(a, k) for a in aggs]) for k in cols})


# 1. Real data -------------------------------------------------------------------------------------


def test_aggregate_reproduces_binance_klines(eth_trades: Trades, eth_klines: dict[int, dict[str, str]]) -> None:
    agg = aggregate(*eth_trades.cols(), MINUTE)
    first_window = int(eth_trades.time.min()) // MINUTE * MINUTE
    last_window = int(eth_trades.time.max()) // MINUTE * MINUTE
    complete = [i for i, ot in enumerate(agg.open_time.tolist()) if first_window < ot < last_window]
    assert len(complete) == 5  # 23:55 .. 23:59 UTC
    for i in complete:
        k = eth_klines[int(agg.open_time[i])]
        for name in ("open", "high", "low", "close"):
            assert getattr(agg, name)[i] == float(k[name]), name
        assert agg.trades[i] == int(k["count"])
        assert agg.last_trade_id[i] - agg.first_trade_id[i] + 1 == int(k["count"])  # no gaps
        for ours, theirs in zip(
            SUMS, ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"), strict=True
        ):
            assert getattr(agg, ours)[i] == pytest.approx(float(k[theirs]), rel=1e-9, abs=0), ours
        assert vwap(agg)[i] == pytest.approx(float(k["quote_volume"]) / float(k["volume"]), rel=1e-9)
    # the partial edge windows really are partial
    assert agg.trades[0] < int(eth_klines[first_window]["count"])
    assert agg.trades[-1] < int(eth_klines[last_window]["count"])


def test_to_rows_match_candle_model(eth_trades: Trades) -> None:
    agg = aggregate(*eth_trades.cols(), MINUTE)
    cut = int(agg.open_time[3])
    rows = to_rows(agg, "ETHUSDT", "1m", closed_before_ms=cut, source="binance")
    assert len(rows) == len(agg)
    for i, row in enumerate(rows):
        candle = Candle(**row)
        assert candle.close_time == candle.open_time + MINUTE - 1
        assert candle.closed == (i < 3)
        assert candle.correction is False and candle.source == "binance"
        assert candle.vwap == pytest.approx(candle.quote_volume / candle.volume)
    assert not any(r["closed"] for r in to_rows(agg, "ETHUSDT", "1m"))
    assert all(r["correction"] for r in to_rows(agg, "ETHUSDT", "1m", correction=True))


# 2. Streaming == batch ----------------------------------------------------------------------------


def stream(state: CandleState, trades: Trades, bounds: list[int]) -> list[CandleUpdates]:
    return [state.update(*trades.cols(slice(a, b))) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def random_bounds(n: int, rng: np.random.Generator, max_chunk: int = 800) -> list[int]:
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + int(rng.integers(1, max_chunk))))
    return bounds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_batch_on_real_trades(eth_trades: Trades, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bounds = random_bounds(len(eth_trades), rng)
    state = CandleState(MINUTE, grace_ms=2000)
    updates = stream(state, eth_trades, bounds)
    end = int(eth_trades.time.max()) + MINUTE + 2000
    updates.append(state.advance(end))
    closed = concat([u.closed for u in updates if len(u.closed)])
    batch = aggregate(*eth_trades.cols(), MINUTE)
    assert_agg_equal(closed, batch)  # every field, bit for bit
    assert len(np.unique(closed.open_time)) == len(closed)  # each window closed exactly once
    assert all(len(u.corrections) == 0 for u in updates)
    assert len(state.live) == 0
    assert (state.trades, state.late_trades, state.duplicates, state.dropped_late) == (len(eth_trades), 0, 0, 0)
    # chunks straddling minutes were exercised
    windows = eth_trades.time // MINUTE
    assert any(windows[a] != windows[b - 1] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    # the live window always matches the batch aggregate of everything seen so far in that window
    seen = 0
    state2 = CandleState(MINUTE, grace_ms=2000)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        upd = state2.update(*eth_trades.cols(slice(a, b)))
        seen = b
        partial = aggregate(*eth_trades.cols(slice(0, seen)), MINUTE)
        tail = partial.take(np.isin(partial.open_time, upd.live.open_time))
        assert_agg_equal(upd.live, tail)


def test_closed_rows_are_published_once_with_flags(eth_trades: Trades) -> None:
    state = CandleState(MINUTE)
    rows: list[dict] = []
    for a in range(0, len(eth_trades), 500):
        rows += state.update(*eth_trades.cols(slice(a, a + 500))).rows("ETHUSDT")
    rows += state.advance(int(eth_trades.time.max()) + 10 * MINUTE).rows("ETHUSDT")
    closed = [r for r in rows if r["closed"]]
    assert [r["open_time"] for r in closed] == aggregate(*eth_trades.cols(), MINUTE).open_time.tolist()
    assert all(r["interval"] == "1m" and not r["correction"] for r in rows)
    assert all(not r["closed"] for r in rows if r not in closed)
    for r in rows:
        Candle(**r)


# 3. merge algebra ---------------------------------------------------------------------------------

SIZE = 1_000


@st.composite
def trade_sets(draw: st.DrawFn) -> Trades:
    n = draw(st.integers(1, 60))
    times = draw(st.lists(st.integers(0, 5 * SIZE), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(1, 400_000), min_size=n, max_size=n))
    qtys = draw(st.lists(st.integers(1, 50_000), min_size=n, max_size=n))
    bms = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    ids = draw(st.permutations(range(1000, 1000 + n)))
    return Trades(
        np.array(times, dtype=np.int64),
        np.array(prices) / 100.0,
        np.array(qtys) / 1000.0,
        np.array(bms, dtype=bool),
        np.array(ids, dtype=np.int64),
    )


@settings(max_examples=150, deadline=None)
@given(trades=trade_sets(), data=st.data())
def test_merge_is_associative_and_commutative(trades: Trades, data: st.DataObject) -> None:
    n = len(trades)
    whole = aggregate(*trades.cols(), SIZE)
    perm = np.array(data.draw(st.permutations(range(n))))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    pieces = [aggregate(*trades.cols(perm[a:b]), SIZE) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    # left fold in a random order
    order = data.draw(st.permutations(range(len(pieces))))
    acc = CandleAgg.empty()
    for i in order:
        acc = merge(acc, pieces[i])
    assert_agg_equal(acc, whole, rel=1e-12)
    # a random tree of merges
    work = list(pieces)
    while len(work) > 1:
        i = data.draw(st.integers(0, len(work) - 2))
        a, b = work.pop(i), work.pop(i)
        work.insert(i, merge(b, a) if data.draw(st.booleans()) else merge(a, b))
    assert_agg_equal(work[0], whole, rel=1e-12)


def test_merge_picks_open_and_close_by_time_then_id() -> None:
    # same window, two partials; ties on time broken by trade id
    a = aggregate([100, 500], [10.0, 11.0], [1.0, 1.0], [True, False], [7, 9], SIZE)
    b = aggregate([100, 500], [20.0, 21.0], [1.0, 1.0], [False, True], [5, 12], SIZE)
    for m in (merge(a, b), merge(b, a)):
        assert (m.open[0], m.first_trade_id[0], m.close[0], m.last_trade_id[0]) == (20.0, 5, 21.0, 12)
        assert (m.high[0], m.low[0], m.trades[0]) == (21.0, 10.0, 4)
        assert m.taker_buy_volume[0] == 2.0 and m.taker_buy_quote_volume[0] == 31.0


# 4. resample --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(trades=trade_sets())
def test_resample_equals_direct_aggregation(trades: Trades) -> None:
    fine = aggregate(*trades.cols(), SIZE // 4)
    assert_agg_equal(resample(fine, SIZE // 4, SIZE), aggregate(*trades.cols(), SIZE), rel=1e-12)


def test_resample_real_data_1m_to_5m(eth_trades: Trades, eth_klines: dict[int, dict[str, str]]) -> None:
    five = interval_ms("5m")
    m1 = aggregate(*eth_trades.cols(), MINUTE)
    m5 = resample(m1, MINUTE, five)
    assert_agg_equal(m5, aggregate(*eth_trades.cols(), five))
    # the one complete 5m window of the capture, [23:55, 00:00), against Binance's 1m klines combined
    start = 1_723_161_300_000
    (i,) = np.flatnonzero(m5.open_time == start)
    ks = [eth_klines[start + j * MINUTE] for j in range(5)]
    assert m5.open[i] == float(ks[0]["open"]) and m5.close[i] == float(ks[-1]["close"])
    assert m5.high[i] == max(float(k["high"]) for k in ks) and m5.low[i] == min(float(k["low"]) for k in ks)
    assert m5.trades[i] == sum(int(k["count"]) for k in ks)
    for name in SUMS:
        assert getattr(m5, name)[i] == pytest.approx(sum(float(k[name]) for k in ks), rel=1e-9)
    with pytest.raises(ValueError, match="multiple"):
        resample(m1, MINUTE, 90_000)


# 5. grace, late trades, duplicates ----------------------------------------------------------------


def test_trades_within_grace_are_not_late() -> None:
    state = CandleState(SIZE, grace_ms=300)
    u1 = state.update([100, 950, 1200], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [False] * 3, [1, 2, 3])
    assert len(u1.closed) == 0 and len(u1.live) == 2 and u1.watermark == 900
    # new id, old time, window [0, 1000) still open because watermark 900 < 1000
    u2 = state.update([990], [9.0], [2.0], [True], [4])
    assert u2.late_trades == 0 and len(u2.closed) == 0
    u3 = state.update([1400], [4.0], [1.0], [False], [5])  # watermark 1100 closes [0, 1000)
    assert u3.closed.open_time.tolist() == [0]
    assert (u3.closed.close[0], u3.closed.high[0], u3.closed.trades[0], u3.closed.volume[0]) == (9.0, 9.0, 3, 4.0)
    assert u3.closed_until == 1000 and u3.live.open_time.tolist() == [1000]


def test_late_trade_emits_correction_and_duplicates_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    state = CandleState(SIZE, grace_ms=0, keep_closed=2)
    state.update([10, 20, 1500], [5.0, 6.0, 7.0], [1.0, 2.0, 1.0], [True, False, True], [1, 2, 3])
    u = state.update([2100], [8.0], [1.0], [False], [4])
    assert u.closed.open_time.tolist() == [1000]
    before = state.recent_closed
    # late trade: new id, time inside the closed window [0, 1000)
    late = state.update([30], [4.0], [0.5], [False], [5])
    assert late.late_trades == 1 and state.late_trades == 1 and len(late.closed) == 0
    assert late.corrections.open_time.tolist() == [0]
    rows = late.rows("X")
    (corr,) = [r for r in rows if r["correction"]]
    assert corr["closed"] and corr["open_time"] == 0
    assert (corr["low"], corr["close"], corr["trades"], corr["volume"]) == (4.0, 4.0, 3, 3.5)
    assert corr["taker_buy_volume"] == 2.5 and corr["last_trade_id"] == 5
    assert (corr["open"], corr["high"]) == (5.0, 6.0)
    np.testing.assert_array_equal(before.open_time, state.recent_closed.open_time)
    # a late trade into a closed window that had no trades yields a correction too
    gap = CandleState(SIZE, grace_ms=0)
    gap.update([10], [1.0], [1.0], [True], [1])
    gap.update([3500], [1.0], [1.0], [True], [2])
    assert gap.update([2500], [2.0], [1.0], [True], [3]).corrections.open_time.tolist() == [2000]

    # duplicates: re-applying every frame changes nothing and is counted
    snap = json.dumps(state.to_dict())
    dup = state.update([10, 20, 1500, 2100, 30], [5.0, 6.0, 7.0, 8.0, 4.0], [1.0] * 5, [True] * 5, [1, 2, 3, 4, 5])
    assert dup.duplicates == 5 and dup.applied == 0 and len(dup.corrections) == 0 and len(dup.closed) == 0
    after = state.to_dict()
    assert after.pop("duplicates") == 5
    expected = json.loads(snap)
    expected.pop("duplicates")
    assert after == expected
    # duplicates inside one frame, mixed with new trades
    mixed = state.update([2200, 2200, 2300], [1.0, 1.0, 2.0], [1.0, 1.0, 1.0], [True] * 3, [6, 6, 7])
    assert (mixed.duplicates, mixed.applied, state.duplicates) == (1, 2, 6)
    assert state.live.trades.tolist() == [3]

    # older than keep_closed windows -> dropped with a warning
    with caplog.at_level(logging.WARNING, logger="rtqis.analytics.candles"):
        far = state.update([9_000], [1.0], [1.0], [True], [8])  # closes up to 9000; keeps [7000, 9000)
        old = state.update([6_999, 7_000], [1.0, 1.0], [1.0, 1.0], [True, True], [9, 10])
    assert far.closed.open_time.tolist() == [2000]
    assert (old.dropped_late, old.late_trades, state.dropped_late) == (1, 1, 1)
    assert old.corrections.open_time.tolist() == [7000]
    assert any("dropped 1 trade" in r.getMessage() for r in caplog.records)


def test_out_of_order_delivery_within_grace_equals_batch() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    times = np.sort(rng.integers(0, 40 * SIZE, n)) + rng.integers(0, 250, n)  # delivery order = id order
    trades = Trades(
        times, rng.integers(100, 200, n) / 4.0, rng.integers(1, 90, n) / 8.0, rng.random(n) < 0.5, np.arange(n) + 1
    )
    state = CandleState(SIZE, grace_ms=300)
    updates = stream(state, trades, random_bounds(n, rng, 60))
    updates.append(state.advance(10**6))
    assert state.late_trades == 0
    assert_agg_equal(concat([u.closed for u in updates if len(u.closed)]), aggregate(*trades.cols(), SIZE))


# 5b. small frames: the scalar path -----------------------------------------------------------------


def assert_bits_equal(a: CandleAgg, b: CandleAgg) -> None:
    """Every column bit for bit (a -0.0 is not a 0.0 here)."""
    for name, x in a.columns().items():
        y = getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x.view(np.int64), y.view(np.int64), err_msg=name)


def _twin_states(size: int, grace_ms: int) -> tuple[CandleState, CandleState]:
    fast, slow = CandleState(size, grace_ms=grace_ms), CandleState(size, grace_ms=grace_ms)
    slow.small_frames = False
    return fast, slow


def _feed_both(fast: CandleState, slow: CandleState, frames: list[tuple[np.ndarray, ...]]) -> None:
    for f in frames:
        ua, ub = fast.update(*f), slow.update(*f)
        for part in ("closed", "corrections", "live"):
            assert_bits_equal(getattr(ua, part), getattr(ub, part))
        assert (ua.applied, ua.late_trades, ua.dropped_late, ua.duplicates, ua.watermark, ua.closed_until) == (
            ub.applied, ub.late_trades, ub.dropped_late, ub.duplicates, ub.watermark, ub.closed_until,
        )  # fmt: skip
    assert fast.to_dict() == slow.to_dict()


@pytest.fixture
def small_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(open windows before the call, whether the scalar path took the frame) for every call."""
    import rtqis.analytics.candles as kernel

    calls: list[tuple[int, bool]] = []
    real = kernel._small_update

    def spy(open_: CandleAgg, *args: object) -> CandleAgg | None:
        out = real(open_, *args)  # type: ignore[arg-type]
        calls.append((len(open_), out is not None))
        return out

    monkeypatch.setattr(kernel, "_small_update", spy)
    return calls


@pytest.mark.parametrize("size", [1_000, MINUTE, 5 * MINUTE])
def test_small_frames_take_the_scalar_path_bit_for_bit(
    eth_trades: Trades, size: int, small_path_calls: list[tuple[int, bool]]
) -> None:
    """Live frames of 1 - 8 real trades (and a few larger), with a redelivery, a late trade and a frame out
    of time order: the scalar path and the vectorised one agree in every bit of every update."""
    rng = np.random.default_rng(size)
    bounds = [0]
    while bounds[-1] < len(eth_trades):
        bounds.append(min(len(eth_trades), bounds[-1] + int(rng.choice([1, 2, 3, 5, 8, 8, 9, 40]))))
    frames = [eth_trades.cols(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    top = int(eth_trades.trade_id.max())
    t_end = int(eth_trades.time.max())
    frames[len(frames) // 2 : len(frames) // 2] = [
        frames[len(frames) // 3],  # redelivered: duplicates
        tuple(c[::-1] for c in eth_trades.cols(slice(100, 104))),  # out of time order (and duplicates)
    ]
    frames += [
        (np.array([t_end - 3 * size]), np.array([2000.5]), np.array([0.25]), np.array([False]), np.array([top + 1])),
        (np.array([t_end + 1, t_end + 1]), np.array([2001.0, 1999.0]), np.array([1.0, 2.0]), np.array([True, False]),
         np.array([top + 2, top + 3])),  # equal times
    ]  # fmt: skip
    fast, slow = _twin_states(size, grace_ms=2000)
    _feed_both(fast, slow, frames)
    assert fast.duplicates > 0 and fast.late_trades == 1
    took = [m for m, ok in small_path_calls if ok]
    assert 0 in took  # the first window
    if size == 1_000:
        assert any(m > 1 for m in took)  # 2 s of grace keep several 1 s windows open
    else:
        assert 1 in took  # a merge into the one open window
    assert any(not ok for _, ok in small_path_calls)  # a frame across windows (or out of order) falls back


def test_small_frames_bit_for_bit_with_tiny_and_huge_values(small_path_calls: list[tuple[int, bool]]) -> None:
    """Quantities from 1e-8 to 1e7 and zero taker parts: the TwoSum errors and signed zeros agree too."""
    rng = np.random.default_rng(5)
    frames, t, next_id = [], 0, 1
    for _ in range(3000):
        k = int(rng.integers(1, 9))
        times = t + np.sort(rng.integers(0, 300, k))
        t = int(times[-1])
        qty = rng.random(k) * 10.0 ** rng.integers(-8, 8, k)
        price = rng.random(k) * 10.0 ** rng.integers(-3, 6, k) + 1e-9
        frames.append((times, price, qty, rng.random(k) < 0.7, np.arange(next_id, next_id + k)))
        next_id += k
    fast, slow = _twin_states(1_000, grace_ms=1_500)
    _feed_both(fast, slow, frames)
    assert sum(ok for _, ok in small_path_calls) > 1000


# 6. snapshots -------------------------------------------------------------------------------------


def test_to_dict_round_trip_mid_stream(eth_trades: Trades) -> None:
    rng = np.random.default_rng(11)
    bounds = random_bounds(len(eth_trades), rng, 400)
    half = len(bounds) // 2
    extra = [  # a late trade (new id, old time) and a redelivered frame after the snapshot
        ((int(eth_trades.time[0]) + 1,), (2000.0,), (0.5,), (False,), (int(eth_trades.trade_id.max()) + 1,)),
        eth_trades.cols(slice(0, 100)),
    ]
    a = CandleState(MINUTE, grace_ms=1500, keep_closed=20)
    stream(a, eth_trades, bounds[: half + 1])
    snap = a.to_dict()
    b = CandleState.from_dict(json.loads(json.dumps(snap)))
    assert b.to_dict() == snap
    ua = stream(a, eth_trades, bounds[half:]) + [a.update(*f) for f in extra] + [a.advance(2 * 10**12)]
    ub = stream(b, eth_trades, bounds[half:]) + [b.update(*f) for f in extra] + [b.advance(2 * 10**12)]
    for x, y in zip(ua, ub, strict=True):
        for part in ("closed", "corrections", "live"):
            assert_agg_equal(getattr(x, part), getattr(y, part))
        assert (x.applied, x.late_trades, x.duplicates, x.watermark) == (
            y.applied,
            y.late_trades,
            y.duplicates,
            y.watermark,
        )
    assert a.to_dict() == b.to_dict()
    assert (a.late_trades, a.duplicates) == (1, 100)
    with pytest.raises(ValueError, match="version"):
        CandleState.from_dict({**snap, "version": 99})


# 7. intervals -------------------------------------------------------------------------------------


def test_interval_parsing() -> None:
    assert interval_ms("1m") == 60_000 and interval_ms("5m") == 300_000 and interval_ms("1d") == 86_400_000
    assert interval_ms("250ms") == 250 and interval_ms("10m") == 600_000
    assert all(interval_name(v) == k for k, v in INTERVALS.items())
    for bad in ("7x", "", "0m", "1w", "1M", "m", "-1m"):
        with pytest.raises(ValueError, match=repr(bad)):
            interval_ms(bad)
    with pytest.raises(ValueError, match="positive"):
        aggregate([1], [1.0], [1.0], [True], [1], 0)
    with pytest.raises(ValueError, match="same length"):
        aggregate([1, 2], [1.0], [1.0], [True], [1], MINUTE)
