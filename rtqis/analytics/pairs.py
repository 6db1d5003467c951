"""Pair-analytics kernels: rolling OLS, Kalman hedge ratio, Huber fair value, rolling z-score, ADF test.

What
    Each kernel comes twice: a batch function over whole numpy arrays (backtests, tests, on-demand
    requests) and an incremental object whose ``update`` takes one observation (live agents). On the same
    data both give the same numbers; the batch forms are the reference. Pure maths: no I/O, no Kafka.

Invalid observations
    A value that is NaN, +-inf or absurdly large (``abs(v) >= 1e100``, :data:`VALUE_LIMIT`; no price is
    that large and its square would overflow the running sums) is *skipped*: the incremental state is
    left exactly as it was, as if the observation had never arrived. ``update`` then reports the current
    model estimates (OLS/Kalman/Huber ``beta``, ``alpha``, unchanged) and NaN for what describes the
    observation itself (Kalman ``error``/``error_var``, the z-score). Batch functions do the same: windows
    count valid observations only, and an invalid row gets the estimate carried over from the row before.
    The Kalman filter's clock is the observation count, so a skipped observation is not a missing time
    step: it gets no predict step either. Together with "NaN until the window is full" this means the
    state never holds a NaN or inf.

Precision
    Prices near 1e5 with moves of a cent lose most of their digits in plain running sums of ``x`` and
    ``x**2`` (``var = E[x^2] - E[x]^2`` cancels ~10 of 16 digits). The incremental windows therefore keep
    sums of deviations from an *anchor* (a recent value of the series), so the sums hold only the small
    moves; the anchor is a value of the series itself, so ``x - anchor`` is exact for every ``x`` within a
    factor 2 of it (Sterbenz). Every ``window`` updates the anchor moves to the newest value and the sums
    are recomputed from the window buffer with :func:`math.fsum`, so rounding drift cannot accumulate.
    "All values in the window are equal" (variance exactly zero) is detected exactly by counting the run
    of equal trailing values, never by comparing a rounded variance with zero.

Snapshots
    ``state()`` returns a JSON-safe dict (floats, ints, bools, lists, None for NaN) and
    ``from_state(d)`` restores it; continuing after a restore gives bit-identical outputs, because JSON
    round-trips float64 exactly and the buffers keep their order.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from simdkalman import primitives

# scikit-learn and statsmodels are imported inside huber_fit/adf_test: together they take ~0.8 s to import,
# which every user of rtqis.analytics (the candle agent, the CLI) would otherwise pay.

__all__ = [
    "VALUE_LIMIT",
    "AdfResult",
    "HuberFairValue",
    "KalmanHedge",
    "KalmanResult",
    "RollingOLS",
    "RollingZScore",
    "adf_test",
    "huber_fit",
    "kalman_hedge",
    "rolling_ols",
    "zscore",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
T = TypeVar("T")

#: Values with ``abs(v) >= VALUE_LIMIT`` (and NaN/inf) are invalid observations and skipped.
VALUE_LIMIT = 1e100
_NAN = math.nan
_BLOCK = 8192  # windows per block in the batch functions: bounds memory at _BLOCK * window floats
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------- helpers
def _as_float(a: npt.ArrayLike, name: str, ndim: tuple[int, ...] = (1,)) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {arr.shape}")
    return arr


def _valid(*arrays: FloatArray) -> BoolArray:
    """True where every array holds a usable value (finite and below :data:`VALUE_LIMIT`)."""
    ok = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        with np.errstate(invalid="ignore"):
            ok &= np.abs(a) < VALUE_LIMIT
    return ok


def _check_window(window: int, minimum: int = 2, name: str = "window") -> int:
    if isinstance(window, bool) or int(window) != window or window < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {window!r}")
    return int(window)


def _carry_forward(compressed: FloatArray, ok: BoolArray) -> FloatArray:
    """Spread results computed on the valid rows back over all rows; invalid rows repeat the row before."""
    idx = np.cumsum(ok) - 1
    out = np.full(ok.shape, np.nan)
    has = idx >= 0
    out[has] = compressed[idx[has]]
    return out


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def _nan_if_none(v: float | None) -> float:
    return _NAN if v is None else float(v)


def _check_version(d: dict[str, Any], kind: str) -> None:
    if d.get("kind") != kind or d.get("version") != _STATE_VERSION:
        raise ValueError(
            f"not a {kind} state (kind={d.get('kind')!r}, version={d.get('version')!r}; "
            f"expected {kind!r}, {_STATE_VERSION})"
        )


def _windows_all_equal(w: FloatArray) -> BoolArray:
    """Exact zero-variance test per window row (a rounded variance may be 1e-30 instead of 0)."""
    return np.asarray((w == w[:, :1]).all(axis=1))


# ------------------------------------------------------------------------------------------ rolling OLS
def rolling_ols(x: npt.ArrayLike, y: npt.ArrayLike, window: int) -> tuple[FloatArray, FloatArray]:
    """Least squares ``y = beta * x + alpha`` over each trailing window of ``window`` valid observations.

    Two-pass computation (window means first, then sums of centred products) on values shifted by the
    window's last pair, so that near 1e5 the means carry no rounding of the price level; this is the
    reference the incremental :class:`RollingOLS` is tested against (within ~1e-13 of Fraction arithmetic).
    Returns ``(beta, alpha)`` as long as the input: NaN until ``window`` valid observations exist, and NaN
    where every ``x`` in the window is equal (no slope). Invalid rows (see module doc) carry the previous
    row's estimate.
    """
    xa, ya = _as_float(x, "x"), _as_float(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.shape} vs {ya.shape}")
    w = _check_window(window)
    ok = _valid(xa, ya)
    xs, ys = xa[ok], ya[ok]
    n_win = max(len(xs) - w + 1, 0)
    beta = np.full(len(xs), np.nan)
    alpha = np.full(len(xs), np.nan)
    wx_all, wy_all = (sliding_window_view(xs, w), sliding_window_view(ys, w)) if n_win else (None, None)
    for start in range(0, n_win, _BLOCK):
        assert wx_all is not None and wy_all is not None
        wx, wy = wx_all[start : start + _BLOCK], wy_all[start : start + _BLOCK]
        # shift by the window's last pair first: exact for nearby prices (Sterbenz), so the means below are
        # means of small moves, accurate to ~1e-16 of the moves rather than of the price level
        x_ref, y_ref = wx[:, -1], wy[:, -1]
        ux, uy = wx - x_ref[:, None], wy - y_ref[:, None]
        mx, my = ux.mean(axis=1), uy.mean(axis=1)
        dx, dy = ux - mx[:, None], uy - my[:, None]
        sxx = np.einsum("ij,ij->i", dx, dx)
        sxy = np.einsum("ij,ij->i", dx, dy)
        flat = _windows_all_equal(wx)
        b = np.divide(sxy, sxx, out=np.full_like(sxy, np.nan), where=~flat)
        rows = slice(start + w - 1, start + w - 1 + len(b))
        beta[rows] = b
        alpha[rows] = (y_ref + my) - b * (x_ref + mx)
    return _carry_forward(beta, ok), _carry_forward(alpha, ok)


class RollingOLS:
    """Incremental :func:`rolling_ols`: O(1) per ``update`` with anchored centred sums.

    Keeps the last ``window`` pairs, sums of ``dx = x - x0``, ``dy = y - y0``, ``dx*dx`` and ``dx*dy``
    around an anchor ``(x0, y0)``, and re-anchors on the newest pair with an exact recompute every
    ``window`` updates. Matches :func:`rolling_ols` to ~1e-12 relative on BTC/ETH 1-second prices.
    """

    __slots__ = (
        "_alpha",
        "_beta",
        "_pos",
        "_run",
        "_since",
        "_sx",
        "_sxx",
        "_sxy",
        "_sy",
        "_x0",
        "_xs",
        "_y0",
        "_ys",
        "window",
    )
    _KIND = "RollingOLS"

    def __init__(self, window: int) -> None:
        self.window = _check_window(window)
        self._xs: list[float] = []
        self._ys: list[float] = []
        self._pos = 0  # when the buffer is full: index of the oldest pair (the next to be replaced)
        self._x0 = self._y0 = 0.0
        self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._run = 0  # how many trailing x values are equal (capped at window): exact zero-variance test
        self._since = 0  # updates since the last exact recompute
        self._beta = self._alpha = _NAN

    def update(self, x: float, y: float) -> tuple[float, float]:
        """Add one pair; return ``(beta, alpha)`` for the current window (NaN while warming up or flat)."""
        if not (-VALUE_LIMIT < x < VALUE_LIMIT and -VALUE_LIMIT < y < VALUE_LIMIT):
            return self._beta, self._alpha  # invalid: skipped, state untouched
        x, y = float(x), float(y)
        xs, ys, w = self._xs, self._ys, self.window
        n = len(xs)
        if n == 0:
            self._x0, self._y0 = x, y
            self._run = 1
        else:
            self._run = min(self._run + 1, w) if x == xs[self._pos - 1] else 1
        x0, y0 = self._x0, self._y0
        dx, dy = x - x0, y - y0
        sx, sy, sxx, sxy = self._sx + dx, self._sy + dy, self._sxx + dx * dx, self._sxy + dx * dy
        if n == w:
            p = self._pos
            ox, oy = xs[p] - x0, ys[p] - y0
            sx, sy, sxx, sxy = sx - ox, sy - oy, sxx - ox * ox, sxy - ox * oy
            xs[p], ys[p] = x, y
            self._pos = p + 1 if p + 1 < w else 0
        else:
            xs.append(x)
            ys.append(y)
        self._since += 1
        if self._since >= w:
            self._recompute(x, y)
        else:
            self._sx, self._sy, self._sxx, self._sxy = sx, sy, sxx, sxy
        self._beta, self._alpha = self._estimate()
        return self._beta, self._alpha

    def _recompute(self, x0: float, y0: float) -> None:
        """Re-anchor on ``(x0, y0)`` and recompute the sums exactly from the buffer (stops drift)."""
        dxs = [v - x0 for v in self._xs]
        dys = [v - y0 for v in self._ys]
        self._x0, self._y0 = x0, y0
        self._sx, self._sy = math.fsum(dxs), math.fsum(dys)
        self._sxx = math.fsum([a * a for a in dxs])
        self._sxy = math.fsum([a * b for a, b in zip(dxs, dys, strict=True)])
        self._since = 0

    def _estimate(self) -> tuple[float, float]:
        w = self.window
        if len(self._xs) < w or self._run >= w:
            return _NAN, _NAN
        mx, my = self._sx / w, self._sy / w
        cxx = self._sxx - self._sx * mx
        if cxx <= 0.0:  # only reachable through rounding on an almost flat window
            return _NAN, _NAN
        beta = (self._sxy - self._sx * my) / cxx
        return beta, (self._y0 + my) - beta * (self._x0 + mx)

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_state` restores it bit for bit."""
        return {
            "kind": self._KIND,
            "version": _STATE_VERSION,
            "window": self.window,
            "xs": list(self._xs),
            "ys": list(self._ys),
            "pos": self._pos,
            "x0": self._x0,
            "y0": self._y0,
            "sx": self._sx,
            "sy": self._sy,
            "sxx": self._sxx,
            "sxy": self._sxy,
            "run": self._run,
            "since": self._since,
            "beta": _none_if_nan(self._beta),
            "alpha": _none_if_nan(self._alpha),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RollingOLS:
        """Restore an object saved with :meth:`state`."""
        _check_version(d, cls._KIND)
        obj = cls(int(d["window"]))
        obj._xs = [float(v) for v in d["xs"]]
        obj._ys = [float(v) for v in d["ys"]]
        obj._pos, obj._run, obj._since = int(d["pos"]), int(d["run"]), int(d["since"])
        obj._x0, obj._y0 = float(d["x0"]), float(d["y0"])
        obj._sx, obj._sy, obj._sxx, obj._sxy = (float(d[k]) for k in ("sx", "sy", "sxx", "sxy"))
        obj._beta, obj._alpha = _nan_if_none(d["beta"]), _nan_if_none(d["alpha"])
        return obj


# -------------------------------------------------------------------------------------------- z-score
def zscore(spread: npt.ArrayLike, window: int) -> FloatArray:
    """Rolling z-score ``(v - mean) / std`` of each value against the trailing ``window`` valid values.

    The window includes the value itself. ``std`` is the *population* standard deviation (ddof=0): the
    window is the whole reference set the current value is judged against, not a sample from which a
    wider variance is estimated, and ddof=0 is what streaming engines and most trading code use
    (ddof=1 would scale z by ``sqrt((window-1)/window)``). NaN until the window is full, NaN (never inf)
    where every value in the window is equal, NaN at invalid inputs. Two-pass on values shifted by the
    current value: a plain ``mean`` of values near 5e4 is off by ~1e-11, which is 1e-8 of a z-score when
    the window's std is a few thousandths.
    """
    v = _as_float(spread, "spread")
    w = _check_window(window)
    ok = _valid(v)
    vs = v[ok]
    z = np.full(len(vs), np.nan)
    n_win = max(len(vs) - w + 1, 0)
    win_all = sliding_window_view(vs, w) if n_win else None
    for start in range(0, n_win, _BLOCK):
        assert win_all is not None
        win = win_all[start : start + _BLOCK]
        u = win - win[:, -1:]  # deviations from the current value: exact for nearby values (Sterbenz)
        m = u.mean(axis=1)
        d = u - m[:, None]
        sd = np.sqrt(np.einsum("ij,ij->i", d, d) / w)
        flat = _windows_all_equal(win)
        z[start + w - 1 : start + w - 1 + len(m)] = np.divide(-m, sd, out=np.full_like(sd, np.nan), where=~flat)
    out = np.full(v.shape, np.nan)
    out[ok] = z
    return out


class RollingZScore:
    """Incremental :func:`zscore` (population std) with anchored sums; O(1) per ``update``."""

    __slots__ = ("_buf", "_pos", "_run", "_s1", "_s2", "_since", "_v0", "window")
    _KIND = "RollingZScore"

    def __init__(self, window: int) -> None:
        self.window = _check_window(window)
        self._buf: list[float] = []
        self._pos = 0
        self._v0 = 0.0
        self._s1 = self._s2 = 0.0
        self._run = 0
        self._since = 0

    @property
    def zero_variance(self) -> bool:
        """True when the window is full and all its values are equal (the z-score is then undefined)."""
        return len(self._buf) == self.window and self._run >= self.window

    def update(self, v: float) -> tuple[float, bool]:
        """Add one value; return ``(z, zero_variance)``. ``z`` is NaN while warming up, on a flat window
        (then ``zero_variance`` is True) and for an invalid value (skipped; the flag describes the window)."""
        if not -VALUE_LIMIT < v < VALUE_LIMIT:
            return _NAN, self.zero_variance
        v = float(v)
        buf, w = self._buf, self.window
        n = len(buf)
        if n == 0:
            self._v0 = v
            self._run = 1
        else:
            self._run = min(self._run + 1, w) if v == buf[self._pos - 1] else 1
        d = v - self._v0
        s1, s2 = self._s1 + d, self._s2 + d * d
        if n == w:
            p = self._pos
            o = buf[p] - self._v0
            s1, s2 = s1 - o, s2 - o * o
            buf[p] = v
            self._pos = p + 1 if p + 1 < w else 0
        else:
            buf.append(v)
        self._since += 1
        if self._since >= w:
            ds = [u - v for u in buf]
            self._v0, self._s1, self._s2 = v, math.fsum(ds), math.fsum([a * a for a in ds])
            self._since = 0
            d = 0.0
        else:
            self._s1, self._s2 = s1, s2
        if n + 1 < w:
            return _NAN, False
        if self._run >= w:
            return _NAN, True
        m = self._s1 / w
        var = (self._s2 - self._s1 * m) / w
        if var <= 0.0:  # rounding on an almost flat window
            return _NAN, False
        return (d - m) / math.sqrt(var), False

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_state` restores it bit for bit."""
        return {
            "kind": self._KIND,
            "version": _STATE_VERSION,
            "window": self.window,
            "buf": list(self._buf),
            "pos": self._pos,
            "v0": self._v0,
            "s1": self._s1,
            "s2": self._s2,
            "run": self._run,
            "since": self._since,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> RollingZScore:
        """Restore an object saved with :meth:`state`."""
        _check_version(d, cls._KIND)
        obj = cls(int(d["window"]))
        obj._buf = [float(v) for v in d["buf"]]
        obj._pos, obj._run, obj._since = int(d["pos"]), int(d["run"]), int(d["since"])
        obj._v0, obj._s1, obj._s2 = float(d["v0"]), float(d["s1"]), float(d["s2"])
        return obj


# ------------------------------------------------------------------------------------------- Kalman
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


# ------------------------------------------------------------------------------------ Huber fair value
def _robust_centre_scale(v: FloatArray) -> tuple[float, float]:
    """Median and MAD-based scale (std if the MAD is 0; 0 if constant): outliers barely shift either."""
    med = float(np.median(v))
    scale = 1.4826 * float(np.median(np.abs(v - med)))
    if scale == 0.0:
        scale = float(np.std(v))
    return med, scale


def huber_fit(
    x: npt.ArrayLike, y: npt.ArrayLike, epsilon: float = 1.35, leverage_cut: float | None = None
) -> tuple[float, float]:
    """Robust fit ``y ~ beta * x + alpha`` with :class:`~sklearn.linear_model.HuberRegressor` (no L2 penalty).

    The fair value of y is ``beta * x + alpha``. x and y are centred on their medians and scaled by their
    MADs before fitting (BTC near 9e4 against ETH near 3e3 would otherwise leave L-BFGS badly
    conditioned); the Huber fit with its jointly estimated scale is affine-equivariant, so this changes
    the conditioning, not the answer, and the coefficients are mapped back to the original units.
    Invalid pairs are dropped. Returns NaN when x is constant; raises ValueError below 3 valid pairs.

    Huber down-weights outlying *residuals* (a flash crash in y) but not outlying *x* values: one x at
    half the price is a leverage point that drags beta to ~0 exactly as in OLS. ``leverage_cut`` (off by
    default; 10 is a sensible value) drops pairs whose x lies more than that many robust standard
    deviations (1.4826 * MAD) from the median of x before fitting.
    """
    xa, ya = _as_float(x, "x"), _as_float(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.shape} vs {ya.shape}")
    if not epsilon >= 1.0:
        raise ValueError(f"epsilon must be >= 1.0 (HuberRegressor), got {epsilon!r}")
    ok = _valid(xa, ya)
    xa, ya = xa[ok], ya[ok]
    if len(xa) < 3:
        raise ValueError(f"huber_fit needs at least 3 valid (x, y) pairs, got {len(xa)}")
    mx, sx = _robust_centre_scale(xa)
    if sx > 0.0 and leverage_cut is not None:
        keep = np.abs(xa - mx) <= leverage_cut * sx
        if not keep.all():
            xa, ya = xa[keep], ya[keep]
            if len(xa) < 3:
                return _NAN, _NAN
            mx, sx = _robust_centre_scale(xa)
    if sx == 0.0:
        return _NAN, _NAN
    my, sy = _robust_centre_scale(ya)
    if sy == 0.0:
        sy = 1.0
    from sklearn.linear_model import HuberRegressor

    model = HuberRegressor(epsilon=epsilon, alpha=0.0, max_iter=1000)
    model.fit(((xa - mx) / sx)[:, None], (ya - my) / sy)
    beta = float(model.coef_[0]) * sy / sx
    alpha = my + sy * float(model.intercept_) - beta * mx
    return beta, alpha


class HuberFairValue:
    """Rolling Huber fit over the last ``window`` pairs, refitted every ``refit_every`` valid samples.

    A Huber fit costs milliseconds, so it is not redone on every tick. The first fit happens as soon as
    ``min(window, min_samples)`` valid pairs exist (default 30: fewer points give an unstable scale
    estimate); after that every ``refit_every`` valid pairs. ``update`` returns the latest fit
    (NaN before the first one).
    """

    __slots__ = (
        "_alpha",
        "_beta",
        "_since_fit",
        "_xs",
        "_ys",
        "epsilon",
        "leverage_cut",
        "min_samples",
        "refit_every",
        "window",
    )
    _KIND = "HuberFairValue"

    def __init__(
        self,
        window: int,
        refit_every: int = 10,
        epsilon: float = 1.35,
        min_samples: int = 30,
        leverage_cut: float | None = None,
    ) -> None:
        self.window = _check_window(window, 3)
        self.refit_every = _check_window(refit_every, 1, "refit_every")
        self.min_samples = _check_window(min_samples, 3, "min_samples")
        if not epsilon >= 1.0:
            raise ValueError(f"epsilon must be >= 1.0 (HuberRegressor), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.leverage_cut = None if leverage_cut is None else float(leverage_cut)
        self._xs: deque[float] = deque(maxlen=self.window)
        self._ys: deque[float] = deque(maxlen=self.window)
        self._since_fit: int | None = None  # None until the first fit
        self._beta = self._alpha = _NAN

    @property
    def first_fit_at(self) -> int:
        """Valid samples needed before the first fit: ``min(window, min_samples)``."""
        return min(self.window, self.min_samples)

    def update(self, x: float, y: float) -> tuple[float, float]:
        """Add one pair; refit when due; return the latest ``(beta, alpha)``."""
        if not (-VALUE_LIMIT < x < VALUE_LIMIT and -VALUE_LIMIT < y < VALUE_LIMIT):
            return self._beta, self._alpha
        self._xs.append(float(x))
        self._ys.append(float(y))
        if self._since_fit is None:
            due = len(self._xs) >= self.first_fit_at
        else:
            self._since_fit += 1
            due = self._since_fit >= self.refit_every
        if due:
            self._beta, self._alpha = huber_fit(np.array(self._xs), np.array(self._ys), self.epsilon, self.leverage_cut)
            self._since_fit = 0
        return self._beta, self._alpha

    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot; :meth:`from_state` restores it bit for bit."""
        return {
            "kind": self._KIND,
            "version": _STATE_VERSION,
            "window": self.window,
            "refit_every": self.refit_every,
            "epsilon": self.epsilon,
            "min_samples": self.min_samples,
            "leverage_cut": self.leverage_cut,
            "xs": list(self._xs),
            "ys": list(self._ys),
            "since_fit": self._since_fit,
            "beta": _none_if_nan(self._beta),
            "alpha": _none_if_nan(self._alpha),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> HuberFairValue:
        """Restore an object saved with :meth:`state`."""
        _check_version(d, cls._KIND)
        obj = cls(
            int(d["window"]), int(d["refit_every"]), float(d["epsilon"]), int(d["min_samples"]), d["leverage_cut"]
        )
        obj._xs.extend(float(v) for v in d["xs"])
        obj._ys.extend(float(v) for v in d["ys"])
        obj._since_fit = None if d["since_fit"] is None else int(d["since_fit"])
        obj._beta, obj._alpha = _nan_if_none(d["beta"]), _nan_if_none(d["alpha"])
        return obj


# ---------------------------------------------------------------------------------------------- ADF
class AdfResult(NamedTuple):
    """Augmented Dickey-Fuller test: statistic, MacKinnon p-value, lags used, observations in the
    regression, critical values ``{"1%", "5%", "10%"}``, and ``mean_reverting`` (``pvalue < 0.05``)."""

    stat: float
    pvalue: float
    lags: int
    nobs: int
    crit: dict[str, float]
    mean_reverting: bool


_ADF_REGRESSIONS = {"c": 1, "ct": 2, "ctt": 3, "n": 0}
_ADF_AUTOLAGS = ("AIC", "BIC", "t-stat", None)


def _adf_design(s: npt.NDArray[np.float64], lags: int, ntrend: int) -> tuple[npt.NDArray[np.float64], ...]:
    """statsmodels' ADF regression on ``lags`` lagged differences: y = diff(s)[lags:], columns
    [level, diff lag 1..lags, 1, t, t^2][: 1 + lags + ntrend] (trend t counts from 1)."""
    d = np.diff(s)
    nobs = len(d) - lags
    cols = [s[lags : lags + nobs]] + [d[lags - j : lags - j + nobs] for j in range(1, lags + 1)]
    t = np.arange(1, nobs + 1, dtype=np.float64)
    cols += [np.ones(nobs), t, t * t][:ntrend]
    return np.column_stack(cols), d[lags:]


def _full_rank(r: npt.NDArray[np.float64]) -> bool:
    diag = np.abs(np.diag(r))
    return bool(diag.size and diag.min() > diag.max() * r.shape[0] * 1e-10)


def _adf_lstsq(
    s: npt.NDArray[np.float64], regression: str, autolag: str | None, maxlag: int
) -> tuple[float, float, int, int, dict[str, float]] | None:
    """``adfuller`` (AIC / BIC / no lag search) with one QR per regression instead of statsmodels' 1 +
    maxlag OLS fits: ~20x faster on a 600-sample window, the same numbers to ~1e-12 (tests compare the
    two). Lag search: every candidate regression uses the same rows (the ``maxlag`` design) and its
    columns are a prefix of the full design's [trend, level, lags] order, so each one's residual sum of
    squares comes from one QR: ssr_k = ssr_full + sum((Q'y)[k:]^2). None when a regression is rank
    deficient (statsmodels' pinv then decides)."""
    from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp

    ntrend = _ADF_REGRESSIONS[regression]
    lags = maxlag
    if autolag is not None:
        x, y = _adf_design(s, maxlag, ntrend)
        x = np.column_stack([x[:, 1 + maxlag :], x[:, : 1 + maxlag]])  # trend first, as adfuller's search
        q, r = np.linalg.qr(x)
        if not _full_rank(r):
            return None
        z = q.T @ y
        ssr_full = float(np.sum((y - q @ z) ** 2))
        tail = np.cumsum((z * z)[::-1])[::-1]  # tail[k] = sum(z[k:]^2)
        n = len(y)
        best: tuple[float, int] | None = None
        for lag in range(maxlag + 1):
            k = ntrend + 1 + lag
            ssr = ssr_full + (float(tail[k]) if k < len(z) else 0.0)
            llf = -n / 2 * math.log(2 * math.pi) - n / 2 * math.log(ssr / n) - n / 2
            ic = -2 * llf + (2 if autolag == "AIC" else math.log(n)) * k
            if best is None or (ic, lag) < best:
                best = (ic, lag)
        assert best is not None
        lags = best[1]
    x, y = _adf_design(s, lags, ntrend)
    q, r = np.linalg.qr(x)
    if not _full_rank(r):
        return None
    coef = np.linalg.solve(r, q.T @ y)
    resid = y - x @ coef
    dof = len(y) - x.shape[1]
    sigma2 = float(resid @ resid) / dof
    rinv_row0 = np.linalg.solve(r.T, np.eye(x.shape[1])[:, 0])  # R^-T e0 = (row 0 of R^-1)
    stat = float(coef[0]) / math.sqrt(sigma2 * float(rinv_row0 @ rinv_row0))
    crit = mackinnoncrit(N=1, regression=regression, nobs=len(y))
    return (
        stat,
        float(mackinnonp(stat, regression=regression, N=1)),
        lags,
        len(y),
        dict(zip(("1%", "5%", "10%"), crit, strict=True)),
    )


def adf_test(
    series: npt.ArrayLike, regression: str = "c", autolag: str | None = "AIC", maxlag: int | None = None
) -> AdfResult:
    """ADF unit-root test of ``series`` via statsmodels ``adfuller`` (H0: unit root, i.e. no mean reversion).

    Invalid values are dropped first (as the incremental kernels skip them). ``maxlag=None`` lets
    statsmodels choose ``12 * (nobs / 100) ** 0.25``; ``autolag=None`` uses exactly ``maxlag`` lags.
    Raises ValueError with a plain message for a series too short for the requested lags, a constant
    series, or a degenerate regression (non-finite statistic), where statsmodels fails obscurely.

    For the residual of an *estimated* hedge ratio (Engle-Granger) the p-value and ``crit`` here are the
    plain ADF ones and overstate significance: the cointegration critical values are stricter (two
    series, constant: about -3.90 / -3.34 / -3.04 at 1% / 5% / 10%).
    """
    if regression not in _ADF_REGRESSIONS:
        raise ValueError(f"regression must be one of {sorted(_ADF_REGRESSIONS)}, got {regression!r}")
    if autolag not in _ADF_AUTOLAGS:
        raise ValueError(f"autolag must be one of {_ADF_AUTOLAGS}, got {autolag!r}")
    if maxlag is not None and (isinstance(maxlag, bool) or int(maxlag) != maxlag or maxlag < 0):
        raise ValueError(f"maxlag must be a non-negative integer or None, got {maxlag!r}")
    s = _as_float(series, "series")
    s = s[_valid(s)]
    n, ntrend = len(s), _ADF_REGRESSIONS[regression]
    if n and float(np.ptp(s)) == 0.0:
        raise ValueError(f"ADF test of a constant series ({n} values all equal to {s[0]!r}) is undefined")
    lags = maxlag if maxlag is not None else min(n // 2 - ntrend - 1, math.ceil(12.0 * (n / 100.0) ** 0.25))
    # statsmodels needs lags <= n//2 - ntrend - 1; the regression also needs a residual degree of freedom:
    # (n - 1 - lags) rows against (1 + lags + ntrend) columns.
    needed = max(2 * lags + 2 * ntrend + 2, 2 * lags + ntrend + 3)
    if lags < 0 or n < needed:
        raise ValueError(
            f"series too short for an ADF test: {n} valid values, but regression={regression!r} with "
            f"{max(lags, 0)} lags needs at least {max(needed, 2 * ntrend + 2)}"
        )
    res = _adf_lstsq(s, regression, autolag, int(lags)) if autolag != "t-stat" else None
    if res is None:  # t-stat lag selection, or a rank-deficient regression: statsmodels itself
        from statsmodels.tsa.stattools import adfuller

        kwargs: dict[str, Any] = {"maxlag": int(lags), "regression": regression, "autolag": autolag}
        try:
            res = adfuller(s, result_object=False, **kwargs)  # statsmodels >= 0.15: silence the FutureWarning
        except TypeError:
            res = adfuller(s, **kwargs)  # statsmodels 0.14 has no result_object
    stat, pvalue, usedlag, nobs, crit = res[:5]
    if not math.isfinite(stat):
        raise ValueError(f"ADF regression is degenerate (statistic {stat}); is the series a perfect trend?")
    return AdfResult(
        stat=float(stat),
        pvalue=float(pvalue),
        lags=int(usedlag),
        nobs=int(nobs),
        crit={k: float(v) for k, v in crit.items()},
        mean_reverting=bool(pvalue < 0.05),
    )
