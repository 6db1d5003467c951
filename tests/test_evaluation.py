"""The evaluation harness on small cases (the figures themselves are in the issue, not asserted here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rtqis.analytics.pair_model import PairParams
from rtqis.evaluation import (
    TARGETS,
    _daily_backtest,
    chan_ewa_ewc,
    chan_innovation_filter,
    replay_alerts,
    simulate,
    table,
)

SMALL = PairParams(level_window=600, level_min_samples=120, calib_every=30, coint_min=300, fee_bps=0.0)


def test_simulate_runs_the_product_path_with_truth_and_fills() -> None:
    run = simulate(3, 0.25, SMALL)
    n = len(run.t)
    assert 880 <= n <= 900 and np.all(np.diff(run.t) == 1000)
    xb, xa, yb, ya = run.fills
    assert np.all(xb < xa) and np.all(yb < ya)
    # fills are quotes after the sample time, around the sampled trade prices
    assert np.median(np.abs((yb + ya) / 2 / run.y - 1)) < 2e-4
    assert np.all(np.abs(run.truth_spread) < 0.01) and np.all(run.truth_hedge > 0)
    assert len(run.signals) == n and run.signals[-1]["zscore"] is not None
    # replaying the model's own rule on its published numbers gives its alerts, exactly
    p = run.model.p
    assert replay_alerts(run, p.alert_rule, p.z_enter, p.z_exit, p.fee_bps) == [(r, k) for r, k, _ in run.alerts]
    assert run.alerts, "no alert in 15 min without fees"


def test_chan_ewa_ewc_runs_with_defaults() -> None:
    ref = os.environ.get("RTQIS_REFERENCE_DATA")
    path = Path(ref) / "chan" / "inputData_EWA_EWC.csv" if ref else None
    if path is None or not path.exists():
        pytest.skip("RTQIS_REFERENCE_DATA not set (Chan's EWA/EWC are not shipped)")
    res = chan_ewa_ewc(path)
    assert set(res) == {"ewa_ewc_apr", "ewa_ewc_sharpe", "ewa_ewc_trips"} and res["ewa_ewc_trips"] > 0
    inn = chan_innovation_filter(path)
    assert inn["chan_rule_trips"] > inn["chan_default_rule_trips"] > res["ewa_ewc_trips"]


def test_daily_backtest_by_hand() -> None:
    """Long the spread (1 y, -0.5 x) at the close of day 1, out at the close of day 3: two daily returns
    on the previous day's gross capital, hedge frozen at entry (day 2's 0.9 is ignored)."""
    x = np.array([10.0, 10.0, 11.0, 12.0, 12.0])
    y = np.array([20.0, 20.0, 21.0, 21.0, 21.0])
    hedge = np.array([0.5, 0.5, 0.9, 0.9, 0.9])
    res = _daily_backtest(x, y, hedge, [1, 3], ["enter_long_spread", "exit"], 0, 4, "t")
    r1 = (1.0 * 1 - 0.5 * 1) / (20 + 0.5 * 10)  # day 1 -> 2
    r2 = (1.0 * 0 - 0.5 * 1) / (21 + 0.5 * 11)  # day 2 -> 3
    rets = np.array([0.0, r1, r2, 0.0])
    assert res["t_trips"] == 1
    assert res["t_apr"] == pytest.approx(np.prod(1 + rets) ** (252 / 4) - 1)
    assert res["t_sharpe"] == pytest.approx(np.sqrt(252) * rets.mean() / rets.std())


def test_chan_innovation_filter_on_a_small_cointegrated_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n, phi = 600, 0.5 ** (1 / 8)
    x = 30 + np.cumsum(rng.normal(0, 0.3, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = phi * s[i - 1] + rng.normal(0, 0.2)
    y = 5 + 0.8 * x + s
    path = tmp_path / "pair.csv"
    np.savetxt(path, np.column_stack([np.arange(n), x, y]), delimiter=",", header="date,x,y", comments="")
    res = chan_innovation_filter(path, first=200, last=n - 1)
    assert 4 < res["chan_filter_half_life_days"] < 16 and 0 < res["chan_filter_obs_var"] < np.var(s)
    # Chan's 1-sigma rule trades the innovation far more often than the product's +-2 stop-and-reverse
    assert res["chan_rule_trips"] > res["chan_default_rule_trips"] > 0
    assert res["chan_rule_sharpe"] > 0


def test_table_marks_targets() -> None:
    res = {k: 0.0 for k in TARGETS} | {"corr_z_spread": 0.9, "seeds": 1}
    text = table(res)
    assert "| corr_z_spread | 0.9 | >= 0.85 | yes |" in text and "| acf10_z | 0 | >= 0.8 | no |" in text
