"""Candle files in and out of the store: CSV import (Binance klines or any OHLCV CSV), CSV / Parquet export.

An import is all or nothing: the whole file is validated first and a bad one names the 1-based line of its
first problem (:class:`ImportError_`); a good one is upserted in one transaction as ``source='import'``.
An import never replaces a closed streamed candle (``source='stream'``): those rows are skipped, counted
and reported (:class:`ImportResult`), so a stray file cannot overwrite what the live feed measured.
CSV written for people (the export and the dashboard downloads, :func:`spreadsheet_safe`) cannot run as a
spreadsheet formula: a text cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR gets a leading ``'``;
numbers stay numbers.
Intervals follow :mod:`rtqis.intervals`: any fixed window and the calendar ``1w`` / ``1M`` Binance
publishes (imported and served, never computed); a bad name raises :class:`~rtqis.errors.IntervalError`.
Times are epoch milliseconds UTC in the store, ISO-8601 UTC text in exports.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import numpy as np
import polars as pl

from rtqis.intervals import aligned, next_open, stored_interval_ms
from rtqis.sinks.readers import HistoryReader
from rtqis.sinks.schema import CANDLES
from rtqis.sinks.store import Store, StoreError

__all__ = [
    "EXPORT_COLUMNS",
    "SKIPPED_STREAMED",
    "ImportError_",
    "ImportResult",
    "export_candles",
    "import_candles_csv",
    "iso_utc",
    "read_candles_csv",
    "spreadsheet_safe",
    "streamed_open_times",
    "write_import",
]

log = logging.getLogger(__name__)


class ImportError_(StoreError):  # the trailing underscore keeps it apart from the builtin ImportError
    """A CSV that cannot be imported: ``line`` is the 1-based line of the first problem, ``reason`` why."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}: line {line}: {reason}; nothing was imported")
        self.path = str(path)
        self.line = line
        self.reason = reason


SKIPPED_STREAMED = "they would replace streamed candles"
"""Why rows of an import were skipped (the end of the one-line result, see :meth:`ImportResult.summary`)."""


@dataclass(frozen=True)
class ImportResult:
    """The outcome of an import: rows ``written``, rows ``skipped`` (they would have replaced a closed
    streamed candle; their open times, epoch ms, in ``skipped_open_times``) and ``how`` they were stored
    (``"written"`` to the database, or ``"published to the running sink"``)."""

    written: int
    skipped: int = 0
    how: str = "written"
    skipped_open_times: tuple[int, ...] = ()

    def summary(self, symbol: str, interval: str) -> str:
        """The one-line result, e.g. ``imported 12 1m candles of BTCUSDT (written); 2 rows skipped: they
        would replace streamed candles``."""
        line = f"imported {self.written} {interval} candles of {symbol} ({self.how})"
        if self.skipped:
            line += f"; {self.skipped} row{'s' if self.skipped > 1 else ''} skipped: {SKIPPED_STREAMED}"
        return line


# --------------------------------------------------------------------------------------------- CSV import

_BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_REQUIRED_IMPORT = ("open_time", "open", "high", "low", "close", "volume")
_OPTIONAL_FLOAT_IMPORT = ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume", "vwap")


class _Bad:
    """Collects (line, reason) of bad rows; raises the first one."""

    def __init__(self, path: str | Path, lines: np.ndarray) -> None:
        self.path = path
        self.lines = lines
        self.found: list[tuple[int, str]] = []

    def add(self, mask: np.ndarray | pl.Series, reason: str) -> None:
        arr = mask.to_numpy() if isinstance(mask, pl.Series) else mask
        arr = np.asarray(arr, dtype=bool)
        if arr.any():
            i = int(np.flatnonzero(arr)[0])
            self.found.append((int(self.lines[i]), reason))

    def add_row(self, i: int, reason: str) -> None:
        self.found.append((int(self.lines[i]), reason))

    def raise_first(self) -> None:
        if self.found:
            line, reason = min(self.found)
            more = len(self.found) - 1
            if more:
                reason += f" (and {more} more problem{'s' if more > 1 else ''} further on)"
            raise ImportError_(self.path, line, reason)


def _read_csv_cells(path: Path, text: str | None = None) -> tuple[list[str] | None, list[list[str]], list[int], int]:
    """(header or None, data rows, their 1-based line numbers, header line) of a CSV file, or of ``text``
    (already decoded; ``path`` then only names it)."""
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        src = path.open(newline="", encoding="utf-8-sig") if text is None else io.StringIO(text.removeprefix("\ufeff"))
        with src as f:
            reader = csv.reader(f)
            start = 1
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    start = reader.line_num + 1
                    continue
                if header is None and not rows:
                    first = cells[0].strip()
                    if not _looks_numeric(first):
                        header = [c.strip().lower() for c in cells]
                        header_line = start
                        start = reader.line_num + 1
                        continue
                rows.append(cells)
                lines.append(start)
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise StoreError(f"cannot read {path}: {e}") from None
    return header, rows, lines, header_line


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_open_times(values: list[str], bad: _Bad, what: str) -> np.ndarray:
    """Epoch s / ms / µs (one unit for the whole file) or ISO-8601 (UTC if no offset) -> epoch ms."""
    s = pl.Series(values, dtype=pl.String()).str.strip_chars()
    ints = s.cast(pl.Int64, strict=False).to_numpy()
    is_int = ~s.cast(pl.Int64, strict=False).is_null().to_numpy()
    out = np.zeros(len(values), dtype=np.int64)
    units = np.empty(len(values), dtype=object)
    for i in np.flatnonzero(is_int).tolist():
        v = int(ints[i])
        if 10**9 <= v < 10**11:
            units[i], out[i] = "s", v * 1000
        elif 10**11 <= v < 10**14:
            units[i], out[i] = "ms", v
        elif 10**14 <= v < 10**17:
            if v % 1000:
                bad.add_row(i, f"{what} {v} (µs) is not a whole millisecond")
            units[i], out[i] = "µs", v // 1000
        else:
            bad.add_row(i, f"{what} {v} is not epoch seconds, milliseconds or microseconds of a plausible date")
            units[i] = "?"
    for i in np.flatnonzero(~is_int).tolist():
        text = values[i].strip()
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            bad.add_row(i, f"{what} {text!r} is neither an epoch time (s, ms, µs) nor ISO-8601")
            units[i] = "?"
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = dt.timestamp() * 1000
        if ms != int(ms):
            bad.add_row(i, f"{what} {text!r} is not a whole millisecond")
        units[i], out[i] = "iso", int(ms)
    if len(values):
        first = units[0]
        differ = (units != first) & (units != "?")
        if first != "?" and differ.any():
            j = int(np.flatnonzero(differ)[0])
            bad.add_row(j, f"{what} is in {units[j]} but the first row is in {first}")
    return out


def _parse_float(values: list[str], bad: _Bad, name: str, *, optional: bool) -> np.ndarray:
    s = pl.Series(values, dtype=pl.String()).str.strip_chars()
    empty = (s == "").to_numpy()
    num = s.cast(pl.Float64, strict=False)
    nulls = num.is_null().to_numpy()
    if not optional:
        bad.add(empty, f"{name} is empty")
    bad.add(nulls & ~empty, f"{name} is not a number")
    arr = num.to_numpy().astype(np.float64)
    bad.add(~nulls & ~np.isfinite(np.where(nulls, 0.0, arr)), f"{name} is not a finite number")
    return arr  # NaN where empty / bad


def read_candles_csv(path: str | Path, *, symbol: str, interval: str = "1m", text: str | None = None) -> pl.DataFrame:
    """Read and validate a whole candles CSV; return its rows as ``candles`` columns (``closed`` true),
    sorted as in the file. Nothing is written anywhere.

    Accepted: a Binance klines CSV (``open_time,open,high,low,close,volume,close_time,quote_volume,count,
    taker_buy_volume,taker_buy_quote_volume,ignore``, with or without that header; times in ms or, for
    the 2025+ spot files, µs), or any CSV with a header naming at least ``open_time,open,high,low,close,
    volume`` (optional: ``close_time``, ``quote_volume``, ``count`` or ``trades``, ``taker_buy_volume``,
    ``taker_buy_quote_volume``, ``vwap``; other columns are ignored). ``open_time`` is epoch s, ms or µs
    (one unit per file) or ISO-8601 (read as UTC without an offset).

    The whole file is validated before anything is written: numbers finite, prices > 0,
    ``high >= max(open, close)``, ``low <= min(open, close)``, volumes >= 0, ``open_time`` aligned to
    ``interval`` and not repeated in the file. A bad file raises :class:`ImportError_` naming the 1-based
    line of the first problem. Missing ``close_time`` is ``open_time + interval - 1``; missing ``vwap`` is
    ``quote_volume / volume`` (NULL when either is missing or volume is 0). An interval the store does not
    keep raises :class:`~rtqis.errors.IntervalError` before the file is read. ``text``: the file's content,
    already decoded (an upload); ``path`` then only names it in messages.
    """
    path = Path(path)
    if not symbol:
        raise StoreError("import: a symbol is required")
    stored_interval_ms(interval)  # refuse an unknown interval (IntervalError) before reading the file
    header, rows, lines, header_line = _read_csv_cells(path, text)
    if header is None:
        names = list(_BINANCE_KLINE_COLUMNS)
        if rows and len(rows[0]) != len(names):
            raise ImportError_(
                path,
                lines[0],
                f"a CSV without header must be Binance klines ({len(names)} columns), got {len(rows[0])} columns",
            )
    else:
        names = header
        missing = [c for c in _REQUIRED_IMPORT if c not in names]
        if missing:
            raise ImportError_(path, header_line, f"header lacks the column(s) {', '.join(missing)}")
        dup = sorted({c for c in names if names.count(c) > 1 and c})
        if dup:
            raise ImportError_(path, header_line, f"header repeats the column(s) {', '.join(dup)}")
    if not rows:
        log.warning("%s: no candles to import", path)
        return pl.DataFrame(schema={c: CANDLES.columns[c][0] for c in _READ_COLUMNS})
    line_arr = np.asarray(lines, dtype=np.int64)
    bad = _Bad(path, line_arr)
    width = len(names)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ImportError_(path, lines[i], f"expected {width} fields, got {len(r)}")
    col = {name: [r[j] for r in rows] for j, name in enumerate(names) if name}

    open_time = _parse_open_times(col["open_time"], bad, "open_time")
    nums = {c: _parse_float(col[c], bad, c, optional=False) for c in ("open", "high", "low", "close", "volume")}
    opt = {c: _parse_float(col[c], bad, c, optional=True) for c in _OPTIONAL_FLOAT_IMPORT if c in col}
    count_name = "count" if "count" in col else ("trades" if "trades" in col else None)
    trades: pl.Series | None = None
    if count_name:
        s = pl.Series(col[count_name], dtype=pl.String()).str.strip_chars()
        trades = s.cast(pl.Int64, strict=False)
        bad.add((trades.is_null() & (s != "")).to_numpy(), f"{count_name} is not a whole number")
        bad.add((trades < 0).fill_null(False).to_numpy(), f"{count_name} < 0")
    close_time: np.ndarray | None = None
    if "close_time" in col:
        ct = pl.Series(col["close_time"], dtype=pl.String()).str.strip_chars().cast(pl.Int64, strict=False)
        bad.add(ct.is_null().to_numpy(), "close_time is not a whole number")
        raw = ct.fill_null(0).to_numpy()
        close_time = np.where(raw >= 10**14, raw // 1000, raw)  # µs files have µs close times

    o, h, lo, c, v = (nums[k] for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        bad.add((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "prices must be > 0")
        bad.add(h < np.maximum(o, c), "high < max(open, close)")
        bad.add(lo > np.minimum(o, c), "low > min(open, close)")
        bad.add(v < 0, "volume < 0")
        for k, arr in opt.items():
            if k != "vwap":
                bad.add(arr < 0, f"{k} < 0")
    bad.add(~aligned(open_time, interval), f"open_time is not aligned to the {interval} interval")
    next_opens = next_open(open_time, interval)
    if close_time is not None:
        bad.add((close_time < open_time) | (close_time >= next_opens), "close_time outside its interval")
    order = np.argsort(open_time, kind="stable")
    st = open_time[order]
    dup_pos = np.flatnonzero(st[1:] == st[:-1]) + 1
    if len(dup_pos):
        later = order[dup_pos]
        first_of = order[dup_pos - 1]
        j = int(np.argmin(later))
        bad.add_row(int(later[j]), f"duplicate open_time (also on line {lines[int(first_of[j])]})")
    bad.raise_first()

    qv = opt.get("quote_volume")
    if "vwap" in opt:
        vwap = opt["vwap"]
    elif qv is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = np.where(v > 0, qv / np.where(v > 0, v, 1.0), np.nan)
    else:
        vwap = np.full(len(rows), np.nan)
    n = len(rows)

    def nullable(arr: np.ndarray | None) -> pl.Series:
        if arr is None:
            return pl.Series([None] * n, dtype=pl.Float64())
        return pl.Series(arr).fill_nan(None)

    return pl.DataFrame(
        {
            "symbol": pl.Series([symbol] * n, dtype=pl.String()),
            "interval": pl.Series([interval] * n, dtype=pl.String()),
            "open_time": open_time,
            "close_time": close_time if close_time is not None else next_opens - 1,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "quote_volume": nullable(qv),
            "trades": trades if trades is not None else pl.Series([None] * n, dtype=pl.Int64()),
            "taker_buy_volume": nullable(opt.get("taker_buy_volume")),
            "taker_buy_quote_volume": nullable(opt.get("taker_buy_quote_volume")),
            "vwap": nullable(vwap),
            "closed": pl.Series([True] * n),
        }
    )


_READ_COLUMNS = (
    "symbol",
    "interval",
    "open_time",
    "close_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "vwap",
    "closed",
)


def streamed_open_times(store: HistoryReader, symbol: str, interval: str, open_times: np.ndarray) -> np.ndarray:
    """The open times (epoch ms, sorted) among ``open_times`` where ``store`` holds a *closed* candle of
    ``symbol`` / ``interval`` with ``source='stream'``: the rows an import must not replace."""
    if not len(open_times):
        return np.empty(0, dtype=np.int64)
    lo, hi = int(np.min(open_times)), int(np.max(open_times))
    stored = store.candles(symbol, interval, lo, hi + 1).filter((pl.col("source") == "stream") & pl.col("closed"))
    return np.intersect1d(stored["open_time"].to_numpy().astype(np.int64), np.asarray(open_times, dtype=np.int64))


def write_import(store: Store, df: pl.DataFrame, *, symbol: str, interval: str) -> ImportResult:
    """Upsert validated rows (:func:`read_candles_csv`) into ``store`` as ``source='import'`` in one
    transaction, except those that would replace a closed streamed candle: they are skipped and counted.

    Why refuse rather than replace: the stream's candle is what the live feed measured, trade by trade; a
    file row for the same minute is at best a copy and at worst a typo (one row with price 1 squashed a
    chart's scale). Refused rather than asked: the CLI and the dashboard have no dialogue, and the count is
    in the one-line result. Every other stored row of the same key (an earlier import, a back-fill, a
    still-forming stream bar) is replaced, so re-importing a file replaces rows instead of doubling them;
    a forming stream bar replaced this way is replaced again by the stream's next update of it.
    """
    streamed = streamed_open_times(store, symbol, interval, df["open_time"].to_numpy())
    keep = df.filter(~pl.col("open_time").is_in(streamed.tolist())) if len(streamed) else df
    written = store.upsert_candles(keep, source="import") if keep.height else 0
    if len(streamed):
        log.warning("%d %s %s rows skipped: %s", len(streamed), symbol, interval, SKIPPED_STREAMED)
    log.info("imported %d %s %s candles", written, symbol, interval)
    return ImportResult(written, len(streamed), "written", tuple(int(t) for t in streamed))


def import_candles_csv(store: Store, path: str | Path, *, symbol: str, interval: str = "1m") -> ImportResult:
    """Import a candles CSV into ``store`` as ``source='import'``: :func:`read_candles_csv` (the whole
    file is validated first; a bad one raises :class:`ImportError_` and nothing is written), then
    :func:`write_import` (one transaction; rows that would replace a closed streamed candle are skipped
    and counted in the result)."""
    df = read_candles_csv(path, symbol=symbol, interval=interval)
    if not df.height:
        return ImportResult(0)
    return write_import(store, df, symbol=symbol, interval=interval)


# --------------------------------------------------------------------------------------------- export

EXPORT_COLUMNS: tuple[str, ...] = (
    "symbol",
    "interval",
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "vwap",
    "closed",
)
"""Columns of :func:`export_candles` and of the dashboard's candle download, in order: a public interface,
keep it stable (new columns go at the end). ``closed`` is false for a bar that was still forming."""

_FORMULA_START = r"^[=+\-@\t\r]"


def iso_utc(col: str) -> pl.Expr:
    """Column ``col`` of epoch ms as ISO-8601 UTC text (``2024-08-09T00:00:00Z``; ``.sssZ`` only when the
    time is not a whole second), keeping its name."""
    t = pl.from_epoch(pl.col(col), time_unit="ms")
    whole = t.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frac = t.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    return pl.when(pl.col(col) % 1000 == 0).then(whole).otherwise(frac).alias(col)


def spreadsheet_safe(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every *text* cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return
    prefixed by an apostrophe (``'``), so a spreadsheet opening the CSV shows it instead of running it as a
    formula (CSV injection). Numeric, boolean and time columns are left as they are: ``-1.5`` in a Float64
    column is still written as the number ``-1.5``. Call it on every frame written as CSV for people."""
    text = [c for c, dt in df.schema.items() if dt == pl.String]
    return df.with_columns(
        pl.when(pl.col(c).str.contains(_FORMULA_START)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text
    )


def export_candles(
    store: HistoryReader,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    out: str | Path | IO[bytes] | IO[str],
) -> int:
    """Write the candles of ``symbol`` / ``interval`` in ``[start_ms, end_ms)`` to ``out``; return the rows.

    Columns, exactly and in this order (:data:`EXPORT_COLUMNS`): symbol, interval, open_time (ISO-8601
    UTC text such as ``2024-08-09T00:00:00Z``, ``.sssZ`` only when not a whole second), open, high, low,
    close, volume, quote_volume, trades, taker_buy_volume, vwap, closed (``true``, or ``false`` for a bar
    still forming); sorted by open_time. The same columns and text times in both formats. CSV only
    (:func:`spreadsheet_safe`): a *text* cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
    return gets a leading apostrophe (``'``) so spreadsheets do not run it as a formula; numbers are
    written as numbers. ``out`` is a path (written atomically) or an open file (binary for Parquet).

    This is the store-level function: it takes ``symbol`` and ``interval`` as data (parameterised SQL) and
    an absent series is an empty file. The commands check them against the configured sets first
    (:func:`rtqis.sinks.history.check_export`).
    """
    if fmt not in ("csv", "parquet"):
        raise StoreError(f"export: unknown format {fmt!r} (csv or parquet)")
    df = store.candles(symbol, interval, start_ms, end_ms).select(EXPORT_COLUMNS).with_columns(iso_utc("open_time"))
    if fmt == "csv":
        df = spreadsheet_safe(df)

    def write(target: Path | IO[bytes] | IO[str]) -> None:
        if fmt == "csv":
            df.write_csv(target)
        else:
            df.write_parquet(target)  # type: ignore[arg-type]  # a binary file object is required here

    if isinstance(out, str | Path):
        dst = Path(out)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        if fmt == "parquet" and isinstance(out, io.TextIOBase):
            raise StoreError("export: Parquet needs a binary file object")
        write(out)
    log.info("exported %d %s %s candles as %s", df.height, symbol, interval, fmt)
    return df.height
