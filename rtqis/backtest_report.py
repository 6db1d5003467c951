"""``rtqis backtest``: run the backtest engine on a PairSignal CSV; summary, JSON and an HTML report.

Input: the dashboard's PairSignal CSV (columns ``time, x, y, zscore, ...``; ``hedge`` when present,
else ``kalman_beta`` for files written before #20) plus optional ``x_bid, x_ask, y_bid, y_ask``.
Positions: the ``position`` column when the file has one (the model's own alert state), else the
default alert rule of :class:`~rtqis.analytics.pair_model.PairParams` replayed on ``zscore``.
Fills: the quotes of the NEXT row (the first quote after the signal time); without bid/ask columns
the fills are at ``x``/``y`` (no spread crossed, and the summary says so).
Replay input (``--namespace NAME``, #23): the PairSignals of a replay read from its DuckDB
(``DATA_DIR/rtqis-NAME.duckdb``, see :mod:`rtqis.replay`), positions from their ``position`` column (the
model's alert state) unless ``--rule`` asks for a rule replayed on ``zscore``; fills at the first
replayed best bid/ask of each leg strictly after the signal time (``book_tickers``), or at x/y when the
replay holds no quotes of both legs (no spread crossed, and the summary says so). Pessimistic by
default: taker fees, no fill better than the quote, and nothing annualised (Sharpe, Sortino) over a
span shorter than :data:`MIN_ANNUALISED_DAYS` days: short spans show totals only.
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

__all__ = [
    "MIN_ANNUALISED_DAYS",
    "SignalsFileError",
    "add_parser",
    "cmd_backtest",
    "html_report",
    "load_replay",
    "load_signals",
    "run_backtest",
    "parse_sweep",
    "run_replay_backtest",
    "run_sweep",
]

logger = logging.getLogger(__name__)

_QUOTES = ("x_bid", "x_ask", "y_bid", "y_ask")
#: spans shorter than this (days) show totals only: an annualised Sharpe of a few hours means nothing
MIN_ANNUALISED_DAYS = 30.0
_ANNUALISED = ("sharpe_gross", "sharpe_net", "sortino_gross", "sortino_net")
_DAY_MS = 86_400_000


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


def _positions(
    cols: dict[str, npt.NDArray[Any]], params: PairParams, rule: bool = False
) -> tuple[npt.NDArray[np.float64], str]:
    """Positions per row: the ``position`` column when there is one (and ``rule`` is False), else the
    alert rule of ``params`` replayed on ``zscore``."""
    import numpy as np

    from rtqis.analytics.alerts import ZAlert

    if not rule and "position" in cols and np.isfinite(cols["position"]).any():
        return np.nan_to_num(cols["position"]), "the file's position column"
    a = ZAlert(params.z_enter, params.z_exit, params.cooldown_ms, rule=params.alert_rule)
    pos = np.zeros(len(cols["time"]))
    for i, (t, z) in enumerate(zip(cols["time"].tolist(), cols["zscore"].tolist(), strict=True)):
        a.update(t, z)
        pos[i] = -a.position  # ZAlert: +1 = short spread
    how = f"{params.alert_rule} rule at +-{params.z_enter:g}"
    how += f" / {params.z_exit:g}" if params.alert_rule == "bands" else ""
    return pos, how + " replayed on zscore (no cost gate)"


def _check_fee(fee_bps: float) -> None:
    if not (math.isfinite(fee_bps) and fee_bps >= 0):
        raise SignalsFileError(f"--fee-bps must be a number >= 0, got {fee_bps!r}")


def _run(
    cols: dict[str, npt.NDArray[Any]],
    name: str,
    fee_bps: float,
    params: PairParams,
    *,
    rule: bool = False,
    fills: list[npt.NDArray[np.float64]] | None = None,
    fills_how: str = "fills at the next row's bid/ask",
) -> tuple[BacktestResult, list[str]]:
    """The engine on signal columns; ``fills`` = (x_bid, x_ask, y_bid, y_ask) fill quotes per row when
    given, else the next row's quote columns (or x/y without them). Returns the result and the summary."""
    import numpy as np

    from rtqis.analytics.backtest import backtest, next_row_quotes

    hedge_col = "hedge" if "hedge" in cols and np.isfinite(cols["hedge"]).any() else "kalman_beta"
    if hedge_col not in cols:
        raise SignalsFileError(f"{name}: no hedge ratio column (hedge or kalman_beta)")
    pos, how = _positions(cols, params, rule)
    crossed = fills is not None or all(q in cols and np.isfinite(cols[q]).all() for q in _QUOTES)
    if fills is None:
        quotes = [cols[q] for q in _QUOTES] if crossed else [cols["x"], cols["x"], cols["y"], cols["y"]]
        fills = next_row_quotes(*quotes)
    xb, xa, yb, ya = fills
    res = backtest(cols["time"], pos, cols[hedge_col], xb, xa, yb, ya, fee_bps=fee_bps, crossed_spread=crossed)
    m = res.metrics()

    def num(k: str, fmt: str = ".2f") -> str:
        v = m[k]
        return "n/a" if v is None else format(v, fmt)

    lines = [
        f"{name}: {len(cols['time'])} rows, positions from {how}, hedge from {hedge_col}",
        fills_how
        if crossed
        else "no x_bid/x_ask/y_bid/y_ask columns: fills at x/y, no spread crossed (costs understated)",
        f"round trips {m['round_trips']}, mean hold {num('mean_hold_s', '.0f')} s, hit rate {num('hit_rate')}",
        f"gross {num('gross_pnl')}, spread cost {num('spread_cost')}, fees {num('fees')} ({fee_bps:g} bp/leg/side), "
        f"net {num('net_pnl')} (quote currency, 1 unit of y per trade)",
        f"gross {num('gross_bp_per_trip')} bp/trip, break-even fee {num('break_even_fee_bps')} bp/leg/side, "
        f"Sharpe net {num('sharpe_net')}, max drawdown {num('max_drawdown')}",
    ]
    return res, lines


def run_backtest(path: Path, fee_bps: float = 10.0, params: PairParams | None = None) -> tuple[BacktestResult, str]:
    """Backtest a PairSignal CSV; returns the result and a short human summary."""
    from rtqis.analytics.pair_model import PairParams

    _check_fee(fee_bps)
    res, lines = _run(load_signals(path), path.name, fee_bps, params or PairParams())
    return res, "\n".join(lines)


def load_replay(
    db_path: Path, pair: str | None = None
) -> tuple[str, dict[str, npt.NDArray[Any]], list[npt.NDArray[np.float64]] | None]:
    """A replay's PairSignals of ``pair`` (default: its only pair) from its DuckDB as numpy columns
    sorted by time, and the fill quotes (x_bid, x_ask, y_bid, y_ask) per row: each leg's first replayed
    best bid/ask strictly after the row's time (its event time, else its receive time: bookTicker
    archives carry no event time); None when the replay holds no quotes of both legs."""
    import duckdb
    import numpy as np

    from rtqis.analytics.backtest import first_quote_after

    if not db_path.is_file():
        raise SignalsFileError(f"{db_path}: no such file (replay the namespace first: rtqis replay FILE...)")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as e:
        raise SignalsFileError(f"cannot open {db_path}: {str(e).splitlines()[0]}") from None
    try:
        pairs = [r[0] for r in con.execute("SELECT DISTINCT pair FROM signals ORDER BY pair").fetchall()]
        if pair is None and len(pairs) != 1:
            which = ", ".join(pairs) if pairs else "none"
            raise SignalsFileError(f"{db_path}: choose a pair with --pair (the replay has {which})")
        pair = pair or pairs[0]
        if pair not in pairs:
            raise SignalsFileError(f"{db_path}: no signals of pair {pair!r} (it has {', '.join(pairs) or 'none'})")
        y_sym, x_sym = pair.split("/")
        quotes = []
        for sym in (x_sym, y_sym):
            # a quote's time: Binance's event time, else (bookTicker archives carry none) when it was received
            q = con.execute(
                "SELECT coalesce(event_time, recv_time) AS event_time, bid_price, ask_price FROM book_tickers"
                " WHERE symbol = ? ORDER BY 1, update_id",
                [sym],
            ).fetchnumpy()
            quotes.append(q)
    finally:
        con.close()
    from rtqis.sinks.store import Store, StoreError

    try:
        with Store(db_path, read_only=True) as st:
            df = st.signals(pair).sort("time")
    except StoreError as e:
        raise SignalsFileError(str(e)) from None
    if df.height < 2:
        raise SignalsFileError(f"{db_path}: {df.height} signal(s) of {pair}; a backtest needs at least 2")
    cols: dict[str, npt.NDArray[Any]] = {}
    for c in df.columns:
        if df[c].dtype.is_numeric():
            cols[c] = df[c].cast(float).fill_null(float("nan")).to_numpy()
    cols["time"] = df["time"].to_numpy().astype(np.int64)
    if not all(len(q["event_time"]) for q in quotes):
        return pair, cols, None
    (xt, xb, xa), (yt, yb, ya) = ((q["event_time"], q["bid_price"], q["ask_price"]) for q in quotes)
    fx = first_quote_after(cols["time"], xt, xb, xa)
    fy = first_quote_after(cols["time"], yt, yb, ya)
    return pair, cols, [*fx, *fy]


def run_replay_backtest(
    db_path: Path,
    fee_bps: float = 10.0,
    params: PairParams | None = None,
    *,
    pair: str | None = None,
    rule: bool = False,
) -> tuple[BacktestResult, dict[str, Any], str, npt.NDArray[np.float64]]:
    """Backtest a replay's PairSignals (see :func:`load_replay`): the result, its metrics (annualised
    ones None below :data:`MIN_ANNUALISED_DAYS`), a short human summary and the z-scores per row."""
    from rtqis.analytics.pair_model import PairParams

    _check_fee(fee_bps)
    pair, cols, fills = load_replay(db_path, pair)
    res, lines = _run(
        cols,
        f"{db_path.name} {pair}",
        fee_bps,
        params or PairParams(),
        rule=rule,
        fills=fills,
        fills_how="fills at each leg's first replayed best bid/ask after the signal (spread crossed)",
    )
    lines[0] = lines[0].replace("the file's position column", "the signals' position column (the model's alerts)")
    if fills is None:
        lines[1] = "the replay holds no best bid/ask of both legs: fills at x/y, no spread crossed (costs understated)"
    metrics = res.metrics()
    days = float(cols["time"][-1] - cols["time"][0]) / _DAY_MS
    metrics["span_days"] = days
    if days < MIN_ANNUALISED_DAYS:
        metrics |= dict.fromkeys(_ANNUALISED)
        lines[-1] = lines[-1].split(", Sharpe net")[0] + (
            f", max drawdown {res.max_drawdown:.2f}; span {days * 24:.1f} h < {MIN_ANNUALISED_DAYS:g} days: "
            "totals only (nothing annualised)"
        )
    return res, metrics, "\n".join(lines), cols.get("zscore", cols["time"] * float("nan"))


def html_report(
    res: BacktestResult,
    title: str,
    zscore: npt.NDArray[np.float64] | None = None,
    metrics: dict[str, Any] | None = None,
) -> str:
    """Self-contained HTML (Bokeh, resources inline): equity, drawdown, z-score with trades, trade list;
    the metrics table shows ``metrics`` (default: ``res.metrics()``), the numbers of ``--json``."""
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
    shown = res.metrics() if metrics is None else metrics
    summary = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in shown.items())
    parts += [Div(text=f"<table>{summary}</table>"), DataTable(source=src, columns=cols, height=300, width=900)]
    return file_html(column(*parts, sizing_mode="stretch_width"), INLINE, title)


def add_parser(sub: Any) -> None:
    """The ``backtest`` subcommand (hooked into ``rtqis`` by :mod:`rtqis.cli`)."""
    c = sub.add_parser(
        "backtest",
        help="backtest the alerts of a PairSignal CSV or of a replay (fills at the next quote, fees, spread)",
        description=(
            "Backtest a PairSignal CSV (the dashboard's download) or a replay's signals (--namespace NAME, "
            "after `rtqis replay`) as a trader would have traded them: positions from the position column "
            "(else, or with --rule, the alert rule replayed on zscore), 1 unit of y against the hedge ratio "
            "frozen at entry, filled at the first quote after the signal (CSV: the NEXT row's quotes; replay: "
            "each leg's first replayed best bid/ask; buy at the ask, sell at the bid; without quotes at x/y, "
            "and it says so), fees per leg per side, marked to mid. A replay shorter than 30 days shows totals "
            "only (nothing annualised). Prints a summary; --json writes every metric, --html a "
            "self-contained report (opens offline)."
        ),
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--signals", metavar="FILE.csv", help="PairSignal CSV (the dashboard's export)")
    src.add_argument("--namespace", metavar="NAME", help="a replay's signals and quotes (DATA_DIR/rtqis-NAME.duckdb)")
    c.add_argument("--pair", metavar="Y/X", help="with --namespace: the pair (default: the replay's only pair)")
    c.add_argument("--fee-bps", default="10", metavar="N", help="fee per leg per side in bp (default 10: taker)")
    c.add_argument(
        "--rule",
        choices=["reverse", "bands"],
        help="positions from this alert rule replayed on zscore instead of the position column",
    )
    c.add_argument("--z-enter", type=float, metavar="Z", help="with --rule: entry |z| (default 2)")
    c.add_argument("--z-exit", type=float, metavar="Z", help="with --rule bands: exit |z| (default 0.5)")
    c.add_argument(
        "--sweep",
        nargs="+",
        metavar="NAME=START:STOP:STEP",
        help="with --namespace: a grid of z_enter and/or z_exit (STOP included) with the bands rule (or --rule), "
        "e.g. z_enter=1.5:3:0.25 z_exit=0:1:0.25; a table, --json and an --html heat map of net PnL, the best "
        "marked in-sample",
    )
    c.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    c.add_argument("--html", metavar="OUT", help="write a self-contained HTML report")
    c.set_defaults(func=cmd_backtest)


def _params(a: argparse.Namespace) -> PairParams:
    from dataclasses import replace

    from rtqis.analytics.pair_model import PairParams

    p = PairParams()
    if a.rule is None:
        if a.z_enter is not None or a.z_exit is not None:
            raise SignalsFileError("--z-enter and --z-exit go with --rule")
        return p
    z_enter = p.z_enter if a.z_enter is None else a.z_enter
    z_exit = p.z_exit if a.z_exit is None else a.z_exit
    if not (math.isfinite(z_enter) and math.isfinite(z_exit) and 0 <= z_exit < z_enter):
        raise SignalsFileError(f"--z-enter/--z-exit need 0 <= z_exit < z_enter, got {z_enter:g} / {z_exit:g}")
    return replace(p, alert_rule=a.rule, z_enter=z_enter, z_exit=z_exit)


def cmd_backtest(settings: Any, a: argparse.Namespace) -> int:
    """Run ``rtqis backtest`` (settings give the data folder of a ``--namespace`` replay)."""
    try:
        fee = float(a.fee_bps)
    except ValueError:
        raise SignalsFileError(f"--fee-bps takes a number, not {a.fee_bps!r}") from None
    for flag, out in (("--json", a.json), ("--html", a.html)):
        if out and not Path(out).resolve().parent.is_dir():
            raise SignalsFileError(f"{flag} {out}: its folder does not exist")
    if a.sweep and a.namespace is None:
        raise SignalsFileError("--sweep goes with --namespace")
    if a.sweep and (a.z_enter is not None or a.z_exit is not None):
        raise SignalsFileError("--sweep sets z_enter/z_exit itself: leave out --z-enter and --z-exit")
    params = _params(a)
    if a.namespace is not None:
        from rtqis.sinks.sink import sink_paths

        db = sink_paths(settings.model_copy(update={"namespace": a.namespace}))[0]
        if a.sweep:
            return _cmd_sweep(db, fee, a)
        z: npt.NDArray[Any] | None
        res, metrics, summary, z = run_replay_backtest(db, fee, params, pair=a.pair, rule=a.rule is not None)
        title = f"Backtest of replay {a.namespace}"
    else:
        if a.pair:
            raise SignalsFileError("--pair goes with --namespace (a CSV holds one pair)")
        path = Path(a.signals)
        _check_fee(fee)
        res, lines = _run(load_signals(path), path.name, fee, params, rule=a.rule is not None)
        metrics, summary = res.metrics(), "\n".join(lines)
        z = load_signals(path).get("zscore")
        title = f"Backtest of {path.name}"
    sys.stdout.write(summary + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(metrics, indent=2) + "\n")
    if a.html:
        Path(a.html).write_text(html_report(res, title, z, metrics), encoding="utf-8")
    return 0


# --- sweep -----------------------------------------------------------------------------------------

_SWEEPABLE = ("z_enter", "z_exit")


def parse_sweep(specs: list[str]) -> dict[str, list[float]]:
    """``["z_enter=1.5:3:0.25", ...]`` -> ``{"z_enter": [1.5, 1.75, ..., 3.0], ...}`` (STOP included)."""
    out: dict[str, list[float]] = {}
    for spec in specs:
        name, _, rng = spec.partition("=")
        if name not in _SWEEPABLE:
            raise SignalsFileError(f"--sweep {spec}: sweep one of {', '.join(_SWEEPABLE)} (NAME=START:STOP:STEP)")
        try:
            start, stop, step = (float(x) for x in rng.split(":"))
        except ValueError:
            raise SignalsFileError(f"--sweep {spec}: write NAME=START:STOP:STEP, e.g. z_enter=1.5:3:0.25") from None
        if not (all(map(math.isfinite, (start, stop, step))) and step > 0 and stop >= start >= 0):
            raise SignalsFileError(f"--sweep {spec}: need 0 <= START <= STOP and STEP > 0")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > 200:
            raise SignalsFileError(f"--sweep {spec}: {n} values; at most 200")
        out[name] = [round(start + i * step, 10) for i in range(n)]
    return out


def run_sweep(
    db_path: Path, fee_bps: float, grid: dict[str, list[float]], *, rule: str = "bands", pair: str | None = None
) -> dict[str, Any]:
    """Every (z_enter, z_exit) of ``grid`` (missing names at the default) replayed on one replay's
    signals (read once, no new replay): rows of metrics, and the in-sample best by net PnL."""
    from dataclasses import replace

    from rtqis.analytics.pair_model import PairParams

    _check_fee(fee_bps)
    base = PairParams()
    pair, cols, fills = load_replay(db_path, pair)
    rows = []
    for ze in grid.get("z_enter", [base.z_enter]):
        for zx in grid.get("z_exit", [base.z_exit]):
            if rule == "bands" and not zx < ze:
                continue  # no band: exit at or beyond entry
            params = replace(base, alert_rule=rule, z_enter=ze, z_exit=zx)
            res, _ = _run(cols, pair, fee_bps, params, rule=True, fills=fills)
            m = res.metrics()
            rows.append(
                {"z_enter": ze, "z_exit": zx}
                | {k: m[k] for k in ("round_trips", "gross_pnl", "net_pnl", "net_bp_per_trip", "hit_rate")}
            )
    if not rows:
        raise SignalsFileError("--sweep: no grid point with z_exit < z_enter")
    best = max(rows, key=lambda r: r["net_pnl"])
    return {
        "pair": pair,
        "rule": rule,
        "fee_bps": fee_bps,
        "crossed_spread": fills is not None,
        "grid": rows,
        "best": best | {"in_sample": True},
        "note": "the best point is chosen on the same data it is scored on (in-sample): expect less out of sample",
    }


def _sweep_html(sweep: dict[str, Any], title: str) -> str:
    """A self-contained heat map of net PnL over z_enter x z_exit (Bokeh, resources inline) and the table."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, FactorRange, LinearColorMapper
    from bokeh.models.widgets import DataTable, Div, TableColumn
    from bokeh.palettes import RdYlGn11
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    rows = sweep["grid"]
    data = {k: [r[k] for r in rows] for k in rows[0]}
    src = ColumnDataSource({"ze": [str(v) for v in data["z_enter"]], "zx": [str(v) for v in data["z_exit"]], **data})
    lo, hi = min(data["net_pnl"]), max(data["net_pnl"])
    cmap = LinearColorMapper(palette=tuple(reversed(RdYlGn11)), low=lo, high=hi if hi > lo else lo + 1)
    f = figure(
        height=360,
        width=640,
        title="net PnL (quote currency) by z_enter x z_exit",
        x_range=FactorRange(factors=sorted({str(v) for v in data["z_enter"]}, key=float)),
        y_range=FactorRange(factors=sorted({str(v) for v in data["z_exit"]}, key=float)),
        x_axis_label="z_enter",
        y_axis_label="z_exit",
        tooltips=[("z_enter", "@z_enter"), ("z_exit", "@z_exit"), ("net", "@net_pnl"), ("trips", "@round_trips")],
    )
    f.rect("ze", "zx", 1, 1, source=src, fill_color={"field": "net_pnl", "transform": cmap}, line_color=None)
    b = sweep["best"]
    f.scatter(
        [str(b["z_enter"])], [str(b["z_exit"])], marker="x", size=16, color="black", legend_label="in-sample best"
    )
    cols = [TableColumn(field=k, title=k) for k in rows[0]]
    head = (
        f"<h2>{title}</h2><p>{sweep['pair']}, {sweep['rule']} rule, {sweep['fee_bps']:g} bp/leg/side; best "
        f"z_enter {b['z_enter']:g} / z_exit {b['z_exit']:g}: net {b['net_pnl']:.2f} <b>(in-sample)</b></p>"
    )
    table = DataTable(source=ColumnDataSource(data), columns=cols, height=300, width=900)
    return file_html(column(Div(text=head), f, table), INLINE, title)


def _cmd_sweep(db: Path, fee: float, a: argparse.Namespace) -> int:
    sweep = run_sweep(db, fee, parse_sweep(a.sweep), rule=a.rule or "bands", pair=a.pair)
    keys = list(sweep["grid"][0])
    lines = [f"{sweep['pair']}: {len(sweep['grid'])} grid points, {sweep['rule']} rule, {fee:g} bp/leg/side"]
    lines.append("  ".join(f"{k:>15}" for k in keys))
    for r in sweep["grid"]:
        best = (r["z_enter"], r["z_exit"]) == (sweep["best"]["z_enter"], sweep["best"]["z_exit"])
        mark = "  <- in-sample best" if best else ""
        lines.append("  ".join(f"{'n/a' if r[k] is None else format(r[k], 'g'):>15}" for k in keys) + mark)
    lines.append(sweep["note"])
    sys.stdout.write("\n".join(lines) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(sweep, indent=2) + "\n")
    if a.html:
        Path(a.html).write_text(_sweep_html(sweep, f"Sweep of replay {a.namespace}"), encoding="utf-8")
    return 0
