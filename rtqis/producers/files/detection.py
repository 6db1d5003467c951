"""Recognise a market-data file from its name and first bytes: format, symbol, compression, layout."""

from __future__ import annotations

import csv
import re
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal

import polars as pl

from rtqis.errors import IntervalError, RtqisError
from rtqis.intervals import stored_interval_ms
from rtqis.producers import binance_csv as bc
from rtqis.producers.files.opening import Opened

__all__ = ["CAPTURE_LINE", "EXPECTED", "FileFormat", "FileInfo", "SourceFormatError", "detect_format", "inspect_file"]


class FileFormat(StrEnum):
    """What a file holds (see :func:`detect_format`)."""

    SPOT_TRADES = "spot_trades"
    UM_TRADES = "um_trades"
    CM_TRADES = "cm_trades"
    SPOT_AGGTRADES = "spot_aggtrades"
    UM_AGGTRADES = "um_aggtrades"
    BOOKTICKER = "bookticker"
    KLINES = "klines"
    RAW_WS_CAPTURE = "raw_ws_capture"
    PARQUET_TRADES = "parquet_trades"
    PARQUET_BOOKTICKER = "parquet_bookticker"


EXPECTED = (
    "a Binance archive CSV (trades, aggTrades, bookTicker or klines; plain, .zip or gzip), "
    "a raw WebSocket capture ('<receive time ns> <JSON>' lines) or a Parquet file of trades/book tickers"
)


class SourceFormatError(RtqisError):
    """A file that is not (or not entirely) a market-data file we can read; the message is one line."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What :func:`inspect_file` found out about a file."""

    path: Path
    format: FileFormat
    symbol: str | None
    compression: Literal["zip", "gzip"] | None = None
    member: str | None = None
    layout: bc.CsvLayout | None = None
    has_header: bool = False
    header: tuple[str, ...] | None = None
    interval: str | None = None
    symbol_column: bool = False

    @property
    def kind(self) -> Literal["trade", "book", "kline", "mixed"]:
        """What the file's rows are: one kind, or ``mixed`` for a raw capture (trades and book tickers)."""
        if self.format is FileFormat.RAW_WS_CAPTURE:
            return "mixed"
        if self.format is FileFormat.PARQUET_TRADES:
            return "trade"
        if self.format is FileFormat.PARQUET_BOOKTICKER:
            return "book"
        assert self.layout is not None
        return self.layout.kind


CAPTURE_LINE = re.compile(rb"^\s*(\d{9,20}(?:\.\d+)?):?\s+(\{.*)$", re.S)
_NAME_DASH = re.compile(r"^([A-Z0-9]+(?:_[A-Z0-9]+)?)-")
_NAME_UNDERSCORE = re.compile(r"^(?:spot|usdm|um|cm|coinm|futures)_([a-z0-9]+(?:_perp)?)_\d{6,8}", re.I)
_MAGIC_PNG = b"\x89PNG"


def _fail(path: Path, why: str) -> SourceFormatError:
    why = " ".join(why.split())
    return SourceFormatError(f"{path}: {why}; expected {EXPECTED}")


def _symbol_from_name(path: Path) -> str | None:
    name = path.name
    m = _NAME_DASH.match(name)
    if m:
        return m.group(1)
    m = _NAME_UNDERSCORE.match(name)
    if m:
        return m.group(1).upper()
    return None


def _interval_from_name(name: str) -> str | None:
    """The kline interval named between dashes in a Binance file name (``BTCUSDT-1m-2024-08-08.zip``)."""
    for part in name.split("-")[1:-1]:
        try:
            stored_interval_ms(part)
        except IntervalError:
            continue
        return part
    return None


def _first_line(stream: IO[bytes]) -> bytes:
    line = stream.readline(1 << 16).removeprefix(b"\xef\xbb\xbf")
    while line and not line.strip():
        line = stream.readline(1 << 16)
    return line


def inspect_file(path: str | Path, *, symbol: str | None = None) -> FileInfo:
    """Recognise a file from its first bytes/line; raise :class:`SourceFormatError` (one line) if not.

    Reads only the magic bytes, the first line (of the zip member / gzip stream) or the Parquet schema.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceFormatError(f"{p}: no such file")
    with p.open("rb") as f:
        magic = f.read(8)
    if not magic:
        raise _fail(p, "the file is empty")
    sym = symbol.upper() if symbol else _symbol_from_name(p)
    if magic.startswith(b"PAR1"):
        return _inspect_parquet(p, sym, symbol is not None)
    compression: Literal["zip", "gzip"] | None = None
    member = None
    if magic.startswith(b"PK\x03\x04"):
        compression = "zip"
        try:
            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as e:
            raise _fail(p, f"not a readable zip file ({e})") from None
        if len(names) != 1:
            raise _fail(p, f"the zip holds {len(names)} files, not one CSV")
        member = names[0]
    elif magic.startswith(b"\x1f\x8b"):
        compression = "gzip"
    elif magic.startswith(_MAGIC_PNG):
        raise _fail(p, "this is a PNG image")
    try:
        with Opened(p, compression, member) as o:
            line = _first_line(o.stream)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise _fail(p, f"cannot be decompressed ({e})") from None
    if not line.strip():
        raise _fail(p, "no data (empty after decompression)" if compression else "no data (only blank lines)")
    try:
        text = line.decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        raise _fail(p, "binary data, not text") from None
    if CAPTURE_LINE.match(line):
        return FileInfo(p, FileFormat.RAW_WS_CAPTURE, sym, compression, member)
    try:
        row = next(csv.reader([text]))
    except csv.Error:
        raise _fail(p, f"first line is not a CSV row: {text[:80]!r}") from None
    lay = bc.layout_for_row(row)
    has_header = False
    if lay is None:
        lay = bc.layout_for_header(row)
        has_header = lay is not None
    if lay is None:
        raise _fail(p, f"first line is not a known layout: {text[:80]!r}")
    if sym is None:
        raise SourceFormatError(
            f"{p}: cannot tell the symbol from the file name (expected a name like BTCUSDT-trades-2024-08-08.csv "
            "or spot_btcusdt_20240808.gz); pass symbol="
        )
    interval = None
    if lay.kind == "kline":
        interval = _interval_from_name(p.name)
    header = tuple(c.strip() for c in row) if has_header else None
    return FileInfo(p, FileFormat(lay.format), sym, compression, member, lay, has_header, header, interval)


def _inspect_parquet(p: Path, sym: str | None, override: bool) -> FileInfo:
    try:
        names = set(pl.read_parquet_schema(p))
    except Exception as e:  # polars raises several error types for a broken file
        raise _fail(p, f"not a readable Parquet file ({str(e).splitlines()[0][:80]})") from None
    trade_need = {"trade_id", "price", "qty"}
    book_need = {"update_id", "bid_price", "bid_qty", "ask_price", "ask_qty"}
    if trade_need <= names and names & {"trade_time", "time"} and names & {"buyer_maker", "is_buyer_maker"}:
        fmt = FileFormat.PARQUET_TRADES
    elif book_need <= names and names & {"event_time", "recv_time"}:
        fmt = FileFormat.PARQUET_BOOKTICKER
    else:
        raise _fail(p, f"Parquet columns {sorted(names)} are neither trades nor book tickers")
    has_sym = "symbol" in names and not override
    if sym is None and not has_sym:
        raise SourceFormatError(f"{p}: no 'symbol' column and no symbol in the file name; pass symbol=")
    return FileInfo(p, fmt, sym, symbol_column=has_sym)


def detect_format(path: str | Path) -> FileFormat:
    """The :class:`FileFormat` of a file, from its first bytes/line; :class:`SourceFormatError` if unknown."""
    return inspect_file(path, symbol="?").format
