"""The trading signal of a pair: z-score of the spread LEVEL on the spread's own time scale.

Why
    A pairs trade bets that the spread ``s_t = log y - beta * log x`` returns to its mean. The z-score
    a trader acts on must therefore measure how far ``s_t`` is from its equilibrium, in units of its
    own spread, and revert at the spread's own pace (its half-life). The prediction error of a
    well-tuned filter is white by construction and says nothing about that (see notes/signals.md).

How (every number re-estimated on a slow clock, every ``calib_every`` samples, from the last
``window`` samples, the cointegration test every ``coint_every`` calibrations; published once
``min_samples`` exist; nothing hand-set per market)
    - hedge: ``beta`` = slope of 1-sample log returns of y on x (:func:`~.coint.returns_hedge`) with
      its standard error; in price units ``hedge = beta * y / x`` (units of x per unit of y). A
      hedge whose standard error exceeds 100 % is not published (flag ``hedge_uncertain``).
    - half-life: AR(1) fit of ``s`` over the window (:func:`~.coint.half_life`), in seconds from the
      window's mean sample step, with its standard error.
    - z window (the rule): ``Z_HALF_LIVES`` (60) half-lives, clipped to [``min_samples``, ``window``]
      and to the samples available: long enough that the mean is the equilibrium, not a recent
      wiggle (a window of 5 half-lives correlates 0.63 with the true spread, 60 about 0.9).
    - Kalman hedge (the diagnostic ``kalman_beta``): ``obs_var`` = variance of the OLS residual of
      the window, state noise ``q = obs_var / (10 half-lives)^2`` (:func:`~.kalman.calibrated_noise`);
      a filter not yet started starts at the returns hedge with its uncertainty (:class:`KalmanCalib`).
    - per sample: ``z = (s_now - mean) / std`` over that window with the current ``beta``;
      ``spread_bp = (s_now - mean) * 1e4`` (how rich y is against its hedge, in bp of y) and
      ``spread_std_bp``.
    - cointegration: Engle-Granger in both orderings (:func:`~.coint.engle_granger_both`: log y on
      log x and log x on log y) over the window once it holds ``coint_min`` samples or
      ``coint_half_lives`` (30) estimated half-lives, whichever comes first (at least ``min_samples``:
      a daily series of 1,500 samples with a 40-day half-life gets a verdict); "cointegrated" when
      both p-values are < 0.05 (the published stat / p-value are the weaker ordering's), else
      ``insufficient_data``. One ordering alone called a market with no cointegration
      "cointegrated" in 9.3 % of 1 h windows; both: 5.4 %, detection 82 % (see :mod:`~.coint`).

The buffers are numpy arrays read as contiguous slices, so the batch function :func:`batch_level`
and the incremental :class:`LevelSpread` give the same numbers; :meth:`LevelSpread.state` leaves the
buffers out (rebuilt from the caller's sample history, as :class:`~.pair_model.PairModel` does).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rtqis.analytics.coint import engle_granger_both, half_life, returns_hedge
from rtqis.analytics.kalman import calibrated_noise

__all__ = ["COINT_VERDICTS", "Z_HALF_LIVES", "KalmanCalib", "LevelParams", "LevelSpread", "batch_level"]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
Z_HALF_LIVES = 60.0
COINT_VERDICTS = ("cointegrated", "not_cointegrated", "insufficient_data")
#: the per-sample numbers (floats; None when undefined)
LEVEL_FIELDS = (
    "zscore", "spread_bp", "spread_std_bp", "hedge", "hedge_se", "half_life_s", "half_life_se_s",
    "coint_stat", "coint_pvalue",
)  # fmt: skip


@dataclass(frozen=True)
class LevelParams:
    window: int = 3600  # samples for the hedge, the half-life, the cointegration test, the longest z window
    min_samples: int = 300  # samples before anything is published
    calib_every: int = 120  # samples between re-estimates (the slow clock; 60 measured the same figures)
    coint_min: int = 1800  # samples after which the cointegration verdict is given
    coint_half_lives: float = 30.0  # ... or estimated half-lives after which it is given (inf: samples only)
    coint_alpha: float = 0.05
    coint_every: int = 3  # calibrations between cointegration tests (the test is most of the calibration cost:
    # ~13 ms CPU per test of 3,600 samples in two orderings; hedge and half-life ~0.05 ms)


class KalmanCalib(NamedTuple):
    """What a calibration gives the pair model's Kalman hedge (:mod:`~.kalman`), on prices scaled by the
    pair's first sample (``X = x/x0``, ``Y = y/y0``) in its ``beta - 1`` parametrisation
    (``Y - X = b X + a + e``): ``delta`` and ``obs_var`` by :func:`~.kalman.calibrated_noise`, and where
    a filter that starts at this calibration starts: ``mean`` ``[b, a]`` and ``cov`` (2x2 row-major)."""

    delta: float
    obs_var: float
    mean: tuple[float, float]
    cov: tuple[float, float, float, float]


def _kalman_calib(lx: F64, ly: F64, c: _Calib) -> KalmanCalib | None:
    """The Kalman hedge's calibration from the window (scaled prices ``exp(lx)``, ``exp(ly)``).

    Hedge: the calibration's returns hedge in price units at the window's last sample
    (``dY/dX = beta * Y/X``, standard error likewise), the intercept its mean residual; where the
    returns hedge is undefined, the OLS fit of the window (a level fit, poorly identified over an hour
    of 1 s prices: see :mod:`~.coint`). ``obs_var``: the variance of the residual ``Y - X - b X - a``
    over the window (the spread the filter must not explain away). The starting covariance is that
    of ``(b, a)``: ``var(b)`` from the hedge's standard error, ``a``'s from ``var(b)`` and ``obs_var / n``.
    """
    n = len(lx)
    if n < 3:
        return None
    xs = np.exp(lx)
    ys = np.exp(ly) - xs
    xm, ym = float(xs.mean()), float(ys.mean())
    if math.isfinite(c.beta) and math.isfinite(c.beta_se):
        ratio = float(ys[-1] + xs[-1]) / float(xs[-1])
        b, vb = c.beta * ratio - 1.0, (c.beta_se * ratio) ** 2
    else:
        xc = xs - xm
        sxx = float(xc @ xc)
        if not sxx > 0:
            return None
        b, vb = float(xc @ (ys - ym)) / sxx, math.nan
    a = ym - b * xm
    res = ys - b * xs - a
    r = float(res @ res) / (n - 1)
    noise = calibrated_noise(r, c.hl, n)
    if noise is None:
        return None
    if not math.isfinite(vb):
        vb = r / float((xs - xm) @ (xs - xm))
    return KalmanCalib(noise[0], noise[1], (b, a), (vb, -xm * vb, -xm * vb, r / n + xm * xm * vb))


@dataclass
class _Calib:
    beta: float = math.nan
    beta_se: float = math.nan
    hl: float = math.nan  # samples
    hl_se: float = math.nan
    step_s: float = math.nan
    z_window: int = 0
    coint_stat: float = math.nan
    coint_p: float = math.nan
    verdict: str = "insufficient_data"
    kalman: KalmanCalib | None = None  # used once, at the calibration (not kept in the state)


def _calibrate(t: F64, lx: F64, ly: F64, p: LevelParams, prev: _Calib, fed: int) -> _Calib:
    """The slow-clock estimates from the window's samples (oldest first); ``fed``: samples fed so far.
    The verdict is re-tested every ``coint_every`` calibrations (and at every calibration until the
    first verdict); in between it is ``prev``'s."""
    c = _Calib()
    n = len(lx)
    h = returns_hedge(ly, lx)
    c.beta, c.beta_se = h.beta, h.se
    if n > 1:
        c.step_s = float(t[-1] - t[0]) / (n - 1) / 1000.0
    if math.isfinite(c.beta):
        hl = half_life(ly - c.beta * lx)
        c.hl, c.hl_se = hl.half_life, hl.se
    c.kalman = _kalman_calib(lx, ly, c)
    zw = n if not math.isfinite(c.hl) else int(round(Z_HALF_LIVES * c.hl))
    c.z_window = max(p.min_samples, min(zw, p.window, n))
    need = p.coint_min
    if math.isfinite(c.hl) and math.isfinite(p.coint_half_lives):
        need = min(need, max(p.min_samples, math.ceil(p.coint_half_lives * c.hl)))
    due = prev.verdict == "insufficient_data" or (fed - p.min_samples) % (p.calib_every * p.coint_every) == 0
    if not due:
        c.coint_stat, c.coint_p, c.verdict = prev.coint_stat, prev.coint_p, prev.verdict
    elif n >= need:
        try:
            a = engle_granger_both(ly, lx)
            c.coint_stat, c.coint_p = a.stat, a.pvalue
            c.verdict = "cointegrated" if a.pvalue < p.coint_alpha else "not_cointegrated"
        except ValueError as e:
            logger.debug("cointegration test skipped: %s", e)
            c.verdict = "not_cointegrated"
    return c


def _f(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _values(c: _Calib, lx: F64, ly: F64, x: float, y: float) -> dict[str, Any]:
    """Per-sample numbers from the current calibration and the last ``z_window`` log prices."""
    out: dict[str, Any] = dict.fromkeys(LEVEL_FIELDS)
    out["coint"] = c.verdict
    out["coint_stat"], out["coint_pvalue"] = _f(c.coint_stat), _f(c.coint_p)
    if not math.isfinite(c.beta):
        return out
    s = ly[-c.z_window :] - c.beta * lx[-c.z_window :]
    m = float(s.mean())
    sd = float(s.std())
    dev = float(s[-1]) - m
    out["spread_bp"] = dev * 1e4
    out["spread_std_bp"] = sd * 1e4
    out["zscore"] = dev / sd if sd > 0 else None
    if c.beta_se <= abs(c.beta):  # a hedge with > 100 % error is not a hedge ratio
        out["hedge"] = c.beta * y / x
        out["hedge_se"] = c.beta_se * y / x
    out["beta"] = c.beta
    out["half_life_s"] = _f(c.hl * c.step_s)
    out["half_life_se_s"] = _f(c.hl_se * c.step_s)
    return out


class LevelSpread:
    """Incremental level z-score (see the module doc). ``update(t, x, y)`` with positive prices."""

    def __init__(self, params: LevelParams) -> None:
        self.p = params
        cap = 2 * params.window
        self._t = np.empty(cap)
        self._lx = np.empty(cap)
        self._ly = np.empty(cap)
        self._k = 0  # filled length of the buffers
        self.n = 0  # samples fed
        self.c = _Calib()
        self.calibrated = False

    def _push(self, t: float, lx: float, ly: float) -> None:
        if self._k == len(self._t):  # keep the last window samples at the front
            w = self.p.window
            for a in (self._t, self._lx, self._ly):
                a[:w] = a[self._k - w : self._k]
            self._k = w
        self._t[self._k], self._lx[self._k], self._ly[self._k] = t, lx, ly
        self._k += 1

    def update(self, t: int, lx: float, ly: float, x: float, y: float) -> dict[str, Any]:
        """Feed one sample (``lx``, ``ly``: log prices relative to the pair's first sample)."""
        self._push(float(t), lx, ly)
        self.n += 1
        lo = max(0, self._k - self.p.window)
        now = self.n >= self.p.min_samples and (self.n - self.p.min_samples) % self.p.calib_every == 0
        if now:
            sl = slice(lo, self._k)
            self.c = _calibrate(self._t[sl], self._lx[sl], self._ly[sl], self.p, self.c, self.n)
            self.calibrated = True
        if not self.calibrated:
            return {**dict.fromkeys(LEVEL_FIELDS), "coint": "insufficient_data", "beta": None, "kalman": None}
        out = _values(self.c, self._lx[lo : self._k], self._ly[lo : self._k], x, y)
        out["kalman"] = self.c.kalman if now else None
        return out

    def state(self) -> dict[str, Any]:
        """JSON-safe state without the buffers (see :meth:`from_state`)."""
        c = self.c
        return {
            "n": self.n,
            "calibrated": self.calibrated,
            "calib": [
                _f(v) for v in (c.beta, c.beta_se, c.hl, c.hl_se, c.step_s, c.coint_stat, c.coint_p)
            ] + [c.z_window, c.verdict],
        }  # fmt: skip

    @classmethod
    def from_state(cls, params: LevelParams, d: dict[str, Any], rows: list[tuple[float, float, float]]) -> LevelSpread:
        """Restore from :meth:`state` and the last ``min(n, window)`` samples ``(t, lx, ly)``."""
        obj = cls(params)
        for t, lx, ly in rows[len(rows) - min(len(rows), params.window) :]:
            obj._push(t, lx, ly)
        obj.n, obj.calibrated = int(d["n"]), bool(d["calibrated"])
        v = d["calib"]
        nums = [math.nan if a is None else float(a) for a in v[:7]]
        b, b_se, hl, hl_se, step_s, c_stat, c_p = nums
        obj.c = _Calib(b, b_se, hl, hl_se, step_s, int(v[7]), c_stat, c_p, str(v[8]))
        return obj


def batch_level(t: Any, lx: Any, ly: Any, x: Any, y: Any, params: LevelParams) -> list[dict[str, Any]]:
    """:class:`LevelSpread` over whole arrays (the reference: the same slices, the same numbers)."""
    ta, lxa, lya = (np.asarray(a, np.float64) for a in (t, lx, ly))
    p = params
    c = _Calib()
    calibrated = False
    out = []
    for i in range(len(ta)):
        n = i + 1
        lo = max(0, n - p.window)
        now = n >= p.min_samples and (n - p.min_samples) % p.calib_every == 0
        if now:
            c = _calibrate(ta[lo:n], lxa[lo:n], lya[lo:n], p, c, n)
            calibrated = True
        if not calibrated:
            out.append({**dict.fromkeys(LEVEL_FIELDS), "coint": "insufficient_data", "beta": None, "kalman": None})
        else:
            row = _values(c, lxa[lo:n], lya[lo:n], float(x[i]), float(y[i]))
            row["kalman"] = c.kalman if now else None
            out.append(row)
    return out
