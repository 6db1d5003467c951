"""Parquet files of trades or book tickers, read ``chunk_rows`` rows at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from rtqis.producers import binance_format as bf
from rtqis.producers.files.chunks import BadRow, Kind, KlineChunk, SourceChunk
from rtqis.producers.files.detection import FileFormat, FileInfo
from rtqis.producers.files.reader_base import Reader, sorted_chunk, time_window
from rtqis.schemas.rows import check_columns

__all__ = ["PARQUET_ALIASES", "PARQUET_BOOK_COLUMNS", "PARQUET_TRADE_COLUMNS", "ParquetReader"]


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

PARQUET_ALIASES = {"trade_time": ("trade_time", "time"), "buyer_maker": ("buyer_maker", "is_buyer_maker")}


class ParquetReader(Reader):
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
        for n in PARQUET_ALIASES.get(name, (name,)):
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
            if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Null) or isinstance(dtype, pl.Datetime)):
                # lists, structs, binary ...: polars cannot cast them, so every value is "not a number"
                lit_type = (
                    pl.Boolean if f == "buyer_maker" else pl.Int64 if f.endswith(("_time", "_id")) else pl.Float64
                )
                e = pl.lit(None, dtype=lit_type)
            elif f.endswith("_time"):
                e = c.dt.epoch("ms") if isinstance(dtype, pl.Datetime) else c.cast(pl.Int64, strict=False)
            elif f.endswith("_id"):
                e = c.cast(pl.Int64, strict=False)
            elif f == "buyer_maker" and dtype == pl.String:  # true/false in any case, as in the CSV files
                e = (
                    c.str.strip_chars()
                    .str.to_lowercase()
                    .replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
                )
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
        unread = np.zeros(n, dtype=bool)  # a required value missing or not a number
        unread_reason: list[str | None] = [None] * n
        for f in fields:
            if f not in out.columns:
                v[f] = None
                continue
            s = out[f]
            if f == "event_time" and self.kind == "book" and s.null_count() == n and "recv_time" in out.columns:
                # a spot book ticker has no event time; with no recv_time either, every row is unread
                v[f] = None
                continue
            if s.null_count():
                nulls = s.is_null().to_numpy()
                for i in np.flatnonzero(nulls & ~unread):
                    unread_reason[i] = f"{f} is missing or not a number"
                unread |= nulls
                s = s.fill_null(False if f == "buyer_maker" else 0)
            a = s.to_numpy()
            v[f] = bf.to_ms_array(a) if f.endswith("_time") else a
        t: np.ndarray | None
        if self.kind == "trade":
            assert v["trade_time"] is not None
            if v["event_time"] is None:
                v["event_time"] = v["trade_time"]
            if v["recv_time"] is None:
                v["recv_time"] = v["event_time"]
            t = v["trade_time"]
        else:
            if v["recv_time"] is None:
                v["recv_time"] = v["event_time"]
            t = v["event_time"] if v["event_time"] is not None else v["recv_time"]
        assert t is not None
        times: np.ndarray = t
        good, reasons = check_columns(self.kind, v, n)  # the row rules every reader applies
        rule_reason = dict(reasons)
        bad_mask = unread | ~good
        bad = [
            BadRow(self.file, first_row + int(i), unread_reason[i] or rule_reason[int(i)], str(df.row(int(i))))
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
            ch = sorted_chunk(
                self.kind, sym, times[m], {k: (a[m] if a is not None else None) for k, a in v.items()}, self.file
            )
            w = time_window(self.start_ms, self.end_ms, ch.time)
            chunks.append(ch.take(w) if w is not None else ch)
        return self._finish(chunks, bad)
