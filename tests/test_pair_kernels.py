"""Pair kernels: batch == incremental on real BTC/ETH seconds, exact references, Chan's EWA/EWC numbers,
invalid inputs, flash crashes, precision near 90,000 and bit-identical snapshot/restore."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import HuberRegressor
from statsmodels.tsa.stattools import adfuller

from rtqis.analytics import (
    AdfResult,
    HuberFairValue,
    KalmanHedge,
    KalmanResult,
    RollingOLS,
    RollingZScore,
    adf_test,
    huber_fit,
    kalman_hedge,
    rolling_ols,
    zscore,
)
from rtqis.analytics.kalman import calibrated_noise
from tests.conftest import BINANCE_DATA, reference_data

TRADES = BINANCE_DATA / "trades"
CHAN = "chan/inputData_EWA_EWC.csv"  # not redistributable: from $RTQIS_REFERENCE_DATA
BAD = (math.nan, math.inf, -math.inf, 1e300)


# ------------------------------------------------------------------------------------------- data
def last_per_second(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds and the last trade price in each second (spot archive CSV, no header)."""
    a = np.loadtxt(path, delimiter=",", usecols=(1, 4))
    sec, price = a[:, 1].astype(np.int64) // 1000, a[:, 0]
    last = np.r_[sec[1:] != sec[:-1], True]
    return sec[last], price[last]


def one_second_pair(x_file: Path, y_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both series on the union of their seconds, from the later first trade on, forward-filled."""
    sx, px = last_per_second(x_file)
    sy, py = last_per_second(y_file)
    grid = np.union1d(sx, sy)
    grid = grid[grid >= max(sx[0], sy[0])]
    return px[np.searchsorted(sx, grid, side="right") - 1], py[np.searchsorted(sy, grid, side="right") - 1]


@pytest.fixture(scope="module")
def btc_eth() -> tuple[np.ndarray, np.ndarray]:
    (btc,) = TRADES.glob("BTCUSDT-spot-trades-*.csv")
    (eth,) = TRADES.glob("ETHUSDT-spot-trades-*.csv")
    x, y = one_second_pair(btc, eth)
    assert 640 <= len(x) <= 660 and x.min() > 60_000 and y.max() < 3_000
    return x, y


@pytest.fixture(scope="module")
def ewa_ewc() -> tuple[np.ndarray, np.ndarray]:
    d = np.genfromtxt(reference_data(CHAN), delimiter=",", names=True)
    assert len(d) == 1500
    return d["EWA"], d["EWC"]


def run(obj: Any, *columns: Iterable[float]) -> list[Any]:
    return [obj.update(*row) for row in zip(*columns, strict=True)]


def same(a: Any, b: Any) -> bool:
    """Exact equality that treats NaN == NaN (for outputs of bit-identical runs)."""
    return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True))


def flash_crash(x: np.ndarray, at: int = 400, length: int = 3, depth: float = 0.3) -> np.ndarray:
    out = x.copy()
    out[at : at + length] *= 1.0 - depth
    return out


# -------------------------------------------------------------------------------------- rolling OLS
def exact_ols(x: np.ndarray, y: np.ndarray) -> tuple[Fraction, Fraction]:
    fx, fy = [Fraction(float(v)) for v in x], [Fraction(float(v)) for v in y]
    n = len(fx)
    mx, my = sum(fx) / n, sum(fy) / n
    beta = sum((a - mx) * (b - my) for a, b in zip(fx, fy, strict=True)) / sum((a - mx) ** 2 for a in fx)
    return beta, my - beta * mx


def rel(a: float, exact: Fraction) -> float:
    return abs(float((Fraction(a) - exact) / exact))


@pytest.mark.parametrize("window", [60, 300])
def test_rolling_ols_batch_is_exact_and_incremental_matches(
    btc_eth: tuple[np.ndarray, np.ndarray], window: int
) -> None:
    x, y = btc_eth
    beta, alpha = rolling_ols(x, y, window)
    assert np.isnan(beta[: window - 1]).all() and np.isfinite(beta[window - 1 :]).all()
    for end in np.linspace(window, len(x), 5).astype(int):
        eb, ea = exact_ols(x[end - window : end], y[end - window : end])
        assert rel(beta[end - 1], eb) < 1e-13 and rel(alpha[end - 1], ea) < 1e-13
    inc = np.array(run(RollingOLS(window), x, y))
    assert same(np.isnan(inc[:, 0]), np.isnan(beta))
    np.testing.assert_allclose(inc[:, 0], beta, rtol=1e-9)
    np.testing.assert_allclose(inc[:, 1], alpha, rtol=1e-9)


def test_statsmodels_rolling_ols_is_a_peer_not_the_reference(btc_eth: tuple[np.ndarray, np.ndarray]) -> None:
    """statsmodels' RollingOLS (uncentred running cross-products) is off by ~1e-6 relative on prices near 6e4;
    ours is within ~1e-12 of the Fraction-exact answer, so statsmodels cannot be the reference."""
    import statsmodels.api as sm
    from statsmodels.regression.rolling import RollingOLS as StatsmodelsRollingOLS

    x, y = btc_eth
    window = 60
    params = StatsmodelsRollingOLS(y, sm.add_constant(x), window=window).fit().params
    inc = np.array(run(RollingOLS(window), x, y))
    ends = range(window, len(x) + 1, 37)
    ours = max(rel(inc[e - 1, 0], exact_ols(x[e - window : e], y[e - window : e])[0]) for e in ends)
    theirs = max(rel(params[e - 1, 1], exact_ols(x[e - window : e], y[e - window : e])[0]) for e in ends)
    assert ours < 1e-11 < 1e-8 < theirs


def test_rolling_ols_precision_near_90000_with_cent_moves() -> None:
    """BTC near 90,000 moving by cents: plain sums of x and x**2 cancel ~10 digits; anchored sums do not."""
    rng = np.random.default_rng(7)
    x = 90_000.0 + np.round(np.cumsum(rng.choice([-0.01, 0.0, 0.01], 3000)), 2)
    y = 3_000.0 + 0.033 * (x - 90_000.0) + np.round(rng.normal(0, 0.01, 3000), 2)
    window = 300
    beta, alpha = rolling_ols(x, y, window)
    inc = np.array(run(RollingOLS(window), x, y))
    for end in (300, 1234, 2999):
        eb, ea = exact_ols(x[end - window : end], y[end - window : end])
        assert rel(beta[end - 1], eb) < 1e-10 and rel(inc[end - 1, 0], eb) < 1e-9
        assert rel(alpha[end - 1], ea) < 1e-12 and rel(inc[end - 1, 1], ea) < 1e-9
        # the naive one-pass formula, for contrast: hopeless at this price level
        wx, wy = x[end - window : end], y[end - window : end]
        naive = (np.sum(wx * wy) / window - wx.mean() * wy.mean()) / (np.sum(wx * wx) / window - wx.mean() ** 2)
        assert rel(naive, eb) > 1e-6
    np.testing.assert_allclose(inc[:, 0], beta, rtol=1e-9)


def test_rolling_ols_flat_window_is_nan_not_inf() -> None:
    x = np.r_[np.linspace(100, 101, 10), np.full(8, 101.0), np.linspace(101, 102, 5)]
    y = 2 * x + 1
    beta, alpha = rolling_ols(x, y, 5)
    inc = np.array(run(RollingOLS(5), x, y))
    flat = np.zeros(len(x), bool)
    flat[13:19] = True  # windows inside the run of 101.0 at indices 9..18 (both linspaces touch 101.0)
    assert np.isnan(beta[flat]).all() and np.isnan(inc[flat, 0]).all() and np.isnan(alpha[flat]).all()
    ok = ~flat & (np.arange(len(x)) >= 4)
    np.testing.assert_allclose(beta[ok], 2.0, rtol=1e-9)
    np.testing.assert_allclose(inc[ok, 0], 2.0, rtol=1e-9)
    np.testing.assert_allclose(inc[ok, 1], 1.0, rtol=1e-7)


# --------------------------------------------------------------------------------------------- z-score
@pytest.mark.parametrize("window", [60, 300])
def test_zscore_batch_reference_and_incremental(btc_eth: tuple[np.ndarray, np.ndarray], window: int) -> None:
    x, y = btc_eth
    beta, alpha = rolling_ols(x, y, 300)
    spread = y - 0.04 * x  # a real, non-stationary spread near 200 with small moves
    z = zscore(spread, window)
    for end in (window, 400, len(x)):
        w = spread[end - window : end]
        assert z[end - 1] == pytest.approx((w[-1] - w.mean()) / w.std(ddof=0), rel=1e-12)
    inc = run(RollingZScore(window), spread)
    zi = np.array([r[0] for r in inc])
    assert not any(r[1] for r in inc)
    assert same(np.isnan(zi), np.isnan(z)) and np.isnan(z[: window - 1]).all()
    np.testing.assert_allclose(zi, z, rtol=0, atol=1e-9)


def test_zscore_exact_at_a_high_level_with_tiny_moves() -> None:
    """Values near 54,000 with std ~0.004: a plain window mean would put z off by ~1e-8."""
    rng = np.random.default_rng(11)
    v = 0.5 * prices_near(90_000.0, 400, 1) + 0.1 * prices_near(90_000.0, 400, 2) + rng.normal(0, 1e-3, 400)
    window = 5
    z = zscore(v, window)
    zi = np.array([zv for zv, _ in run(RollingZScore(window), v)])
    for end in range(window, 400, 13):
        f = [Fraction(float(a)) for a in v[end - window : end]]
        m = sum(f) / window
        exact = float(f[-1] - m) / math.sqrt(float(sum((a - m) ** 2 for a in f) / window))
        assert abs(z[end - 1] - exact) < 1e-12 and abs(zi[end - 1] - exact) < 1e-10


def test_zscore_uses_population_std() -> None:
    assert zscore([1.0, 2.0, 3.0], 3)[-1] == pytest.approx(1.0 / math.sqrt(2.0 / 3.0))
    z, flat = RollingZScore(3).update(1.0)
    assert math.isnan(z) and flat is False


def test_zscore_zero_variance_is_flagged_and_nan() -> None:
    values = [5.0, 6.0, 7.0] + [7.0] * 5 + [8.0]
    z = zscore(values, 3)
    rz = RollingZScore(3)
    out = run(rz, values)
    flags = [f for _, f in out]
    assert flags == [False, False, False, False, True, True, True, True, False]
    assert all(math.isnan(v) for v, f in out if f) and np.isnan(z[4:8]).all() and not np.isinf(z).any()
    assert out[-1][0] == pytest.approx(z[-1]) and math.isfinite(z[-1])


# ---------------------------------------------------------------------------------------------- Kalman
def reference_kalman(
    x: np.ndarray,
    y: np.ndarray,
    delta: float,
    ve: float,
    theta0: np.ndarray | None = None,
    p0: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Plain numpy recursion, written from the model and independent of simdkalman (state from
    ``theta0``/``p0``, zero by default)."""
    vw = delta / (1 - delta) * np.eye(2)
    theta = np.zeros(2) if theta0 is None else np.array(theta0, float)
    p = np.zeros((2, 2)) if p0 is None else np.array(p0, float)
    out = np.empty((4, len(x)))
    for t in range(len(x)):
        r = p + vw  # predict: random walk
        h = np.array([x[t], 1.0])
        q = h @ r @ h + ve
        e = y[t] - h @ theta
        k = r @ h / q
        theta = theta + k * e
        p = r - np.outer(k, h) @ r
        out[:, t] = theta[0], theta[1], e, q
    return tuple(out)


def test_kalman_ewa_ewc_published_end_values(ewa_ewc: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = ewa_ewc
    res = kalman_hedge(x, y, delta=1e-4, obs_var=1e-3)
    assert isinstance(res, KalmanResult) and res.beta.shape == x.shape
    assert (round(res.beta[-1], 6), round(res.alpha[-1], 6)) == (0.902417, 6.769111)
    for got, want in zip(res, reference_kalman(x, y, 1e-4, 1e-3), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # the first prior covariance is Vw (predict before every update), so the first observation moves beta
    assert res.beta[0] != 0.0 and res.error[0] == y[0]
    assert res.error_var[0] == pytest.approx(1e-4 / (1 - 1e-4) * (x[0] ** 2 + 1) + 1e-3)


def test_kalman_vectorised_pairs_and_incremental(
    ewa_ewc: tuple[np.ndarray, np.ndarray], btc_eth: tuple[np.ndarray, np.ndarray]
) -> None:
    ex, ey = ewa_ewc
    bx, by = btc_eth
    n = len(bx)
    xs = np.column_stack([ex[:n], ey[:n], bx / 1000.0])
    ys = np.column_stack([ey[:n], ex[:n], by / 100.0])
    batch = kalman_hedge(xs, ys, 1e-4, 1e-3)
    assert batch.beta.shape == (n, 3)
    for j in range(3):
        for got, want in zip(batch, reference_kalman(xs[:, j], ys[:, j], 1e-4, 1e-3), strict=True):
            np.testing.assert_allclose(got[:, j], want, rtol=1e-10, atol=1e-12)
    kf = KalmanHedge(3, 1e-4, 1e-3)
    steps = [kf.update(xs[t], ys[t]) for t in range(n)]
    for k in range(4):
        assert same(np.array([s[k] for s in steps]), batch[k])
    # one pair fed floats takes the scalar path: the same numbers to rounding, against both references
    one = KalmanHedge(1, 1e-4, 1e-3)
    scalar = [one.update(float(a), float(b)) for a, b in zip(ex, ey, strict=True)]
    assert isinstance(scalar[-1].beta, float)
    cols = np.array(scalar).T
    for got, arr, ref in zip(cols, kalman_hedge(ex, ey, 1e-4, 1e-3), reference_kalman(ex, ey, 1e-4, 1e-3), strict=True):
        np.testing.assert_allclose(got, arr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    # either path continues the other's state: scalar steps, then array steps, then a saved state
    mixed = KalmanHedge(1, 1e-4, 1e-3)
    half = len(ex) // 2
    for a, b in zip(ex[:half], ey[:half], strict=True):
        mixed.update(float(a), float(b))
    arr_steps = [mixed.update(ex[t : t + 1], ey[t : t + 1]) for t in range(half, half + 10)]
    np.testing.assert_allclose([s.beta[0] for s in arr_steps], cols[0][half : half + 10], rtol=1e-12)
    restored = KalmanHedge.from_state(json.loads(json.dumps(mixed.state())))
    assert restored.update(float(ex[-1]), float(ey[-1])) == mixed.update(float(ex[-1]), float(ey[-1]))
    with pytest.raises(ValueError, match="length 3"):
        kf.update([1.0, 2.0], [1.0, 2.0])


def test_kalman_reset_and_retune_follow_the_reference(ewa_ewc: tuple[np.ndarray, np.ndarray]) -> None:
    """A filter started at a given state and retuned halfway (the pair model's calibration) is the plain
    recursion from that state with the new noise from then on; its snapshot keeps the new noise."""
    x, y = ewa_ewc
    theta0, p0 = np.array([0.9, 6.0]), np.array([[1e-3, -1e-2], [-1e-2, 0.2]])
    half = len(x) // 2
    first = reference_kalman(x[:half], y[:half], 1e-4, 1e-3, theta0, p0)
    kf = KalmanHedge(1, 1e-4, 1e-3)
    kf.reset([theta0], [p0])
    got = [kf.update(float(a), float(b)) for a, b in zip(x[:half], y[:half], strict=True)]
    for k in range(4):
        np.testing.assert_allclose([g[k] for g in got], first[k], rtol=1e-10, atol=1e-12)
    p_half = kf.state()["cov"][0]
    kf.retune(1e-7, 2e-3)
    second = reference_kalman(x[half:], y[half:], 1e-7, 2e-3, np.array([first[0][-1], first[1][-1]]), p_half)
    saved = json.loads(json.dumps(kf.state()))
    assert (saved["delta"], saved["obs_var"]) == (1e-7, 2e-3)
    got = [kf.update(float(a), float(b)) for a, b in zip(x[half:], y[half:], strict=True)]
    for k in range(4):
        np.testing.assert_allclose([g[k] for g in got], second[k], rtol=1e-9, atol=1e-12)
    restored = KalmanHedge.from_state(saved)
    assert [restored.update(float(a), float(b)) for a, b in zip(x[half:], y[half:], strict=True)] == got
    with pytest.raises(ValueError, match="delta"):
        kf.retune(0.0, 1e-3)
    with pytest.raises(ValueError, match="finite"):
        kf.reset([[math.nan, 0.0]], [p0])


def test_calibrated_noise_rule() -> None:
    """q / obs_var = 1 / (10 half-lives)^2; without a half-life the window's length is the time scale."""
    delta, obs = calibrated_noise(2e-6, 60.0, 3600)  # type: ignore[misc]
    q = delta / (1 - delta)
    assert obs == 2e-6 and q / obs == pytest.approx(1 / 600**2, rel=1e-12)
    delta, _ = calibrated_noise(2e-6, math.nan, 3600)  # type: ignore[misc]
    assert delta / (1 - delta) / 2e-6 == pytest.approx(1 / 3600**2, rel=1e-12)
    assert calibrated_noise(0.0, 60.0, 3600) is None and calibrated_noise(math.nan, 60.0, 3600) is None


def test_kalman_invalid_observation_skips_only_that_pair(ewa_ewc: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = ewa_ewc
    xs, ys = np.column_stack([x, x]), np.column_stack([y, y])
    bad = [100, 101, 700]
    for t, v in zip(bad, BAD, strict=False):
        ys[t, 1] = v
    xs[900, 1] = math.inf
    skipped = [*bad, 900]
    res = kalman_hedge(xs, ys)
    clean = kalman_hedge(x, y)
    assert all(same(res[k][:, 0], clean[k]) for k in range(4))  # pair 0 untouched
    keep = np.ones(len(x), bool)
    keep[skipped] = False
    dropped = kalman_hedge(x[keep], y[keep])
    for k in range(4):
        assert same(res[k][keep, 1], dropped[k])
    assert np.isnan(res.error[skipped, 1]).all() and np.isnan(res.error_var[skipped, 1]).all()
    assert same(res.beta[skipped, 1], res.beta[np.array(skipped) - 1, 1])  # estimate carried, state clean
    kf = KalmanHedge(2)
    for t in range(len(x)):
        kf.update(xs[t], ys[t])
    assert json.dumps(kf.state(), allow_nan=False) and same(kf.beta, res.beta[-1])


# ----------------------------------------------------------------------------------------------- Huber
def test_huber_fit_is_sklearn_on_robustly_scaled_data(btc_eth: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = btc_eth[0][:300], btc_eth[1][:300]

    def centre_scale(v: np.ndarray) -> tuple[float, float]:
        med = float(np.median(v))
        return med, 1.4826 * float(np.median(np.abs(v - med)))

    (mx, sx), (my, sy) = centre_scale(x), centre_scale(y)
    model = HuberRegressor(epsilon=1.35, alpha=0.0, max_iter=1000).fit(((x - mx) / sx)[:, None], (y - my) / sy)
    want_beta = model.coef_[0] * sy / sx
    beta, alpha = huber_fit(x, y)
    assert beta == pytest.approx(want_beta, rel=1e-12)
    assert alpha == pytest.approx(my + sy * model.intercept_ - want_beta * mx, rel=1e-12)
    assert beta == pytest.approx(rolling_ols(x, y, 300)[0][-1], rel=0.1)  # clean data: close to OLS


def test_huber_resists_a_flash_crash_in_y_and_leverage_cut_handles_one_in_x(
    btc_eth: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = btc_eth[0][300:600], btc_eth[1][300:600]
    hb, _ = huber_fit(x, y)
    ob = rolling_ols(x, y, 300)[0][-1]
    yc = y.copy()
    yc[150] *= 0.5  # one ETH print at half the price
    assert abs(huber_fit(x, yc)[0] / hb - 1) < 0.02
    assert abs(rolling_ols(x, yc, 300)[0][-1] / ob - 1) > 0.5
    # a crash in x is a leverage point: Huber (like OLS) is dragged to beta ~ 0 unless x outliers are cut
    xc = x.copy()
    xc[150] *= 0.5
    assert abs(huber_fit(x=xc, y=y)[0]) < 0.1 * hb
    assert abs(huber_fit(xc, y, leverage_cut=10)[0] / hb - 1) < 0.02


def test_huber_fair_value_refits_on_schedule(btc_eth: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = btc_eth
    hv = HuberFairValue(window=120, refit_every=25)
    assert hv.first_fit_at == 30
    out = run(hv, x, y)
    assert all(math.isnan(b) for b, _ in out[:29]) and math.isfinite(out[29][0])
    fits = [29 + 25 * k for k in range(1, (len(x) - 30) // 25 + 1)]
    for t in range(30, len(x)):
        if t in fits:
            lo = max(0, t + 1 - 120)
            assert out[t] == huber_fit(x[lo : t + 1], y[lo : t + 1])
        else:
            assert out[t] == out[t - 1]
    assert HuberFairValue(window=10).first_fit_at == 10


# ------------------------------------------------------------------------------------------------- ADF
def test_adf_on_ewa_ewc_residual(ewa_ewc: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = ewa_ewc
    design = np.column_stack([x, np.ones_like(x)])
    resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    res = adf_test(resid, regression="c", autolag=None, maxlag=1)
    assert isinstance(res, AdfResult)
    assert round(res.stat, 2) == -3.64 and abs(res.stat - -3.6435) < 0.005
    assert (res.lags, res.nobs, list(res.crit)) == (1, 1498, ["1%", "5%", "10%"])
    assert res.mean_reverting == (res.pvalue < 0.05) and res.mean_reverting
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # statsmodels 0.15 warns about its tuple return
        sm = adfuller(resid, maxlag=1, regression="c", autolag=None)
    assert res.stat == pytest.approx(sm[0], rel=1e-12) and res.pvalue == pytest.approx(sm[1], rel=1e-9)
    assert res.crit["5%"] == sm[4]["5%"]
    assert adf_test(np.r_[resid[:500], math.nan, resid[500:]], autolag=None, maxlag=1) == res
    json.dumps(res._asdict())


def _adfuller(series: np.ndarray, regression: str, autolag: str | None) -> tuple[Any, ...]:
    n, ntrend = len(series), {"c": 1, "ct": 2, "ctt": 3, "n": 0}[regression]
    maxlag = min(n // 2 - ntrend - 1, math.ceil(12.0 * (n / 100.0) ** 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return adfuller(series, maxlag=maxlag, regression=regression, autolag=autolag)  # type: ignore[no-any-return]


def test_adf_equals_statsmodels_adfuller(btc_eth: tuple[np.ndarray, np.ndarray]) -> None:
    """Our ADF solves each regression with one QR (the lag search with one QR in all), statsmodels fits
    1 + maxlag OLS models: same lags, statistic, p-value and critical values, on rolling windows of the
    real BTC/ETH OLS residual and on random walks, AR(1) and trending series for every trend term."""
    x, y = btc_eth
    design = np.column_stack([x, np.ones_like(x)])
    resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    series = [resid[i : i + 600] for i in range(0, len(resid) - 600, 97)]
    rng = np.random.default_rng(11)
    for n in (25, 60, 150, 600, 1500):
        e = rng.normal(size=n)
        ar = np.zeros(n)
        for i in range(1, n):
            ar[i] = 0.7 * ar[i - 1] + e[i]
        series += [np.cumsum(e) + 100, ar, 0.05 * np.arange(n) + np.cumsum(e) * 0.1]
    checked = 0
    for s in series:
        for regression in ("c", "ct", "ctt", "n"):
            for autolag in ("AIC", "BIC", None):
                ours = adf_test(s, regression=regression, autolag=autolag)
                sm = _adfuller(s, regression, autolag)
                assert (ours.lags, ours.nobs) == (sm[2], sm[3]), (len(s), regression, autolag)
                assert ours.stat == pytest.approx(sm[0], rel=1e-8 if regression == "ctt" else 1e-10)
                assert ours.pvalue == pytest.approx(sm[1], rel=1e-7, abs=1e-12)
                assert ours.crit == pytest.approx(sm[4], rel=1e-12)
                checked += 1
    assert checked >= 12 * len(series) and any(0 < adf_test(s).lags < 10 for s in series)
    t_stat = adf_test(resid[:600], autolag="t-stat")  # statsmodels itself
    assert t_stat.stat == _adfuller(resid[:600], "c", "t-stat")[0]


def test_adf_random_walk_and_clear_errors() -> None:
    walk = np.cumsum(np.random.default_rng(3).normal(size=500)) + 100
    assert not adf_test(walk).mean_reverting
    with pytest.raises(ValueError, match="constant"):
        adf_test(np.full(100, 3.0))
    with pytest.raises(ValueError, match="too short"):
        adf_test([1.0, 2.0, 1.5])
    with pytest.raises(ValueError, match="too short"):
        adf_test(walk[:20], maxlag=10, autolag=None)
    with pytest.raises(ValueError, match="regression"):
        adf_test(walk, regression="x")
    assert adf_test(walk[:10], regression="c").nobs > 0


# ------------------------------------------------------------------------------- robustness, all kernels
def maker(kind: str, window: int) -> Callable[[], Any]:
    return {
        "ols": lambda: RollingOLS(window),
        "z": lambda: RollingZScore(window),
        "huber": lambda: HuberFairValue(window, refit_every=7),
        "kalman": lambda: KalmanHedge(1),
    }[kind]


def feed(obj: Any, kind: str, x: np.ndarray, y: np.ndarray) -> list[Any]:
    if kind == "z":
        return [obj.update(v) for v in y - 0.04 * x]
    return run(obj, x, y)


@pytest.mark.parametrize("kind", ["ols", "z", "huber", "kalman"])
def test_invalid_inputs_are_skipped_and_never_reach_the_state(
    btc_eth: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    x, y = btc_eth[0].copy(), btc_eth[1].copy()
    spots = [50, 51, 52, 200, 333, 334]
    for i, t in enumerate(spots):
        (x if i % 2 else y)[t] = BAD[i % len(BAD)]
    make = maker(kind, 60)
    obj = make()
    out = feed(obj, kind, x, y)
    keep = np.ones(len(x), bool)
    keep[spots] = False
    ref = feed(make(), kind, x[keep], y[keep])
    assert same([out[t] for t in np.flatnonzero(keep)], ref)  # the same as if they never arrived
    for t in spots:
        if kind == "z":
            assert math.isnan(out[t][0]) and out[t][1] is False
        elif kind == "kalman":
            assert out[t].beta == out[t - 1].beta and math.isnan(out[t].error)
        else:
            assert same(out[t], out[t - 1])
    json.dumps(obj.state(), allow_nan=False)
    # batch forms treat them the same way
    if kind == "ols":
        beta, alpha = rolling_ols(x, y, 60)
        np.testing.assert_allclose(np.array(out), np.column_stack([beta, alpha]), rtol=1e-9)
    elif kind == "z":
        np.testing.assert_allclose([o[0] for o in out], zscore(y - 0.04 * x, 60), atol=1e-9)
    elif kind == "kalman":  # the scalar path against the array path: equal to rounding, NaN where it is
        np.testing.assert_allclose(np.array(out), np.array(kalman_hedge(x, y)).T, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["ols", "z", "huber", "kalman"])
def test_flash_crash_gives_finite_outputs(btc_eth: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    x, y = btc_eth
    xc = flash_crash(x)
    out = np.array([o[:2] if kind == "z" else o for o in feed(maker(kind, 60)(), kind, xc, y)], float)
    assert np.isfinite(out[60:, 0]).all() and not np.isinf(out).any()
    if kind == "ols":
        assert np.isfinite(np.array(rolling_ols(xc, y, 60))[:, 59:]).all()
        assert np.isfinite(zscore(y - 0.04 * xc, 60)[59:]).all()
    if kind == "kalman":
        assert np.isfinite(np.array(kalman_hedge(xc, y))).all()


def prices_near(level: float, n: int, seed: int) -> np.ndarray:
    return level + np.round(np.cumsum(np.random.default_rng(seed).choice([-0.01, 0.0, 0.01], n)), 2)


@pytest.mark.parametrize("kind", ["ols", "z", "huber", "kalman"])
@pytest.mark.parametrize("split", [1, 59, 60, 61, 200, 419])
def test_state_json_round_trip_is_bit_identical(btc_eth: tuple[np.ndarray, np.ndarray], kind: str, split: int) -> None:
    x, y = btc_eth[0][:480].copy(), btc_eth[1][:480].copy()
    x[[30, 250]] = math.nan
    y[100] = math.inf
    make = maker(kind, 60)
    straight = feed(make(), kind, x, y)
    first = make()
    head = feed(first, kind, x[:split], y[:split])
    blob = json.dumps(first.state(), allow_nan=False)  # no NaN anywhere: None stands for NaN
    restored = type(first).from_state(json.loads(blob))
    tail = feed(restored, kind, x[split:], y[split:])
    assert all(same(a, b) for a, b in zip(head + tail, straight, strict=True))
    assert restored.state() == make_state_after(make, kind, x, y)


def make_state_after(make: Callable[[], Any], kind: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    obj = make()
    feed(obj, kind, x, y)
    return dict(obj.state())


def test_state_from_wrong_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="RollingOLS"):
        RollingOLS.from_state(RollingZScore(5).state())


@settings(max_examples=40, deadline=None)
@given(
    level=st.sampled_from([0.5, 2_700.0, 90_000.0]),
    window=st.integers(2, 40),
    seed=st.integers(0, 2**16),
    holes=st.lists(st.integers(0, 199), max_size=8),
)
def test_incremental_matches_batch_property(level: float, window: int, seed: int, holes: list[int]) -> None:
    x = prices_near(level, 200, seed)
    y = 0.5 * prices_near(level, 200, seed + 1) + 0.1 * x
    x[holes] = math.nan
    beta, alpha = rolling_ols(x, y, window)
    inc = np.array(run(RollingOLS(window), x, y))
    assert same(np.isnan(inc), np.isnan(np.column_stack([beta, alpha])))
    # beta can be exactly 0 (no co-movement in the window): judge its error on the scale std(y) / std(x);
    # alpha = mean(y) - beta * mean(x) inherits beta's error times mean(x)
    valid = ~np.isnan(x)
    sx = np.full(len(x), np.nan)
    sy = np.full(len(x), np.nan)
    if valid.sum() >= window:
        sx[valid] = np.r_[np.full(window - 1, np.nan), sliding_window_view(x[valid], window).std(axis=1)]
        sy[valid] = np.r_[np.full(window - 1, np.nan), sliding_window_view(y[valid], window).std(axis=1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta_scale = np.abs(beta) + sy / sx
    alpha_scale = np.abs(alpha) + beta_scale * level
    assert np.nanmax(np.abs(inc[:, 0] - beta) / beta_scale, initial=0) < 1e-9
    assert np.nanmax(np.abs(inc[:, 1] - alpha) / alpha_scale, initial=0) < 1e-9
    z = zscore(y, window)
    zi = np.array([zv for zv, _ in run(RollingZScore(window), y)])
    assert same(np.isnan(zi), np.isnan(z))
    np.testing.assert_allclose(zi, z, rtol=0, atol=1e-9)
