"""Cut a live stream of ticks into frames: per (kind, symbol), at most ``max_ticks`` rows, and never
holding a tick longer than ``max_ms`` (so sparse markets still see low latency). With ``cut_ms`` (the pair
sample period), the first tick of a new sample period ends its frame at once: that tick closes the
previous period's pair sample, so it is not held."""

from __future__ import annotations

import time
from collections.abc import Callable

from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.schemas.registry import FrameType

__all__ = ["FrameBuffer"]


class _Pending:
    __slots__ = ("first", "ftype", "rows", "since")

    def __init__(self, ftype: FrameType, since: float, first: int) -> None:
        self.ftype = ftype
        self.rows: list[m.Trade | m.BookTicker] = []
        self.since = since
        self.first = first  # event time of the first tick


class FrameBuffer:
    """Rows in, frames out. ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(
        self, max_ticks: int, max_ms: int, clock: Callable[[], float] = time.monotonic, cut_ms: int | None = None
    ) -> None:
        self.max_ticks = max_ticks
        self.max_s = max_ms / 1000.0
        self.clock = clock
        self.cut_ms = cut_ms  # a tick at/after a multiple of this (event time) ends its frame at once
        self._pending: dict[tuple[str, str], _Pending] = {}

    def __len__(self) -> int:
        return sum(len(p.rows) for p in self._pending.values())

    def add(self, row: m.Trade | m.BookTicker) -> Frame | None:
        """Add one tick; returns a full frame when this tick completes one."""
        ftype = TRADE_FRAME if isinstance(row, m.Trade) else BOOK_FRAME
        key = (ftype.name, row.symbol)
        t = row.event_time if row.event_time is not None else row.recv_time
        p = self._pending.get(key)
        if p is None:
            p = self._pending[key] = _Pending(ftype, self.clock(), t)
        p.rows.append(row)
        # a tick in a later sample period than the frame's first closes the pair samples before it:
        # send it now rather than up to max_ms later (the signal path's latency)
        crossed = self.cut_ms is not None and t // self.cut_ms > p.first // self.cut_ms
        if len(p.rows) >= self.max_ticks or crossed:
            del self._pending[key]
            return self._frame(p)
        return None

    def due(self) -> list[Frame]:
        """Frames whose first tick is at least ``max_ms`` old, oldest first."""
        now = self.clock()
        out = []
        for key in [k for k, p in self._pending.items() if now - p.since >= self.max_s]:
            p = self._pending.pop(key)
            out.append(self._frame(p))
        return out

    def flush(self) -> list[Frame]:
        """Every pending frame (at shutdown)."""
        out = [self._frame(p) for p in self._pending.values()]
        self._pending.clear()
        return out

    @staticmethod
    def _frame(p: _Pending) -> Frame:
        """The pending rows as one frame (built by :meth:`Frame.from_rows`, like every frame)."""
        return Frame.from_rows(p.ftype, p.rows)
