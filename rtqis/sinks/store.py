"""The DuckDB store: one database file of candles, ticks, analytics and consumer offsets, written and read.

Why DuckDB: a single file, columnar, fast range scans, and ``INSERT ... ON CONFLICT`` upserts, so the
Kafka sink can be at-least-once and still never store a row twice (effectively once); the tick archive
is append-only instead, de-duplicated by per-symbol id high-water marks (:mod:`rtqis.sinks.marks`). The
sink process owns the only read-write connection (:class:`Store`) and answers everybody else's reads
from cursors of it (:meth:`Store.reader`, :mod:`rtqis.sinks.serve`); with no sink running, readers
open the file read-only (:func:`rtqis.sinks.history.open_history`). The tables, their keys and
conflict rules and the migrations are in :mod:`rtqis.sinks.schema`; the conversion of inputs to typed
rows in :mod:`rtqis.sinks.rows`.

Units: every time is epoch **milliseconds UTC** in a ``BIGINT``; prices and quantities are ``DOUBLE`` in
quote / base currency. Ranges are half-open ``[start_ms, end_ms)``.

All SQL takes user values as parameters; identifiers come only from the schema's constants.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import numpy as np
import polars as pl

from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.sinks.marks import TickMarks
from rtqis.sinks.rows import candles_df, frames_df, models_df, offset_rows
from rtqis.sinks.schema import (
    ADF_RESULTS,
    ALERTS,
    BATCH,
    BOOK_TICKERS,
    CANDLES,
    COUNTED,
    SAVE_OFFSETS,
    SAVE_TICK_MARKS,
    SIGNALS,
    TRADES,
    StoreError,
    Table,
    migrate,
    quote,
    transaction,
    values_sql,
)

__all__ = ["Store", "StoreError"]

log = logging.getLogger(__name__)


class _ArrowStream:
    """Hands a polars DataFrame to DuckDB through the Arrow C stream interface (no pyarrow needed)."""

    __slots__ = ("df",)

    def __init__(self, df: pl.DataFrame) -> None:
        self.df = df

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.df.__arrow_c_stream__(requested_schema)


class Store:
    """One DuckDB file, opened read-write by ONE process (the sink). Owns its connection.

    ``Store(path)`` creates the file if needed and brings its schema up to the current version
    (:func:`~rtqis.sinks.schema.migrate`); ``Store(path, read_only=True)`` opens an existing file of
    exactly this version for reading (while a sink holds the file, read through
    :func:`~rtqis.sinks.history.open_history`). Methods are serialised on a lock, so one Store may be
    shared by threads of one process. Close it (or use ``with``) to release the file.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, memory_mb: int | None = None) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreError(f"cannot open {self.path} read-only: no such file")
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            hint = ""
            if "lock" in str(e).lower():
                hint = (
                    " (DuckDB lets one process open a file for writing, and then nobody else can open it;"
                    " readers ask the running sink, see rtqis.sinks.history.open_history)"
                )
            raise StoreError(f"cannot open {self.path}: {e}{hint}") from None
        # DuckDB guards the file with a POSIX fcntl lock, and POSIX drops ALL of a process's locks on a
        # file when the process closes ANY descriptor of it. So the snapshot copy must never open and
        # close the live file: it reads through this descriptor, kept open until close().
        self._fd: int | None = None
        try:
            self._con.execute("SET enable_progress_bar = false")  # a long read must not draw on stdout
            if memory_mb is not None:  # DuckDB's buffer pool: pages beyond it are evicted, not kept
                self._con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
            if not read_only:
                self._fd = os.open(self.path, os.O_RDONLY)
            self._version = migrate(self._c, self.path, read_only=read_only)
            # the tick archive's de-duplication state (rtqis.sinks.marks): committed rows only
            self._marks = TickMarks.load(self._c) if not read_only else TickMarks()
            self.duplicates_skipped = 0  # re-published ticks skipped by write_batch since open
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the connection (idempotent); the file is released for other processes."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._fd is not None:  # after DuckDB let go of the file (see __init__)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.read_only else "rw"
        return f"Store({str(self.path)!r}, {mode}, v{self._version})"

    @property
    def schema_version(self) -> int:
        """The schema version of the open file (always the current :data:`~rtqis.sinks.schema.SCHEMA_VERSION`)."""
        return self._version

    @property
    def _c(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"store {self.path} is closed")
        return self._con

    # ----------------------------------------------------------------------------------- writes

    def require_writable(self) -> None:
        """Raise :class:`StoreError` if this store was opened read-only."""
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")

    def write_batch(
        self,
        *,
        candles: pl.DataFrame | Sequence[Mapping[str, Any] | m.Candle] | None = None,
        trades: Sequence[Frame] | None = None,
        books: Sequence[Frame] | None = None,
        signals: Sequence[Mapping[str, Any] | m.PairSignal] | None = None,
        adf: Sequence[Mapping[str, Any] | m.AdfResult] | None = None,
        alerts: Sequence[Mapping[str, Any] | m.Alert] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
        fingerprints: Mapping[tuple[str, int], tuple[int, str]] | None = None,
        source: str | None = None,
    ) -> int:
        """Write everything given, and the consumer ``offsets``, in ONE transaction; return rows written.

        All inputs are checked and converted before the transaction starts (model instances are taken as
        validated, mappings go through their model; :mod:`rtqis.sinks.rows`); if anything fails inside
        it, nothing (no row, no offset) is stored and :class:`StoreError` is raised. ``source`` overrides
        the ``source`` of every candle (default: each candle's own, ``'stream'`` if absent). The count is
        DuckDB's: rows inserted or replaced (a replayed alert or a protected stream candle counts 0).
        ``fingerprints`` ``{(topic, partition): (timestamp_ms, digest)}`` of the message at each offset
        minus one go with the offsets (an offset given without one stores NULL: unknown).
        """
        self.require_writable()
        work: list[tuple[Table, pl.DataFrame]] = []
        if candles is not None and len(candles):
            work.append((CANDLES, candles_df(candles, source)))
        marks = self._marks.copy() if (trades or books) else self._marks
        skipped = 0
        if trades:
            fresh, skipped = _fresh_frames(trades, TRADE_FRAME.name, marks, skipped)
            if fresh:
                work.append((TRADES, frames_df(TRADES, fresh, TRADE_FRAME.name)))
        if books:
            fresh, skipped = _fresh_frames(books, BOOK_FRAME.name, marks, skipped)
            if fresh:
                work.append((BOOK_TICKERS, frames_df(BOOK_TICKERS, fresh, BOOK_FRAME.name)))
        if signals:
            work.append((SIGNALS, models_df(SIGNALS, m.PairSignal, signals)))
        if adf:
            work.append((ADF_RESULTS, models_df(ADF_RESULTS, m.AdfResult, adf)))
        if alerts:
            work.append((ALERTS, models_df(ALERTS, m.Alert, alerts)))
        offset_params = offset_rows(offsets) if offsets else []
        mark_rows = marks.changed(self._marks) if marks is not self._marks else []
        if not work and not offset_params:
            self.duplicates_skipped += skipped
            return 0
        written = 0
        with self._lock:
            try:
                with transaction(self._c):
                    for table, df in work:
                        written += self._upsert_df(table, df)
                    if mark_rows:  # with the ticks: retention may delete them, never their marks
                        marks_sql = values_sql(*SAVE_TICK_MARKS, rows=len(mark_rows))
                        self._c.execute(marks_sql, [v for row in mark_rows for v in row])
                    if offset_params:
                        self._save_offsets_tx(offset_params, fingerprints or {})
            except duckdb.Error as e:
                raise StoreError(f"write to {self.path} failed, nothing was written: {e}") from e
            self._marks = marks  # only once the rows are durable: a failed write leaves the marks as they were
            self.duplicates_skipped += skipped
        return written

    def delete_older(self, table: Table, time_col: str, cutoff_ms: int) -> int:
        """Delete the rows of ``table`` with ``time_col < cutoff_ms`` in one transaction (retention,
        :mod:`rtqis.sinks.retention`); rows deleted. ``table`` and ``time_col`` come from the schema."""
        self.require_writable()
        if time_col not in table.columns:
            raise StoreError(f"{table.name} has no column {time_col}")
        sql = f"DELETE FROM {quote(table.name)} WHERE {quote(time_col)} < ?"  # noqa: S608  # schema constants
        with self._lock:
            try:
                with transaction(self._c):
                    row = self._c.execute(sql, [int(cutoff_ms)]).fetchone()
            except duckdb.Error as e:
                raise StoreError(f"retention on {self.path} failed, nothing was deleted: {e}") from e
        return int(row[0]) if row else 0

    def memory_bytes(self) -> int:
        """Bytes DuckDB holds in memory for this database (``duckdb_memory()``: cached table blocks,
        indexes, rows not yet checkpointed), bounded by ``memory_mb``."""
        with self._lock:
            row = self._c.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def tick_marks(self) -> TickMarks:
        """A copy of the tick archive's high-water marks (committed rows only; :mod:`rtqis.sinks.marks`)."""
        with self._lock:
            return self._marks.copy()

    def _upsert_df(self, table: Table, df: pl.DataFrame) -> int:
        con = self._c
        con.register(BATCH, _ArrowStream(df))
        try:
            row = con.execute(table.upsert_sql).fetchone()
        finally:
            con.unregister(BATCH)
        return int(row[0]) if row else 0

    def _save_offsets_tx(
        self, rows: list[tuple[str, int, int, int]], prints: Mapping[tuple[str, int], tuple[int, str]]
    ) -> None:
        params: list[Any] = []
        for topic, part, off, at in rows:
            params.extend((topic, part, off, at, *prints.get((topic, part), (None, None))))
        self._c.execute(values_sql(*SAVE_OFFSETS, rows=len(rows)), params)

    def upsert_candles(
        self, rows: pl.DataFrame | Sequence[Mapping[str, Any] | m.Candle], *, source: str | None = None
    ) -> int:
        """Upsert candles (key symbol, interval, open_time); the back-fill rule is in the module docstring."""
        return self.write_batch(candles=rows, source=source)

    def upsert_trades(self, frames: Sequence[Frame]) -> int:
        """Append the new trades of ``frames`` to the tick archive (a trade id at or below its symbol's
        high-water mark is a re-publication: skipped, counted in :attr:`duplicates_skipped`)."""
        return self.write_batch(trades=frames)

    def upsert_book(self, frames: Sequence[Frame]) -> int:
        """Append the new book-ticker updates of ``frames`` (update ids above the symbol's mark)."""
        return self.write_batch(books=frames)

    def upsert_signals(self, rows: Sequence[Mapping[str, Any] | m.PairSignal]) -> int:
        """Upsert :class:`PairSignal` rows (key pair, time)."""
        return self.write_batch(signals=rows)

    def upsert_adf(self, rows: Sequence[Mapping[str, Any] | m.AdfResult]) -> int:
        """Upsert :class:`AdfResult` rows (key pair, time, request_id or '')."""
        return self.write_batch(adf=rows)

    def insert_alerts(self, rows: Sequence[Mapping[str, Any] | m.Alert]) -> int:
        """Insert :class:`Alert` rows (key pair, time, kind); an already stored key is left as it is."""
        return self.write_batch(alerts=rows)

    def save_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store consumer offsets alone; the sink uses :meth:`write_batch` to store them with their rows."""
        self.write_batch(offsets=offsets)

    def load_offsets(self) -> dict[tuple[str, int], int]:
        """``{(topic, partition): next_offset}`` as last stored."""
        with self._lock:
            rows = self._c.execute('SELECT topic, "partition", next_offset FROM consumer_offsets').fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def load_fingerprints(self) -> dict[tuple[str, int], tuple[int, str]]:
        """``{(topic, partition): (timestamp_ms, digest)}`` of the message at each stored offset minus
        one, where known (see ``consumer_offsets`` in :mod:`rtqis.sinks.schema`)."""
        with self._lock:
            rows = self._c.execute(
                'SELECT topic, "partition", last_timestamp, last_digest FROM consumer_offsets'
                " WHERE last_timestamp IS NOT NULL AND last_digest IS NOT NULL"
            ).fetchall()
        return {(str(t), int(p)): (int(ts), str(d)) for t, p, ts, d in rows}

    @contextmanager
    def checkpointed(self) -> Iterator[int]:
        """Hold the write lock with every committed row checkpointed into the file, and yield a read-only
        descriptor of that file (kept open since :meth:`__init__`): the one safe way to copy the live file
        (see :mod:`rtqis.sinks.snapshot`). Writes wait until the block ends."""
        self.require_writable()
        with self._lock:
            self._c.execute("CHECKPOINT")
            assert self._fd is not None  # a writable store keeps its descriptor until close()
            yield self._fd

    def reader(self) -> Store:
        """A read-only Store on a new cursor of this store's connection (for another thread of this
        process: the sink's history server, :mod:`rtqis.sinks.serve`). DuckDB runs its queries
        concurrently with this store's writes; each sees the transactions committed before it started.
        Close it before this store."""
        with self._lock:
            cur = self._c.cursor()
        r = Store.__new__(Store)
        r.path, r.read_only, r._lock, r._con, r._fd = self.path, True, threading.RLock(), cur, None
        r._version, r._marks, r.duplicates_skipped = self._version, TickMarks(), 0
        return r

    # ----------------------------------------------------------------------------------- reads

    def _frame(self, table: Table, sql: str, params: Sequence[Any]) -> pl.DataFrame:
        """The rows of ``sql`` as a frame typed as ``table``'s columns, through the Arrow C stream of a
        DuckDB relation (no pyarrow needed): a third of ``fetchnumpy``'s CPU for the 86,400 signals of
        a day (31 against 99 ms), and NULLs and lists arrive as Arrow has them (no masked arrays, no
        Python object per row). The relation is consumed at once and dropped, so nothing of it is left
        for the interpreter's exit. duckdb 2.0 refuses a relation while a result of ``execute()`` is
        unfinished (any ``fetchone``, here or by a caller on this connection): ``complete()`` runs it
        to its end first (it never cancels it: a cancelled write would fail an open transaction)."""
        with self._lock:
            self._c.complete()
            got = pl.from_arrow(self._c.sql(sql, params=list(params)))
        df = got.struct.unnest() if isinstance(got, pl.Series) else got  # a stream of record batches
        return df.select(pl.col(c).cast(dt) for c, (dt, _) in table.columns.items())

    def _range(
        self,
        table: Table,
        where: Sequence[tuple[str, Any]],
        time_col: str,
        start_ms: int | None,
        end_ms: int | None,
    ) -> pl.DataFrame:
        """Rows of ``table`` whose ``where`` columns equal the given values, in ``[start_ms, end_ms)`` of
        ``time_col``, sorted by it (ties in storage order).

        Built for the dashboard's 24 h read (86,400 signals of ~30 columns, #22): the columns fixed by
        ``where`` are not fetched but filled in by polars (no Python string per row), and there is no
        ``ORDER BY``: DuckDB keeps the storage order of a scan, which is time order for everything the
        sink appends, and sorting the full-width rows was about 40 % of the query; polars sorts only a
        frame that is not sorted already (rows back-filled into holes, imports)."""
        fixed = dict(where)
        conds = [f"{quote(col)} = ?" for col in fixed]
        params: list[Any] = list(fixed.values())
        if start_ms is not None:
            conds.append(f"{quote(time_col)} >= ?")
            params.append(int(start_ms))
        if end_ms is not None:
            conds.append(f"{quote(time_col)} < ?")
            params.append(int(end_ms))
        fetched = Table(table.name, {c: v for c, v in table.columns.items() if c not in fixed}, table.key)
        cols = ", ".join(quote(c) for c in fetched.columns)
        sql = f"SELECT {cols} FROM {quote(table.name)} WHERE {' AND '.join(conds)}"  # noqa: S608  # identifiers are schema constants, values are parameters
        df = self._frame(fetched, sql, params)
        df = df.with_columns(pl.lit(v, dtype=table.columns[c][0]).alias(c) for c, v in fixed.items())
        df = df.select(list(table.columns))
        return df if df[time_col].is_sorted() else df.sort(time_col, maintain_order=True)

    def candles(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pl.DataFrame:
        """Candles of one symbol and interval with ``start_ms <= open_time < end_ms``, sorted by open_time."""
        return self._range(CANDLES, [("symbol", symbol), ("interval", interval)], "open_time", start_ms, end_ms)

    def trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """Archived trades of ``symbol`` with ``start_ms <= trade_time < end_ms``, sorted by trade_time."""
        return self._range(TRADES, [("symbol", symbol)], "trade_time", start_ms, end_ms)

    def book_tickers(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """Archived book tickers of ``symbol`` with ``start_ms <= recv_time < end_ms``, sorted by recv_time."""
        return self._range(BOOK_TICKERS, [("symbol", symbol)], "recv_time", start_ms, end_ms)

    def signals(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """Pair signals with ``start_ms <= time < end_ms``, sorted by time."""
        return self._range(SIGNALS, [("pair", pair)], "time", start_ms, end_ms)

    def adf(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """ADF results of one pair with ``start_ms <= time < end_ms``, sorted by time."""
        return self._range(ADF_RESULTS, [("pair", pair)], "time", start_ms, end_ms)

    def alerts(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """Alerts of one pair with ``start_ms <= time < end_ms``, sorted by time."""
        return self._range(ALERTS, [("pair", pair)], "time", start_ms, end_ms)

    def missing_minutes(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Holes in the ``1m`` candles of ``symbol`` between ``start_ms`` and ``end_ms``.

        Returns ``[(start, end), ...]``: each range holds the missing open times ``start <= t < end``,
        both minute-aligned (``end`` is one minute after the last missing open time). The minutes
        checked are those with ``start_ms <= open_time < end_ms`` (``start_ms`` rounded up to a minute).
        Any stored row counts as present, closed or not.
        """
        step = 60_000
        start = -(-int(start_ms) // step) * step
        end = int(end_ms)
        if start >= end:
            return []
        with self._lock:
            got = self._c.execute(
                'SELECT open_time FROM candles WHERE symbol = ? AND "interval" = ? AND open_time >= ?'
                " AND open_time < ? AND open_time % 60000 = 0 ORDER BY open_time",
                [symbol, "1m", start, end],
            ).fetchnumpy()["open_time"]
        times = np.asarray(got, dtype=np.int64)
        last = start + ((end - 1 - start) // step) * step  # last minute that should exist
        prev = np.concatenate(([start - step], times))
        nxt = np.concatenate((times, [last + step]))
        holes = np.flatnonzero(nxt - prev > step)
        return [(int(prev[i] + step), int(nxt[i])) for i in holes]

    def counts(self) -> dict[str, int]:
        """Rows per table (the data tables and consumer_offsets)."""
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {quote(t)}" for t in COUNTED)  # noqa: S608  # constants
        with self._lock:
            rows = self._c.execute(sql).fetchall()
        return {str(name): int(n) for name, n in rows}


def _fresh_frames(frames: Sequence[Frame], expected: str, marks: TickMarks, skipped: int) -> tuple[list[Frame], int]:
    """The rows of ``frames`` above their symbol's high-water mark in ``marks`` (advanced over them), and
    ``skipped`` plus the rows dropped as re-published. Frames of another type than ``expected`` pass
    unchanged (:func:`~rtqis.sinks.rows.frames_df` refuses them with the reason)."""
    out: list[Frame] = []
    for f in frames:
        if f.type.name != expected:
            out.append(f)
            continue
        trade = f.type is TRADE_FRAME
        ids = f.cols["trade_id" if trade else "update_id"]
        if ids is None or not len(ids):
            continue
        keep = marks.fresh_trades(f.symbol, ids) if trade else marks.fresh_books(f.symbol, ids)
        n = int(np.count_nonzero(keep))
        skipped += len(ids) - n
        if n < len(ids):
            f = f.take(keep)
        if n:
            if trade:
                times = f.cols["trade_time"]
                assert times is not None  # a required column of every trade frame
                marks.add_trades(f.symbol, f.cols["trade_id"], times)  # type: ignore[arg-type]
            else:
                marks.add_books(f.symbol, f.cols["update_id"])  # type: ignore[arg-type]
            out.append(f)
    return out, skipped
