"""``rtqis backtest``: run the backtest engine on a PairSignal CSV; summary, JSON and an HTML report.

Input: the dashboard's PairSignal CSV (columns ``time, x, y, zscore, ...``; ``hedge`` when present,
else ``kalman_beta`` for files written before #20) plus optional ``x_bid, x_ask, y_bid, y_ask``.
Positions: the ``position`` column when the file has one (the model's own alert state), else the
default alert rule of :class:`~rtqis.analytics.pair_model.PairParams` replayed on ``zscore``.
Fills: the quotes of the NEXT row (the first quote after the signal time); without bid/ask columns
the fills are at ``x``/``y`` (no spread crossed, and the summary says so).
Output: a summary (returned as text; the CLI prints it), ``--json`` with the metric names of
:data:`~rtqis.analytics.backtest.METRICS` as keys, ``--html`` a self-contained Bokeh report
(resources inline): equity curve, drawdown, z-score with the trades, and the trade list.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtqis.errors import RtqisError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rtqis.analytics.backtest import BacktestResult
    from rtqis.analytics.pair_model import PairParams

# numpy, polars, bokeh and the analytics are imported where used: ``rtqis --help`` and every other
# command build this subcommand's parser and should not pay for them.

__all__ = ["SignalsFileError", "add_parser", "cmd_backtest", "html_report", "load_signals", "run_backtest"]

logger = logging.getLogger(__name__)

_QUOTES = ("x_bid", "x_ask", "y_bid", "y_ask")


class SignalsFileError(RtqisError):
    """The signals file or a flag of ``rtqis backtest`` is unusable (one readable line)."""


def load_signals(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Columns of a PairSignal CSV as numpy arrays (numbers as float64, null -> NaN), sorted by time."""
    import polars as pl

    if not path.is_file():
        raise SignalsFileError(f"{path}: no such file")
    try:
        df = pl.read_csv(path, infer_schema_length=10_000)
    except Exception as e:  # polars raises several kinds for a file that is not CSV
        raise SignalsFileError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    missing = [c for c in ("time", "x", "y") if c not in df.columns]
    if missing or ("zscore" not in df.columns and "position" not in df.columns):
        need = missing or ["zscore (or position)"]
        raise SignalsFileError(f"{path}: not a PairSignal CSV, missing column(s) {', '.join(need)}")
    if df.height < 2:
        raise SignalsFileError(f"{path}: {df.height} row(s); a backtest needs at least 2")
    if df["time"].dtype == pl.String:  # the dashboard writes ISO-8601 UTC ("2024-08-09T00:00:01Z")
        try:
            df = df.with_columns(pl.col("time").str.to_datetime(time_zone="UTC").dt.epoch("ms"))
        except Exception:  # polars raises ComputeError / InvalidOperationError for a bad timestamp
            raise SignalsFileError(f"{path}: column time holds neither epoch ms nor ISO-8601 times") from None
    df = df.sort("time")
    out: dict[str, npt.NDArray[Any]] = {}
    for c in df.columns:
        if df[c].dtype.is_numeric():
            out[c] = df[c].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    out["time"] = df["time"].cast(pl.Int64).to_numpy()
    return out


def _positions(cols: dict[str, npt.NDArray[Any]], params: PairParams) -> tuple[npt.NDArray[np.float64], str]:
    import numpy as np

    from rtqis.analytics.alerts import ZAlert

    if "position" in cols and np.isfinite(cols["position"]).any():
        return np.nan_to_num(cols["position"]), "the file's position column"
    a = ZAlert(params.z_enter, params.z_exit, params.cooldown_ms, rule=params.alert_rule)
    pos = np.zeros(len(cols["time"]))
    for i, (t, z) in enumerate(zip(cols["time"].tolist(), cols["zscore"].tolist(), strict=True)):
        a.update(t, z)
        pos[i] = -a.position  # ZAlert: +1 = short spread
    how = f"{params.alert_rule} rule at +-{params.z_enter:g}"
    how += f" / {params.z_exit:g}" if params.alert_rule == "bands" else ""
    return pos, how + " replayed on zscore (no cost gate)"


def run_backtest(path: Path, fee_bps: float = 10.0, params: PairParams | None = None) -> tuple[BacktestResult, str]:
    """Backtest a PairSignal CSV; returns the result and a short human summary."""
    import numpy as np

    from rtqis.analytics.backtest import backtest, next_row_quotes
    from rtqis.analytics.pair_model import PairParams

    if not (math.isfinite(fee_bps) and fee_bps >= 0):
        raise SignalsFileError(f"--fee-bps must be a number >= 0, got {fee_bps!r}")
    params = params or PairParams()
    cols = load_signals(path)
    hedge_col = "hedge" if "hedge" in cols and np.isfinite(cols["hedge"]).any() else "kalman_beta"
    if hedge_col not in cols:
        raise SignalsFileError(f"{path}: no hedge ratio column (hedge or kalman_beta)")
    pos, how = _positions(cols, params)
    crossed = all(q in cols and np.isfinite(cols[q]).all() for q in _QUOTES)
    quotes = [cols[q] for q in _QUOTES] if crossed else [cols["x"], cols["x"], cols["y"], cols["y"]]
    xb, xa, yb, ya = next_row_quotes(*quotes)
    res = backtest(cols["time"], pos, cols[hedge_col], xb, xa, yb, ya, fee_bps=fee_bps, crossed_spread=crossed)
    m = res.metrics()

    def num(k: str, fmt: str = ".2f") -> str:
        v = m[k]
        return "n/a" if v is None else format(v, fmt)

    lines = [
        f"{path.name}: {len(cols['time'])} rows, positions from {how}, hedge from {hedge_col}",
        "fills at the next row's bid/ask"
        if crossed
        else "no x_bid/x_ask/y_bid/y_ask columns: fills at x/y, no spread crossed (costs understated)",
        f"round trips {m['round_trips']}, mean hold {num('mean_hold_s', '.0f')} s, hit rate {num('hit_rate')}",
        f"gross {num('gross_pnl')}, spread cost {num('spread_cost')}, fees {num('fees')} ({fee_bps:g} bp/leg/side), "
        f"net {num('net_pnl')} (quote currency, 1 unit of y per trade)",
        f"gross {num('gross_bp_per_trip')} bp/trip, break-even fee {num('break_even_fee_bps')} bp/leg/side, "
        f"Sharpe net {num('sharpe_net')}, max drawdown {num('max_drawdown')}",
    ]
    return res, "\n".join(lines)


def html_report(res: BacktestResult, title: str, zscore: npt.NDArray[np.float64] | None = None) -> str:
    """Self-contained HTML (Bokeh, resources inline): equity, drawdown, z-score with trades, trade list."""
    import numpy as np
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource
    from bokeh.models.widgets import DataTable, Div, TableColumn
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    t = res.time.astype("datetime64[ms]")
    eq = figure(height=260, sizing_mode="stretch_width", x_axis_type="datetime", title="Equity (quote currency)")
    eq.line(t, res.equity_gross, legend_label="gross (fills at mid)", color="#888888")
    eq.line(t, res.equity_net, legend_label="net (spread and fees paid)", color="#1f77b4", line_width=2)
    eq.legend.location = "top_left"
    dd = figure(height=180, sizing_mode="stretch_width", x_axis_type="datetime", x_range=eq.x_range, title="Drawdown")
    under = res.equity_net - np.maximum.accumulate(res.equity_net)  # <= 0
    dd.varea(x=t, y1=under, y2=np.zeros(len(t)), color="#d62728", alpha=0.4)
    parts: list[Any] = [Div(text=f"<h2>{title}</h2>"), eq, dd]
    tr = res.trades
    if zscore is not None:
        zf = figure(
            height=220, sizing_mode="stretch_width", x_axis_type="datetime", x_range=eq.x_range, title="z-score"
        )
        zf.line(t, zscore, color="#444444")
        idx = np.searchsorted(res.time, tr["entry_time"])
        up = tr["side"] > 0
        zf.scatter(t[idx][up], zscore[idx][up], marker="triangle", size=9, color="green", legend_label="long spread")
        zf.scatter(t[idx][~up], zscore[idx][~up], marker="inverted_triangle", size=9, color="red", legend_label="short")
        parts.append(zf)
    src = ColumnDataSource(
        {
            "entry": tr["entry_time"].astype("datetime64[ms]").astype(str),
            "exit": tr["exit_time"].astype("datetime64[ms]").astype(str),
            "side": tr["side"],
            "hedge": tr["hedge"],
            "gross": tr["gross"],
            "net": tr["net"],
        }
    )
    cols = [TableColumn(field=f, title=f) for f in ("entry", "exit", "side", "hedge", "gross", "net")]
    summary = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in res.metrics().items())
    parts += [Div(text=f"<table>{summary}</table>"), DataTable(source=src, columns=cols, height=300, width=900)]
    return file_html(column(*parts, sizing_mode="stretch_width"), INLINE, title)


def add_parser(sub: Any) -> None:
    """The ``backtest`` subcommand (hooked into ``rtqis`` by :mod:`rtqis.cli`)."""
    c = sub.add_parser(
        "backtest",
        help="backtest the alerts of a PairSignal CSV (fills at the next quote, fees, spread): summary, JSON, HTML",
        description=(
            "Backtest a PairSignal CSV (the dashboard's download) as a trader would have traded it: positions"
            " from the file's position column (else the default alert rule replayed on zscore), 1 unit of y "
            "against the hedge ratio frozen at entry, filled at the NEXT row's quotes (buy at the ask, sell "
            "at the bid; with no x_bid,x_ask,y_bid,y_ask columns at x/y, and it says so), fees per leg per "
            "side, marked to mid. Prints a summary; --json writes every metric, --html a self-contained "
            "report (opens offline)."
        ),
    )
    c.add_argument("--signals", required=True, metavar="FILE.csv", help="PairSignal CSV (the dashboard's export)")
    c.add_argument("--fee-bps", default="10", metavar="N", help="fee per leg per side in bp (default 10: taker)")
    c.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    c.add_argument("--html", metavar="OUT", help="write a self-contained HTML report")
    c.set_defaults(func=cmd_backtest)


def cmd_backtest(settings: Any, a: argparse.Namespace) -> int:
    """Run ``rtqis backtest`` (settings unused: the command reads only the file)."""
    try:
        fee = float(a.fee_bps)
    except ValueError:
        raise SignalsFileError(f"--fee-bps takes a number, not {a.fee_bps!r}") from None
    path = Path(a.signals)
    for flag, out in (("--json", a.json), ("--html", a.html)):
        if out and not Path(out).resolve().parent.is_dir():
            raise SignalsFileError(f"{flag} {out}: its folder does not exist")
    res, summary = run_backtest(path, fee)
    sys.stdout.write(summary + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(res.metrics(), indent=2) + "\n")
    if a.html:
        z = load_signals(path).get("zscore")
        Path(a.html).write_text(html_report(res, f"Backtest of {path.name}", z), encoding="utf-8")
    return 0
