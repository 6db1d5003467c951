"""The file source: Binance market data from files, streamed in columns with bounded memory.

No Kafka here: this package turns files into time-ordered numpy columns; the feed publishes them.

Inputs (recognised by content, see :func:`detect_format`; ``.zip`` and gzip are opened transparently):

* Binance public-archive CSVs (data.binance.vision): spot / USD-M / COIN-M trades, spot / futures
  aggTrades, bookTicker and klines, with or without header (layouts in
  :mod:`rtqis.producers.binance_csv`). A ``.zip`` as downloaded is streamed from its single member.
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

Modules, one subject each: :mod:`.detection` (what a file is, from its name and first bytes),
:mod:`.opening` (transparent gzip/zip), :mod:`.chunks` (what readers yield), :mod:`.reader_base`,
:mod:`.csv_reader`, :mod:`.capture_reader`, :mod:`.parquet_reader` (one reader per format),
:mod:`.readers` (:func:`iter_file`), :mod:`.merge` (:func:`merge_sources`, the k-way merge on event
time), :mod:`.pacing` (:class:`Pacer`) and :mod:`.parquet_writer` (:func:`write_parquet`). The row
rules every reader applies are :mod:`rtqis.schemas.rows`.
"""

from __future__ import annotations

from rtqis.producers.files.chunks import BadRow, KlineChunk, ProgressFn, SourceChunk
from rtqis.producers.files.detection import FileFormat, FileInfo, SourceFormatError, detect_format, inspect_file
from rtqis.producers.files.merge import MergedBatch, merge_sources
from rtqis.producers.files.pacing import Pacer
from rtqis.producers.files.parquet_reader import PARQUET_BOOK_COLUMNS, PARQUET_TRADE_COLUMNS
from rtqis.producers.files.parquet_writer import write_parquet
from rtqis.producers.files.readers import iter_file

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
