"""What every file reader shares: the block-at-a-time interface, the time window, sorting."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtqis.producers import binance_csv as bc
from rtqis.producers.files.chunks import NEG_INF, BadRow, Kind, KlineChunk, SourceChunk
from rtqis.producers.files.detection import FileInfo
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME

__all__ = ["Reader", "raw_text", "sorted_chunk", "time_window"]


def sorted_chunk(kind: Kind, symbol: str, t: np.ndarray, cols: dict[str, np.ndarray | None], file: str) -> SourceChunk:
    """A chunk of these columns, sorted by ``t`` (stable: equal times keep file order)."""
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        order = np.argsort(t, kind="stable")
        t = t[order]
        cols = {k: (v[order] if v is not None else None) for k, v in cols.items()}
    return SourceChunk(kind, symbol, t, cols, [], file)


def time_window(start_ms: int | None, end_ms: int | None, t: np.ndarray) -> np.ndarray | None:
    """Mask of ``start_ms <= t < end_ms`` (epoch ms), or None when there is no bound."""
    if start_ms is None and end_ms is None:
        return None
    m = np.ones(len(t), dtype=bool)
    if start_ms is not None:
        m &= t >= start_ms
    if end_ms is not None:
        m &= t < end_ms
    return m


class Reader:
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
        self.watermark = NEG_INF
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
            return KlineChunk(sym, self.info.interval, {f: np.empty(0) for f in bc.KLINES.out_fields}, bad, self.file)
        kind: Kind = "book" if self.info.kind == "book" else "trade"
        ftype = TRADE_FRAME if kind == "trade" else BOOK_FRAME
        cols: dict[str, np.ndarray | None] = {k: np.empty(0, dtype=d) for k, d in ftype.dtypes.items()}
        return SourceChunk(kind, sym, np.empty(0, dtype=np.int64), cols, bad, self.file)


def raw_text(raw: bytes) -> str:
    """A rejected line as text for the dead letter (invalid UTF-8 replaced, at most 500 characters)."""
    return raw.decode("utf-8", errors="replace")[:500]
