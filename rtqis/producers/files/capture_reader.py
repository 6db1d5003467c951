"""Raw WebSocket captures: ``<receive time> <JSON>`` per line, parsed with orjson, merged per lane."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson

from rtqis.producers import binance_format as bf
from rtqis.producers.files.chunks import INF, NEG_INF, BadRow, Kind, KlineChunk, SourceChunk
from rtqis.producers.files.detection import CAPTURE_LINE, FileInfo
from rtqis.producers.files.opening import Opened
from rtqis.producers.files.reader_base import Reader, raw_text, sorted_chunk, time_window

__all__ = ["CAPTURE_SLACK_MS", "CaptureReader"]


CAPTURE_SLACK_MS = 1_000
"""How far a capture lane's next event time may fall below ``receive time + smallest offset seen``."""


class _Lane:
    """Per (kind, symbol) state of a capture: last time and smallest (time - receive time) seen."""

    __slots__ = ("last", "min_off")

    def __init__(self) -> None:
        self.last = NEG_INF
        self.min_off = INF


class CaptureReader(Reader):
    """Raw WebSocket captures: ``<receive time> <JSON>`` per line, parsed line by line with orjson."""

    def __init__(self, info: FileInfo, index: int, chunk_rows: int, symbol: str | None, **kw: Any) -> None:
        super().__init__(info, index, **kw)
        self._o = Opened(info.path, info.compression, info.member)
        self.override = symbol.upper() if symbol else None
        self.chunk_rows = chunk_rows
        self.line_no = 1
        self.recv_last = NEG_INF
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
                m = CAPTURE_LINE.match(line)
                if m is None:
                    if line.strip():
                        reason = "line is not '<receive time> <JSON>'"
                        bad.append(BadRow(self.file, first + i, reason, raw_text(line.strip())))
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
                bad.append(BadRow(self.file, first + i, reason, raw_text(js.strip())))
                continue
            except bf.BadMessage as e:
                bad.append(BadRow(self.file, first + i, e.reason, raw_text(js.strip())))
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
            sel = time_window(self.start_ms, self.end_ms, c.time)
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
        return sorted_chunk("trade", sym, ta, cols, self.file)

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
        return sorted_chunk("book", sym, ta, cols, self.file)
