"""High-water marks of the tick archive: how ``trades`` and ``book_tickers`` stay free of duplicates
without a primary key (whose in-memory index grew with every tick ever stored, bench/README.md).

What the data guarantees, and what the archive relies on instead of a global key:

* **ids grow per symbol.** Binance trade ids increase by one per trade of a symbol, and book-ticker
  update ids increase with every order-book change; a symbol's frames travel on one partition (keyed by
  symbol), so they arrive in id order. A row whose id is not above every id stored before it (earlier
  batches, earlier rows of the same batch) is a re-published tick (a producer restarted, a replay run
  twice, an overlap of two files): it is skipped and counted, never stored twice, never overwrites the
  stored row. This is the worker's own rule (:class:`~rtqis.analytics.candles.CandleState`: "a row whose
  id is not larger than every id applied before it is a duplicate"), so the archive holds exactly the
  trades the candles were made of. No window of recent ids is kept for out-of-order new ids: the worker
  drops them too, and a window index would be the memory this module exists to avoid.
* **per-partition idempotence.** Offsets are stored in the same transaction as the rows
  (:meth:`rtqis.sinks.store.Store.write_batch`), so after a restart the sink resumes after the last
  stored message; messages re-read after a crash carry ids at or below the marks and are skipped.

The marks (per symbol: the largest trade id and trade time stored, and the largest book-ticker update id)
are kept in memory (a few integers per symbol, whatever the archive holds) and in the store's small
``tick_marks`` table, written in the same transaction as the ticks (:meth:`TickMarks.changed`). Retention
(:mod:`rtqis.sinks.retention`) deletes old ticks, possibly every tick of a quiet symbol; the table keeps
that symbol's marks, so after a restart its old ticks re-published are still skipped. When the store
opens, the marks are the larger of the table and of the rows themselves (``max`` per symbol: rows written
straight into the archive by another program count too). The same marks feed the plausibility
bounds (:mod:`rtqis.schemas.plausibility`) the sink applies, as the worker does, so a row the worker
refuses is not archived.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import duckdb
import numpy as np

from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.schemas.plausibility import implausible_rows

__all__ = ["TickMarks", "fresh_ids", "screen_frame"]


def fresh_ids(ids: np.ndarray, prior: int | None) -> np.ndarray:
    """Boolean mask of the ``ids`` above ``prior`` (None: none yet) and above every id before them in
    ``ids``: the rows that are new; the others are re-published duplicates."""
    a = np.asarray(ids, dtype=np.int64)
    if not len(a):
        return np.zeros(0, dtype=bool)
    before = np.empty_like(a)
    before[0] = np.iinfo(np.int64).min if prior is None else prior
    if len(a) > 1:
        np.maximum.accumulate(a[:-1], out=before[1:])
        if prior is not None:
            np.maximum(before, prior, out=before)
    return a > before


@dataclass
class TickMarks:
    """Per symbol: ``trade_id`` (largest stored), ``trade_time`` (largest stored, epoch ms; the symbol's
    clock for the plausibility bounds) and ``update_id`` (largest stored book-ticker update id)."""

    trade_id: dict[str, int] = field(default_factory=dict)
    trade_time: dict[str, int] = field(default_factory=dict)
    update_id: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection) -> TickMarks:
        """The marks of the open database: the stored ``tick_marks`` and the rows of the tick tables
        (one aggregate per table), the larger of the two per symbol."""
        marks = cls()
        for sym, tid, ttime in con.execute(
            "SELECT symbol, max(trade_id), max(trade_time) FROM trades GROUP BY symbol"
        ).fetchall():
            marks.add_trades(str(sym), np.array([tid], dtype=np.int64), np.array([ttime], dtype=np.int64))
        for sym, uid in con.execute("SELECT symbol, max(update_id) FROM book_tickers GROUP BY symbol").fetchall():
            marks.add_books(str(sym), np.array([uid], dtype=np.int64))
        for sym, kind, last_id, last_time in con.execute(
            "SELECT symbol, kind, last_id, last_time FROM tick_marks"
        ).fetchall():
            ids = np.array([last_id], dtype=np.int64)
            if kind == "trade":
                marks.add_trades(str(sym), ids, np.array([last_time], dtype=np.int64))
            elif kind == "book":
                marks.add_books(str(sym), ids)
        return marks

    def changed(self, before: TickMarks) -> list[tuple[str, str, int, int | None]]:
        """The ``tick_marks`` rows ``(symbol, kind, last_id, last_time)`` that moved since ``before``
        (to be stored with the ticks that moved them)."""
        out: list[tuple[str, str, int, int | None]] = []
        for sym, tid in self.trade_id.items():
            if before.trade_id.get(sym) != tid or before.trade_time.get(sym) != self.trade_time.get(sym):
                out.append((sym, "trade", tid, self.trade_time.get(sym)))
        for sym, uid in self.update_id.items():
            if before.update_id.get(sym) != uid:
                out.append((sym, "book", uid, None))
        return out

    def copy(self) -> TickMarks:
        """An independent copy (a batch advances its own marks until it is committed)."""
        return copy.deepcopy(self)

    def fresh_trades(self, symbol: str, ids: np.ndarray) -> np.ndarray:
        """Mask of the new trades of ``symbol`` (see :func:`fresh_ids`)."""
        return fresh_ids(ids, self.trade_id.get(symbol))

    def fresh_books(self, symbol: str, ids: np.ndarray) -> np.ndarray:
        """Mask of the new book-ticker updates of ``symbol`` (see :func:`fresh_ids`)."""
        return fresh_ids(ids, self.update_id.get(symbol))

    def add_trades(self, symbol: str, ids: np.ndarray, times: np.ndarray) -> None:
        """Advance the marks of ``symbol`` over stored (or about to be stored) trades."""
        if len(ids):
            self.trade_id[symbol] = max(int(np.max(ids)), self.trade_id.get(symbol, np.iinfo(np.int64).min))
            self.trade_time[symbol] = max(int(np.max(times)), self.trade_time.get(symbol, np.iinfo(np.int64).min))

    def add_books(self, symbol: str, ids: np.ndarray) -> None:
        """Advance the book-ticker mark of ``symbol``."""
        if len(ids):
            self.update_id[symbol] = max(int(np.max(ids)), self.update_id.get(symbol, np.iinfo(np.int64).min))


def screen_frame(
    marks: TickMarks, frame: Frame, now_ms: int | None = None
) -> tuple[Frame | None, list[tuple[int, str]], int]:
    """Apply the worker's plausibility bounds (:func:`~rtqis.schemas.plausibility.implausible_rows`) and
    the high-water-mark de-duplication to one validated tick ``frame``, advancing ``marks`` over the rows
    kept: (rows to store or None, [(row, reason)] refused as implausible, re-published rows skipped).

    The bounds use the symbol's trade clock and trade-id mark as the worker uses its trade state: trades
    are checked on ``trade_time`` and ``trade_id``, book tickers on ``event_time`` (``recv_time`` when
    absent) without an id bound. Refused rows do not move the marks; every row is checked against the
    marks before the frame. Row numbers are those of ``frame``."""
    sym = frame.symbol
    trade = frame.type is TRADE_FRAME
    c = frame.cols
    if trade:
        times, ids = c["trade_time"], c["trade_id"]
    else:
        times = c["event_time"] if c.get("event_time") is not None else c["recv_time"]
        ids = c["update_id"]
    assert times is not None and ids is not None  # required columns of validated frames
    refused = implausible_rows(
        times, ids if trade else None, marks.trade_time.get(sym), marks.trade_id.get(sym), now_ms
    )
    keep = np.ones(len(ids), dtype=bool)
    if refused:
        keep[[i for i, _ in refused]] = False
    fresh = np.zeros(len(ids), dtype=bool)
    fresh[keep] = marks.fresh_trades(sym, ids[keep]) if trade else marks.fresh_books(sym, ids[keep])
    dup = int(np.count_nonzero(keep)) - int(np.count_nonzero(fresh))
    if not fresh.any():
        return None, refused, dup
    if trade:
        marks.add_trades(sym, ids[fresh], times[fresh])
    else:
        marks.add_books(sym, ids[fresh])
    return (frame if fresh.all() else frame.take(fresh)), refused, dup
