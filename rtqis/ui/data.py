"""Dashboard I/O off the event loop: history from DuckDB, CSV downloads, OHLC uploads, ADF on demand.

History is read through :func:`rtqis.sinks.history.open_history` (read-only: the running sink answers
over its local socket, with every committed batch; the live database when no sink runs), one short
open per read. Every
function here may block for tens of milliseconds: sessions call them from a thread pool.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import polars as pl

from rtqis.analytics.pair_model import MIN_ADF_SAMPLES, PairParams, spread_adf
from rtqis.analytics.pairs import AdfResult
from rtqis.errors import RtqisError
from rtqis.intervals import stored_interval_ms
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.sinks.candle_files import EXPORT_COLUMNS, ImportError_, iso_utc, read_candles_csv, spreadsheet_safe
from rtqis.sinks.history import check_interval, check_pair, check_symbol, import_rows, open_history
from rtqis.sinks.readers import HistoryReader
from rtqis.ui import tables as tb
from rtqis.ui.hub import CANDLE_FIELDS, SIGNAL_FIELDS

__all__ = [
    "MAX_UPLOAD_BYTES",
    "SIGNAL_CSV_COLUMNS",
    "History",
    "UploadError",
    "UploadResult",
    "candles_csv",
    "load_candles",
    "load_history",
    "pair_adf",
    "signals_csv",
    "upload_candles",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
SIGNAL_CSV_COLUMNS: tuple[str, ...] = tuple(m.PairSignal.model_fields)
"""Columns of the PairSignal CSV download, in order (``time`` as ISO-8601 UTC, ``flags`` joined by ';')."""
_INT_SIGNAL_COLUMNS = ("position", "below_cost")  # floats in the hub (NaN = null), integers in the CSV


class UploadError(RtqisError):
    """An uploaded file that was refused; the message names the line when a row is at fault."""


@dataclass
class History:
    """What a session starts from before live data (all tables sorted by their time key)."""

    candles: tb.Cols = field(default_factory=dict)
    signals: tb.Cols = field(default_factory=dict)
    adf: m.AdfResult | None = None
    alerts: list[m.Alert] = field(default_factory=list)
    note: str = ""  # why there is no history, if there is none


def _candle_cols(df: pl.DataFrame) -> tb.Cols:
    out: tb.Cols = {}
    for name, dt in CANDLE_FIELDS.items():
        s = df[name]
        if np.dtype(dt).kind == "f":
            out[name] = s.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64, copy=False)
        elif np.dtype(dt).kind == "b":
            out[name] = s.fill_null(True).to_numpy().astype(np.bool_, copy=False)
        else:
            out[name] = s.fill_null(0).to_numpy().astype(np.int64, copy=False)
    return out


def _signal_cols(df: pl.DataFrame) -> tb.Cols:
    """PairSignal rows of the store as hub columns; a column the store lacks (a store written before the
    column existed) comes as nulls (NaN, or None for text)."""
    out: tb.Cols = {}
    for name, dt in SIGNAL_FIELDS.items():
        if name not in df.columns:
            out[name] = _null_col(df.height, dt)
            continue
        s = df[name]
        if name == "coint":
            out[name] = np.array(s.cast(pl.Utf8).to_list(), dtype=object)
        elif name == "flags":
            out[name] = np.array([";".join(v) if v else "" for v in s.to_list()], dtype=object)
        elif np.dtype(dt).kind == "f":
            out[name] = s.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64, copy=False)
        else:
            out[name] = s.fill_null(0).to_numpy().astype(np.int64, copy=False)
    return out


def _null_col(n: int, dt: Any) -> np.ndarray:
    """``n`` nulls of a hub column dtype: NaN for floats, None for objects, 0 for integers."""
    kind = np.dtype(dt).kind
    if kind == "f":
        return np.full(n, np.nan)
    if kind == "O":
        return np.full(n, None, dtype=object)
    return np.zeros(n, dtype=dt)


def _with_all_signal_cols(cols: tb.Cols) -> tb.Cols:
    """``cols`` with every hub signal column (missing ones as nulls): live rows of an older hub, history
    of an older store, and the two merged, all have the same columns."""
    if not cols:
        return cols
    n = tb.length(cols)
    return {name: cols[name] if name in cols else _null_col(n, dt) for name, dt in SIGNAL_FIELDS.items()}


def _read(settings: Settings, fn: Callable[[HistoryReader], T]) -> T | RtqisError:
    """``fn(store)`` on a short read-only open of the history, or the error saying why there is none."""
    try:
        store = open_history(settings)
    except RtqisError as e:
        return e
    with store:
        return fn(store)


def load_candles(settings: Settings, symbol: str, interval: str, end_ms: int, bars: int) -> tb.Cols:
    """The ``bars`` candles before ``end_ms`` (open time), oldest first; empty without history."""
    start = end_ms - bars * stored_interval_ms(interval)
    got = _read(settings, lambda st: st.candles(symbol, interval, start, end_ms + 1))
    if isinstance(got, Exception):
        return {}
    return _candle_cols(got)


def load_history(
    settings: Settings, *, symbol: str, interval: str, pair: str, end_ms: int, bars: int, signals_ms: int
) -> History:
    """Candles of one series, the pair's signals over ``signals_ms``, its latest ADF and last alerts."""
    t0 = time.perf_counter()

    def read(st: HistoryReader) -> History:
        c = st.candles(symbol, interval, end_ms - bars * stored_interval_ms(interval), end_ms + 1)
        s = st.signals(pair, end_ms - signals_ms, end_ms + 1)
        a = st.adf(pair, end_ms - 86_400_000, end_ms + 1)
        al = st.alerts(pair, end_ms - 86_400_000, end_ms + 1).tail(20)
        return History(
            candles=_candle_cols(c),
            signals=_signal_cols(s),
            adf=_adf_model(a.row(a.height - 1, named=True)) if a.height else None,
            alerts=[m.Alert(**r) for r in al.iter_rows(named=True)],
        )

    got = _read(settings, read)
    if isinstance(got, Exception):
        return History(note=str(got))
    log.debug("history for %s %s / %s read in %.0f ms", symbol, interval, pair, 1000 * (time.perf_counter() - t0))
    return got


def _adf_model(row: dict[str, Any]) -> m.AdfResult:
    row = dict(row)
    row["request_id"] = row.get("request_id") or None
    return m.AdfResult(**row)


# ------------------------------------------------------------------------------------------ downloads


def _nan_to_null(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).fill_nan(None) for c, dt in df.schema.items() if dt == pl.Float64)


def _csv_bytes(df: pl.DataFrame) -> bytes:
    """``df`` as CSV for a spreadsheet: text cells that could run as formulas are neutralised
    (:func:`~rtqis.sinks.candle_files.spreadsheet_safe`), numbers stay numbers."""
    buf = io.BytesIO()
    spreadsheet_safe(df).write_csv(buf)
    return buf.getvalue()


def signals_csv(
    settings: Settings, pair: str, live: tb.Cols, start_ms: int | None, end_ms: int | None
) -> tuple[bytes, int]:
    """PairSignals of ``pair`` with ``start_ms <= time <= end_ms`` as CSV (:data:`SIGNAL_CSV_COLUMNS`).

    History (DuckDB) and the hub's live rows are merged by time (the live version wins). ``pair`` must be a
    configured pair (:class:`RtqisError` otherwise); text cells are made spreadsheet-safe.
    """
    check_pair(settings, pair)
    end = None if end_ms is None else end_ms + 1
    got = _read(settings, lambda st: st.signals(pair, start_ms, end))
    hist = _with_all_signal_cols({} if isinstance(got, Exception) else _signal_cols(got))
    rows = tb.upsert(hist, _with_all_signal_cols(tb.time_window(live, "time", start_ms, end)), "time")
    n = tb.length(rows)
    data: dict[str, Any] = {c: rows.get(c, np.empty(0)) for c in SIGNAL_CSV_COLUMNS if c != "pair"}
    data["flags"] = [str(v) for v in data["flags"]]
    data["coint"] = pl.Series("coint", [None if v is None else str(v) for v in data["coint"]], dtype=pl.Utf8)
    df = pl.DataFrame(data).with_columns(pl.lit(pair).alias("pair")).select(SIGNAL_CSV_COLUMNS)
    df = _nan_to_null(df).with_columns(iso_utc("time"), *(pl.col(c).cast(pl.Int64) for c in _INT_SIGNAL_COLUMNS))
    return _csv_bytes(df), n


def candles_csv(
    settings: Settings, symbol: str, interval: str, live: tb.Cols, start_ms: int | None, end_ms: int | None
) -> tuple[bytes, int]:
    """Candles with ``start_ms <= open_time <= end_ms`` as CSV, the columns of ``rtqis candles export``
    (:data:`rtqis.sinks.candle_files.EXPORT_COLUMNS`, ``closed`` false for the forming bar), history and
    live rows merged by open time. ``symbol`` and ``interval`` must be configured (:class:`RtqisError`
    otherwise); text cells are made spreadsheet-safe."""
    check_symbol(settings, symbol)
    check_interval(settings, interval)
    end = None if end_ms is None else end_ms + 1
    got = _read(settings, lambda st: st.candles(symbol, interval, start_ms, end))
    hist = {} if isinstance(got, Exception) else _candle_cols(got)
    rows = tb.upsert(hist, tb.time_window(live, "open_time", start_ms, end), "open_time")
    n = tb.length(rows)
    data = {c: rows.get(c, np.empty(0)) for c in EXPORT_COLUMNS if c not in ("symbol", "interval")}
    df = pl.DataFrame(data).with_columns(pl.lit(symbol).alias("symbol"), pl.lit(interval).alias("interval"))
    df = _nan_to_null(df.select(EXPORT_COLUMNS)).with_columns(iso_utc("open_time"))
    return _csv_bytes(df), n


# ------------------------------------------------------------------------------------------ upload


UPLOAD_SUFFIXES: tuple[str, ...] = (".csv", ".txt")
"""File name endings an upload may have (the file input offers ``.csv``)."""

_BINARY_MAGIC: dict[bytes, str] = {
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"PAR1": "a Parquet file",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF",
}


@dataclass
class UploadResult:
    rows: int  # rows stored (or handed to the running sink)
    how: str  # "written" or "published to the running sink"
    candles: tb.Cols  # the stored candles, to show them at once (skipped rows are not among them)
    skipped: int = 0  # rows refused: they would have replaced closed streamed candles


def check_upload_size(filename: str, size: int) -> None:
    """Refuse an upload of ``size`` bytes over :data:`MAX_UPLOAD_BYTES` (:class:`UploadError`). Called on the
    length of what the file input delivered, before it is copied, decoded or parsed."""
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"{_display_name(filename)}: {size / 1e6:.1f} MB is over the {MAX_UPLOAD_BYTES / 2**20:.0f} MB "
            "upload limit; nothing was imported (use `rtqis candles import` for big files)"
        )


def _display_name(filename: str) -> str:
    """The uploaded file's base name, for messages only (it never becomes a path here)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:120] or "upload.csv"


def _upload_text(name: str, data: bytes) -> str:
    """The upload as text, or :class:`UploadError` when it is not a CSV text file (wrong ending, binary
    content, not UTF-8)."""
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise UploadError(f"{name}: not a CSV file (expected a name ending in .csv); nothing was imported")
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise UploadError(f"{name}: this is {what}, not a CSV text file; nothing was imported")
    if b"\x00" in data:
        raise UploadError(f"{name}: binary content (NUL bytes), not a CSV text file; nothing was imported")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UploadError(f"{name}: not UTF-8 text (byte {e.start}); nothing was imported") from None


def upload_candles(settings: Settings, filename: str, data: bytes, *, symbol: str, interval: str) -> UploadResult:
    """Validate and import an uploaded OHLC CSV through the same path as ``rtqis candles import``.

    In order, each refusal an :class:`UploadError` of one line and nothing imported: the size
    (:data:`MAX_UPLOAD_BYTES`, :func:`check_upload_size`), the symbol and interval (configured ones), the
    type (a ``.csv`` name, UTF-8 text, no binary content), then every row (the line and the reason of the
    first bad one). The file is parsed in memory: its name is never used as a path. A good file is stored
    in one transaction (or handed to the running sink); rows that would replace a closed streamed candle
    are skipped and counted in ``skipped``.
    """
    name = _display_name(filename)
    check_upload_size(name, len(data))
    try:
        check_symbol(settings, symbol)
        check_interval(settings, interval)
    except RtqisError as e:
        raise UploadError(f"{name}: {e}; nothing was imported") from None
    text = _upload_text(name, data)
    try:
        df = read_candles_csv(name, symbol=symbol, interval=interval, text=text)
        if not df.height:
            raise UploadError(f"{name}: no candles in the file; nothing was imported")
        r = import_rows(settings, df, symbol=symbol, interval=interval)
    except ImportError_ as e:
        raise UploadError(f"{name}: line {e.line}: {e.reason}; nothing was imported") from None
    except UploadError:
        raise
    except RtqisError as e:
        raise UploadError(f"{name}: {e}") from None
    if r.skipped:
        df = df.filter(~pl.col("open_time").is_in(list(r.skipped_open_times)))
    return UploadResult(r.written, r.how, _candle_cols(df), r.skipped)


# ------------------------------------------------------------------------------------------ ADF


def pair_adf(settings: Settings, pair: str, live: tb.Cols, window: int) -> tuple[AdfResult, int]:
    """The pair agent's test, on demand: :func:`rtqis.analytics.pair_model.spread_adf` (OLS of y on x, then
    ADF of the residual, with the worker's regression) over the last ``window`` samples, history and live
    PairSignals merged by time.

    Returns the result and the number of samples used (fewer than ``window`` when less history exists);
    raises :class:`RtqisError` with a plain message when there is nothing (or too little) to test.
    """
    step = int(getattr(settings, "sample_ms", 1000))
    end = int(live["time"][-1]) if tb.length(live) else int(time.time() * 1000)
    start = end - 3 * window * step  # room for gaps (stale legs)
    got = _read(settings, lambda st: st.signals(pair, start, end + 1))
    if not isinstance(got, Exception) and got.height < window and not tb.length(live):
        got = _read(settings, lambda st: st.signals(pair))  # nothing recent: the last samples there are
    hist = {} if isinstance(got, Exception) else _signal_cols(got)
    rows = tb.upsert(hist, tb.time_window(live, "time", start, None), "time")
    if not tb.length(rows):
        raise RtqisError(f"no PairSignal of {pair} yet to test")
    ok = np.isfinite(rows["x"]) & np.isfinite(rows["y"])
    x = rows["x"][ok][-window:].astype(np.float64)
    y = rows["y"][ok][-window:].astype(np.float64)
    if len(x) < MIN_ADF_SAMPLES:
        raise RtqisError(f"ADF needs at least {MIN_ADF_SAMPLES} samples of {pair}, there are {len(x)}")
    try:
        r = spread_adf(x, y, regression=PairParams.from_settings(settings).adf_regression)
    except ValueError as e:
        raise RtqisError(str(e)) from None
    return r, len(x)
