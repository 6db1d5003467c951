"""What the readers yield: ticks of one kind and symbol in columns, klines, and rejected rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame

__all__ = ["BadRow", "INF", "Kind", "KlineChunk", "NEG_INF", "ProgressFn", "SourceChunk"]


Kind = Literal["trade", "book"]
ProgressFn = Callable[[int, int, int], None]
"""``on_progress(rows_done, bytes_done, bytes_total)``; bytes are of the file(s) on disk (compressed)."""

INF = np.iinfo(np.int64).max
NEG_INF = np.iinfo(np.int64).min


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
