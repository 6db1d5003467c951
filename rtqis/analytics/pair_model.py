"""One pair's analytics per aligned sample: hedge ratios, spread, z-score, fair value, flags, alerts.

Pure (no Kafka): the worker keeps one :class:`PairModel` per pair in a Faust table, backtests run it
over arrays, and :func:`batch_pair` computes the same numbers with the batch kernels.

Models (parameters in :class:`PairParams`, from ``RTQIS_*`` settings):
- rolling OLS of y on x over ``ols_window`` samples -> ``ols_beta``, ``ols_alpha``,
  ``spread_ols = y - ols_beta*x - ols_alpha``;
- Kalman dynamic regression on prices scaled by the pair's first sample (``x/x0``, ``y/y0``: both
  near 1, so one isotropic state noise suits slope and intercept), results mapped back to prices.
  The filter estimates ``beta - 1`` in scaled units (it regresses ``y/y0 - x/x0`` on ``x/x0``), so
  its zero initial state means "the legs move in proportion" (``beta = y0/x0``), not "beta = 0":
  over minutes x barely varies and slope and intercept are hard to tell apart, so the starting point
  matters. The prediction error, hence the spread, is the same as for the plain regression.
  ``spread`` is its one-step prediction error ``y - (beta*x + alpha)`` with the state *before* the
  sample (no look-ahead: the sample cannot explain itself away), in quote currency;
- ``zscore`` = rolling z-score of ``spread`` over ``zscore_window`` samples, fed once the filter has
  seen ``warmup`` samples (its first errors, from a zero state, are huge and would swamp the window);
- Huber robust fit over ``huber_window`` samples, refitted every ``huber_refit_every`` samples ->
  ``fair_value = huber_beta*x + huber_alpha``; x values beyond 10 robust standard deviations are left
  out of the fit (Huber down-weights outlying residuals, not outlying x: a crash in x would drag it).

Flags: ``warming_up`` (some output not defined yet), ``stale_leg`` (a leg's price older than
``stale_after_ms``: models untouched, analytics null), ``zero_variance`` (flat z window), ``outlier``
(|z| > ``outlier_z``). Published numbers are finite or null, never NaN or inf.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtqis.analytics.alerts import ZAlert
from rtqis.analytics.pairs import (
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

__all__ = ["PairModel", "PairParams", "Step", "batch_pair"]

SIGNAL_FIELDS = (
    "ols_beta", "ols_alpha", "kalman_beta", "kalman_alpha", "spread", "spread_ols", "zscore",
    "huber_beta", "huber_alpha", "fair_value",
)  # fmt: skip


@dataclass(frozen=True)
class PairParams:
    ols_window: int = 300
    zscore_window: int = 300
    kalman_delta: float = 1e-6
    kalman_obs_var: float = 1e-6
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
    fee_bps: float = 10.0

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
        )

    @property
    def history(self) -> int:
        """Samples kept for the windows and the ADF test."""
        return max(self.ols_window, self.zscore_window, self.huber_window, self.adf_window)


def _f(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass
class Step:
    """What one sample produced: the PairSignal fields, alerts ``(kind, threshold)``, whether ADF is due."""

    signal: dict[str, Any]
    alerts: list[tuple[str, float]]
    adf_due: bool


class PairModel:
    """Incremental analytics of one pair; feed aligned samples in time order with :meth:`step`."""

    def __init__(self, pair: str, params: PairParams) -> None:
        self.pair, self.p = pair, params
        self.ols = RollingOLS(params.ols_window)
        self.kalman = KalmanHedge(1, params.kalman_delta, params.kalman_obs_var)
        self.z = RollingZScore(params.zscore_window)
        self.huber = HuberFairValue(
            params.huber_window,
            params.huber_refit_every,
            params.huber_epsilon,
            leverage_cut=params.huber_leverage_cut,
        )
        self.alert = ZAlert(params.z_enter, params.z_exit, params.cooldown_ms)
        self.scale: tuple[float, float] | None = None
        self.n = 0  # samples fed to the models
        self.last_t = -1
        self.next_adf: int | None = None
        self.hist: deque[tuple[int, float, float, float]] = deque(maxlen=params.history)  # t, x, y, spread

    def step(self, t: int, x: float, y: float, x_time: int, y_time: int) -> Step | None:
        """One aligned sample (``x_time``/``y_time``: event time of each leg's price); None if not usable."""
        if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0) or t <= self.last_t:
            return None
        self.last_t = t
        sig: dict[str, Any] = {"time": t, "pair": self.pair, "x": x, "y": y, "n_obs": self.n}
        stale = t - x_time > self.p.stale_after_ms or t - y_time > self.p.stale_after_ms
        if stale:  # pause: keep the models as they are, publish the prices and the flag
            return Step({**sig, **dict.fromkeys(SIGNAL_FIELDS), "flags": ["stale_leg"]}, [], False)
        if self.scale is None:
            self.scale = (x, y)
        sx, sy = self.scale
        ob, oa = self.ols.update(x, y)
        k = self.kalman.update(x / sx, y / sy - x / sx)  # beta - 1 on scaled prices: see the module doc
        spread = k.error * sy  # y - (beta*x + alpha) with the prior state, in quote currency
        self.n += 1
        z, flat = self.z.update(spread) if self.n > self.p.warmup else (math.nan, False)
        hb, ha = self.huber.update(x, y)
        self.hist.append((t, x, y, spread))
        flags = []
        if flat:
            flags.append("zero_variance")
        if math.isfinite(z) and abs(z) > self.p.outlier_z:
            flags.append("outlier")
        vals = {
            "ols_beta": _f(ob),
            "ols_alpha": _f(oa),
            "kalman_beta": _f((k.beta + 1.0) * sy / sx),
            "kalman_alpha": _f(k.alpha * sy),
            "spread": _f(spread),
            "spread_ols": _f(y - ob * x - oa),
            "zscore": _f(z),
            "huber_beta": _f(hb),
            "huber_alpha": _f(ha),
            "fair_value": _f(hb * x + ha),
        }
        if any(v is None for v in vals.values()):
            flags.insert(0, "warming_up")
        sig.update(vals, n_obs=self.n, flags=flags)
        alerts = self.alert.update(t, z) if "outlier" not in flags else []
        if self.next_adf is None:
            self.next_adf = t + self.p.adf_every_ms
        due = t >= self.next_adf
        if due:
            self.next_adf = t - t % self.p.adf_every_ms + self.p.adf_every_ms
        return Step(sig, alerts, due)

    def adf(self, window: int | None = None, regression: str | None = None) -> dict[str, Any] | None:
        """ADF test of the OLS residual over the last ``window`` samples (Engle-Granger's first step:
        one hedge ratio for the whole window); None while fewer than 20 samples exist."""
        w = min(window or self.p.adf_window, len(self.hist))
        if w < 20:
            return None
        rows = list(self.hist)[-w:]
        x = np.array([r[1] for r in rows])
        y = np.array([r[2] for r in rows])
        resid = ols_residual(x, y)
        reg = regression or self.p.adf_regression
        try:
            r = adf_test(resid, regression=reg)
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
            "kalman": self.kalman.state(),
            "alert": self.alert.state(),
            "scale": list(self.scale) if self.scale else None,
            "n": self.n,
            "last_t": self.last_t,
            "next_adf": self.next_adf,
        }

    @classmethod
    def from_state(cls, pair: str, params: PairParams, d: dict[str, Any], hist: list[Any]) -> PairModel:
        """Restore from :meth:`state` and the history rows ``(t, x, y, spread)`` (oldest first)."""
        obj = cls(pair, params)
        obj.hist.extend((int(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in hist)
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
        z["buf"] = ring(spreads, params.zscore_window, z["pos"])
        huber["xs"], huber["ys"] = xs[-params.huber_window :], ys[-params.huber_window :]
        obj.ols = RollingOLS.from_state(ols)
        obj.z = RollingZScore.from_state(z)
        obj.huber = HuberFairValue.from_state(huber)
        obj.kalman = KalmanHedge.from_state(d["kalman"])
        obj.alert = ZAlert.from_state(d["alert"])
        obj.scale = (float(d["scale"][0]), float(d["scale"][1])) if d["scale"] else None
        obj.n, obj.last_t, obj.next_adf = n, int(d["last_t"]), d["next_adf"]
        return obj


def ols_residual(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Residual of one least-squares fit of y on x with a constant (centred: exact at BTC prices)."""
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float(xc @ xc)
    beta = float(xc @ yc) / sxx if sxx > 0 else 0.0
    return yc - beta * xc


def batch_pair(t: Any, x: Any, y: Any, params: PairParams) -> dict[str, NDArray[Any]]:
    """The signal columns of :class:`PairModel` for fresh, valid samples, with the batch kernels.

    The reference for the streaming path (same numbers, see tests/test_pair_model.py) and a backtest
    entry point. Stale handling is left to the caller: pass only samples the stream would feed.
    """
    t, x, y = np.asarray(t, np.int64), np.asarray(x, np.float64), np.asarray(y, np.float64)
    sx, sy = float(x[0]), float(y[0])
    ob, oa = rolling_ols(x, y, params.ols_window)
    k = kalman_hedge(x / sx, y / sy - x / sx, params.kalman_delta, params.kalman_obs_var)
    spread = k.error * sy
    z = np.full(len(t), np.nan)
    w = params.warmup
    if len(t) > w:
        z[w:] = zscore(spread[w:], params.zscore_window)
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
        "zscore": z,
        "huber_beta": hb,
        "huber_alpha": ha,
        "fair_value": hb * x + ha,
    }
