"""``rtqis backtest --signals FILE.csv``: summary, JSON, HTML; bad input exits non-zero in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rtqis.analytics.backtest import METRICS
from rtqis.cli import main


def _csv(path: Path, quotes: bool, iso: bool = False) -> Path:
    n = 400
    t = 1_700_000_000_000 + 1000 * np.arange(n)
    z = 3 * np.sin(np.arange(n) / 20)
    y = 3000 * (1 + 1e-3 * z)
    x = np.full(n, 90_000.0)
    cols = {"time": t, "pair": ["ETHUSDT/BTCUSDT"] * n, "x": x, "y": y, "zscore": z, "hedge": np.full(n, 0.03)}
    if quotes:
        cols |= {"x_bid": x - 0.5, "x_ask": x + 0.5, "y_bid": y - 0.05, "y_ask": y + 0.05}
    df = pl.DataFrame(cols)
    if iso:  # as the dashboard's download writes it
        df = df.with_columns(pl.from_epoch("time", time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    df.write_csv(path)
    return path


def test_backtest_writes_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _csv(tmp_path / "signals.csv", quotes=True)
    rc = main(["backtest", "--signals", str(f), "--fee-bps", "2", "--json", str(tmp_path / "m.json"),
               "--html", str(tmp_path / "r.html")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "round trips" in out and "next row's bid/ask" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert list(m) == list(METRICS) and m["round_trips"] > 3 and m["fee_bps"] == 2.0 and m["crossed_spread"]
    assert m["gross_pnl"] > 0  # y swings 0.9 % around a flat x: trading the swing earns
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html and "Bokeh" in html and "cdn.bokeh.org" not in html  # resources inline


def test_without_quotes_it_says_so_and_reads_iso_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _csv(tmp_path / "s.csv", quotes=False, iso=True)
    assert main(["backtest", "--signals", str(f), "--json", str(tmp_path / "m.json")]) == 0
    assert "no spread crossed" in capsys.readouterr().out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["crossed_spread"] is False and m["spread_cost"] == 0.0 and m["round_trips"] > 3
    assert m["mean_hold_s"] > 1  # times parsed to ms: holds in seconds, not microseconds


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--signals", "nope.csv"], "no such file"),
        (["--signals", "{bad}", "--fee-bps", "x"], "--fee-bps takes a number"),
        (["--signals", "{bad}", "--fee-bps", "-1"], "--fee-bps must be"),
        (["--signals", "{bad}"], "not a PairSignal CSV"),
        (["--signals", "{good}", "--json", "/nonexistent/dir/m.json"], "folder does not exist"),
    ],
)
def test_bad_input_exits_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], msg: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    good = _csv(tmp_path / "good.csv", quotes=True)
    args = [a.replace("{bad}", str(bad)).replace("{good}", str(good)) for a in args]
    assert main(["backtest", *args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
