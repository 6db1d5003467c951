"""The file source: Binance market data from files, streamed in columns with bounded memory.

No Kafka here: this module turns files into time-ordered numpy columns; the feed publishes them.

Inputs (recognised by content, see :func:`detect_format`; ``.zip`` and gzip are opened transparently):

* Binance public-archive CSVs (data.binance.vision): spot / USD-M / COIN-M trades, spot / futures
  aggTrades, bookTicker and klines, with or without header (layouts in
  :mod:`rtqis.producers.binance_format`). A ``.zip`` as downloaded is streamed from its single member.
* Raw WebSocket captures (``shared/data/binance/streams_raw/*.gz``): one message per line,
  ``<local receive time> <JSON>`` (receive time in ns, or seconds with a fraction), usually gzip.
  Trades, aggTrades and bookTickers are used; depth diffs and REST snapshots are skipped silently.
* Parquet (:data:`PARQUET_TRADE_COLUMNS`, :data:`PARQUET_BOOK_COLUMNS`), e.g. written by
  :func:`write_parquet`.

Times are epoch ms UTC. Archive files in microseconds (and capture clocks in ns) are cut to ms by
integer division: sub-millisecond precision is dropped. Every tick gets a merge key ``time``:

* trades: the trade time (``T``);
* book tickers: the exchange event time ``E`` where there is one (futures), else the local receive
  time (spot bookTicker carries no exchange time: its ``event_time`` column stays None).

``recv_time`` is the capture's local receive time for raw captures (and for the bookTicker CSVs that
keep ``local_recv_ns``) and equals the event time for archive CSVs. Note that a capture's local clock
may be offset from the exchange's (about -1.2 s in the hftbacktest captures), so in a merged capture
spot book tickers (local time) and trades (exchange time) interleave with that offset.

Memory: CSVs are read in byte blocks of about ``chunk_rows`` lines and parsed by polars (a row that
polars rejects is re-parsed in Python to keep or explain it); captures are read ``chunk_rows`` lines at
a time; Parquet ``chunk_rows`` rows at a time. Nothing is ever read whole. Files are assumed to be in
time order per symbol, as Binance writes them; rows that break the order are still delivered, and
counted as ``late`` by :func:`merge_sources`.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import logging
import math
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import orjson
import polars as pl

from rtqis.errors import RtqisError
from rtqis.producers import binance_format as bf
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame

__all__ = [
    "PARQUET_BOOK_COLUMNS",
    "PARQUET_TRADE_COLUMNS",
    "BadRow",
    "FileFormat",
    "FileInfo",
    "KlineChunk",
    "MergedBatch",
    "Pacer",
    "ProgressFn",
    "SourceChunk",
    "SourceFormatError",
    "detect_format",
    "inspect_file",
    "iter_file",
    "merge_sources",
    "write_parquet",
]

log = logging.getLogger(__name__)

Kind = Literal["trade", "book"]
ProgressFn = Callable[[int, int, int], None]
"""``on_progress(rows_done, bytes_done, bytes_total)``; bytes are of the file(s) on disk (compressed)."""

_INF = np.iinfo(np.int64).max
_NEG_INF = np.iinfo(np.int64).min
CAPTURE_SLACK_MS = 1_000
"""How far a capture lane's next event time may fall below ``receive time + smallest offset seen``."""


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


PARQUET_TRADE_COLUMNS: dict[str, str] = {
    "symbol": "optional string; else the file name or symbol= gives it",
    "trade_id": "integer",
    "price": "float > 0",
    "qty": "float > 0",
    "trade_time": "integer epoch ms/us or Datetime (alias: time)",
    "event_time": "optional, as trade_time; default trade_time",
    "recv_time": "optional, as trade_time; default event_time",
    "buyer_maker": "boolean (alias: is_buyer_maker)",
}
"""Columns of a Parquet file of trades (extra columns are ignored); rows in time order."""

PARQUET_BOOK_COLUMNS: dict[str, str] = {
    "symbol": "optional string; else the file name or symbol= gives it",
    "update_id": "integer",
    "bid_price": "float > 0",
    "bid_qty": "float > 0",
    "ask_price": "float > bid_price",
    "ask_qty": "float > 0",
    "event_time": "optional integer epoch ms/us or Datetime; null for spot",
    "recv_time": "optional, as event_time; at least one of the two",
}
"""Columns of a Parquet file of book tickers (extra columns are ignored); rows in time order."""

_PARQUET_ALIASES = {"trade_time": ("trade_time", "time"), "buyer_maker": ("buyer_maker", "is_buyer_maker")}


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that was not emitted: file, 1-based line (row number for Parquet), reason, raw text."""

    file: str
    line: int
    reason: str
    raw: str


@dataclass(slots=True)
class SourceChunk:
    """Ticks of one kind and one symbol in columns, sorted by ``time``.

    ``cols`` holds exactly the columns of :data:`TRADE_FRAME` / :data:`BOOK_FRAME` (``event_time`` of
    spot book tickers is None); ``time`` is the merge key in epoch ms (see the module docstring);
    ``bad`` lists rows of the same stretch of file that were rejected.
    """

    kind: Kind
    symbol: str
    time: np.ndarray
    cols: dict[str, np.ndarray | None]
    bad: list[BadRow] = field(default_factory=list)
    file: str = ""

    def __len__(self) -> int:
        return len(self.time)

    def take(self, sel: slice | np.ndarray) -> SourceChunk:
        """The rows selected by a slice, mask or index array (without the bad rows)."""
        cols = {k: (v[sel] if v is not None else None) for k, v in self.cols.items()}
        return SourceChunk(self.kind, self.symbol, self.time[sel], cols, [], self.file)

    def to_frame(self) -> Frame:
        """The rows as a :class:`Frame` (type checked by :meth:`Frame.build`)."""
        return Frame.build(TRADE_FRAME if self.kind == "trade" else BOOK_FRAME, self.symbol, dict(self.cols))


@dataclass(slots=True)
class KlineChunk:
    """Klines of one symbol in columns (``open_time`` ... ``taker_buy_quote_volume``, times in ms)."""

    symbol: str
    interval: str | None
    cols: dict[str, np.ndarray]
    bad: list[BadRow] = field(default_factory=list)
    file: str = ""

    def __len__(self) -> int:
        return len(self.cols["open_time"])


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What :func:`inspect_file` found out about a file."""

    path: Path
    format: FileFormat
    symbol: str | None
    compression: Literal["zip", "gzip"] | None = None
    member: str | None = None
    layout: bf.CsvLayout | None = None
    has_header: bool = False
    header: tuple[str, ...] | None = None
    interval: str | None = None
    symbol_column: bool = False

    @property
    def kind(self) -> Literal["trade", "book", "kline", "mixed"]:
        if self.format is FileFormat.RAW_WS_CAPTURE:
            return "mixed"
        if self.format is FileFormat.PARQUET_TRADES:
            return "trade"
        if self.format is FileFormat.PARQUET_BOOKTICKER:
            return "book"
        assert self.layout is not None
        return self.layout.kind


# --------------------------------------------------------------------------------------------------
# Detection

_CAPTURE_LINE = re.compile(rb"^\s*(\d{9,20}(?:\.\d+)?):?\s+(\{.*)$", re.S)
_NAME_DASH = re.compile(r"^([A-Z0-9]+(?:_[A-Z0-9]+)?)-")
_NAME_UNDERSCORE = re.compile(r"^(?:spot|usdm|um|cm|coinm|futures)_([a-z0-9]+(?:_perp)?)_\d{6,8}", re.I)
_NAME_INTERVAL = re.compile(r"-(1s|\d+[mhdwM])-")
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
        with _Opened(p, compression, member) as o:
            line = _first_line(o.stream)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise _fail(p, f"cannot be decompressed ({e})") from None
    if not line.strip():
        raise _fail(p, "no data (empty after decompression)" if compression else "no data (only blank lines)")
    try:
        text = line.decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        raise _fail(p, "binary data, not text") from None
    if _CAPTURE_LINE.match(line):
        return FileInfo(p, FileFormat.RAW_WS_CAPTURE, sym, compression, member)
    row = next(csv.reader([text]))
    lay = bf.layout_for_row(row)
    has_header = False
    if lay is None:
        lay = bf.layout_for_header(row)
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
        m = _NAME_INTERVAL.search(p.name)
        interval = m.group(1) if m else None
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


class _Opened:
    """A file opened for streaming: ``raw`` (on disk, for progress) and ``stream`` (decompressed)."""

    def __init__(self, path: Path, compression: str | None, member: str | None) -> None:
        self.raw = path.open("rb")
        self._zip: zipfile.ZipFile | None = None
        try:
            if compression == "gzip":
                self.stream: IO[bytes] = io.BufferedReader(gzip.GzipFile(fileobj=self.raw, mode="rb"), 1 << 20)
            elif compression == "zip":
                self._zip = zipfile.ZipFile(self.raw)
                self.stream = self._zip.open(member or self._zip.namelist()[0])
            else:
                self.stream = self.raw
        except BaseException:
            self.raw.close()
            raise

    def tell(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        if self._zip is not None:
            self._zip.close()
        self.raw.close()

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Readers: one block at a time -> chunks


def _sorted_chunk(kind: Kind, symbol: str, t: np.ndarray, cols: dict[str, np.ndarray | None], file: str) -> SourceChunk:
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        order = np.argsort(t, kind="stable")
        t = t[order]
        cols = {k: (v[order] if v is not None else None) for k, v in cols.items()}
    return SourceChunk(kind, symbol, t, cols, [], file)


def _window(start_ms: int | None, end_ms: int | None, t: np.ndarray) -> np.ndarray | None:
    if start_ms is None and end_ms is None:
        return None
    m = np.ones(len(t), dtype=bool)
    if start_ms is not None:
        m &= t >= start_ms
    if end_ms is not None:
        m &= t < end_ms
    return m


class _Reader:
    """Base: ``read()`` returns the chunks of the next block; ``watermark`` bounds all later times."""

    def __init__(
        self, info: FileInfo, index: int, start_ms: int | None, end_ms: int | None, symbols: frozenset[str] | None
    ) -> None:
        self.info = info
        self.index = index
        self.file = str(info.path)
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.symbols = symbols
        self.watermark = _NEG_INF
        self.done = False
        self.rows_done = 0
        self.bytes_total = info.path.stat().st_size

    def read(self) -> list[SourceChunk | KlineChunk]:
        raise NotImplementedError

    def bytes_done(self) -> int:
        return self.bytes_total if self.done else 0

    def close(self) -> None:
        self.done = True

    def _finish(self, chunks: list[Any], bad: list[BadRow]) -> list[Any]:
        if self.end_ms is not None and self.watermark >= self.end_ms:
            self.close()
        chunks = [c for c in chunks if len(c)]
        self.rows_done += sum(len(c) for c in chunks)
        if bad:
            if chunks:
                chunks[0].bad.extend(bad)
            else:
                chunks = [self._empty(bad)]
        return chunks

    def _empty(self, bad: list[BadRow]) -> SourceChunk | KlineChunk:
        sym = self.info.symbol or "?"
        if self.info.kind == "kline":
            return KlineChunk(sym, self.info.interval, {f: np.empty(0) for f in bf.KLINES.out_fields}, bad, self.file)
        kind: Kind = "book" if self.info.kind == "book" else "trade"
        ftype = TRADE_FRAME if kind == "trade" else BOOK_FRAME
        cols: dict[str, np.ndarray | None] = {k: np.empty(0, dtype=d) for k, d in ftype.dtypes.items()}
        return SourceChunk(kind, sym, np.empty(0, dtype=np.int64), cols, bad, self.file)


class _CsvReader(_Reader):
    """Archive CSVs: byte blocks of whole lines parsed by polars, rejected rows re-parsed in Python."""

    def __init__(self, info: FileInfo, index: int, chunk_rows: int, **kw: Any) -> None:
        super().__init__(info, index, **kw)
        assert info.layout is not None and info.symbol is not None
        self.layout = info.layout
        self.col_index = self.layout.index(info.header)
        if self.symbols is not None and info.symbol not in self.symbols:
            log.info("%s: symbol %s not selected, skipped", self.file, info.symbol)
            self.done = True
            return
        self.width = len(info.header) if info.header is not None else self.layout.width
        self._o = _Opened(info.path, info.compression, info.member)
        self.line_no = 1
        first = self._o.stream.readline(1 << 16).removeprefix(b"\xef\xbb\xbf")
        while first and not first.strip():  # leading blank lines, as skipped by detection
            self.line_no += 1
            first = self._o.stream.readline(1 << 16)
        est = max(len(first), 16)
        if info.has_header:
            self.line_no += 1
            first = b""
        self._carry = first
        self._block_bytes = max(1 << 12, chunk_rows * est)
        self._eof = False

    def bytes_done(self) -> int:
        return self.bytes_total if self.done else self._o.tell()

    def close(self) -> None:
        if not self.done and hasattr(self, "_o"):
            self._o.close()
        self.done = True

    def _next_block(self) -> tuple[int, bytes] | None:
        while not self._eof:
            data = self._o.stream.read(self._block_bytes)
            if not data:
                self._eof = True
                break
            data = self._carry + data
            cut = data.rfind(b"\n")
            if cut < 0:
                self._carry = data
                continue
            block, self._carry = data[: cut + 1], data[cut + 1 :]
            first = self.line_no
            self.line_no += block.count(b"\n")
            return first, block
        if self._carry.strip():
            block, self._carry = self._carry + b"\n", b""
            first = self.line_no
            self.line_no += 1
            return first, block
        return None

    def read(self) -> list[SourceChunk | KlineChunk]:
        if self.done:
            return []
        nb = self._next_block()
        if nb is None:
            self.close()
            return []
        first_line, block = nb
        values, bad = self._parse_block(first_line, block)
        return self._finish(self._chunks(values), bad)

    # -- parsing

    def _parse_block(self, first_line: int, block: bytes) -> tuple[dict[str, np.ndarray], list[BadRow]]:
        lay = self.layout
        n_lines = block.count(b"\n")
        try:
            df = pl.read_csv(
                block,
                has_header=False,
                schema={f"c{i}": pl.String for i in range(self.width)},
                quote_char=None,
            )
        except pl.exceptions.PolarsError:
            df = None
        if df is None or df.height != n_lines:
            return self._parse_slow(first_line, block)
        exprs = []
        for fld in lay.out_fields:
            c = pl.col(f"c{self.col_index[fld]}")
            kind = bf.FIELD_KINDS[fld]
            if kind in ("id", "time", "count"):
                e = c.cast(pl.Int64, strict=False)
            elif kind == "bool":
                low = c.str.to_lowercase()
                e = pl.when(low == "true").then(True).when(low == "false").then(False).otherwise(None)
            else:
                e = c.cast(pl.Float64, strict=False)
            exprs.append(e.alias(fld))
        out = df.select(exprs)
        bad_mask = np.zeros(n_lines, dtype=bool)
        values: dict[str, np.ndarray] = {}
        for fld in lay.out_fields:
            s = out[fld]
            kind = bf.FIELD_KINDS[fld]
            if s.null_count():
                bad_mask |= s.is_null().to_numpy()
                s = s.fill_null(False if kind == "bool" else 0)
            v = s.to_numpy()
            if kind == "pos":
                bad_mask |= ~np.isfinite(v) | (v <= 0)
            elif kind == "nonneg":
                bad_mask |= ~np.isfinite(v) | (v < 0)
            elif kind == "time":
                bad_mask |= v <= 0
                v = bf.to_ms_array(v)
            elif kind in ("id", "count"):
                bad_mask |= v < 0
            values[fld] = v
        if lay.kind == "book":
            bad_mask |= values["bid_price"] >= values["ask_price"]
        elif lay.kind == "kline":
            bad_mask |= values["high"] < values["low"]
        bad: list[BadRow] = []
        if bad_mask.any():
            lines = block.split(b"\n")
            keep = ~bad_mask
            for i in np.flatnonzero(bad_mask):
                raw = lines[i].rstrip(b"\r")
                if not raw.strip():
                    continue  # blank line: skipped, not an error
                try:
                    row = self._parse_line(raw)
                except bf.BadMessage as e:
                    bad.append(BadRow(self.file, first_line + int(i), e.reason, _text(raw)))
                    continue
                for fld, x in zip(lay.out_fields, row, strict=True):  # polars was stricter than Python
                    values[fld][i] = x
                keep[i] = True
            values = {k: v[keep] for k, v in values.items()}
        return values, bad

    def _parse_line(self, raw: bytes) -> tuple[Any, ...]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bf.BadMessage("line is not valid UTF-8 text") from None
        row = next(csv.reader([text]), [])
        return bf.parse_csv_row(self.layout, row, self.col_index, self.width)

    def _parse_slow(self, first_line: int, block: bytes) -> tuple[dict[str, np.ndarray], list[BadRow]]:
        rows: list[tuple[Any, ...]] = []
        bad: list[BadRow] = []
        for i, raw in enumerate(block.split(b"\n")[:-1]):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            try:
                rows.append(self._parse_line(raw))
            except bf.BadMessage as e:
                bad.append(BadRow(self.file, first_line + i, e.reason, _text(raw)))
        values: dict[str, np.ndarray] = {}
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in self.layout.out_fields]
        for fld, col in zip(self.layout.out_fields, cols, strict=True):
            kind = bf.FIELD_KINDS[fld]
            dtype = np.int64 if kind in ("id", "time", "count") else np.bool_ if kind == "bool" else np.float64
            values[fld] = np.array(col, dtype=dtype)
        return values, bad

    def _chunks(self, v: dict[str, np.ndarray]) -> list[SourceChunk | KlineChunk]:
        lay = self.layout
        sym = self.info.symbol
        assert sym is not None
        if lay.kind == "kline":
            t = v["open_time"]
            if len(t):
                self.watermark = max(self.watermark, int(t.max()))
            m = _window(self.start_ms, self.end_ms, t)
            if m is not None:
                v = {k: a[m] for k, a in v.items()}
            return [KlineChunk(sym, self.info.interval or _interval_of(v), v, [], self.file)]
        if lay.kind == "trade":
            t = v["time"]
            cols: dict[str, np.ndarray | None] = {
                "trade_id": v["trade_id"],
                "price": v["price"],
                "qty": v["qty"],
                "trade_time": t,
                "event_time": t,
                "recv_time": t,
                "buyer_maker": v["buyer_maker"],
            }
            kind: Kind = "trade"
        else:
            et = v.get("event_time")
            recv = v.get("recv_time", et)
            assert recv is not None
            t = et if et is not None else recv
            cols = {
                "update_id": v["update_id"],
                "bid_price": v["bid_price"],
                "bid_qty": v["bid_qty"],
                "ask_price": v["ask_price"],
                "ask_qty": v["ask_qty"],
                "event_time": et,
                "recv_time": recv,
            }
            kind = "book"
        if len(t):
            self.watermark = max(self.watermark, int(t.max()))
        c = _sorted_chunk(kind, sym, t, cols, self.file)
        m = _window(self.start_ms, self.end_ms, c.time)
        return [c.take(m) if m is not None else c]


def _interval_of(v: dict[str, np.ndarray]) -> str | None:
    if not len(v["open_time"]):
        return None
    ms = int(v["close_time"][0] - v["open_time"][0] + 1)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")[:500]


class _Lane:
    """Per (kind, symbol) state of a capture: last time and smallest (time - receive time) seen."""

    __slots__ = ("last", "min_off")

    def __init__(self) -> None:
        self.last = _NEG_INF
        self.min_off = _INF


class _CaptureReader(_Reader):
    """Raw WebSocket captures: ``<receive time> <JSON>`` per line, parsed line by line with orjson."""

    def __init__(self, info: FileInfo, index: int, chunk_rows: int, symbol: str | None, **kw: Any) -> None:
        super().__init__(info, index, **kw)
        self._o = _Opened(info.path, info.compression, info.member)
        self.override = symbol.upper() if symbol else None
        self.chunk_rows = chunk_rows
        self.line_no = 1
        self.recv_last = _NEG_INF
        self.lanes: dict[tuple[Kind, str], _Lane] = {}
        self.skipped = 0

    def bytes_done(self) -> int:
        return self.bytes_total if self.done else self._o.tell()

    def close(self) -> None:
        if not self.done:
            self._o.close()
        self.done = True

    def read(self) -> list[SourceChunk | KlineChunk]:
        if self.done:
            return []
        lines = list(itertools.islice(self._o.stream, self.chunk_rows))
        if not lines:
            self.close()
            return []
        trades: dict[str, list[tuple[Any, ...]]] = {}
        books: dict[str, list[tuple[Any, ...]]] = {}
        bad: list[BadRow] = []
        first = self.line_no
        self.line_no += len(lines)
        override, symbols = self.override, self.symbols
        loads, classify = orjson.loads, bf.classify_payload
        for i, line in enumerate(lines):
            ts, _, js = line.partition(b" ")
            if ts.isdigit() and js[:1] == b"{":
                recv = int(ts)
                recv = recv // 1_000_000 if recv >= 10**17 else bf.to_ms(recv)
            else:
                m = _CAPTURE_LINE.match(line)
                if m is None:
                    if line.strip():
                        reason = "line is not '<receive time> <JSON>'"
                        bad.append(BadRow(self.file, first + i, reason, _text(line.strip())))
                    continue
                ts, js = m.group(1), m.group(2)
                recv = int(float(ts) * 1000) if b"." in ts else bf.to_ms(int(ts))
            self.recv_last = recv
            head = js[:64]
            if b"@depth" in head or b'"lastUpdateId"' in head:
                self.skipped += 1
                continue
            try:
                kind, d = classify(loads(js))
                if kind == "trade":
                    s, tid, p, q, tt, et, bm = bf.trade_fields(d)
                    row: tuple[Any, ...] = (tt, tid, p, q, tt, et, recv, bm)
                    dest = trades
                elif kind == "aggTrade":
                    s, tid, p, q, tt, et, bm, _f, _l = bf.agg_trade_fields(d)
                    row = (tt, tid, p, q, tt, et, recv, bm)
                    dest = trades
                elif kind == "bookTicker":
                    s, uid, b, bq, a, aq, bet = bf.book_fields(d)
                    row = (bet if bet is not None else recv, uid, b, bq, a, aq, bet, recv)
                    dest = books
                else:
                    self.skipped += 1
                    continue
            except orjson.JSONDecodeError as e:
                reason = f"message is not valid JSON ({str(e).splitlines()[0][:60]})"
                bad.append(BadRow(self.file, first + i, reason, _text(js.strip())))
                continue
            except bf.BadMessage as e:
                bad.append(BadRow(self.file, first + i, e.reason, _text(js.strip())))
                continue
            if override is not None:
                s = override
            if symbols is not None and s not in symbols:
                continue
            dest.setdefault(s, []).append(row)
        chunks: list[Any] = []
        for sym, rows in trades.items():
            chunks.append(self._trade_chunk(sym, rows))
        for sym, rows in books.items():
            chunks.append(self._book_chunk(sym, rows))
        self._update_watermark()
        out = []
        for c in chunks:
            sel = _window(self.start_ms, self.end_ms, c.time)
            out.append(c.take(sel) if sel is not None else c)
        return self._finish(out, bad)

    def _note(self, kind: Kind, sym: str, t: np.ndarray, recv: np.ndarray) -> None:
        lane = self.lanes.setdefault((kind, sym), _Lane())
        lane.last = max(lane.last, int(t.max()))
        lane.min_off = min(lane.min_off, int((t - recv).min()))

    def _update_watermark(self) -> None:
        if not self.lanes:
            return
        marks = []
        for lane in self.lanes.values():
            derived = self.recv_last + lane.min_off - CAPTURE_SLACK_MS
            marks.append(max(lane.last, derived))
        self.watermark = max(self.watermark, min(marks))

    def _trade_chunk(self, sym: str, rows: list[tuple[Any, ...]]) -> SourceChunk:
        t, tid, p, q, tt, et, recv, bm = zip(*rows, strict=True)
        ta = np.array(t, dtype=np.int64)
        ra = np.array(recv, dtype=np.int64)
        self._note("trade", sym, ta, ra)
        cols: dict[str, np.ndarray | None] = {
            "trade_id": np.array(tid, dtype=np.int64),
            "price": np.array(p, dtype=np.float64),
            "qty": np.array(q, dtype=np.float64),
            "trade_time": np.array(tt, dtype=np.int64),
            "event_time": np.array(et, dtype=np.int64),
            "recv_time": ra,
            "buyer_maker": np.array(bm, dtype=np.bool_),
        }
        return _sorted_chunk("trade", sym, ta, cols, self.file)

    def _book_chunk(self, sym: str, rows: list[tuple[Any, ...]]) -> SourceChunk:
        t, uid, b, bq, a, aq, et, recv = zip(*rows, strict=True)
        ta = np.array(t, dtype=np.int64)
        ra = np.array(recv, dtype=np.int64)
        self._note("book", sym, ta, ra)
        if all(x is None for x in et):
            eta = None
        else:  # a lane mixing spot and futures messages: fill the gaps with the merge time
            eta = np.array([x if x is not None else tx for x, tx in zip(et, t, strict=True)], dtype=np.int64)
        cols: dict[str, np.ndarray | None] = {
            "update_id": np.array(uid, dtype=np.int64),
            "bid_price": np.array(b, dtype=np.float64),
            "bid_qty": np.array(bq, dtype=np.float64),
            "ask_price": np.array(a, dtype=np.float64),
            "ask_qty": np.array(aq, dtype=np.float64),
            "event_time": eta,
            "recv_time": ra,
        }
        return _sorted_chunk("book", sym, ta, cols, self.file)


class _ParquetReader(_Reader):
    """Parquet files (:data:`PARQUET_TRADE_COLUMNS` / :data:`PARQUET_BOOK_COLUMNS`), ``chunk_rows`` at a time."""

    def __init__(self, info: FileInfo, index: int, chunk_rows: int, **kw: Any) -> None:
        super().__init__(info, index, **kw)
        self.chunk_rows = chunk_rows
        self.lf = pl.scan_parquet(info.path)
        self.names = set(self.lf.collect_schema().names())
        self.total_rows = int(self.lf.select(pl.len()).collect().item())
        self.offset = 0
        self.kind: Kind = "trade" if info.format is FileFormat.PARQUET_TRADES else "book"
        if not info.symbol_column and self.symbols is not None and info.symbol not in self.symbols:
            self.done = True

    def bytes_done(self) -> int:
        if self.done or not self.total_rows:
            return self.bytes_total
        return int(self.bytes_total * self.offset / self.total_rows)

    def _col(self, name: str) -> str | None:
        for n in _PARQUET_ALIASES.get(name, (name,)):
            if n in self.names:
                return n
        return None

    def read(self) -> list[SourceChunk | KlineChunk]:
        if self.done:
            return []
        df = self.lf.slice(self.offset, self.chunk_rows).collect()
        first_row = self.offset + 1
        self.offset += df.height
        if df.height == 0:
            self.close()
            return []
        if self.offset >= self.total_rows:
            self.done = True
        fields = (
            ["trade_id", "price", "qty", "trade_time", "event_time", "recv_time", "buyer_maker"]
            if self.kind == "trade"
            else ["update_id", "bid_price", "bid_qty", "ask_price", "ask_qty", "event_time", "recv_time"]
        )
        exprs = []
        for f in fields:
            src = self._col(f)
            if src is None:
                continue
            dtype = df.schema[src]
            c = pl.col(src)
            if f.endswith("_time"):
                e = c.dt.epoch("ms") if isinstance(dtype, pl.Datetime) else c.cast(pl.Int64, strict=False)
            elif f.endswith("_id"):
                e = c.cast(pl.Int64, strict=False)
            elif f == "buyer_maker":
                e = c.cast(pl.Boolean, strict=False)
            else:
                e = c.cast(pl.Float64, strict=False)
            exprs.append(e.alias(f))
        if self.info.symbol_column:
            exprs.append(pl.col("symbol").cast(pl.String).str.to_uppercase().alias("symbol"))
        out = df.select(exprs)
        n = out.height
        # optional columns: event_time/recv_time default to each other (trades: to trade_time)
        v: dict[str, np.ndarray | None] = {}
        bad_reason: list[str | None] = [None] * n
        bad_mask = np.zeros(n, dtype=bool)

        def flag(mask: np.ndarray, reason: str) -> None:
            new = mask & ~bad_mask
            for i in np.flatnonzero(new):
                bad_reason[i] = reason
            bad_mask[:] |= new

        for f in fields:
            if f not in out.columns:
                v[f] = None
                continue
            s = out[f]
            if f == "event_time" and self.kind == "book" and s.null_count() == n:
                v[f] = None
                continue
            if s.null_count():
                flag(s.is_null().to_numpy(), f"{f} is missing or not a number")
                s = s.fill_null(False if f == "buyer_maker" else 0)
            a = s.to_numpy()
            if f.endswith("_time"):
                flag(a <= 0, f"{f} must be > 0")
                a = bf.to_ms_array(a)
            elif f.endswith("_id"):
                flag(a < 0, f"{f} must be >= 0")
            elif f != "buyer_maker":
                flag(~np.isfinite(a), f"{f} is not a finite number")
                flag(a <= 0, f"{f} must be > 0")
            v[f] = a
        t: np.ndarray | None
        if self.kind == "trade":
            assert v["trade_time"] is not None
            if v["event_time"] is None:
                v["event_time"] = v["trade_time"]
            if v["recv_time"] is None:
                v["recv_time"] = v["event_time"]
            t = v["trade_time"]
        else:
            assert v["bid_price"] is not None and v["ask_price"] is not None
            flag(v["bid_price"] >= v["ask_price"], "crossed book: bid_price >= ask_price")
            if v["recv_time"] is None:
                v["recv_time"] = v["event_time"]
            t = v["event_time"] if v["event_time"] is not None else v["recv_time"]
        assert t is not None
        times: np.ndarray = t
        bad = [
            BadRow(self.file, first_row + int(i), bad_reason[i] or "invalid row", str(df.row(int(i))))
            for i in np.flatnonzero(bad_mask)
        ]
        keep = ~bad_mask
        times = times[keep]
        v = {k: (a[keep] if a is not None else None) for k, a in v.items()}
        if len(times):
            self.watermark = max(self.watermark, int(times.max()))
        if self.info.symbol_column:
            syms = out["symbol"].to_numpy()[keep]
            groups = [(str(s), syms == s) for s in np.unique(syms.astype(str))]
        else:
            groups = [(str(self.info.symbol), np.ones(len(times), dtype=bool))]
        chunks: list[Any] = []
        for sym, m in groups:
            if self.symbols is not None and sym not in self.symbols:
                continue
            ch = _sorted_chunk(
                self.kind, sym, times[m], {k: (a[m] if a is not None else None) for k, a in v.items()}, self.file
            )
            w = _window(self.start_ms, self.end_ms, ch.time)
            chunks.append(ch.take(w) if w is not None else ch)
        return self._finish(chunks, bad)


def _make_reader(
    info: FileInfo,
    index: int,
    *,
    symbol: str | None,
    start_ms: int | None,
    end_ms: int | None,
    chunk_rows: int,
    symbols: frozenset[str] | None,
) -> _Reader:
    kw: dict[str, Any] = {"start_ms": start_ms, "end_ms": end_ms, "symbols": symbols}
    if info.format is FileFormat.RAW_WS_CAPTURE:
        return _CaptureReader(info, index, chunk_rows, symbol, **kw)
    if info.format in (FileFormat.PARQUET_TRADES, FileFormat.PARQUET_BOOKTICKER):
        return _ParquetReader(info, index, chunk_rows, **kw)
    return _CsvReader(info, index, chunk_rows, **kw)


# --------------------------------------------------------------------------------------------------
# Public iteration


def iter_file(
    path: str | Path,
    *,
    symbol: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    chunk_rows: int = 50_000,
    on_progress: ProgressFn | None = None,
) -> Iterator[SourceChunk | KlineChunk]:
    """Stream one file as chunks of about ``chunk_rows`` rows, keeping only ``start_ms <= time < end_ms``.

    The format is recognised at once (so :class:`SourceFormatError` is raised by this call, not by the
    first ``next``). Trade and book files yield :class:`SourceChunk` (one kind and symbol each); a raw
    capture yields per block one chunk per (kind, symbol) present, not interleaved (use
    :func:`merge_sources` for one time-ordered stream); klines yield :class:`KlineChunk`. Rejected rows
    ride on the chunk of their block (an empty chunk if the block had no good row). ``symbol``
    overrides the symbol of every row.
    """
    info = inspect_file(path, symbol=symbol)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    log.info("reading %s as %s (symbol %s)", info.path, info.format.value, info.symbol)
    # the file is opened on the first next(), so an iterator that is never started holds nothing open
    return _iter_reader(
        lambda: _make_reader(
            info, 0, symbol=symbol, start_ms=start_ms, end_ms=end_ms, chunk_rows=chunk_rows, symbols=None
        ),
        on_progress,
    )


def _iter_reader(make: Callable[[], _Reader], on_progress: ProgressFn | None) -> Iterator[SourceChunk | KlineChunk]:
    reader = make()
    try:
        while not reader.done:
            yield from reader.read()
            if on_progress is not None:
                on_progress(reader.rows_done, reader.bytes_done(), reader.bytes_total)
    finally:
        reader.close()


@dataclass(slots=True)
class MergedBatch:
    """All ticks of the merged sources with ``t0 <= time < t1``, in columns per (kind, symbol).

    Each part is sorted by ``time``; equal times keep file order, then row order. ``late`` counts rows
    of this batch older than ``t0`` (a source out of time order); ``bad`` the rows rejected since the
    previous batch.
    """

    t0: int
    t1: int
    parts: dict[tuple[Kind, str], SourceChunk]
    bad: list[BadRow] = field(default_factory=list)
    late: int = 0

    @property
    def trades(self) -> dict[str, SourceChunk]:
        return {s: c for (k, s), c in self.parts.items() if k == "trade"}

    @property
    def books(self) -> dict[str, SourceChunk]:
        return {s: c for (k, s), c in self.parts.items() if k == "book"}

    @property
    def n_trades(self) -> int:
        return sum(len(c) for (k, _), c in self.parts.items() if k == "trade")

    @property
    def n_books(self) -> int:
        return sum(len(c) for (k, _), c in self.parts.items() if k == "book")

    def __len__(self) -> int:
        return sum(len(c) for c in self.parts.values())

    def frames(self, max_ticks: int | None = None) -> list[Frame]:
        """The parts as frames of at most ``max_ticks`` ticks, ordered by their first tick's time."""
        out: list[tuple[int, Frame]] = []
        for c in self.parts.values():
            step = max_ticks or max(len(c), 1)
            for i in range(0, len(c), step):
                part = c.take(slice(i, i + step))
                out.append((int(part.time[0]), part.to_frame()))
        out.sort(key=lambda tf: tf[0])
        return [f for _, f in out]


def _concat(chunks: list[SourceChunk]) -> SourceChunk:
    if len(chunks) == 1:
        return chunks[0]
    c0 = chunks[0]
    cols: dict[str, np.ndarray | None] = {}
    for k in c0.cols:
        vals = [c.cols[k] for c in chunks]
        if all(v is None for v in vals):
            cols[k] = None
        else:  # optional column present in some parts only: fill with the merge time
            cols[k] = np.concatenate([v if v is not None else c.time for v, c in zip(vals, chunks, strict=True)])
    t = np.concatenate([c.time for c in chunks])
    return SourceChunk(c0.kind, c0.symbol, t, cols, [], c0.file)


def merge_sources(
    paths: Sequence[str | Path],
    *,
    symbols: Iterable[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int | None = None,
    chunk_rows: int = 50_000,
    batch_rows: int | None = None,
    slice_ms: int | None = None,
    on_progress: ProgressFn | None = None,
) -> Iterator[MergedBatch]:
    """Merge trade/book files (CSV, zip, capture, Parquet) into one stream of time slices.

    Every file is recognised before anything is read (a bad one raises :class:`SourceFormatError`
    here). The merge is a k-way merge on numpy columns: each source keeps a *watermark* (no later row
    of it is older), the source with the lowest watermark is read next, and the rows older than the
    lowest watermark of all sources are emitted once there are ``batch_rows`` (default ``chunk_rows``)
    of them, as one :class:`MergedBatch` (or several of at most ``slice_ms`` each). Memory stays about
    one block per source plus one batch.

    ``symbols`` keeps only these symbols; ``start_ms``/``end_ms`` keep ``start_ms <= time < end_ms``;
    ``limit`` stops after that many trades (book tickers up to the last trade's time are included).
    """
    infos = [inspect_file(p) for p in paths]
    for info in infos:
        if info.format is FileFormat.KLINES:
            raise SourceFormatError(f"{info.path}: klines are for back-fill, not the tick stream; use iter_file")
    syms = frozenset(s.upper() for s in symbols) if symbols is not None else None
    if chunk_rows < 1 or (batch_rows is not None and batch_rows < 1):
        raise ValueError("chunk_rows and batch_rows must be >= 1")
    if slice_ms is not None and slice_ms < 1:
        raise ValueError("slice_ms must be >= 1")

    def make() -> list[_Reader]:
        readers: list[_Reader] = []
        try:
            for i, info in enumerate(infos):
                readers.append(
                    _make_reader(
                        info, i, symbol=None, start_ms=start_ms, end_ms=end_ms, chunk_rows=chunk_rows, symbols=syms
                    )
                )
        except BaseException:
            for r in readers:
                r.close()
            raise
        return readers

    return _merge(make, limit, batch_rows or chunk_rows, slice_ms, on_progress)


def _merge(
    make: Callable[[], list[_Reader]],
    limit: int | None,
    batch_rows: int,
    slice_ms: int | None,
    on_progress: ProgressFn | None,
) -> Iterator[MergedBatch]:
    readers = make()
    buffers: dict[tuple[Kind, str], list[tuple[int, int, SourceChunk]]] = {}
    pending_bad: list[BadRow] = []
    boundary: int | None = None
    trades_done = 0
    rows_done = 0
    seq = 0
    late_total = 0
    bytes_total = sum(r.bytes_total for r in readers)

    def ready(upto: int) -> int:
        return sum(int(np.searchsorted(c.time, upto, "left")) for segs in buffers.values() for _, _, c in segs)

    def kth_time(upto: int, k: int) -> int:
        heads = [
            c.time[: min(k, int(np.searchsorted(c.time, upto, "left")))]
            for segs in buffers.values()
            for _, _, c in segs
        ]
        t = np.concatenate(heads)
        return int(np.partition(t, k - 1)[k - 1])

    def first_time() -> int:
        return min(int(c.time[0]) for segs in buffers.values() for _, _, c in segs if len(c))

    try:
        if limit is not None and limit <= 0:
            return
        while True:
            active = [r for r in readers if not r.done]
            w = min((r.watermark for r in active), default=_INF)
            n_ready = ready(w)
            if active and n_ready < batch_rows:
                r = min(active, key=lambda r: (r.watermark, r.index))
                for c in r.read():
                    assert isinstance(c, SourceChunk)
                    pending_bad.extend(c.bad)
                    c.bad = []
                    if len(c):
                        buffers.setdefault((c.kind, c.symbol), []).append((r.index, seq, c))
                        seq += 1
                continue
            if n_ready == 0:
                break
            while n_ready >= batch_rows or (not active and n_ready):
                t_first = first_time()
                upto = w
                if n_ready > batch_rows:  # about batch_rows rows (ties at the cut stay together)
                    upto = min(upto, kth_time(w, batch_rows) + 1)
                if slice_ms is not None:
                    upto = min(upto, t_first + slice_ms)
                batch, n_ready = _take(buffers, upto, boundary, t_first, w, ready)
                stop = limit is not None and trades_done + batch.n_trades >= limit
                if stop:
                    assert limit is not None
                    batch = _cut(batch, limit - trades_done)
                boundary = batch.t1
                batch.bad, pending_bad = pending_bad, []
                trades_done += batch.n_trades
                rows_done += len(batch)
                if batch.late:
                    late_total += batch.late
                    log.warning(
                        "%d rows older than the merged stream's time %d (source out of order)", batch.late, batch.t0
                    )
                yield batch
                if on_progress is not None:
                    on_progress(rows_done, sum(r.bytes_done() for r in readers), bytes_total)
                if stop:
                    return
        if pending_bad:
            t = boundary if boundary is not None else 0
            yield MergedBatch(t, t, {}, pending_bad)
    finally:
        for r in readers:
            r.close()
        log.info("merged %d rows (%d trades) from %d files; %d late", rows_done, trades_done, len(readers), late_total)


def _take(
    buffers: dict[tuple[Kind, str], list[tuple[int, int, SourceChunk]]],
    upto: int,
    boundary: int | None,
    t_first: int,
    w: int,
    ready: Callable[[int], int],
) -> tuple[MergedBatch, int]:
    parts: dict[tuple[Kind, str], SourceChunk] = {}
    late = 0
    t0 = boundary if boundary is not None else t_first
    t_max = t0
    for key in sorted(buffers):
        segs = buffers[key]
        taken: list[tuple[int, int, SourceChunk]] = []
        keep: list[tuple[int, int, SourceChunk]] = []
        for fidx, s, c in segs:
            k = int(np.searchsorted(c.time, upto, "left"))
            if k:
                taken.append((fidx, s, c.take(slice(0, k))))
            if k < len(c):
                keep.append((fidx, s, c.take(slice(k, None))))
        if keep:
            buffers[key] = keep
        else:
            del buffers[key]
        if not taken:
            continue
        taken.sort(key=lambda x: (x[0], x[1]))
        part = _concat([c for _, _, c in taken])
        if len(taken) > 1:
            order = np.argsort(part.time, kind="stable")
            if np.any(order[1:] < order[:-1]):
                part = part.take(order)
        late += int(np.count_nonzero(part.time < t0))
        t_max = max(t_max, int(part.time[-1]))
        parts[key] = part
    t1 = upto if upto < _INF else t_max + 1
    return MergedBatch(t0, max(t1, t0), parts, [], late), ready(w)


def _cut(batch: MergedBatch, left: int) -> MergedBatch:
    """The batch up to its ``left``-th trade (in time order; ties by part order, then row order)."""
    trade_keys = [k for k in batch.parts if k[0] == "trade"]
    times = np.concatenate([batch.parts[k].time for k in trade_keys]) if trade_keys else np.empty(0, np.int64)
    if left >= len(times):
        return batch
    t_cut = int(np.sort(times, kind="stable")[left - 1])
    room = left - int(np.count_nonzero(times < t_cut))
    parts: dict[tuple[Kind, str], SourceChunk] = {}
    for key, c in batch.parts.items():
        if key[0] == "trade":
            below = c.time < t_cut
            at = np.flatnonzero(c.time == t_cut)
            take_at = at[:room]
            room -= len(take_at)
            m = below.copy()
            m[take_at] = True
        else:
            m = c.time <= t_cut
        if m.any():
            parts[key] = c.take(m)
    return MergedBatch(batch.t0, t_cut + 1, parts, batch.bad, batch.late)


# --------------------------------------------------------------------------------------------------
# Pacing and Parquet output


class Pacer:
    """Replays event time at ``speed`` times the wall clock (None: as fast as possible).

    The first :meth:`wait_until` anchors event time to the clock; later calls sleep until the clock
    has advanced ``(event_ms - first_event_ms) / speed`` ms. ``clock`` (seconds, monotonic) and
    ``sleep`` are injectable for tests; ``sleep`` may be ``threading.Event().wait`` to make it stoppable.
    """

    def __init__(
        self,
        speed: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0 or None, got {speed}")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[float, int] | None = None

    def reset(self) -> None:
        """Forget the anchor: the next event is replayed at once."""
        self._anchor = None

    def wait_until(self, event_ms: int) -> float:
        """Sleep until ``event_ms`` is due; return the seconds slept (0.0 if it was already due)."""
        if self.speed is None:
            return 0.0
        now = self._clock()
        if self._anchor is None:
            self._anchor = (now, event_ms)
            return 0.0
        wall0, ev0 = self._anchor
        delay = wall0 + (event_ms - ev0) / 1000.0 / self.speed - now
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        return delay


def write_parquet(path: str | Path, chunks: Iterable[SourceChunk]) -> int:
    """Write trade or book-ticker chunks (one kind) to Parquet with a ``symbol`` column; return rows.

    The columns are those read back by this module (:data:`PARQUET_TRADE_COLUMNS` /
    :data:`PARQUET_BOOK_COLUMNS`). The rows are gathered in memory first: meant for modest files.
    """
    frames: list[pl.DataFrame] = []
    kind: Kind | None = None
    for c in chunks:
        if not len(c):
            continue
        if kind is None:
            kind = c.kind
        elif c.kind != kind:
            raise ValueError("write_parquet takes chunks of one kind (trades or book tickers)")
        data: dict[str, Any] = {"symbol": [c.symbol] * len(c)}
        for k, v in c.cols.items():
            data[k] = pl.Series(k, v) if v is not None else pl.Series(k, [None] * len(c), dtype=pl.Int64)
        frames.append(pl.DataFrame(data))
    if not frames:
        raise ValueError("nothing to write")
    df = pl.concat(frames, how="vertical_relaxed")
    df.write_parquet(Path(path))
    return df.height
