"""Engle-Granger against statsmodels on real series; AR(1) half-life and returns hedge on known cases."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from statsmodels.tsa.stattools import coint
from test_pair_model import aligned_real

from rtqis.analytics.coint import engle_granger, engle_granger_both, half_life, returns_hedge


def _check(y: np.ndarray, x: np.ndarray) -> None:
    stat, p, crit = coint(y, x)
    r = engle_granger(y, x)
    assert r.stat == pytest.approx(stat, abs=1e-6)
    assert r.pvalue == pytest.approx(p, abs=1e-6)
    assert [r.crit[k] for k in ("1%", "5%", "10%")] == pytest.approx(list(crit), abs=1e-9)


def test_matches_statsmodels_on_binance_btc_eth_1s() -> None:
    _, x, y, _, _ = aligned_real()
    assert len(x) > 600
    _check(y, x)
    _check(np.log(y), np.log(x))
    _check(x, y)  # the other ordering


def test_matches_statsmodels_on_chan_ewa_ewc() -> None:
    ref = os.environ.get("RTQIS_REFERENCE_DATA")
    path = Path(ref) / "chan" / "inputData_EWA_EWC.csv" if ref else None
    if path is None or not path.exists():
        pytest.skip("RTQIS_REFERENCE_DATA not set (Chan's EWA/EWC are not shipped)")
    raw = np.loadtxt(path, delimiter=",", skiprows=1)
    _check(raw[:, 2], raw[:, 1])
    _check(raw[:, 1], raw[:, 2])


def test_both_orderings_keep_the_weaker_result() -> None:
    """The verdict's test is statsmodels ``coint`` in both orderings; the larger p-value decides."""
    _, x, y, _, _ = aligned_real()
    lx, ly = np.log(x), np.log(y)
    (s1, p1, _), (s2, p2, _) = coint(ly, lx), coint(lx, ly)
    r = engle_granger_both(ly, lx)
    assert r.pvalue == pytest.approx(max(p1, p2), abs=1e-6)
    assert r.stat == pytest.approx(s1 if p1 >= p2 else s2, abs=1e-6)
    # no cointegration (y = 0.5 x + a random walk): the two orderings differ, the larger p-value is kept
    rng = np.random.default_rng(3)
    xs = np.cumsum(rng.normal(size=2000))
    ys = 0.5 * xs + np.cumsum(rng.normal(0, 0.2, 2000))
    one, both = engle_granger(ys, xs), engle_granger_both(ys, xs)
    assert both.pvalue >= one.pvalue and both.pvalue == pytest.approx(max(one.pvalue, coint(xs, ys)[1]), abs=1e-6)
    # a truly cointegrated pair passes in both orderings
    zs = 0.5 * xs + rng.normal(0, 0.2, 2000)
    assert engle_granger_both(zs, xs).pvalue < 0.01


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="constant"):
        engle_granger(np.arange(50.0), np.ones(50))
    with pytest.raises(ValueError, match="collinear"):
        engle_granger(2 * np.arange(50.0) + 1, np.arange(50.0))


def test_half_life_of_a_known_ar1() -> None:
    rng = np.random.default_rng(0)
    phi = 0.5 ** (1 / 60)  # 60-sample half-life
    s = np.zeros(200_000)
    e = rng.normal(size=len(s))
    for i in range(1, len(s)):
        s[i] = phi * s[i - 1] + e[i]
    hl = half_life(s)
    assert hl.half_life == pytest.approx(60, rel=0.05)
    assert 0 < hl.se < 3 and abs(hl.half_life - 60) < 4 * hl.se
    assert math.isnan(half_life(np.cumsum(np.ones(100))).half_life) or half_life(np.arange(100.0)).phi >= 1


def test_returns_hedge_recovers_the_slope() -> None:
    rng = np.random.default_rng(1)
    lx = np.cumsum(rng.normal(0, 1e-4, 3601))
    ly = 0.8 * lx + rng.normal(0, 1e-4, 3601) * 0.5
    h = returns_hedge(ly, lx)
    assert abs(h.beta - 0.8) < 4 * h.se and h.se < 0.02
