"""One pair's analytics per aligned sample: the trading z-score, hedge, half-life, cointegration, alerts.

Pure (no Kafka): the worker keeps one :class:`PairModel` per pair in a Faust table, backtests run it
over arrays, and :func:`batch_pair` computes the same numbers with the batch kernels.

What a trader reads (since #20; the construction is in :mod:`rtqis.analytics.level`):
- ``zscore``: how far the spread LEVEL ``log y - beta * log x`` is from its equilibrium, in standard
  deviations, over a window of 60 of its own half-lives (1 h of 1 s samples by default). It reverts
  at the spread's pace; this is the number the alerts trade on.
- ``spread_bp`` / ``spread_std_bp``: the same deviation and the spread's standard deviation in bp
  of y; ``hedge`` (x units per unit of y, from 1-sample log returns over the window) and
  ``hedge_se``; ``half_life_s`` and ``half_life_se_s`` (AR(1) fit); ``coint`` (Engle-Granger verdict
  ``cointegrated`` / ``not_cointegrated`` / ``insufficient_data``; "cointegrated" needs y on x AND
  x on y to reject at 5 %, re-tested every ``coint_every`` calibrations), ``coint_stat``,
  ``coint_pvalue`` (of the weaker ordering).
- costs: ``round_trip_cost_bp`` = fees (``fee_bps`` per leg per side, both legs, in and out:
  ``2 * fee * (1 + beta)``) plus the quoted spreads of both legs when bid/ask are given;
  ``expected_reversion_bp`` = what an entry now expects to capture (``(|z| - exit) * spread_std_bp``
  for the band rule, ``(|z| + enter) * spread_std_bp`` for stop-and-reverse). An entry whose expected
  reversion does not pay the round trip (or that comes without a published hedge) is not published;
  ``below_cost`` counts them and the sample carries the flag ``below_cost``. ``position``: the alert
  state after the sample (+1 long spread, -1 short, 0 flat).

Diagnostics (unchanged models, parameters in :class:`PairParams`):
- rolling OLS of y on x over ``ols_window`` samples -> ``ols_beta``, ``ols_alpha``,
  ``spread_ols = y - ols_beta*x - ols_alpha``;
- Kalman dynamic regression on prices scaled by the pair's first sample (``x/x0``, ``y/y0``),
  estimating ``beta - 1`` in scaled units. Calibrated by default (``kalman_delta`` / ``kalman_obs_var``
  None): it starts at the first calibration of :mod:`~.level` (``level_min_samples``) from the returns
  hedge with its uncertainty, and every calibration sets ``obs_var`` to the window's residual variance
  and the state noise to ``obs_var / (10 half-lives)^2`` (:func:`~.kalman.calibrated_noise`). Hand-set
  values (both given) keep the filter from the first sample with a zero initial state ("the legs move
  in proportion"), never retuned.
  ``spread`` is its one-step prediction error ``y - (beta*x + alpha)`` with the state *before* the
  sample, in quote currency, and ``innovation_z`` the rolling z of it over ``zscore_window`` samples
  (fed once the filter has seen ``warmup`` samples). This was ``zscore`` before #20: a filter's
  prediction errors are white by construction, so it tracks the spread's one-second change, not its
  level, and its alerts lose money (notes/signals.md);
- Huber robust fit over ``huber_window`` samples, refitted every ``huber_refit_every`` samples ->
  ``fair_value = huber_beta*x + huber_alpha`` (x beyond 10 robust sd left out of the fit).

Flags: ``warming_up`` (some output not defined yet), ``stale_leg`` (a leg's price older than
``stale_after_ms``: models untouched, analytics null), ``zero_variance`` (flat innovation window),
``outlier`` (|zscore| > ``outlier_z``), ``hedge_uncertain`` (hedge standard error > 100 %: hedge not
published), ``below_cost`` (an entry was withheld). Published numbers are finite or null, never NaN.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtqis.analytics.alerts import ZAlert
from rtqis.analytics.kalman import KalmanResult
from rtqis.analytics.level import LEVEL_FIELDS, KalmanCalib, LevelParams, LevelSpread, batch_level
from rtqis.analytics.pairs import (
    AdfResult,
    HuberFairValue,
    KalmanHedge,
    RollingOLS,
    RollingZScore,
    adf_test,
    huber_fit,
    kalman_hedge,
    rolling_ols,
    zscore,
)

__all__ = [
    "EXTRA_FIELDS",
    "MIN_ADF_SAMPLES",
    "NEW_SIGNAL_FIELDS",
    "SIGNAL_FIELDS",
    "PairModel",
    "PairParams",
    "Step",
    "batch_pair",
    "spread_adf",
]

#: the float PairSignal fields published before #20 (``zscore`` changed meaning in #20: see above);
#: the store's signals table and the dashboard hub have exactly these columns
SIGNAL_FIELDS = (
    "ols_beta", "ols_alpha", "kalman_beta", "kalman_alpha", "spread", "spread_ols", "zscore",
    "huber_beta", "huber_alpha", "fair_value",
)  # fmt: skip
#: the float PairSignal fields added in #20 (None when undefined); the store and the dashboard add them
NEW_SIGNAL_FIELDS = (
    "innovation_z",
    *(f for f in LEVEL_FIELDS if f != "zscore"),
    "expected_reversion_bp",
    "round_trip_cost_bp",
)
#: the other PairSignal fields added in #20: ``coint`` (str), ``position``, ``below_cost`` (int)
EXTRA_FIELDS = ("coint", "position", "below_cost")
_CORE_FIELDS = (*SIGNAL_FIELDS, "innovation_z")  # all defined = no longer warming up


@dataclass(frozen=True)
class PairParams:
    ols_window: int = 300
    zscore_window: int = 300
    kalman_delta: float | None = None  # None: calibrated (see the module doc); a number: that, fixed
    kalman_obs_var: float | None = None
    warmup: int = 30
    huber_window: int = 600
    huber_refit_every: int = 30
    huber_epsilon: float = 1.35
    huber_leverage_cut: float | None = 10.0  # drop x beyond 10 robust sd (a flash crash in x)
    stale_after_ms: int = 10_000
    z_enter: float = 2.0
    z_exit: float = 0.5
    cooldown_ms: int = 30_000
    outlier_z: float = 6.0
    adf_every_ms: int = 60_000
    adf_window: int = 600
    adf_regression: str = "c"
    fee_bps: float = 10.0  # per leg per side (Binance spot taker: 10)
    alert_rule: str = "reverse"  # or "bands" (enter/exit); chosen by evaluation.choose_rule (see there)
    level_window: int = 3600  # samples: hedge, half-life, cointegration, longest z window
    level_min_samples: int = 300  # samples before zscore, hedge and half-life are published
    calib_every: int = 120  # samples between re-estimates of hedge, half-life, z window (60: same figures, slower)
    coint_min: int = 1800  # samples after which the cointegration verdict is given
    coint_half_lives: float = 30.0  # ... or estimated half-lives, if fewer samples (inf: samples only)
    coint_every: int = 3  # calibrations between cointegration tests (3 x 120 samples: every 6 min at 1 s)

    @classmethod
    def from_settings(cls, s: Any) -> PairParams:
        return cls(
            ols_window=s.ols_window,
            zscore_window=s.zscore_window,
            kalman_delta=s.kalman_delta,
            kalman_obs_var=s.kalman_obs_var,
            huber_window=s.huber_window,
            huber_refit_every=s.huber_refit_every,
            huber_epsilon=s.huber_epsilon,
            stale_after_ms=int(s.stale_after_s * 1000),
            z_enter=s.z_enter,
            z_exit=s.z_exit,
            cooldown_ms=int(s.alert_cooldown_s * 1000),
            outlier_z=s.outlier_z,
            adf_every_ms=int(s.adf_every_s * 1000),
            adf_window=s.adf_window,
            fee_bps=s.fee_bps,
            alert_rule=s.alert_rule,
            level_window=s.level_window,
            coint_min=s.coint_min,
        )

    @property
    def history(self) -> int:
        """Samples kept for the windows and the ADF test."""
        return max(self.ols_window, self.zscore_window, self.huber_window, self.adf_window, self.level_window)

    @property
    def level(self) -> LevelParams:
        return LevelParams(
            window=self.level_window,
            min_samples=self.level_min_samples,
            calib_every=self.calib_every,
            coint_min=self.coint_min,
            coint_half_lives=self.coint_half_lives,
            coint_every=self.coint_every,
        )


MIN_ADF_SAMPLES = 20
"""Fewest samples :func:`spread_adf` tests (fewer: no result)."""

_NO_KALMAN = KalmanResult(math.nan, math.nan, math.nan, math.nan)  # the filter has not started


def _calibrate_kalman(kf: KalmanHedge | None, cal: KalmanCalib | None, p: PairParams) -> KalmanHedge | None:
    """Apply a slow-clock calibration to the Kalman hedge: the calibrated noise, except a hand-set
    ``kalman_delta`` / ``kalman_obs_var``; a filter not yet started starts at the window's OLS fit."""
    if cal is None or (p.kalman_delta is not None and p.kalman_obs_var is not None):
        return kf
    delta = cal.delta if p.kalman_delta is None else p.kalman_delta
    obs_var = cal.obs_var if p.kalman_obs_var is None else p.kalman_obs_var
    if kf is None:
        kf = KalmanHedge(1, delta, obs_var)
        kf.reset([cal.mean], [cal.cov])
    else:
        kf.retune(delta, obs_var)
    return kf


def _f(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class Step:
    """What one sample produced: the PairSignal fields, alerts ``(kind, threshold)``, whether ADF is due,
    and per alert the Alert fields added in #20 (``spread_bp``, ``expected_reversion_bp``,
    ``round_trip_cost_bp``, ``hedge``, ``fee_bps``)."""

    signal: dict[str, Any]
    alerts: list[tuple[str, float]]
    adf_due: bool
    alert_details: list[dict[str, Any]] = field(default_factory=list)


def _spread_bp(bid: float | None, ask: float | None) -> float | None:
    if bid is None or ask is None or not (0 < bid <= ask and math.isfinite(ask)):
        return None
    return (ask - bid) / ((ask + bid) / 2) * 1e4


def round_trip_cost_bp(beta: float, fee_bps: float, y_spread_bp: float | None, x_spread_bp: float | None) -> float:
    """Cost of one round trip (in and out, both legs) in bp of the y notional: fees on y and on the
    x leg (notional ``|beta|`` times y's) twice, plus each leg's quoted spread (half in, half out)."""
    b = abs(beta)
    return 2.0 * fee_bps * (1.0 + b) + (y_spread_bp or 0.0) + b * (x_spread_bp or 0.0)


class PairModel:
    """Incremental analytics of one pair; feed aligned samples in time order with :meth:`step`."""

    def __init__(self, pair: str, params: PairParams) -> None:
        self.pair, self.p = pair, params
        self.ols = RollingOLS(params.ols_window)
        self.kalman: KalmanHedge | None = None  # None until the first calibration (unless hand-set)
        if params.kalman_delta is not None and params.kalman_obs_var is not None:
            self.kalman = KalmanHedge(1, params.kalman_delta, params.kalman_obs_var)
        self.z = RollingZScore(params.zscore_window)
        self.huber = HuberFairValue(
            params.huber_window,
            params.huber_refit_every,
            params.huber_epsilon,
            leverage_cut=params.huber_leverage_cut,
        )
        self.alert = ZAlert(params.z_enter, params.z_exit, params.cooldown_ms, rule=params.alert_rule)
        self.level = LevelSpread(params.level)
        self.scale: tuple[float, float] | None = None
        self.n = 0  # samples fed to the models
        self.last_t = -1
        self.next_adf: int | None = None
        self.hist: deque[tuple[int, float, float, float]] = deque(maxlen=params.history)  # t, x, y, spread

    def step(
        self,
        t: int,
        x: float,
        y: float,
        x_time: int,
        y_time: int,
        x_bid: float | None = None,
        x_ask: float | None = None,
        y_bid: float | None = None,
        y_ask: float | None = None,
    ) -> Step | None:
        """One aligned sample (``x_time``/``y_time``: event time of each leg's price); None if not usable.

        ``x_bid``... ``y_ask``: the best quotes at the sample time, when known; their spreads enter the
        round-trip cost (without them the cost is the fees alone)."""
        if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0) or t <= self.last_t:
            return None
        self.last_t = t
        sig: dict[str, Any] = {"time": t, "pair": self.pair, "x": x, "y": y, "n_obs": self.n}
        stale = t - x_time > self.p.stale_after_ms or t - y_time > self.p.stale_after_ms
        if stale:  # pause: keep the models as they are, publish the prices and the flag
            extra = {"coint": None, "position": -self.alert.position, "below_cost": self.alert.below_cost}
            nulls = dict.fromkeys((*SIGNAL_FIELDS, *NEW_SIGNAL_FIELDS))
            return Step({**sig, **nulls, **extra, "flags": ["stale_leg"]}, [], False)
        if self.scale is None:
            self.scale = (x, y)
        sx, sy = self.scale
        ob, oa = self.ols.update(x, y)
        k = _NO_KALMAN if self.kalman is None else self.kalman.update(x / sx, y / sy - x / sx)  # see module doc
        spread = k.error * sy  # y - (beta*x + alpha) with the prior state, in quote currency
        self.n += 1
        iz, flat = self.z.update(spread) if self.n > self.p.warmup else (math.nan, False)
        hb, ha = self.huber.update(x, y)
        self.hist.append((t, x, y, spread))
        lv = self.level.update(t, math.log(x / sx), math.log(y / sy), x, y)
        beta = lv.pop("beta", None)
        self.kalman = _calibrate_kalman(self.kalman, lv.pop("kalman"), self.p)
        z = lv["zscore"]
        flags = []
        if flat:
            flags.append("zero_variance")
        if z is not None and abs(z) > self.p.outlier_z:
            flags.append("outlier")
        if beta is not None and lv["hedge"] is None:
            flags.append("hedge_uncertain")
        vals = {
            "ols_beta": _f(ob),
            "ols_alpha": _f(oa),
            "kalman_beta": _f((k.beta + 1.0) * sy / sx),
            "kalman_alpha": _f(k.alpha * sy),
            "spread": _f(spread),
            "spread_ols": _f(y - ob * x - oa),
            "huber_beta": _f(hb),
            "huber_alpha": _f(ha),
            "fair_value": _f(hb * x + ha),
            "innovation_z": _f(iz),
            **lv,
        }
        cost = exp = None
        if beta is not None and z is not None:
            cost = round_trip_cost_bp(beta, self.p.fee_bps, _spread_bp(y_bid, y_ask), _spread_bp(x_bid, x_ask))
            target = -self.p.z_enter if self.p.alert_rule == "reverse" else self.p.z_exit
            exp = max(0.0, (abs(z) - target) * lv["spread_std_bp"])
        vals["round_trip_cost_bp"], vals["expected_reversion_bp"] = cost, exp
        if any(vals[f] is None for f in _CORE_FIELDS):
            flags.insert(0, "warming_up")
        alerts: list[tuple[str, float]] = []
        details: list[dict[str, Any]] = []
        hedged = vals["hedge"] is not None  # no entry without a hedge ratio; exits still fire
        if "outlier" not in flags and z is not None and (hedged or self.alert.position):
            blocked = self.alert.below_cost
            alerts = self.alert.update(t, z, cost_ok=hedged and exp is not None and cost is not None and exp > cost)
            if self.alert.below_cost > blocked:
                flags.append("below_cost")
            details = [
                {
                    "spread_bp": lv["spread_bp"],
                    "expected_reversion_bp": exp if kind != "exit" else None,
                    "round_trip_cost_bp": cost,
                    "hedge": vals["hedge"],
                    "fee_bps": self.p.fee_bps,
                }
                for kind, _ in alerts
            ]
        sig.update(vals, n_obs=self.n, flags=flags, position=-self.alert.position, below_cost=self.alert.below_cost)
        if self.next_adf is None:
            self.next_adf = t + self.p.adf_every_ms
        due = t >= self.next_adf
        if due:
            self.next_adf = t - t % self.p.adf_every_ms + self.p.adf_every_ms
        return Step(sig, alerts, due, details)

    def adf(self, window: int | None = None, regression: str | None = None) -> dict[str, Any] | None:
        """ADF test of the OLS residual over the last ``window`` samples (Engle-Granger's first step:
        one hedge ratio for the whole window); None while fewer than 20 samples exist."""
        w = min(window or self.p.adf_window, len(self.hist))
        if w < MIN_ADF_SAMPLES:
            return None
        rows = list(self.hist)[-w:]
        x = np.array([r[1] for r in rows])
        y = np.array([r[2] for r in rows])
        reg = regression or self.p.adf_regression
        try:
            r = spread_adf(x, y, regression=reg)
        except ValueError:
            return None
        return {
            "time": rows[-1][0], "pair": self.pair, "window": w, "stat": r.stat, "pvalue": r.pvalue,
            "lags": r.lags, "nobs": r.nobs, "crit_1": r.crit["1%"], "crit_5": r.crit["5%"],
            "crit_10": r.crit["10%"], "regression": reg, "mean_reverting": r.mean_reverting,
        }  # fmt: skip

    # -- persistence ---------------------------------------------------------------------------------
    # Per sample the state written is small: the window buffers of the kernels are left out and rebuilt
    # from the sample history (kept by the caller in chunks), which holds every fed sample.
    _BUFFERS = {"ols": ("xs", "ys"), "z": ("buf",), "huber": ("xs", "ys")}

    def state(self) -> dict[str, Any]:
        """Compact JSON-able state; restore with :meth:`from_state` and the last :attr:`PairParams.history`
        rows of :attr:`hist` (bit-identical continuation)."""
        kernels = {"ols": self.ols.state(), "z": self.z.state(), "huber": self.huber.state()}
        for name, keys in self._BUFFERS.items():
            for key in keys:
                kernels[name].pop(key)
        return {
            **kernels,
            "kalman": None if self.kalman is None else self.kalman.state(),
            "alert": self.alert.state(),
            "level": self.level.state(),
            "scale": list(self.scale) if self.scale else None,
            "n": self.n,
            "last_t": self.last_t,
            "next_adf": self.next_adf,
        }

    @classmethod
    def from_state(cls, pair: str, params: PairParams, d: dict[str, Any], hist: list[Any]) -> PairModel:
        """Restore from :meth:`state` and the history rows ``(t, x, y, spread)`` (oldest first)."""
        obj = cls(pair, params)
        # a spread undefined before the Kalman hedge starts is NaN here, null once stored as JSON
        obj.hist.extend((int(r[0]), float(r[1]), float(r[2]), math.nan if r[3] is None else float(r[3])) for r in hist)
        rows = list(obj.hist)
        n = int(d["n"])
        if len(rows) < min(n, params.history):
            raise ValueError(f"{pair}: {len(rows)} history rows restored, {min(n, params.history)} needed")

        def ring(values: list[float], window: int, pos: int) -> list[float]:
            last = values[len(values) - min(len(values), window) :]
            if len(last) < window:
                return last
            out = [0.0] * window
            for i, v in enumerate(last):
                out[(pos + i) % window] = v
            return out

        ols, z, huber = dict(d["ols"]), dict(d["z"]), dict(d["huber"])
        xs, ys = [r[1] for r in rows], [r[2] for r in rows]
        ols["xs"], ols["ys"] = ring(xs, params.ols_window, ols["pos"]), ring(ys, params.ols_window, ols["pos"])
        fed_z = max(0, n - params.warmup)  # spreads fed to the z-score
        spreads = [r[3] for r in rows][len(rows) - min(len(rows), fed_z) :]
        spreads = [v for v in spreads if math.isfinite(v)]  # NaN before the Kalman hedge starts: skipped
        z["buf"] = ring(spreads, params.zscore_window, z["pos"])
        huber["xs"], huber["ys"] = xs[-params.huber_window :], ys[-params.huber_window :]
        obj.ols = RollingOLS.from_state(ols)
        obj.z = RollingZScore.from_state(z)
        obj.huber = HuberFairValue.from_state(huber)
        obj.kalman = None if d["kalman"] is None else KalmanHedge.from_state(d["kalman"])
        obj.alert = ZAlert.from_state(d["alert"])
        obj.scale = (float(d["scale"][0]), float(d["scale"][1])) if d["scale"] else None
        if obj.scale is not None:
            sx, sy = obj.scale
            logs = [(float(r[0]), math.log(r[1] / sx), math.log(r[2] / sy)) for r in rows]
            if "level" in d:
                obj.level = LevelSpread.from_state(params.level, d["level"], logs)
            else:  # a state written before #20: rebuild the level model from the history it has
                for r, (_, lx, ly) in zip(rows, logs, strict=True):
                    obj.level.update(int(r[0]), lx, ly, r[1], r[2])
        obj.n, obj.last_t, obj.next_adf = n, int(d["last_t"]), d["next_adf"]
        return obj


def ols_residual(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Residual of one least-squares fit of y on x with a constant (centred: exact at BTC prices)."""
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float(xc @ xc)
    beta = float(xc @ yc) / sxx if sxx > 0 else 0.0
    return yc - beta * xc


def spread_adf(x: NDArray[np.float64], y: NDArray[np.float64], regression: str = "c") -> AdfResult:
    """Engle-Granger's first step: ADF test (lags by AIC) of the residual of one OLS fit of y on x.

    The one ADF of a pair's spread: the worker's periodic test (:meth:`PairModel.adf`) and the
    dashboard's on-demand test both call it. ``x``/``y`` are aligned prices, oldest first, all finite.
    Raises ValueError with fewer than :data:`MIN_ADF_SAMPLES` samples or for a series ADF cannot test.
    """
    if len(x) < MIN_ADF_SAMPLES:
        raise ValueError(f"series too short for an ADF test: {len(x)} samples, at least {MIN_ADF_SAMPLES} needed")
    return adf_test(ols_residual(x, y), regression=regression)


def _batch_calibrated_kalman(
    xs: NDArray[np.float64], ys: NDArray[np.float64], cals: list[KalmanCalib | None], params: PairParams
) -> KalmanResult[NDArray[np.float64]]:
    """The calibrated Kalman hedge over arrays: NaN until the first calibration, then the filter,
    retuned at each calibration. It runs the stream's scalar recursion: the filter started at an hour's
    hedge is ill-conditioned (slope and intercept nearly collinear at prices near 1), so its array path
    (simdkalman) drifts from the scalar one by ~1e-9 relative, rounding that says nothing about the
    composition checked here (the two paths are compared on Chan's data in tests/test_pair_kernels.py)."""
    out = [np.full(len(xs), np.nan) for _ in range(4)]
    kf: KalmanHedge | None = None
    for i in range(len(xs)):
        if kf is not None:
            for arr, v in zip(out, kf.update(float(xs[i]), float(ys[i])), strict=True):
                arr[i] = v
        kf = _calibrate_kalman(kf, cals[i], params)
    return KalmanResult(*out)


def batch_pair(t: Any, x: Any, y: Any, params: PairParams) -> dict[str, NDArray[Any]]:
    """The signal columns of :class:`PairModel` for fresh, valid samples, with the batch kernels.

    The reference for the streaming path (same numbers, see tests/test_pair_model.py) and a backtest
    entry point. Stale handling is left to the caller: pass only samples the stream would feed.
    """
    t, x, y = np.asarray(t, np.int64), np.asarray(x, np.float64), np.asarray(y, np.float64)
    sx, sy = float(x[0]), float(y[0])
    ob, oa = rolling_ols(x, y, params.ols_window)
    lv = batch_level(t, np.log(x / sx), np.log(y / sy), x, y, params.level)
    if params.kalman_delta is not None and params.kalman_obs_var is not None:
        k = kalman_hedge(x / sx, y / sy - x / sx, params.kalman_delta, params.kalman_obs_var)
    else:
        k = _batch_calibrated_kalman(x / sx, y / sy - x / sx, [r["kalman"] for r in lv], params)
    spread = k.error * sy
    z = np.full(len(t), np.nan)
    w = params.warmup
    if len(t) > w:
        z[w:] = zscore(spread[w:], params.zscore_window)
    iz = z
    lcols = {f: np.array([np.nan if r[f] is None else r[f] for r in lv]) for f in (*LEVEL_FIELDS, "beta")}
    lbeta, lz = lcols.pop("beta"), lcols["zscore"]
    known = np.isfinite(lbeta) & np.isfinite(lz)
    target = -params.z_enter if params.alert_rule == "reverse" else params.z_exit
    cost = np.where(known, 2.0 * params.fee_bps * (1.0 + np.abs(lbeta)), np.nan)
    exp_rev = np.where(known, np.maximum(0.0, (np.abs(lz) - target) * lcols["spread_std_bp"]), np.nan)
    hb = np.full(len(t), np.nan)
    ha = np.full(len(t), np.nan)
    first = min(params.huber_window, 30) - 1  # HuberFairValue's first fit (its default min_samples)
    fit_b = fit_a = np.nan
    for i in range(len(t)):
        if i >= first and (i - first) % params.huber_refit_every == 0:
            lo = max(0, i + 1 - params.huber_window)
            fit_b, fit_a = huber_fit(x[lo : i + 1], y[lo : i + 1], params.huber_epsilon, params.huber_leverage_cut)
        hb[i], ha[i] = fit_b, fit_a
    return {
        "time": t,
        "ols_beta": ob,
        "ols_alpha": oa,
        "kalman_beta": (k.beta + 1.0) * sy / sx,
        "kalman_alpha": k.alpha * sy,
        "spread": spread,
        "spread_ols": y - ob * x - oa,
        "innovation_z": iz,
        "huber_beta": hb,
        "huber_alpha": ha,
        "fair_value": hb * x + ha,
        **lcols,
        "round_trip_cost_bp": cost,
        "expected_reversion_bp": exp_rev,
        "coint": np.array([r["coint"] for r in lv], dtype=object),
    }
