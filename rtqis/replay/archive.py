"""The live sink's tick archive as replay input: ``rtqis replay --from T --to T``.

What is read: the LIVE sink's DuckDB (``DATA_DIR/rtqis.duckdb``, ``rtqis-NS.duckdb`` for a configured
namespace NS), always through :func:`rtqis.sinks.history.open_history`: the running sink answers over its
Unix socket from a read cursor of its own connection, or, when no sink runs, the file is opened
read-only. Nothing is ever written to the live store, and the reader is closed before the replay starts.

Archive layout (the sink's schema, :mod:`rtqis.sinks.schema`; every time is epoch ms UTC):

* ``trades(symbol, trade_id, price, qty, trade_time, event_time, recv_time, buyer_maker)``: one row per
  exchange trade as the producers published it (``trade_time`` is the exchange's trade time, the merge
  key of every replay; ``recv_time`` the local receive time, equal to the event time for archive files).
  A span selects ``from <= trade_time < to``.
* ``book_tickers(symbol, update_id, bid_price, bid_qty, ask_price, ask_qty, event_time, recv_time)``:
  best bid/ask updates; ``event_time`` is NULL for spot (Binance's spot bookTicker carries no exchange
  time). The merge key is ``event_time`` where there is one, else ``recv_time``, exactly as for files
  (:mod:`rtqis.producers.files`); a span selects ``from <= key < to`` (read by ``recv_time`` with a
  minute of margin each side, then cut on the key).

Rows of one symbol and kind are returned by time only; the export orders ties by ``trade_id`` /
``update_id`` (the exchange's own order, that of the files the live feed read), so a candle's close is
the same trade live and replayed.

How it is replayed: the span is read a window (default one hour) at a time, each window of each
(kind, symbol) written to a Parquet file (:data:`~rtqis.producers.files.PARQUET_TRADE_COLUMNS` /
:data:`~rtqis.producers.files.PARQUET_BOOK_COLUMNS`) in a private temporary folder, and those files are
replayed exactly as any data files are (:func:`rtqis.replay.run_replay`: the same merge by event time,
frames, namespace isolation, summary and digest). Memory stays about one window.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rtqis.errors import RtqisError
from rtqis.settings import Settings
from rtqis.times import parse_time as _parse_time

__all__ = [
    "ArchiveExport",
    "ArchiveError",
    "WINDOW_MS",
    "archive_namespace",
    "export_archive",
    "iso",
    "parse_span",
    "parse_time",
]

log = logging.getLogger(__name__)

#: the span is read from the archive this much at a time (ms): ~200,000 trades of BTC+ETH at 2024 rates
WINDOW_MS = 3_600_000
#: book tickers are selected by receive time with this margin before the cut on their merge key (ms)
_BOOK_MARGIN_MS = 60_000


class ArchiveError(RtqisError):
    """A span of the archive that cannot be replayed (one readable line)."""


@dataclass
class ArchiveExport:
    """The Parquet files of one span (in a folder the caller owns) and what they hold."""

    paths: list[Path] = field(default_factory=list)
    trades: int = 0
    books: int = 0
    seconds: float = 0.0


def iso(ms: int) -> str:
    """``ms`` (epoch ms) as ISO-8601 UTC, to the millisecond: ``2024-08-09T00:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, what: str) -> int:
    """Epoch ms of ``text`` (:func:`rtqis.times.parse_time`); ``what`` names the option in the error."""
    return _parse_time(text, what, ArchiveError)


def parse_span(start: str, end: str | None, now_ms: int | None = None) -> tuple[int, int]:
    """``(from_ms, to_ms)`` of ``--from`` / ``--to`` (default: now); ``to`` must be after ``from``."""
    start_ms = parse_time(start, "--from")
    end_ms = parse_time(end, "--to") if end is not None else (now_ms if now_ms is not None else int(time.time() * 1000))
    if end_ms <= start_ms:
        raise ArchiveError(f"--to ({iso(end_ms)}) must be after --from ({iso(start_ms)})")
    return start_ms, end_ms


def archive_namespace(start_ms: int, end_ms: int, symbols: list[str]) -> str:
    """``r`` + 10 hex digits of the SHA-256 of the span and the sorted symbols: the same span maps to
    the same namespace (and replaces its previous replay), and never to a file replay's."""
    h = hashlib.sha256(f"archive\0{start_ms}\0{end_ms}\0{','.join(sorted(symbols))}".encode())
    return "r" + h.hexdigest()[:10]


def export_archive(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    symbols: list[str],
    out_dir: Path,
    *,
    window_ms: int = WINDOW_MS,
    wait_s: float = 10.0,
) -> ArchiveExport:
    """Write the live archive's trades and book tickers of ``symbols`` with ``start_ms <= key < end_ms``
    to Parquet files in ``out_dir`` (see the module docstring), read-only through ``open_history`` of
    ``settings`` (the live ones). :class:`ArchiveError` when there is no live store or nothing in the span."""
    import polars as pl

    from rtqis.sinks.history import open_history
    from rtqis.sinks.sink import sink_paths

    if window_ms < 1:
        raise ValueError("window_ms must be >= 1")
    db, sock = sink_paths(settings)
    if not db.exists() and not sock.exists():
        raise ArchiveError(f"no live store to replay from: {db} does not exist (the live sink has not run here)")
    try:
        reader = open_history(settings, wait_s=wait_s)
    except RtqisError as e:
        raise ArchiveError(f"no live store to replay from: {e}") from None
    out = ArchiveExport()
    t0 = time.monotonic()
    with reader:
        for w0 in range(start_ms, end_ms, window_ms):
            w1 = min(w0 + window_ms, end_ms)
            for sym in symbols:
                trades = reader.trades(sym, w0, w1)
                if trades.height:
                    path = out_dir / f"{sym}-trades-{w0}.parquet"
                    trades.sort(["trade_time", "trade_id"]).write_parquet(path)
                    out.paths.append(path)
                    out.trades += trades.height
                books = reader.book_tickers(sym, w0 - _BOOK_MARGIN_MS, w1 + _BOOK_MARGIN_MS)
                key = pl.coalesce("event_time", "recv_time")
                books = books.filter((key >= w0) & (key < w1)).sort([key, pl.col("update_id")])
                # a Parquet file's event_time is all present or all null (spot): a mix goes in two files
                for part, tag in ((books.filter(pl.col("event_time").is_not_null()), "e"),
                                  (books.filter(pl.col("event_time").is_null()), "r")):  # fmt: skip
                    if part.height:
                        path = out_dir / f"{sym}-books-{w0}-{tag}.parquet"
                        part.write_parquet(path)
                        out.paths.append(path)
                        out.books += part.height
    out.seconds = time.monotonic() - t0
    if not out.paths:
        raise ArchiveError(
            f"no ticks stored between {iso(start_ms)} and {iso(end_ms)} for {', '.join(symbols)} in {db}"
        )
    log.info(
        "archive %s .. %s: %d trades, %d book tickers read in %.2f s into %d files",
        iso(start_ms), iso(end_ms), out.trades, out.books, out.seconds, len(out.paths),
    )  # fmt: skip
    return out
