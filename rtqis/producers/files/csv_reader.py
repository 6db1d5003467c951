"""Binance archive CSVs: byte blocks of whole lines parsed by polars, rejected rows re-parsed in Python."""

from __future__ import annotations

import csv
import logging
from typing import Any

import numpy as np
import polars as pl

from rtqis.intervals import interval_from_bounds
from rtqis.producers import binance_csv as bc
from rtqis.producers import binance_format as bf
from rtqis.producers.files.chunks import BadRow, Kind, KlineChunk, SourceChunk
from rtqis.producers.files.detection import FileInfo
from rtqis.producers.files.opening import Opened
from rtqis.producers.files.reader_base import Reader, raw_text, sorted_chunk, time_window
from rtqis.schemas.rows import check_columns

__all__ = ["CsvReader"]

log = logging.getLogger(__name__)


class CsvReader(Reader):
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
        self._o = Opened(info.path, info.compression, info.member)
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
        """The block's rows in columns, and its rejected rows: first those that do not parse, then those
        that break the row rules of :mod:`rtqis.schemas.rows` (the same rules as every reader)."""
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
            values, rows, bad = self._parse_slow(first_line, block)
        else:
            values, rows, bad = self._parse_fast(first_line, block, df)
        good, reasons = check_columns(lay.kind, bc.rule_columns(lay.kind, values), len(rows))
        if reasons:
            lines = block.split(b"\n")
            for i, reason in reasons:
                k = int(rows[i])
                bad.append(BadRow(self.file, first_line + k, reason, raw_text(lines[k].rstrip(b"\r"))))
            bad.sort(key=lambda b: b.line)
            values = {k: v[good] for k, v in values.items()}
        return values, bad

    def _parse_fast(
        self, first_line: int, block: bytes, df: pl.DataFrame
    ) -> tuple[dict[str, np.ndarray], np.ndarray, list[BadRow]]:
        """Parse by polars; a line it cannot read is parsed again in Python, which keeps or explains it.
        Returns the columns, the index in the block of each kept line, and the rejected lines."""
        lay = self.layout
        exprs = []
        for fld in lay.out_fields:
            c = pl.col(f"c{self.col_index[fld]}")
            kind = bc.FIELD_KINDS[fld]
            if kind in ("int", "time"):
                e = c.cast(pl.Int64, strict=False)
            elif kind == "bool":
                low = c.str.to_lowercase()
                e = pl.when(low == "true").then(True).when(low == "false").then(False).otherwise(None)
            else:
                e = c.cast(pl.Float64, strict=False)
            exprs.append(e.alias(fld))
        out = df.select(exprs)
        n = out.height
        # a line with another number of fields (polars pads a short one with nulls, and a field the
        # layout does not use is never cast) goes to Python too, which rejects it as the row-by-row
        # path does: the verdict does not depend on where the block boundaries fall
        unread = self._field_counts(block) != self.width
        values: dict[str, np.ndarray] = {}
        for fld in lay.out_fields:
            s = out[fld]
            kind = bc.FIELD_KINDS[fld]
            if s.null_count():
                unread |= s.is_null().to_numpy()
                s = s.fill_null(False if kind == "bool" else 0)
            v = s.to_numpy()
            values[fld] = bf.to_ms_array(v) if kind == "time" else v
        bad: list[BadRow] = []
        keep = np.ones(n, dtype=bool)
        if unread.any():
            values = {k: (v if v.flags.writeable else v.copy()) for k, v in values.items()}
            lines = block.split(b"\n")
            for i in np.flatnonzero(unread):
                raw = lines[i].rstrip(b"\r")
                keep[i] = False
                if not raw.strip():
                    continue  # blank line: skipped, not an error
                try:
                    row = self._parse_line(raw)
                except bf.BadMessage as e:
                    bad.append(BadRow(self.file, first_line + int(i), e.reason, raw_text(raw)))
                    continue
                for fld, x in zip(lay.out_fields, row, strict=True):  # polars was stricter than Python
                    values[fld][i] = x
                keep[i] = True
            values = {k: v[keep] for k, v in values.items()}
        return values, np.flatnonzero(keep), bad

    @staticmethod
    def _field_counts(block: bytes) -> np.ndarray:
        """Comma-separated fields on each line of a block of whole lines (quotes are not special)."""
        b = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(b == ord("\n"))
        commas = np.flatnonzero(b == ord(","))
        return np.diff(np.searchsorted(commas, ends), prepend=0) + 1

    def _parse_line(self, raw: bytes) -> tuple[Any, ...]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bf.BadMessage("line is not valid UTF-8 text") from None
        try:
            row = next(csv.reader([text]), [])
        except csv.Error:
            raise bf.BadMessage("not a CSV row (a carriage return or NUL inside the line)") from None
        return bc.parse_csv_fields(self.layout, row, self.col_index, self.width)

    def _parse_slow(self, first_line: int, block: bytes) -> tuple[dict[str, np.ndarray], np.ndarray, list[BadRow]]:
        """Parse line by line in Python (a block polars cannot read as a whole, e.g. a short row)."""
        rows: list[tuple[Any, ...]] = []
        kept: list[int] = []
        bad: list[BadRow] = []
        for i, raw in enumerate(block.split(b"\n")[:-1]):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            try:
                rows.append(self._parse_line(raw))
                kept.append(i)
            except bf.BadMessage as e:
                bad.append(BadRow(self.file, first_line + i, e.reason, raw_text(raw)))
        values: dict[str, np.ndarray] = {}
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in self.layout.out_fields]
        for fld, col in zip(self.layout.out_fields, cols, strict=True):
            kind = bc.FIELD_KINDS[fld]
            dtype = np.int64 if kind in ("int", "time") else np.bool_ if kind == "bool" else np.float64
            values[fld] = np.array(col, dtype=dtype)
        return values, np.array(kept, dtype=np.int64), bad

    def _chunks(self, v: dict[str, np.ndarray]) -> list[SourceChunk | KlineChunk]:
        lay = self.layout
        sym = self.info.symbol
        assert sym is not None
        if lay.kind == "kline":
            t = v["open_time"]
            if len(t):
                self.watermark = max(self.watermark, int(t.max()))
            m = time_window(self.start_ms, self.end_ms, t)
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
        c = sorted_chunk(kind, sym, t, cols, self.file)
        m = time_window(self.start_ms, self.end_ms, c.time)
        return [c.take(m) if m is not None else c]


def _interval_of(v: dict[str, np.ndarray]) -> str | None:
    """Interval of klines from the first row's open and (inclusive) close time, if they have one."""
    if not len(v["open_time"]):
        return None
    return interval_from_bounds(int(v["open_time"][0]), int(v["close_time"][0]))
