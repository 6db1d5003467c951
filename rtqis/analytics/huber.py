"""Huber fair value of y against x: :func:`huber_fit` (one robust fit) and :class:`HuberFairValue`
(rolling window, refitted every ``refit_every`` valid pairs).

Units: ``beta`` in units of y per unit of x, ``alpha`` in units of y; the fair value of y is
``beta * x + alpha``. Reference: scikit-learn's :class:`~sklearn.linear_model.HuberRegressor` (no L2
penalty) on robustly scaled data mapped back to the original units, to 1e-12 relative
(tests/test_pair_kernels.py). Invalid observations and snapshots follow the rules in
:mod:`rtqis.analytics.pairs`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from rtqis.analytics._common import (
    _NAN,
    _STATE_VERSION,
    VALUE_LIMIT,
    FloatArray,
    _as_float,
    _check_version,
    _check_window,
    _nan_if_none,
    _none_if_nan,
    _valid,
)

# scikit-learn is imported inside huber_fit: with statsmodels (adf.py) it takes ~0.8 s to import, which every
# user of rtqis.analytics (the candle agent, the CLI) would otherwise pay.

__all__ = ["HuberFairValue", "huber_fit"]

logger = logging.getLogger(__name__)


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
