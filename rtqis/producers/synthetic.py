"""Seeded synthetic crypto market: trades and best bid/ask in event time (epoch ms UTC), numpy only.

Model (latent state stepped on a fixed ``GRID_MS`` = 10 ms grid; events read the state of their grid cell):

* Leader (first symbol, default BTCUSDT @ 90,000): ``log x`` is a random walk with Student-t(3) shocks
  scaled to unit variance, ``vol_bp`` (default 0.8 bp/sqrt(s)) RMS volatility scaled by sqrt(grid step),
  times a slow stochastic-volatility factor ``exp(h - vol_of_vol**2)`` where ``h`` is an OU process
  (half-life 300 s, stationary std ``vol_of_vol``, default 0.4; 0 switches it off). The factor keeps the
  mean variance at ``vol_bp**2`` and makes 1 s returns fat-tailed, not only the 10 ms steps.
* Each follower (default ETHUSDT @ 3,000) is cointegrated with the leader:
  ``log y = alpha + beta_t * (log x - log x_0) + s_t`` with ``alpha = log y_0`` (so the start price is
  exact). ``beta_t`` is a slow mean-reverting walk around ``hedge_beta`` (half-life 2 h, std 0.05,
  clipped to ``hedge_beta +- 0.3``); ``s_t`` is an Ornstein-Uhlenbeck spread with half-life
  ``spread_half_life_s`` (default 60 s) and stationary std ``spread_vol_bp`` (default 15 bp).
  ``cointegrated=False`` makes ``s_t`` a random walk with the same 10 ms steps (a control market on
  which a cointegration test should say "not cointegrated").
  The leader's log price is centred at its start so that a beta move of 1e-4 does not shift the
  follower by 1e-4 * log(90,000) ~ 11 bp.
* Trades: Poisson arrivals at ``trade_rate`` per symbol per second, integer ms times; buyer-maker
  Bernoulli(0.5); price = best bid (buyer maker, the seller aggressed) or best ask; size log-normal
  with median ``900 / start_price`` base units, rounded to the lot (at least one lot).
* Best bid/ask: one update at every trade (the quote the trade printed against) plus independent
  Poisson updates at ``book_rate`` (default 2 x ``trade_rate``); spread 1 + Geometric ticks
  (1-3 typical, capped at 50), prices on the tick grid around the latent mid, sizes log-normal.
* Ids: trade ids and book update ids are consecutive per symbol (start configurable).
* Depth (:meth:`SyntheticMarket.depth`): a top-N order book around the last quote of a symbol, on
  demand: level gaps of 1 + Geometric ticks with a mean of about 0.05 bp of the mid, sizes log-normal
  growing with the distance from the touch. It draws from its own generator, so asking for depth (or
  not) never changes the ticks.

Ground truth: with ``record_truth=True`` the latent path (leader log price, each follower's ``beta_t`` and
``s_t``) is kept on the grid, and :meth:`SyntheticMarket.truth_at` reads it back, so an evaluation can
compare estimated hedge ratios and spreads with the true ones. Recording draws no random numbers: the
same seed gives the same ticks with or without it.

Everything comes from one ``numpy.random.Generator(PCG64(seed))``: the same seed and the same sequence
of :meth:`SyntheticMarket.advance` calls give bit-identical output. Different chunkings of the same
span give statistically equivalent (not identical) markets.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_START_MS",
    "DEFAULT_SYMBOLS",
    "GRID_MS",
    "BookBatch",
    "DepthBook",
    "SymbolSpec",
    "SyntheticMarket",
    "TradeBatch",
    "Truth",
]

log = logging.getLogger(__name__)

GRID_MS = 10
"""Step of the latent price grid, in ms."""

DEFAULT_START_MS = int(datetime(2024, 8, 9, tzinfo=UTC).timestamp() * 1000)
"""2024-08-09T00:00:00Z in epoch ms: the default clock start, so runs are reproducible."""

_BP = 1e-4
_T_DOF = 3.0
_VOL_HALF_LIFE_S = 300.0
_BETA_HALF_LIFE_S = 7200.0
_BETA_STD = 0.05
_BETA_BAND = 0.3
_SPREAD_TICKS_P = 0.6  # Geometric success probability: P(1 tick)=0.6, P(2)=0.24, P(3)=0.096, ...
_MAX_SPREAD_TICKS = 50
_TRADE_MEDIAN_NOTIONAL = 900.0  # quote units: median trade size = 900 / start_price base units
_TRADE_SIZE_SIGMA = 1.2
_BOOK_SIZE_MULT = 10.0  # median top-of-book size = 10 x the median trade size
_BOOK_SIZE_SIGMA = 1.0
_AR1_MAX_GROWTH_LOG2 = 20.0  # block length of the vectorised AR(1) so that a**-k <= 2**20


@dataclass(frozen=True)
class SymbolSpec:
    """One simulated instrument; prices in quote currency, quantities in base currency."""

    symbol: str
    start_price: float
    tick_size: float = 0.01
    lot_size: float = 1e-5

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("symbol must be a non-empty string")
        for name in ("start_price", "tick_size", "lot_size"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{self.symbol}: {name} must be a positive finite number, got {v!r}")


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", 90_000.0),
    SymbolSpec("ETHUSDT", 3_000.0),
)


@dataclass
class TradeBatch:
    """Trades of one symbol in columns (equal-length arrays, sorted by ``event_time``)."""

    symbol: str
    trade_id: NDArray[np.int64]
    price: NDArray[np.float64]
    qty: NDArray[np.float64]
    event_time: NDArray[np.int64]
    buyer_maker: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.trade_id)


@dataclass
class BookBatch:
    """Best bid/ask updates of one symbol in columns (equal-length arrays, sorted by ``event_time``)."""

    symbol: str
    update_id: NDArray[np.int64]
    bid_price: NDArray[np.float64]
    bid_qty: NDArray[np.float64]
    ask_price: NDArray[np.float64]
    ask_qty: NDArray[np.float64]
    event_time: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.update_id)


@dataclass
class DepthBook:
    """A top-N order book of one symbol: bids best first (descending), asks best first (ascending)."""

    symbol: str
    update_id: int  # the book update id of the quote it is built around
    event_time: int  # epoch ms UTC
    bid_price: list[float]
    bid_qty: list[float]
    ask_price: list[float]
    ask_qty: list[float]


def _decimals(step: float) -> int:
    """Decimal places of a tick or lot size (0.01 -> 2, 1e-05 -> 5, 0.5 -> 1, 10.0 -> 0)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return min(max(0, -exponent), 15)


def _ar1_coef(half_life_s: float) -> float:
    """Per-grid-step AR(1) coefficient of an OU process with the given half-life."""
    return math.exp(-math.log(2.0) * (GRID_MS / 1000.0) / half_life_s)


def _ar1_path(x0: float, a: float, shocks: NDArray[np.float64]) -> NDArray[np.float64]:
    """Path ``x_0..x_n`` of ``x_k = a * x_{k-1} + shocks_k`` (length ``n + 1``), vectorised.

    Uses ``x_k = a**k * (x_0 + sum_{j<=k} a**-j * e_j)`` in blocks short enough that ``a**-k`` stays
    below 2**20, so there is no overflow and the rounding error stays at the level of one shock.
    """
    n = len(shocks)
    out = np.empty(n + 1, dtype=np.float64)
    out[0] = x0
    if n == 0:
        return out
    if a >= 1.0:
        out[1:] = x0 + np.cumsum(shocks)
        return out
    block = max(1, int(_AR1_MAX_GROWTH_LOG2 / -math.log2(a)))
    x = x0
    for start in range(0, n, block):
        e = shocks[start : start + block]
        pw = a ** np.arange(1, len(e) + 1, dtype=np.float64)
        seg = pw * (x + np.cumsum(e / pw))
        out[start + 1 : start + 1 + len(e)] = seg
        x = float(seg[-1])
    return out


@dataclass
class Truth:
    """Latent state of one follower at given times (arrays as long as the times).

    ``beta``: log-elasticity ``d log y / d log x``; ``spread``: the log spread ``s_t`` (dimensionless,
    1e-4 = 1 bp); ``hedge``: ``dy/dx`` in price units (``beta * y_mid / x_mid``, what a trader holds
    in x per unit of y); ``x_mid``, ``y_mid``: latent mid prices.
    """

    beta: NDArray[np.float64]
    spread: NDArray[np.float64]
    hedge: NDArray[np.float64]
    x_mid: NDArray[np.float64]
    y_mid: NDArray[np.float64]


@dataclass
class _Follower:
    beta: float
    spread: float


class SyntheticMarket:
    """Reproducible synthetic market of a leader and cointegrated followers (see the module docstring).

    Rates are per symbol per second; times are epoch ms UTC. :meth:`advance` generates the events in
    ``(now, now + dt_ms]`` and moves the clock.
    """

    def __init__(
        self,
        symbols: Sequence[SymbolSpec] = DEFAULT_SYMBOLS,
        *,
        seed: int = 42,
        trade_rate: float = 20.0,
        book_rate: float | None = None,
        start_ms: int | None = None,
        hedge_beta: float = 1.0,
        spread_half_life_s: float = 60.0,
        spread_vol_bp: float = 15.0,
        vol_bp: float = 0.8,
        vol_of_vol: float = 0.4,
        first_trade_id: int = 1,
        first_update_id: int = 1,
        record_truth: bool = False,
        cointegrated: bool = True,
    ) -> None:
        specs = tuple(symbols)
        if not specs:
            raise ValueError("need at least one symbol")
        names = [s.symbol for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate symbols: {names}")
        if book_rate is None:
            book_rate = 2.0 * trade_rate
        for name, v in (
            ("trade_rate", trade_rate),
            ("book_rate", book_rate),
            ("vol_bp", vol_bp),
            ("vol_of_vol", vol_of_vol),
            ("spread_vol_bp", spread_vol_bp),
        ):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (math.isfinite(spread_half_life_s) and spread_half_life_s > 0):
            raise ValueError(f"spread_half_life_s must be > 0, got {spread_half_life_s!r}")
        if not math.isfinite(hedge_beta):
            raise ValueError(f"hedge_beta must be finite, got {hedge_beta!r}")

        self._specs = specs
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._depth_rng = np.random.Generator(np.random.PCG64([seed, 1]))  # never touches the ticks' draws
        self._trade_rate = float(trade_rate)
        self._book_rate = float(book_rate)
        self._now = DEFAULT_START_MS if start_ms is None else operator.index(start_ms)

        # leader
        self._lx0 = math.log(specs[0].start_price)
        self._lx = self._lx0
        self._step_sd = vol_bp * _BP * math.sqrt(GRID_MS / 1000.0)
        self._t_scale = math.sqrt((_T_DOF - 2.0) / _T_DOF)  # Student-t(3) to unit variance
        self._vov = float(vol_of_vol)
        self._h = 0.0
        self._a_h = _ar1_coef(_VOL_HALF_LIFE_S)
        self._sd_h = self._vov * math.sqrt(1.0 - self._a_h**2)

        # followers
        self._hedge_beta = float(hedge_beta)
        self._beta_lo = hedge_beta - _BETA_BAND
        self._beta_hi = hedge_beta + _BETA_BAND
        self._a_beta = _ar1_coef(_BETA_HALF_LIFE_S)
        self._sd_beta = _BETA_STD * math.sqrt(1.0 - self._a_beta**2)
        self._a_s = _ar1_coef(spread_half_life_s)
        self._sd_s = spread_vol_bp * _BP * math.sqrt(1.0 - self._a_s**2)
        if not cointegrated:  # a control market: the spread is a random walk with the same steps
            self._a_s = 1.0
        self._ly0 = [math.log(s.start_price) for s in specs[1:]]
        self._followers = [_Follower(beta=self._hedge_beta, spread=0.0) for _ in specs[1:]]

        # per-symbol bookkeeping
        self._next_trade_id = [operator.index(first_trade_id)] * len(specs)
        self._next_update_id = [operator.index(first_update_id)] * len(specs)
        self._price_dec = [_decimals(s.tick_size) for s in specs]
        self._lot_dec = [_decimals(s.lot_size) for s in specs]
        # last quote per symbol (time, update id, bid, bid qty, ask, ask qty): what depth() builds around
        self._last_quote: list[tuple[int, int, float, float, float, float] | None] = [None] * len(specs)
        # ground truth on the grid (record_truth): grid index of the first kept value, then chunks
        self._record = bool(record_truth)
        self._truth_k0: int | None = None
        self._truth: list[list[NDArray[np.float64]]] = [[] for _ in range(1 + 2 * len(self._followers))]
        log.debug("synthetic market %s seed=%d trade_rate=%g book_rate=%g", names, seed, trade_rate, book_rate)

    @property
    def now_ms(self) -> int:
        """Event time (epoch ms UTC) up to which events have been generated."""
        return self._now

    @property
    def true_beta(self) -> float:
        """Current latent hedge ratio of the first follower (NaN when there is no follower)."""
        return self._followers[0].beta if self._followers else math.nan

    def advance(self, dt_ms: int) -> tuple[list[TradeBatch], list[BookBatch]]:
        """Generate all events in (now, now + dt_ms]; one batch per symbol (possibly empty arrays).

        Advances the internal clock by ``dt_ms``.
        """
        dt = operator.index(dt_ms)
        if dt < 0:
            raise ValueError(f"dt_ms must be >= 0, got {dt}")
        t0, t1 = self._now, self._now + dt
        k0 = t0 // GRID_MS
        n_steps = t1 // GRID_MS - k0
        log_paths = self._step_latent(n_steps, k0)
        trades: list[TradeBatch] = []
        books: list[BookBatch] = []
        for i, spec in enumerate(self._specs):
            tb, bb = self._events(i, spec, log_paths[i], t0, dt, k0)
            trades.append(tb)
            books.append(bb)
        self._now = t1
        return trades, books

    def depth(self, symbol: str, levels: int = 20) -> DepthBook | None:
        """A ``levels``-deep order book of ``symbol`` around its last quote (None before the first quote).

        The touch is the last best bid/ask (so the ladder agrees with the top of book); deeper levels
        are spaced by 1 + Geometric ticks (mean gap about 0.05 bp of the mid, at least one tick) with
        log-normal sizes whose median grows as the square root of the level number."""
        names = [s.symbol for s in self._specs]
        if symbol not in names:
            raise ValueError(f"unknown symbol {symbol!r} (symbols: {names})")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        i = names.index(symbol)
        q = self._last_quote[i]
        if q is None:
            return None
        t, uid, bid, bid_qty, ask, ask_qty = q
        spec, rng = self._specs[i], self._depth_rng
        tick, pdec, ldec = spec.tick_size, self._price_dec[i], self._lot_dec[i]
        mean_gap = max(1.0, 0.05 * _BP * 0.5 * (bid + ask) / tick)
        p = min(1.0, 1.0 / mean_gap)

        def side(touch: float, touch_qty: float, sign: float) -> tuple[list[float], list[float]]:
            gaps = rng.geometric(p, size=levels - 1).astype(np.float64) if levels > 1 else np.empty(0)
            offs = np.concatenate(([0.0], np.cumsum(gaps)))
            px = np.round(np.rint(touch / tick + sign * offs) * tick, pdec)
            ok = px > 0
            med = _BOOK_SIZE_MULT * _TRADE_MEDIAN_NOTIONAL / spec.start_price * np.sqrt(1.0 + np.arange(levels))
            qty = rng.lognormal(np.log(med), _BOOK_SIZE_SIGMA)
            qty = np.round(np.maximum(np.rint(qty / spec.lot_size), 1.0) * spec.lot_size, ldec)
            qty[0] = touch_qty
            return px[ok].tolist(), qty[ok].tolist()

        bp, bq = side(bid, bid_qty, -1.0)
        ap, aq = side(ask, ask_qty, 1.0)
        return DepthBook(symbol, uid, t, bp, bq, ap, aq)

    # -- internals -----------------------------------------------------------------------------------

    def truth_at(self, symbol: str, times_ms: NDArray[np.int64] | Sequence[int]) -> Truth:
        """The latent state of follower ``symbol`` just before each time (epoch ms): the grid cell the
        last event strictly before ``t`` read. Needs ``record_truth=True``; times outside the generated
        span are clipped to it."""
        if not self._record:
            raise ValueError("truth_at needs SyntheticMarket(..., record_truth=True)")
        names = [s.symbol for s in self._specs]
        if symbol not in names[1:]:
            raise ValueError(f"{symbol!r} is not a follower of this market (followers: {names[1:]})")
        if self._truth_k0 is None:
            raise ValueError("no latent state generated yet: call advance() first")
        i = names.index(symbol) - 1
        lx = np.concatenate(self._truth[0])
        beta = np.concatenate(self._truth[1 + 2 * i])
        s = np.concatenate(self._truth[2 + 2 * i])
        t = np.asarray(times_ms, dtype=np.int64)
        k = np.clip((t - 1) // GRID_MS - self._truth_k0, 0, len(lx) - 1)
        dev = lx[k] - self._lx0
        ly = self._ly0[i] + beta[k] * dev + s[k]
        x_mid, y_mid = np.exp(lx[k]), np.exp(ly)
        return Truth(beta=beta[k], spread=s[k], hedge=beta[k] * y_mid / x_mid, x_mid=x_mid, y_mid=y_mid)

    def _keep_truth(self, k0: int, paths: list[NDArray[np.float64]]) -> None:
        """Append the grid values ``k0+1..`` of the latent paths (``k0`` itself on the first call)."""
        first = self._truth_k0 is None
        if first:
            self._truth_k0 = k0
        for store, path in zip(self._truth, paths, strict=True):
            store.append(path.copy() if first else path[1:].copy())

    def _step_latent(self, n: int, k0: int = 0) -> list[NDArray[np.float64]]:
        """Step the latent state ``n`` grid steps; log-price paths of every symbol, length ``n + 1``.

        ``k0`` is the grid index of the current state (for the recorded truth)."""
        rng = self._rng
        h_path = _ar1_path(self._h, self._a_h, rng.standard_normal(n) * self._sd_h)
        eps = rng.standard_t(_T_DOF, size=n) * self._t_scale
        sd = self._step_sd * np.exp(h_path[:-1] - self._vov**2)  # E[sd**2] = step_sd**2
        lx_path = np.empty(n + 1, dtype=np.float64)
        lx_path[0] = self._lx
        np.cumsum(sd * eps, out=lx_path[1:])
        lx_path[1:] += self._lx
        self._h = float(h_path[-1])
        self._lx = float(lx_path[-1])
        dev = lx_path - self._lx0
        paths = [lx_path]
        latent = [lx_path]
        for f, ly0 in zip(self._followers, self._ly0, strict=True):
            beta_dev = _ar1_path(f.beta - self._hedge_beta, self._a_beta, rng.standard_normal(n) * self._sd_beta)
            beta_path = np.clip(beta_dev + self._hedge_beta, self._beta_lo, self._beta_hi)
            s_path = _ar1_path(f.spread, self._a_s, rng.standard_normal(n) * self._sd_s)
            f.beta = float(beta_path[-1])
            f.spread = float(s_path[-1])
            paths.append(ly0 + beta_path * dev + s_path)
            latent += [beta_path, s_path]
        if self._record:
            self._keep_truth(k0, latent)
        return paths

    def _times(self, rate: float, t0: int, dt: int) -> NDArray[np.int64]:
        """Sorted integer ms arrival times of a Poisson process of ``rate``/s in (t0, t0 + dt]."""
        rng = self._rng
        n = int(rng.poisson(rate * dt / 1000.0)) if dt > 0 and rate > 0 else 0
        t = rng.integers(t0 + 1, t0 + dt + 1, size=n, dtype=np.int64) if n else np.empty(0, np.int64)
        t.sort()
        return t

    def _lots(self, median: float, sigma: float, n: int, lot: float, dec: int) -> NDArray[np.float64]:
        q = self._rng.lognormal(math.log(median), sigma, size=n)
        lots = np.maximum(np.rint(q / lot), 1.0)
        return np.round(lots * lot, dec)

    def _events(
        self, i: int, spec: SymbolSpec, log_path: NDArray[np.float64], t0: int, dt: int, k0: int
    ) -> tuple[TradeBatch, BookBatch]:
        rng = self._rng
        t_tr = self._times(self._trade_rate, t0, dt)
        t_bk = self._times(self._book_rate, t0, dt)
        n_tr, n_bk = len(t_tr), len(t_bk)
        n_q = n_tr + n_bk

        # merged quote stream (stable: a trade's own quote first within a millisecond)
        pos_tr = np.arange(n_tr) + np.searchsorted(t_bk, t_tr, side="left")
        pos_bk = np.arange(n_bk) + np.searchsorted(t_tr, t_bk, side="right")
        q_time = np.empty(n_q, dtype=np.int64)
        q_time[pos_tr] = t_tr
        q_time[pos_bk] = t_bk

        tick = spec.tick_size
        mid_ticks = np.exp(log_path[q_time // GRID_MS - k0]) / tick
        spread = np.minimum(rng.geometric(_SPREAD_TICKS_P, size=n_q), _MAX_SPREAD_TICKS).astype(np.float64)
        bid_t = np.maximum(np.floor(mid_ticks - 0.5 * spread + 0.5), 1.0)
        ask_t = bid_t + spread
        pdec = self._price_dec[i]
        bid_px = np.round(bid_t * tick, pdec)
        ask_px = np.round(ask_t * tick, pdec)
        med = _TRADE_MEDIAN_NOTIONAL / spec.start_price
        ldec = self._lot_dec[i]
        bid_qty = self._lots(_BOOK_SIZE_MULT * med, _BOOK_SIZE_SIGMA, n_q, spec.lot_size, ldec)
        ask_qty = self._lots(_BOOK_SIZE_MULT * med, _BOOK_SIZE_SIGMA, n_q, spec.lot_size, ldec)

        buyer_maker = rng.random(n_tr) < 0.5
        tr_price = np.where(buyer_maker, bid_px[pos_tr], ask_px[pos_tr])
        tr_qty = self._lots(med, _TRADE_SIZE_SIGMA, n_tr, spec.lot_size, ldec)

        tid0 = self._next_trade_id[i]
        uid0 = self._next_update_id[i]
        self._next_trade_id[i] = tid0 + n_tr
        self._next_update_id[i] = uid0 + n_q
        if n_q:
            self._last_quote[i] = (
                int(q_time[-1]), uid0 + n_q - 1, float(bid_px[-1]), float(bid_qty[-1]), float(ask_px[-1]),
                float(ask_qty[-1]),
            )  # fmt: skip
        trades = TradeBatch(
            symbol=spec.symbol,
            trade_id=np.arange(tid0, tid0 + n_tr, dtype=np.int64),
            price=tr_price,
            qty=tr_qty,
            event_time=t_tr,
            buyer_maker=buyer_maker,
        )
        book = BookBatch(
            symbol=spec.symbol,
            update_id=np.arange(uid0, uid0 + n_q, dtype=np.int64),
            bid_price=bid_px,
            bid_qty=bid_qty,
            ask_price=ask_px,
            ask_qty=ask_qty,
            event_time=q_time,
        )
        return trades, book
