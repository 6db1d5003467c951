"""One reader per file format behind one interface, and :func:`iter_file`, the stream of one file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rtqis.producers.files.capture_reader import CaptureReader
from rtqis.producers.files.chunks import KlineChunk, ProgressFn, SourceChunk
from rtqis.producers.files.csv_reader import CsvReader
from rtqis.producers.files.detection import FileFormat, FileInfo, inspect_file
from rtqis.producers.files.parquet_reader import ParquetReader
from rtqis.producers.files.reader_base import Reader

__all__ = ["iter_file", "make_reader"]

log = logging.getLogger(__name__)


def make_reader(
    info: FileInfo,
    index: int,
    *,
    symbol: str | None,
    start_ms: int | None,
    end_ms: int | None,
    chunk_rows: int,
    symbols: frozenset[str] | None,
) -> Reader:
    """The reader of ``info``'s format; ``index`` orders equal times across files in a merge."""
    kw: dict[str, Any] = {"start_ms": start_ms, "end_ms": end_ms, "symbols": symbols}
    if info.format is FileFormat.RAW_WS_CAPTURE:
        return CaptureReader(info, index, chunk_rows, symbol, **kw)
    if info.format in (FileFormat.PARQUET_TRADES, FileFormat.PARQUET_BOOKTICKER):
        return ParquetReader(info, index, chunk_rows, **kw)
    return CsvReader(info, index, chunk_rows, **kw)


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
    return iter_reader(
        lambda: make_reader(
            info, 0, symbol=symbol, start_ms=start_ms, end_ms=end_ms, chunk_rows=chunk_rows, symbols=None
        ),
        on_progress,
    )


def iter_reader(make: Callable[[], Reader], on_progress: ProgressFn | None) -> Iterator[SourceChunk | KlineChunk]:
    reader = make()
    try:
        while not reader.done:
            yield from reader.read()
            if on_progress is not None:
                on_progress(reader.rows_done, reader.bytes_done(), reader.bytes_total)
    finally:
        reader.close()
