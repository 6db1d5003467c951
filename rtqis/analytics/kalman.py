"""Kalman hedge ratio (Chan's dynamic regression ``y_t = beta_t * x_t + alpha_t + e_t``):
:func:`kalman_hedge` (batch, N pairs at once), :class:`KalmanHedge` (one observation per ``update``) and
their :class:`KalmanResult`.

Units: ``beta`` in units of y per unit of x, ``alpha`` and ``error`` in units of y, ``error_var`` in
units of y squared; ``delta`` and ``obs_var`` as in Chan, *Algorithmic Trading* (2013), ch. 3.
Reference: Chan's published EWA/EWC end values (beta 0.902417, alpha 6.769111) and a plain numpy
recursion of the model, independent of simdkalman, to 1e-10 relative (tests/test_pair_kernels.py).
Invalid observations and snapshots follow the rules in :mod:`rtqis.analytics.pairs`.

Calibrated noise (:func:`calibrated_noise`, issue #20 item 3): Chan hand-sets ``delta`` and ``obs_var``
per market. Derived from the data instead, on the pair model's slow clock (:mod:`~.level`):
``obs_var`` = the variance over the calibration window of the residual of the hedge the filter starts
at (the spread the filter must not explain away), and the state noise from the spread's half-life ``h``
(samples): a state-to-observation noise ratio ``q / obs_var = 1 / (K h)^2`` with ``K`` =
:data:`HEDGE_HALF_LIVES` (10): the hedge drifts on a scale ten times slower than the spread reverts.
``delta = q / (1 + q)``; on the synthetic market ``obs_var`` ~2e-6 and ``delta`` ~7e-12 (1 s samples,
h ~ 55 s), on Chan's EWA/EWC (daily) ~7e-3 and ~4e-8 (scaled prices).
Why these (notes/signals.md, 8 seeds x 4 h, hours 2-4): a filter so calibrated has a prediction error
that follows the spread's level (normalised by its predicted std: correlation 0.90 with the true
spread, against 0.07 for the hand-set ``delta = obs_var = 1e-6``, ``q/r = 1``); gross bp per round trip
of alerts on it against ``q/r``: 0.28 at 1, 12.3 at 1e-4, 17.5 at 1e-5, 21.4 at 1e-6 (1/(10 h)^2 ~ 3e-6).
Re-measured as the pair model runs it (``python -m rtqis.evaluation``; ``kalman_beta`` against the
true dy/dx): on a market started at hedge 0.8 relative RMSE 24.9 % hand-set -> 13.7 % calibrated; on
the default market 3.4 % -> 10.9 % (there the hand-set filter's constant start y0/x0 happens to be the
truth); 10-minute moves 0.08 -> 2.4 times the true hedge's (it now moves, noisily: slope and intercept
are nearly collinear at prices near 1 over an hour). The trading z uses the returns hedge (9.7 % on
the 0.8 market), not this filter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt
from simdkalman import primitives

from rtqis.analytics._common import (
    _NAN,
    _STATE_VERSION,
    VALUE_LIMIT,
    FloatArray,
    _as_float,
    _check_version,
    _valid,
)

__all__ = ["HEDGE_HALF_LIVES", "KalmanHedge", "KalmanResult", "calibrated_noise", "kalman_hedge"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

HEDGE_HALF_LIVES = 10.0
"""The hedge's time scale in spread half-lives: ``q / obs_var = 1 / (HEDGE_HALF_LIVES * h)^2``."""


def calibrated_noise(resid_var: float, half_life: float, n: int) -> tuple[float, float] | None:
    """``(delta, obs_var)`` from the residual variance of a level fit (units of y squared) and the
    spread's half-life in samples (NaN when no mean reversion was measured: the window's ``n`` samples
    stand for the time scale instead). None when the residual variance is not positive and finite."""
    if not 0.0 < resid_var < math.inf:
        return None
    scale = HEDGE_HALF_LIVES * half_life if math.isfinite(half_life) and half_life > 0 else float(max(n, 1))
    q = resid_var / scale**2
    return q / (1.0 + q), resid_var


class KalmanResult(NamedTuple, Generic[T]):
    """Per-observation Kalman outputs: filtered ``beta``/``alpha`` (after seeing the observation), the
    one-step prediction ``error`` ``y - (beta_prior * x + alpha_prior)`` and its variance ``error_var``."""

    beta: T
    alpha: T
    error: T
    error_var: T


def _kalman_constants(delta: float, obs_var: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not 0.0 < obs_var < math.inf:
        raise ValueError(f"obs_var must be positive and finite, got {obs_var!r}")
    return np.eye(2), np.eye(2) * (delta / (1.0 - delta)), np.array([[obs_var]])


def _kalman_step(
    mean: FloatArray,
    cov: FloatArray,
    x: FloatArray,
    y: FloatArray,
    consts: tuple[FloatArray, FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray, KalmanResult[FloatArray]]:
    """One predict + update for N pairs at once; ``mean`` is (N, 2, 1), ``cov`` (N, 2, 2), ``x``/``y`` (N,).

    Pairs with an invalid x or y keep their state unchanged and get NaN error/error_var.
    """
    transition, process_noise, obs_noise = consts
    ok = _valid(x, y)
    all_ok = bool(ok.all())
    if not all_ok:  # keep NaN out of the matrix products; these pairs are reverted below
        x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    obs_model = np.ones((len(x), 1, 2))
    obs_model[:, 0, 0] = x
    prior_mean, prior_cov = primitives.predict(mean, cov, transition, process_noise)
    pred_y, pred_var = primitives.predict_observation(prior_mean, prior_cov, obs_model, obs_noise)
    post_mean, post_cov = primitives.update(prior_mean, prior_cov, obs_model, obs_noise, y[:, None, None])
    error, error_var = y - pred_y[:, 0, 0], pred_var[:, 0, 0].copy()
    if not all_ok:
        post_mean = np.where(ok[:, None, None], post_mean, mean)
        post_cov = np.where(ok[:, None, None], post_cov, cov)
        error[~ok] = np.nan
        error_var[~ok] = np.nan
    return post_mean, post_cov, KalmanResult(post_mean[:, 0, 0], post_mean[:, 1, 0], error, error_var)


def kalman_hedge(
    x: npt.ArrayLike, y: npt.ArrayLike, delta: float = 1e-4, obs_var: float = 1e-3
) -> KalmanResult[FloatArray]:
    """Dynamic regression ``y_t = beta_t * x_t + alpha_t + e_t`` (Chan's Kalman hedge ratio).

    State ``[beta, alpha]`` follows a random walk with covariance ``delta / (1 - delta) * I``; observation
    variance ``obs_var``; state and covariance start at zero and a predict step precedes *every* update
    (the first prior covariance is the process noise, so the first observation already moves the state).
    ``x``, ``y`` of shape (T,) or (T, N) for N independent pairs, filtered together so N pairs cost about
    one pair's Python overhead; every output has the input's shape. Invalid observations leave that pair's
    state unchanged (``beta``/``alpha`` repeat, ``error``/``error_var`` NaN), exactly as :class:`KalmanHedge`.
    """
    xa, ya = _as_float(x, "x", (1, 2)), _as_float(y, "y", (1, 2))
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in shape: {xa.shape} vs {ya.shape}")
    x2, y2 = (xa[:, None], ya[:, None]) if xa.ndim == 1 else (xa, ya)
    n_steps, n_pairs = x2.shape
    kf = KalmanHedge(n_pairs, delta, obs_var)
    out = [np.empty((n_steps, n_pairs)) for _ in range(4)]
    for t in range(n_steps):
        for arr, col in zip(out, kf._step(x2[t], y2[t]), strict=True):
            arr[t] = col
    shaped = [a[:, 0] if xa.ndim == 1 else a for a in out]
    return KalmanResult(*shaped)


class KalmanHedge:
    """Incremental :func:`kalman_hedge` for ``n_pairs`` pairs filtered together (simdkalman primitives).

    One pair fed scalars (the stream's case: one sample at a time) runs the same predict + update in
    float arithmetic instead: simdkalman's numpy calls on 2x2 arrays cost ~50 microseconds a step, the
    arithmetic ~3. Both give the same numbers to rounding (tests: 1e-12 against the array path and the
    independent recursion); either path can continue the other's state.
    """

    __slots__ = ("_consts", "_cov", "_mean", "_q", "_scalar", "delta", "n_pairs", "obs_var")
    _KIND = "KalmanHedge"

    def __init__(self, n_pairs: int = 1, delta: float = 1e-4, obs_var: float = 1e-3) -> None:
        if isinstance(n_pairs, bool) or int(n_pairs) != n_pairs or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
        self.n_pairs, self.delta, self.obs_var = int(n_pairs), float(delta), float(obs_var)
        self._consts = _kalman_constants(self.delta, self.obs_var)
        self._q = float(self._consts[1][0, 0])
        self._mean = np.zeros((self.n_pairs, 2, 1))
        self._cov = np.zeros((self.n_pairs, 2, 2))
        self._scalar: list[float] | None = None  # [beta, alpha, P00, P01, P10, P11] while the scalar path runs

    def _arrays(self) -> None:
        """Bring the arrays up to date with the scalar path's state."""
        if self._scalar is not None:
            b, a, p00, p01, p10, p11 = self._scalar
            self._mean = np.array([[[b], [a]]])
            self._cov = np.array([[[p00, p01], [p10, p11]]])
            self._scalar = None

    @property
    def beta(self) -> FloatArray:
        """Current filtered slopes, shape (N,)."""
        self._arrays()
        return self._mean[:, 0, 0].copy()

    @property
    def alpha(self) -> FloatArray:
        """Current filtered intercepts, shape (N,)."""
        self._arrays()
        return self._mean[:, 1, 0].copy()

    def retune(self, delta: float, obs_var: float) -> None:
        """New state noise and observation variance from the next step on; the state is kept."""
        consts = _kalman_constants(float(delta), float(obs_var))
        self.delta, self.obs_var, self._consts = float(delta), float(obs_var), consts
        self._q = float(consts[1][0, 0])

    def reset(self, mean: npt.ArrayLike, cov: npt.ArrayLike) -> None:
        """Set the state: ``mean`` ``[beta, alpha]`` per pair, shape (N, 2), and ``cov`` shape (N, 2, 2)."""
        m = np.asarray(mean, dtype=np.float64).reshape(self.n_pairs, 2, 1)
        c = np.asarray(cov, dtype=np.float64).reshape(self.n_pairs, 2, 2)
        if not (np.isfinite(m).all() and np.isfinite(c).all()):
            raise ValueError("KalmanHedge state must be finite")
        self._mean, self._cov, self._scalar = m.copy(), c.copy(), None

    def _step(self, x: FloatArray, y: FloatArray) -> KalmanResult[FloatArray]:
        self._arrays()
        self._mean, self._cov, res = _kalman_step(self._mean, self._cov, x, y, self._consts)
        return res

    def _step_scalar(self, x: float, y: float) -> KalmanResult[float]:
        """One pair: :func:`_kalman_step` written out (transition I, noise ``q*I``, observation ``[x, 1]``)."""
        st = self._scalar
        if st is None:
            st = self._mean[0, :, 0].tolist() + self._cov[0].ravel().tolist()
        b, a, p00, p01, p10, p11 = st
        if not (-VALUE_LIMIT < x < VALUE_LIMIT and -VALUE_LIMIT < y < VALUE_LIMIT):  # NaN fails too
            self._scalar = st
            return KalmanResult(b, a, _NAN, _NAN)
        r00, r11 = p00 + self._q, p11 + self._q  # predict: P + Q (random walk)
        rh0, rh1 = r00 * x + p01, p10 * x + r11  # R h'
        var = x * rh0 + rh1 + self.obs_var  # h R h' + obs_var
        err = y - (x * b + a)
        k0, k1 = rh0 / var, rh1 / var
        hr0, hr1 = x * r00 + p10, x * p01 + r11  # h R
        b, a = b + k0 * err, a + k1 * err
        self._scalar = [b, a, r00 - k0 * hr0, p01 - k0 * hr1, p10 - k1 * hr0, r11 - k1 * hr1]
        return KalmanResult(b, a, err, var)

    @overload
    def update(self, x: float, y: float) -> KalmanResult[float]: ...
    @overload
    def update(self, x: FloatArray | Sequence[float], y: FloatArray | Sequence[float]) -> KalmanResult[FloatArray]: ...
    def update(self, x: Any, y: Any) -> KalmanResult[Any]:
        """One observation per pair: scalars (one pair) give floats, arrays of length N give (N,) arrays."""
        if self.n_pairs == 1 and isinstance(x, float) and isinstance(y, float):
            return self._step_scalar(float(x), float(y))
        xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        scalar = xa.ndim == 0 and ya.ndim == 0
        if scalar and self.n_pairs != 1:
            raise ValueError(f"scalar observation given to a filter of {self.n_pairs} pairs")
        xa, ya = xa.reshape(-1), ya.reshape(-1)
        if xa.shape != (self.n_pairs,) or ya.shape != (self.n_pairs,):
            raise ValueError(f"expected x and y of length {self.n_pairs}, got shapes {xa.shape} and {ya.shape}")
        res = self._step(xa, ya)
        if scalar:
            return KalmanResult(*(float(v[0]) for v in res))
        return res

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot (floats in nested lists); :meth:`from_state` restores it bit for bit."""
        if self._scalar is not None:
            b, a, p00, p01, p10, p11 = self._scalar
            mean, cov = [[b, a]], [[[p00, p01], [p10, p11]]]
        else:
            mean, cov = self._mean[:, :, 0].tolist(), self._cov.tolist()
        return {
            "kind": self._KIND,
            "version": _STATE_VERSION,
            "n_pairs": self.n_pairs,
            "delta": self.delta,
            "obs_var": self.obs_var,
            "mean": mean,
            "cov": cov,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> KalmanHedge:
        """Restore an object saved with :meth:`state`."""
        _check_version(d, cls._KIND)
        obj = cls(int(d["n_pairs"]), float(d["delta"]), float(d["obs_var"]))
        mean = np.asarray(d["mean"], dtype=np.float64).reshape(obj.n_pairs, 2, 1)
        cov = np.asarray(d["cov"], dtype=np.float64).reshape(obj.n_pairs, 2, 2)
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise ValueError("KalmanHedge state holds non-finite numbers")
        obj._mean, obj._cov = mean, cov
        return obj
