"""K-way merge of trade/book sources on event time into batches, with bounded memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtqis.producers.files.chunks import INF, BadRow, Kind, ProgressFn, SourceChunk
from rtqis.producers.files.detection import FileFormat, SourceFormatError, inspect_file
from rtqis.producers.files.reader_base import Reader
from rtqis.producers.files.readers import make_reader
from rtqis.schemas.frames import Frame

__all__ = ["MergedBatch", "merge_sources"]

log = logging.getLogger(__name__)


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
            if not len(c):
                continue
            starts = range(0, len(c), max_ticks or len(c))
            out.extend((int(c.time[i]), f) for i, f in zip(starts, c.to_frame().split(max_ticks), strict=True))
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

    def make() -> list[Reader]:
        readers: list[Reader] = []
        try:
            for i, info in enumerate(infos):
                readers.append(
                    make_reader(
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
    make: Callable[[], list[Reader]],
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
            w = min((r.watermark for r in active), default=INF)
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
    t1 = upto if upto < INF else t_max + 1
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
