"""The evaluation harness on small cases (the figures themselves are in the issue, not asserted here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rtqis.analytics.pair_model import PairParams
from rtqis.evaluation import TARGETS, chan_ewa_ewc, replay_alerts, simulate, table

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


def test_table_marks_targets() -> None:
    res = {k: 0.0 for k in TARGETS} | {"corr_z_spread": 0.9, "seeds": 1}
    text = table(res)
    assert "| corr_z_spread | 0.9 | >= 0.85 | yes |" in text and "| acf10_z | 0 | >= 0.8 | no |" in text
