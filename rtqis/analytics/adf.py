"""Augmented Dickey-Fuller unit-root test: :func:`adf_test` and its :class:`AdfResult`.

Units: the statistic is a t-ratio, the p-value a probability (MacKinnon), ``lags`` and ``nobs`` are
sample counts. Reference: statsmodels' ``adfuller``, which the numpy QR path below (one QR for the whole
AIC/BIC lag search) replaces for speed: same lags, nobs and critical values, statistic to ~1e-10
relative; and Chan's EWA/EWC residual (statistic -3.64 at 1 lag) (tests/test_pair_kernels.py). Invalid
values are dropped first, as the incremental kernels skip them (:mod:`rtqis.analytics.pairs`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rtqis.analytics._common import _as_float, _valid

# statsmodels is imported inside adf_test/_adf_lstsq: with scikit-learn (huber.py) it takes ~0.8 s to import,
# which every user of rtqis.analytics (the candle agent, the CLI) would otherwise pay.

__all__ = ["AdfResult", "adf_test"]

logger = logging.getLogger(__name__)


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
