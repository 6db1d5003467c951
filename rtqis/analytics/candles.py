"""OHLCV candles from trades: a vectorised numpy kernel, mergeable partials, and a streaming state.

What
    Candles are event-time tumbling windows. A trade at ``time`` (epoch milliseconds UTC) belongs to the
    window starting at ``floor(time / size) * size``; ``size`` is in milliseconds (60_000 for ``1m``).
    Per window we keep open/high/low/close (quote currency per base unit), volume (base units), quote
    volume (``sum(price * qty)``, quote currency), the taker-buy part of both (trades whose
    ``buyer_maker`` is False, i.e. the buyer took liquidity), the trade count, the first/last trade id and
    the event times of the first/last trade. Aggregating Binance USD-M trades this way reproduces
    Binance's own klines for every complete minute (see ``tests/test_candles_kernel.py``).

Why this shape
    :class:`CandleAgg` is a columnar *partial* aggregate: any set of trades can be aggregated
    independently and the pieces combined with :func:`merge` in any order and grouping (associative and
    commutative), so a stream processor can fold frame after frame, a late trade can revise a closed
    candle, and 5m candles can be built from 1m ones (:func:`resample`). :class:`CandleState` wraps this
    for one symbol and one interval with a watermark (``max event time - grace``), closed-window
    publication exactly once, corrections for late trades, duplicate suppression and a JSON-safe
    ``to_dict``/``from_dict`` for a Faust table.

Summation accuracy
    The four sums are kept as double-double values: ``volume`` holds the float64 nearest to the running
    sum and ``volume_comp`` the (tiny) remainder, so the exact sum is ``volume + volume_comp`` to about
    1e-30 relative. Inside a batch the segment sums are computed error-free (a sequential ``cumsum``
    whose per-step rounding errors are recovered exactly with TwoSum); :func:`merge` combines partials
    with TwoSum as well. Consequently ``volume`` is the correctly rounded sum of the per-trade values
    except in astronomically rare near-tie cases, and it does not depend on how the trades were split
    into frames or in which order partials were merged. This is not ``math.fsum`` (not *guaranteed*
    correctly rounded), but in practice it is bit-identical across chunkings. Note that the per-trade
    quote value ``price * qty`` is itself one float64 rounding of the decimal product.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from rtqis.intervals import INTERVALS, interval_ms, interval_name

__all__ = [
    "INTERVALS",
    "CandleAgg",
    "CandleState",
    "CandleUpdates",
    "aggregate",
    "interval_ms",
    "interval_name",
    "merge",
    "resample",
    "to_rows",
    "vwap",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ArrayLike = npt.ArrayLike


def _check_size(size_ms: int) -> int:
    size = int(size_ms)
    if size != size_ms or size <= 0:
        raise ValueError(f"window size must be a positive integer number of milliseconds, got {size_ms!r}")
    return size


# --------------------------------------------------------------------------------------------------
# Columnar partial aggregates
# --------------------------------------------------------------------------------------------------

_SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
_COMPS = tuple(f"{s}_comp" for s in _SUMS)
_INTS = ("open_time", "trades", "first_trade_id", "last_trade_id", "first_time", "last_time")


@dataclass(eq=False)
class CandleAgg:
    """Partial candle aggregates of ONE symbol and ONE window size: one row per window, sorted by open_time.

    Units: times in epoch ms (int64), prices in quote currency (float64), volumes in base units,
    quote volumes in quote currency. ``first_time``/``last_time`` are the event times of the first/last
    trade in the window, used by :func:`merge` to pick open/close from out-of-order partials. The
    ``*_comp`` columns are the low-order parts of the double-double sums (see the module docstring);
    they default to zeros, so a hand-built aggregate need not supply them.
    Treat instances as immutable: functions here never modify their inputs.
    """

    open_time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    quote_volume: FloatArray
    taker_buy_volume: FloatArray
    taker_buy_quote_volume: FloatArray
    trades: IntArray
    first_trade_id: IntArray
    last_trade_id: IntArray
    first_time: IntArray
    last_time: IntArray
    volume_comp: FloatArray = None  # type: ignore[assignment]
    quote_volume_comp: FloatArray = None  # type: ignore[assignment]
    taker_buy_volume_comp: FloatArray = None  # type: ignore[assignment]
    taker_buy_quote_volume_comp: FloatArray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = -1
        for name, dtype in _FIELD_DTYPES:
            value = getattr(self, name)
            if value is None:
                value = np.zeros(len(self.open_time), dtype=np.float64)
                setattr(self, name, value)
            if type(value) is not np.ndarray or value.dtype != dtype:
                value = np.asarray(value, dtype=dtype)
                setattr(self, name, value)
            if value.ndim != 1:
                raise ValueError(f"CandleAgg.{name} must be 1-D, got shape {value.shape}")
            if n < 0:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"CandleAgg.{name} has {value.shape[0]} rows, open_time has {n}")

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def empty(cls) -> CandleAgg:
        """An aggregate with no windows."""
        return cls(**{name: np.empty(0, dtype=dtype) for name, dtype in _FIELD_DTYPES})

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> CandleAgg:
        """Build from a mapping of column name -> array-like (missing columns: empty / zero compensation)."""
        values = {}
        for name, dtype in _FIELD_DTYPES:
            if name in columns:
                values[name] = columns[name]
            elif name not in _COMPS:
                values[name] = np.empty(0, dtype=dtype)
        return cls(**values)

    def columns(self) -> dict[str, np.ndarray]:
        """All columns by name (the arrays themselves, not copies)."""
        return {name: getattr(self, name) for name, _ in _FIELD_DTYPES}

    def take(self, index: ArrayLike | slice) -> CandleAgg:
        """Rows selected by a slice, an integer index or a boolean mask."""
        idx = index if isinstance(index, slice) else np.asarray(index)
        return CandleAgg(**{name: arr[idx] for name, arr in self.columns().items()})

    def to_dict(self) -> dict[str, list[int] | list[float]]:
        """JSON-safe columns (Python ints and floats; float64 values survive a JSON round trip exactly)."""
        return {name: arr.tolist() for name, arr in self.columns().items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandleAgg:
        """Inverse of :meth:`to_dict`."""
        return cls.from_columns(data)

    def _sums(self) -> tuple[FloatArray, FloatArray]:
        hi = np.column_stack([getattr(self, s) for s in _SUMS])
        lo = np.column_stack([getattr(self, c) for c in _COMPS])
        return hi, lo


_FIELD_DTYPES: tuple[tuple[str, type], ...] = tuple(
    (f.name, np.int64 if f.name in _INTS else np.float64) for f in fields(CandleAgg)
)
_EMPTY_AGG = CandleAgg.empty()  # never mutated; zero-length arrays cannot be written to


def _concat(aggs: Sequence[CandleAgg]) -> CandleAgg:
    return CandleAgg(**{name: np.concatenate([getattr(a, name) for a in aggs]) for name, _ in _FIELD_DTYPES})


def _trusted(cols: dict[str, np.ndarray]) -> CandleAgg:
    """A CandleAgg from columns already of the right dtypes and lengths (skips the checks)."""
    agg = object.__new__(CandleAgg)
    agg.__dict__.update(cols)
    return agg


def _two_sum(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knuth's TwoSum: ``s = fl(a + b)`` and ``e`` with ``s + e == a + b`` exactly (elementwise)."""
    s = a + b
    bp = s - a
    e = (a - (s - bp)) + (b - bp)
    return s, e


def _segment_dd_sum(x: FloatArray, starts: IntArray, comp: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """Per-segment double-double sums of the rows of ``x`` (n, k); segments begin at ``starts`` (first is 0).

    A sequential cumsum ``c`` is exact up to per-step rounding errors ``e`` that TwoSum recovers, so
    ``sum(x[a:b]) == (c[b-1] - c[a-1]) + sum(e[a:b])`` exactly; the difference is split error-free
    again, leaving only the reduction of the (already tiny) errors inexact.
    """
    n = x.shape[0]
    c = np.cumsum(x, axis=0)
    prev = np.empty_like(c)
    prev[0] = 0.0
    prev[1:] = c[:-1]
    _, e = _two_sum(prev, x)  # fl(prev + x) == c by construction of cumsum
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    d, d_err = _two_sum(c[ends], -prev[starts])
    lo = d_err + np.add.reduceat(e, starts, axis=0)
    if comp is not None:
        lo = lo + np.add.reduceat(comp, starts, axis=0)
    return _two_sum(d, lo)


def _group_starts(sorted_keys: IntArray) -> IntArray:
    brk = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate((np.zeros(1, dtype=np.int64), brk.astype(np.int64)))


def _columns(
    time_ms: ArrayLike, price: ArrayLike, qty: ArrayLike, buyer_maker: ArrayLike, trade_id: ArrayLike
) -> tuple[IntArray, FloatArray, FloatArray, npt.NDArray[np.bool_], IntArray]:
    t = np.asarray(time_ms, dtype=np.int64)
    p = np.asarray(price, dtype=np.float64)
    q = np.asarray(qty, dtype=np.float64)
    bm = np.asarray(buyer_maker, dtype=np.bool_)
    ids = np.asarray(trade_id, dtype=np.int64)
    n = t.shape[0] if t.ndim == 1 else -1
    for name, arr in (("time_ms", t), ("price", p), ("qty", q), ("buyer_maker", bm), ("trade_id", ids)):
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"trade column {name} must be 1-D with the same length as time_ms ({n}), got {arr.shape}")
    return t, p, q, bm, ids


def aggregate(
    time_ms: ArrayLike,
    price: ArrayLike,
    qty: ArrayLike,
    buyer_maker: ArrayLike,
    trade_id: ArrayLike,
    size_ms: int,
) -> CandleAgg:
    """Aggregate trades of ONE symbol into windows of ``size_ms`` milliseconds.

    Input need not be sorted: trades are ordered stably by (time, trade_id) first, so ``open`` is the
    price of the earliest trade (smallest id on a tie) and ``close`` that of the latest. Fully vectorised
    (``np.maximum.reduceat`` and friends over the sorted windows); the sums are double-double (module
    docstring). No validation of prices/quantities beyond dtype: feed validated trades.
    """
    size = _check_size(size_ms)
    t, p, q, bm, ids = _columns(time_ms, price, qty, buyer_maker, trade_id)
    n = t.shape[0]
    if n == 0:
        return CandleAgg.empty()
    if n > 1:
        dt = np.diff(t)
        if not ((dt > 0) | ((dt == 0) & (np.diff(ids) > 0))).all():
            order = np.lexsort((ids, t))
            t, p, q, bm, ids = t[order], p[order], q[order], bm[order], ids[order]
    w = (t // size) * size
    starts = _group_starts(w)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    x = np.empty((n, 4), dtype=np.float64)
    x[:, 0] = q
    np.multiply(p, q, out=x[:, 1])
    taker = ~bm
    np.multiply(x[:, 0], taker, out=x[:, 2])
    np.multiply(x[:, 1], taker, out=x[:, 3])
    hi, lo = _segment_dd_sum(x, starts)
    return CandleAgg(
        open_time=w[starts],
        open=p[starts],
        high=np.maximum.reduceat(p, starts),
        low=np.minimum.reduceat(p, starts),
        close=p[ends],
        volume=hi[:, 0],
        quote_volume=hi[:, 1],
        taker_buy_volume=hi[:, 2],
        taker_buy_quote_volume=hi[:, 3],
        trades=np.diff(np.append(starts, n)),
        first_trade_id=ids[starts],
        last_trade_id=ids[ends],
        first_time=t[starts],
        last_time=t[ends],
        volume_comp=lo[:, 0],
        quote_volume_comp=lo[:, 1],
        taker_buy_volume_comp=lo[:, 2],
        taker_buy_quote_volume_comp=lo[:, 3],
    )


def _combine(cat: CandleAgg, keys: IntArray) -> CandleAgg:
    """Group the rows of ``cat`` by ``keys`` (window starts) and combine rows sharing a key."""
    if len(cat) == 0:
        return cat
    o = np.lexsort((cat.first_trade_id, cat.first_time, keys))  # open: earliest (first_time, first_trade_id)
    c = np.lexsort((cat.last_trade_id, cat.last_time, keys))  # close: latest (last_time, last_trade_id)
    k = keys[o]
    starts = _group_starts(k)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = len(k) - 1
    ci = c[ends]
    hi, lo = cat._sums()
    s_hi, s_lo = _segment_dd_sum(hi[o], starts, lo[o])
    return CandleAgg(
        open_time=k[starts],
        open=cat.open[o][starts],
        high=np.maximum.reduceat(cat.high[o], starts),
        low=np.minimum.reduceat(cat.low[o], starts),
        close=cat.close[ci],
        volume=s_hi[:, 0],
        quote_volume=s_hi[:, 1],
        taker_buy_volume=s_hi[:, 2],
        taker_buy_quote_volume=s_hi[:, 3],
        trades=np.add.reduceat(cat.trades[o], starts),
        first_trade_id=cat.first_trade_id[o][starts],
        last_trade_id=cat.last_trade_id[ci],
        first_time=cat.first_time[o][starts],
        last_time=cat.last_time[ci],
        volume_comp=s_lo[:, 0],
        quote_volume_comp=s_lo[:, 1],
        taker_buy_volume_comp=s_lo[:, 2],
        taker_buy_quote_volume_comp=s_lo[:, 3],
    )


def merge(a: CandleAgg, b: CandleAgg) -> CandleAgg:
    """Combine two partial aggregates of the same symbol and window size built from DISJOINT sets of trades.

    A window present in both gets: open from the earlier ``first_time`` (tie: smaller ``first_trade_id``),
    close from the later ``last_time`` (tie: larger ``last_trade_id``), high = max, low = min, counts and
    (double-double) sums added. Associative and commutative: merging frame aggregates one at a time in
    any order equals aggregating all trades at once (OHLC, counts, ids, times exactly; sums to the last
    bit except in near-tie cases, see the module docstring). Merging a trade twice counts it twice:
    de-duplicate upstream (:class:`CandleState` does).
    """
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    if a.open_time[-1] < b.open_time[0]:
        return _concat((a, b))
    if b.open_time[-1] < a.open_time[0]:
        return _concat((b, a))
    cat = _concat((a, b))
    return _combine(cat, cat.open_time)


def resample(agg: CandleAgg, from_ms: int, to_ms: int) -> CandleAgg:
    """Coarsen ``from_ms`` windows into ``to_ms`` windows (e.g. 1m -> 5m); ``to_ms`` must be a multiple.

    Because windows are epoch-aligned, every ``from_ms`` window lies inside exactly one ``to_ms`` window,
    so the result equals aggregating the underlying trades at ``to_ms`` directly.
    """
    src = _check_size(from_ms)
    dst = _check_size(to_ms)
    if dst % src != 0:
        raise ValueError(f"cannot resample {src} ms windows to {dst} ms: the target must be a multiple of the source")
    if len(agg) and (agg.open_time % src != 0).any():
        raise ValueError(f"aggregate has open_time values not aligned to {src} ms windows")
    if dst == src or len(agg) == 0:
        return agg
    return _combine(agg, (agg.open_time // dst) * dst)


def vwap(agg: CandleAgg) -> FloatArray:
    """Volume-weighted average price per window, ``quote_volume / volume`` (NaN where volume is zero)."""
    out = np.full(len(agg), np.nan)
    np.divide(agg.quote_volume, agg.volume, out=out, where=agg.volume != 0)
    return out


def to_rows(
    agg: CandleAgg,
    symbol: str,
    interval: str,
    *,
    closed_before_ms: int | None = None,
    source: str = "stream",
    correction: bool = False,
) -> list[dict[str, Any]]:
    """Dicts with exactly the fields of ``rtqis.schemas.models.Candle`` (plain Python types).

    ``close_time = open_time + size - 1``; ``closed`` is ``open_time + size <= closed_before_ms`` (always
    False when ``closed_before_ms`` is None); ``correction`` is copied onto every row.
    """
    size = interval_ms(interval)
    n = len(agg)
    if n == 0:
        return []
    ot = agg.open_time
    if closed_before_ms is None:
        closed = [False] * n
    else:
        closed = (ot + size <= int(closed_before_ms)).tolist()
    cols = zip(
        ot.tolist(),
        (ot + (size - 1)).tolist(),
        agg.open.tolist(),
        agg.high.tolist(),
        agg.low.tolist(),
        agg.close.tolist(),
        agg.volume.tolist(),
        agg.quote_volume.tolist(),
        agg.trades.tolist(),
        agg.taker_buy_volume.tolist(),
        agg.taker_buy_quote_volume.tolist(),
        vwap(agg).tolist(),
        agg.first_trade_id.tolist(),
        agg.last_trade_id.tolist(),
        closed,
        strict=True,
    )
    return [
        {
            "symbol": symbol,
            "interval": interval,
            "open_time": o_t,
            "close_time": c_t,
            "open": op,
            "high": hi,
            "low": lo,
            "close": cl,
            "volume": vol,
            "quote_volume": qv,
            "trades": nt,
            "taker_buy_volume": tbv,
            "taker_buy_quote_volume": tbqv,
            "vwap": vw,
            "first_trade_id": fid,
            "last_trade_id": lid,
            "closed": cd,
            "correction": correction,
            "source": source,
        }
        for o_t, c_t, op, hi, lo, cl, vol, qv, nt, tbv, tbqv, vw, fid, lid, cd in cols
    ]


# --------------------------------------------------------------------------------------------------
# Small frames in Python floats
# --------------------------------------------------------------------------------------------------
#
# A live frame holds a few trades (frames leave every 20 ms), and on arrays that small the numpy calls
# of aggregate + merge cost ~190 us, almost all of it call overhead. For the common case - trades in
# order, all in the newest window, none late - CandleState applies them with the same float operations
# in the same order as the vectorised path, in plain Python floats, so the result is bit for bit the
# same (tests/test_candles_kernel.py compares the two on random and real frames). The order matters for
# the sums: ``np.add.reduceat`` over a segment adds its first element to the (pairwise, so below 8
# elements sequential from -0.0) sum of the rest; np.cumsum is sequential.

SMALL_FRAME = 8  # trades at most for the scalar path (the pairwise sum of the rest is then sequential)


def _py_two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def _py_segment(v: list[float]) -> float:
    """``np.add.reduceat`` of one segment of fewer than 9 values: the first plus the rest summed from -0.0."""
    if len(v) == 1:
        return v[0]
    rest = -0.0
    for x in v[1:]:
        rest = rest + x
    return v[0] + rest


def _py_dd_sums(col: list[float], comp: list[float] | None, starts: list[int]) -> list[tuple[float, float]]:
    """:func:`_segment_dd_sum` of one column in Python floats: (hi, lo) per segment (at most 8 rows each)."""
    c: list[float] = []
    errs: list[float] = []
    prev = 0.0
    for i, x in enumerate(col):
        s = prev + x  # the cumsum's step; its rounding error by TwoSum
        bp = s - prev
        errs.append((prev - (s - bp)) + (x - bp))
        prev = s if i else x  # the cumsum starts with the first value itself (keeps a -0.0)
        c.append(prev)
    out = []
    bounds = [*starts, len(col)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        d, d_err = _py_two_sum(c[b - 1], -(c[a - 1] if a else 0.0))
        lo = d_err + _py_segment(errs[a:b])
        if comp is not None:
            lo = lo + _py_segment(comp[a:b])
        out.append(_py_two_sum(d, lo))
    return out


def _py_frame_sums(p: list[float], q: list[float], bm: list[bool]) -> list[tuple[float, float]]:
    """:func:`aggregate`'s four sums of ONE window in Python floats, (hi, lo) each: the columns q, p*q and
    their taker parts (trades whose buyer is not the maker)."""
    pq = [pi * qi for pi, qi in zip(p, q, strict=True)]
    taker = [0.0 if b else 1.0 for b in bm]
    cols = (q, pq, [x * t for x, t in zip(q, taker, strict=True)], [x * t for x, t in zip(pq, taker, strict=True)])
    return [_py_dd_sums(col, None, [0])[0] for col in cols]


_FLOAT_FIELDS = tuple(name for name, dtype in _FIELD_DTYPES if dtype is np.float64)
_INT_FIELDS = tuple(name for name, dtype in _FIELD_DTYPES if dtype is np.int64)


def _from_lists(cols: dict[str, list[Any]]) -> CandleAgg:
    """A CandleAgg from per-column Python lists: two 2-D arrays and a row view of each (18 arrays cost ~3x)."""
    f = np.array([cols[name] for name in _FLOAT_FIELDS], dtype=np.float64)
    i = np.array([cols[name] for name in _INT_FIELDS], dtype=np.int64)
    out = {name: f[k] for k, name in enumerate(_FLOAT_FIELDS)}
    out.update({name: i[k] for k, name in enumerate(_INT_FIELDS)})
    return _trusted(out)


def _small_update(
    open_: CandleAgg, size: int, t: list[int], p: list[float], q: list[float], bm: list[bool], ids: list[int]
) -> CandleAgg | None:
    """``merge(open_, aggregate(...))`` for at most :data:`SMALL_FRAME` trades in (time, id) order, all in
    one window at or after the newest of ``open_`` and after its last trade; None when that does not hold
    (the caller then takes the vectorised path)."""
    w = t[0] // size * size
    if t[-1] // size * size != w or any(t[i] > t[i + 1] for i in range(len(t) - 1)):
        return None
    m = len(open_)
    last_w = int(open_.open_time[-1]) if m else None
    if last_w is not None and (last_w > w or (last_w == w and t[0] < int(open_.last_time[-1]))):
        return None
    if last_w == w and m > SMALL_FRAME:
        return None
    new = {
        "open_time": w, "open": p[0], "high": max(p), "low": min(p), "close": p[-1],
        "trades": len(t), "first_trade_id": ids[0], "last_trade_id": ids[-1], "first_time": t[0], "last_time": t[-1],
    }  # fmt: skip
    for (hi, lo), name, comp in zip(_py_frame_sums(p, q, bm), _SUMS, _COMPS, strict=True):
        new[name], new[comp] = hi, lo
    cols = {name: getattr(open_, name).tolist() for name, _ in _FIELD_DTYPES}
    if last_w != w:  # a new window after the open ones: merge concatenates
        for name, col in cols.items():
            col.append(new[name])
        return _from_lists(cols)
    # merge into the newest window: _combine over every open row plus the new one (the cumsum runs
    # through all of them), the earlier windows one row each
    starts = list(range(m))
    for name, comp in zip(_SUMS, _COMPS, strict=True):
        sums = _py_dd_sums([*cols[name], new[name]], [*cols[comp], new[comp]], starts)
        cols[name] = [h for h, _ in sums]
        cols[comp] = [lo for _, lo in sums]
    cols["high"][-1] = max(cols["high"][-1], new["high"])
    cols["low"][-1] = min(cols["low"][-1], new["low"])
    for name in ("close", "last_trade_id", "last_time"):
        cols[name][-1] = new[name]
    cols["trades"][-1] += new["trades"]
    return _from_lists(cols)


# --------------------------------------------------------------------------------------------------
# Streaming state
# --------------------------------------------------------------------------------------------------


@dataclass
class CandleUpdates:
    """What one :meth:`CandleState.update` / :meth:`CandleState.advance` call produced.

    ``closed``: windows that closed during this call (each window appears here exactly once in the life of
    the state). ``corrections``: windows closed by an EARLIER call that late trades in this call revised
    (their full, updated values; publish with ``correction=True``). ``live``: every still-open window with
    its current partial values. The counters are for this call only; the state keeps running totals.
    """

    size_ms: int
    closed: CandleAgg
    corrections: CandleAgg
    live: CandleAgg
    watermark: int | None
    closed_until: int | None
    applied: int = 0
    late_trades: int = 0
    dropped_late: int = 0
    duplicates: int = 0

    def rows(self, symbol: str, *, interval: str | None = None, source: str = "stream") -> list[dict[str, Any]]:
        """Candle dicts: closed windows, then corrections (``correction=True``), then live windows."""
        name = interval if interval is not None else interval_name(self.size_ms)
        cb = self.closed_until
        return (
            to_rows(self.closed, symbol, name, closed_before_ms=cb, source=source)
            + to_rows(self.corrections, symbol, name, closed_before_ms=cb, source=source, correction=True)
            + to_rows(self.live, symbol, name, source=source)
        )


class CandleState:
    """Streaming candles for ONE symbol and ONE interval, in event time with a grace period.

    * Watermark = max event time seen - ``grace_ms``. Window ``[s, s + size)`` closes when
      ``watermark >= s + size``; it is then reported once in :attr:`CandleUpdates.closed`.
    * Lateness is judged per call against the state *before* the call: a trade whose window had already
      closed is late. Late trades are counted (``late_trades``) and merged into the kept closed window,
      which is re-published in :attr:`CandleUpdates.corrections` (also when the window had no trades when
      it closed, so it was never published before). Closed windows are kept for ``keep_closed`` windows
      behind the closing boundary; trades older than that are counted as ``dropped_late`` and logged.
      Within one call, all trades are applied first and windows closed afterwards, so disorder inside a
      frame is never "late".
    * Idempotence: the state remembers the largest trade id applied. A row whose id is not larger than
      every id applied before it (earlier calls and earlier rows of the same frame) is a duplicate: it is
      skipped and counted (``duplicates``). Binance trade ids increase with time per symbol and the
      stream delivers them in order, so this only removes redeliveries; the consequence is that a feed
      delivering a symbol's trades out of id order would lose the out-of-order ones, while a genuinely
      late trade with a NEW (higher) id but an old time is applied as a correction.
    * :meth:`to_dict` / :meth:`from_dict` give a JSON-safe snapshot (for a Faust table value) that
      round-trips exactly.
    """

    _VERSION = 1

    def __init__(self, size_ms: int, grace_ms: int = 2000, keep_closed: int = 10) -> None:
        self.size_ms = _check_size(size_ms)
        if int(grace_ms) != grace_ms or grace_ms < 0:
            raise ValueError(f"grace_ms must be a non-negative integer, got {grace_ms!r}")
        if int(keep_closed) != keep_closed or keep_closed < 0:
            raise ValueError(f"keep_closed must be a non-negative integer, got {keep_closed!r}")
        self.grace_ms = int(grace_ms)
        self.keep_closed = int(keep_closed)
        self.max_time: int | None = None
        self.max_trade_id: int | None = None
        self.closed_until: int | None = None  # every window with open_time + size <= this is closed
        self.trades = 0
        self.late_trades = 0
        self.dropped_late = 0
        self.duplicates = 0
        self._open = _EMPTY_AGG
        self._closed = _EMPTY_AGG
        self.small_frames = True  # the scalar path for small frames (tests turn it off to compare)

    # -- views ---------------------------------------------------------------------------------------
    @property
    def watermark(self) -> int | None:
        """Max event time seen minus the grace period (None before any trade or clock tick)."""
        return None if self.max_time is None else self.max_time - self.grace_ms

    @property
    def live(self) -> CandleAgg:
        """The still-open windows."""
        return self._open

    @property
    def recent_closed(self) -> CandleAgg:
        """Closed windows still kept for corrections."""
        return self._closed

    # -- processing ----------------------------------------------------------------------------------
    def update(
        self,
        time_ms: ArrayLike,
        price: ArrayLike,
        qty: ArrayLike,
        buyer_maker: ArrayLike,
        trade_id: ArrayLike,
    ) -> CandleUpdates:
        """Apply one frame of trades (columns of equal length) and report closed/corrected/live windows."""
        t, p, q, bm, ids = _columns(time_ms, price, qty, buyer_maker, trade_id)
        n = t.shape[0]
        if n == 0:
            return self._updates(_EMPTY_AGG, _EMPTY_AGG)
        # Duplicates: id not above the running max of everything applied before this row.
        run = np.maximum.accumulate(ids)
        prior = self.max_trade_id
        fresh_first = prior is None or ids[0] > prior
        if fresh_first and (n == 1 or (ids[1:] > run[:-1]).all()):
            n_dup = 0
        else:
            before = np.empty_like(run)
            before[0] = np.iinfo(np.int64).min if prior is None else prior
            before[1:] = run[:-1]
            if prior is not None:
                np.maximum(before, prior, out=before)
            keep = ids > before
            n_dup = n - int(np.count_nonzero(keep))
            t, p, q, bm, ids = t[keep], p[keep], q[keep], bm[keep], ids[keep]
        self.duplicates += n_dup
        if t.shape[0] == 0:
            return self._updates(_EMPTY_AGG, _EMPTY_AGG, duplicates=n_dup)
        top = int(run[-1])
        self.max_trade_id = top if prior is None else max(prior, top)

        n_late = n_drop = 0
        corrections = _EMPTY_AGG
        cu = self.closed_until
        if cu is not None and int(t.min()) < cu:
            size = self.size_ms
            w = (t // size) * size
            is_late = w < cu
            horizon = cu - self.keep_closed * size
            drop = w < horizon
            n_drop = int(np.count_nonzero(drop))
            late = is_late & ~drop
            n_late = int(np.count_nonzero(late))
            if n_drop:
                self.dropped_late += n_drop
                logger.warning(
                    "dropped %d trade(s) older than the %d kept closed %d ms window(s) "
                    "(oldest trade time %d ms, closed until %d ms)",
                    n_drop,
                    self.keep_closed,
                    size,
                    int(t[drop].min()),
                    cu,
                )
            if n_late:
                self.late_trades += n_late
                late_agg = aggregate(t[late], p[late], q[late], bm[late], ids[late], size)
                self._closed = merge(self._closed, late_agg)
                corrections = self._closed.take(np.isin(self._closed.open_time, late_agg.open_time))
            on_time = ~is_late
            t, p, q, bm, ids = t[on_time], p[on_time], q[on_time], bm[on_time], ids[on_time]
        n_on_time = int(t.shape[0])
        if n_on_time:
            small = None
            if n_on_time <= SMALL_FRAME and self.small_frames:
                small = _small_update(
                    self._open, self.size_ms, t.tolist(), p.tolist(), q.tolist(), bm.tolist(), ids.tolist()
                )
            self._open = small if small is not None else merge(self._open, aggregate(t, p, q, bm, ids, self.size_ms))
            tmax = int(t.max())
            if self.max_time is None or tmax > self.max_time:
                self.max_time = tmax
        applied = n_on_time + n_late
        self.trades += applied
        closed = self._close_windows()
        return self._updates(
            closed, corrections, applied=applied, late_trades=n_late, dropped_late=n_drop, duplicates=n_dup
        )

    def advance(self, now_event_ms: int) -> CandleUpdates:
        """Move event time to ``now_event_ms`` without trades (a clock tick) and close what is due."""
        now = int(now_event_ms)
        if self.max_time is None or now > self.max_time:
            self.max_time = now
        return self._updates(self._close_windows(), _EMPTY_AGG)

    def _close_windows(self) -> CandleAgg:
        if self.max_time is None:
            return _EMPTY_AGG
        size = self.size_ms
        cu = ((self.max_time - self.grace_ms) // size) * size
        if self.closed_until is not None and cu <= self.closed_until:
            return _EMPTY_AGG
        self.closed_until = cu
        closed = _EMPTY_AGG
        ot = self._open.open_time
        if len(ot) and ot[0] + size <= cu:
            k = int(np.searchsorted(ot + size, cu, side="right"))
            closed = self._open.take(slice(0, k))
            self._open = self._open.take(slice(k, None))
            self._closed = _concat((self._closed, closed)) if len(self._closed) else closed
        horizon = cu - self.keep_closed * size
        kept = self._closed.open_time
        if len(kept) and kept[0] < horizon:
            self._closed = self._closed.take(slice(int(np.searchsorted(kept, horizon, side="left")), None))
        return closed

    def _updates(self, closed: CandleAgg, corrections: CandleAgg, **counts: int) -> CandleUpdates:
        return CandleUpdates(
            size_ms=self.size_ms,
            closed=closed,
            corrections=corrections,
            live=self._open,
            watermark=self.watermark,
            closed_until=self.closed_until,
            **counts,
        )

    # -- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot (ints, floats, lists, None); :meth:`from_dict` restores it exactly."""
        return {
            "version": self._VERSION,
            "size_ms": self.size_ms,
            "grace_ms": self.grace_ms,
            "keep_closed": self.keep_closed,
            "max_time": self.max_time,
            "max_trade_id": self.max_trade_id,
            "closed_until": self.closed_until,
            "trades": self.trades,
            "late_trades": self.late_trades,
            "dropped_late": self.dropped_late,
            "duplicates": self.duplicates,
            "open": self._open.to_dict(),
            "closed": self._closed.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandleState:
        """Restore a state saved by :meth:`to_dict`."""
        version = data.get("version")
        if version != cls._VERSION:
            raise ValueError(f"unsupported CandleState snapshot version {version!r} (expected {cls._VERSION})")
        state = cls(int(data["size_ms"]), int(data["grace_ms"]), int(data["keep_closed"]))
        for key in ("max_time", "max_trade_id", "closed_until"):
            value = data[key]
            setattr(state, key, None if value is None else int(value))
        for key in ("trades", "late_trades", "dropped_late", "duplicates"):
            setattr(state, key, int(data[key]))
        state._open = CandleAgg.from_dict(data["open"])
        state._closed = CandleAgg.from_dict(data["closed"])
        return state
