"""The DuckDB storage layer: one database file of candles, ticks, analytics and consumer offsets.

Why DuckDB: a single file, columnar, fast range scans, and ``INSERT ... ON CONFLICT`` upserts, so the
Kafka sink can be at-least-once and still never store a row twice (effectively once). The sink process
owns the only read-write connection (:class:`Store`); everybody else reads a snapshot (see below).

Units: every time is epoch **milliseconds UTC** in a ``BIGINT``; prices and quantities are ``DOUBLE`` in
quote / base currency. Ranges are half-open ``[start_ms, end_ms)``.

Tables (schema version :data:`SCHEMA_VERSION`; primary key in brackets):

``candles`` [symbol, interval, open_time]
    OHLCV bars of every interval (``1m``, ``5m``, ...): ``close_time``, ``open``, ``high``, ``low``,
    ``close``, ``volume`` (base), ``quote_volume``, ``trades`` (count), ``taker_buy_volume``,
    ``taker_buy_quote_volume``, ``vwap``, ``first_trade_id``, ``last_trade_id``, ``closed`` (false while
    the bar is still forming), ``source`` and ``updated_at`` (epoch ms of the last write; NULL for rows
    written before schema v2). ``source`` is where the row came from: ``'stream'`` (the live candle
    agent), ``'backfill'`` (REST back-fill of holes) or ``'import'`` (a CSV the user imported). A later
    write of the same key replaces the row, with one exception: a ``'backfill'`` row never replaces a
    *closed* ``'stream'`` row (back-fill only fills holes and repairs bars the stream left unfinished).
    ``quote_volume``, ``trades``, ``taker_buy_*`` and ``vwap`` may be NULL for imported files that lack
    them.
``trades`` [symbol, trade_id]
    The tick archive of trades: ``price``, ``qty``, ``trade_time``, ``event_time``, ``recv_time`` (local
    receive time), ``buyer_maker``. A replayed trade replaces the identical stored one.
``book_tickers`` [symbol, update_id]
    Best bid / ask updates: ``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty``, ``event_time`` (NULL on
    spot, which sends none), ``recv_time``.
``signals`` [pair, time]
    :class:`~rtqis.schemas.models.PairSignal` rows (hedge ratios, spread, z-score, ...; ``flags`` is a
    ``VARCHAR[]``). A later write of the same key replaces the row.
``adf_results`` [pair, time, request_id]
    :class:`~rtqis.schemas.models.AdfResult` rows; ``request_id`` is ``''`` for the periodic tests (not
    NULL: it is part of the key) and the caller's id for on-demand ones.
``alerts`` [pair, time, kind]
    :class:`~rtqis.schemas.models.Alert` rows. An alert is an event: the first write of a key is kept and
    a replay is a no-op.
``consumer_offsets`` [topic, partition]
    ``next_offset`` (the offset of the next message to consume, Kafka's commit convention) and
    ``updated_at``. Written in the same transaction as the rows those messages carried
    (:meth:`Store.write_batch`), so rows and offsets are durable together or not at all: a crash can
    neither lose rows (offset ahead of rows) nor, thanks to the upserts, duplicate them.
``schema_version`` [version]
    One row per applied migration (``version``, ``applied_at`` epoch ms, ``description``).

Migrations (:data:`MIGRATIONS`) are an append-only list of SQL steps; opening an older file read-write
applies the missing steps in one transaction, and opening a file newer than this code raises
:class:`StoreError`.

Readers while the sink runs: DuckDB allows ONE process to open a file read-write, and while it does, a
read-only open from another process fails ("Could not set lock on file"). So the sink periodically calls
:meth:`Store.publish_snapshot` (checkpoint, copy the file, verify the copy, atomic ``os.replace``) and the
dashboard and CLI open that snapshot with :func:`open_snapshot` (read-only, many readers at once).
A reader sees the data as of the last snapshot; it re-opens to see a newer one (an open handle keeps the
file it opened, POSIX rename semantics). The copy runs under the writer's lock, so writes wait for it.
DuckDB's file lock is a POSIX ``fcntl`` lock, which the OS drops as soon as the owning process closes ANY
descriptor of that file: the writer process must never open the live file by other means (``shutil.copy``,
``open()``); the snapshot copy reads through a descriptor the Store keeps open until :meth:`Store.close`.

All SQL takes user values as parameters; identifiers come only from constants in this module.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import duckdb
import numpy as np
import polars as pl

from rtqis.errors import RtqisError
from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame

__all__ = [
    "EXPORT_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SOURCES",
    "ImportError_",
    "Migration",
    "Store",
    "StoreError",
    "export_candles",
    "import_candles_csv",
    "interval_ms",
    "open_snapshot",
]

log = logging.getLogger(__name__)


class StoreError(RtqisError):
    """The store cannot be opened, migrated, written or read as asked."""


class ImportError_(StoreError):  # the trailing underscore keeps it apart from the builtin ImportError
    """A CSV that cannot be imported: ``line`` is the 1-based line of the first problem, ``reason`` why."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}: line {line}: {reason}; nothing was imported")
        self.path = str(path)
        self.line = line
        self.reason = reason


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Migration:
    """One schema step: applied in order, once, inside the same transaction as its version row."""

    version: int
    description: str
    statements: tuple[str, ...]


# Append only: a released step is never edited (files in the wild were created by it).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "candles, tick archive, pair signals, consumer offsets",
        (
            """CREATE TABLE candles (
                symbol VARCHAR NOT NULL, "interval" VARCHAR NOT NULL, open_time BIGINT NOT NULL,
                close_time BIGINT NOT NULL, "open" DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL,
                "close" DOUBLE NOT NULL, volume DOUBLE NOT NULL, quote_volume DOUBLE, trades BIGINT,
                taker_buy_volume DOUBLE, taker_buy_quote_volume DOUBLE, vwap DOUBLE, first_trade_id BIGINT,
                last_trade_id BIGINT, closed BOOLEAN NOT NULL DEFAULT TRUE,
                PRIMARY KEY (symbol, "interval", open_time))""",
            """CREATE TABLE trades (
                symbol VARCHAR NOT NULL, trade_id BIGINT NOT NULL, price DOUBLE NOT NULL, qty DOUBLE NOT NULL,
                trade_time BIGINT NOT NULL, event_time BIGINT NOT NULL, recv_time BIGINT NOT NULL,
                buyer_maker BOOLEAN NOT NULL, PRIMARY KEY (symbol, trade_id))""",
            """CREATE TABLE book_tickers (
                symbol VARCHAR NOT NULL, update_id BIGINT NOT NULL, bid_price DOUBLE NOT NULL,
                bid_qty DOUBLE NOT NULL, ask_price DOUBLE NOT NULL, ask_qty DOUBLE NOT NULL, event_time BIGINT,
                recv_time BIGINT NOT NULL, PRIMARY KEY (symbol, update_id))""",
            """CREATE TABLE signals (
                "time" BIGINT NOT NULL, pair VARCHAR NOT NULL, x DOUBLE NOT NULL, y DOUBLE NOT NULL,
                ols_beta DOUBLE, ols_alpha DOUBLE, kalman_beta DOUBLE, kalman_alpha DOUBLE, spread DOUBLE,
                spread_ols DOUBLE, zscore DOUBLE, huber_beta DOUBLE, huber_alpha DOUBLE, fair_value DOUBLE,
                n_obs BIGINT NOT NULL, flags VARCHAR[] NOT NULL, PRIMARY KEY (pair, "time"))""",
            """CREATE TABLE consumer_offsets (
                topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, next_offset BIGINT NOT NULL,
                updated_at BIGINT NOT NULL, PRIMARY KEY (topic, "partition"))""",
        ),
    ),
    Migration(
        2,
        "candle provenance (source, updated_at); ADF results and alerts",
        (
            # rows written before v2 could only come from the live sink
            """ALTER TABLE candles ADD COLUMN source VARCHAR DEFAULT 'stream'""",
            """ALTER TABLE candles ADD COLUMN updated_at BIGINT""",
            """CREATE TABLE adf_results (
                "time" BIGINT NOT NULL, pair VARCHAR NOT NULL, "window" BIGINT NOT NULL, stat DOUBLE NOT NULL,
                pvalue DOUBLE NOT NULL, lags BIGINT NOT NULL, nobs BIGINT NOT NULL, crit_1 DOUBLE NOT NULL,
                crit_5 DOUBLE NOT NULL, crit_10 DOUBLE NOT NULL, regression VARCHAR NOT NULL,
                mean_reverting BOOLEAN NOT NULL, request_id VARCHAR NOT NULL DEFAULT '',
                PRIMARY KEY (pair, "time", request_id))""",
            """CREATE TABLE alerts (
                "time" BIGINT NOT NULL, pair VARCHAR NOT NULL, kind VARCHAR NOT NULL, zscore DOUBLE NOT NULL,
                threshold DOUBLE NOT NULL, spread DOUBLE NOT NULL, beta DOUBLE NOT NULL, x DOUBLE NOT NULL,
                y DOUBLE NOT NULL, message VARCHAR NOT NULL, PRIMARY KEY (pair, "time", kind))""",
        ),
    ),
)
SCHEMA_VERSION: int = MIGRATIONS[-1].version

SOURCES: tuple[str, ...] = ("stream", "backfill", "import")
"""Allowed values of ``candles.source``."""

_I64, _F64, _STR, _BOOL = pl.Int64(), pl.Float64(), pl.String(), pl.Boolean()


@dataclass(frozen=True)
class _Table:
    """The current layout of one table: columns (polars dtype, nullable), key and conflict rule."""

    name: str
    columns: dict[str, tuple[pl.DataType, bool]]
    key: tuple[str, ...]
    on_conflict: Literal["update", "nothing"] = "update"
    update_where: str = ""  # SQL condition (a constant) that must hold for a conflicting row to be replaced

    @property
    def upsert_sql(self) -> str:
        cols = ", ".join(_q(c) for c in self.columns)
        key = ", ".join(_q(c) for c in self.key)
        sql = f"INSERT INTO {_q(self.name)} ({cols}) SELECT {cols} FROM {_BATCH} ON CONFLICT ({key}) "  # noqa: S608  # identifiers are module constants
        if self.on_conflict == "nothing":
            return sql + "DO NOTHING"
        sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in self.columns if c not in self.key)
        return sql + f"DO UPDATE SET {sets}" + (f" WHERE {self.update_where}" if self.update_where else "")


def _q(ident: str) -> str:
    """Quote an identifier (only ever called with names defined in this module)."""
    return '"' + ident.replace('"', '""') + '"'


_BATCH = "_rtqis_batch"  # name the batch DataFrame is registered under for INSERT ... SELECT

CANDLES = _Table(
    "candles",
    {
        "symbol": (_STR, False),
        "interval": (_STR, False),
        "open_time": (_I64, False),
        "close_time": (_I64, False),
        "open": (_F64, False),
        "high": (_F64, False),
        "low": (_F64, False),
        "close": (_F64, False),
        "volume": (_F64, False),
        "quote_volume": (_F64, True),
        "trades": (_I64, True),
        "taker_buy_volume": (_F64, True),
        "taker_buy_quote_volume": (_F64, True),
        "vwap": (_F64, True),
        "first_trade_id": (_I64, True),
        "last_trade_id": (_I64, True),
        "closed": (_BOOL, False),
        "source": (_STR, False),
        "updated_at": (_I64, True),
    },
    ("symbol", "interval", "open_time"),
    # the back-fill rule: a closed stream bar is never replaced by a back-filled one
    update_where="NOT (candles.source = 'stream' AND candles.closed AND excluded.source = 'backfill')",
)
TRADES = _Table(
    "trades",
    {
        "symbol": (_STR, False),
        "trade_id": (_I64, False),
        "price": (_F64, False),
        "qty": (_F64, False),
        "trade_time": (_I64, False),
        "event_time": (_I64, False),
        "recv_time": (_I64, False),
        "buyer_maker": (_BOOL, False),
    },
    ("symbol", "trade_id"),
)
BOOK_TICKERS = _Table(
    "book_tickers",
    {
        "symbol": (_STR, False),
        "update_id": (_I64, False),
        "bid_price": (_F64, False),
        "bid_qty": (_F64, False),
        "ask_price": (_F64, False),
        "ask_qty": (_F64, False),
        "event_time": (_I64, True),
        "recv_time": (_I64, False),
    },
    ("symbol", "update_id"),
)
SIGNALS = _Table(
    "signals",
    {
        "time": (_I64, False),
        "pair": (_STR, False),
        "x": (_F64, False),
        "y": (_F64, False),
        **{k: (_F64, True) for k in ("ols_beta", "ols_alpha", "kalman_beta", "kalman_alpha", "spread")},
        **{k: (_F64, True) for k in ("spread_ols", "zscore", "huber_beta", "huber_alpha", "fair_value")},
        "n_obs": (_I64, False),
        "flags": (pl.List(pl.String()), False),
    },
    ("pair", "time"),
)
ADF_RESULTS = _Table(
    "adf_results",
    {
        "time": (_I64, False),
        "pair": (_STR, False),
        "window": (_I64, False),
        "stat": (_F64, False),
        "pvalue": (_F64, False),
        "lags": (_I64, False),
        "nobs": (_I64, False),
        "crit_1": (_F64, False),
        "crit_5": (_F64, False),
        "crit_10": (_F64, False),
        "regression": (_STR, False),
        "mean_reverting": (_BOOL, False),
        "request_id": (_STR, False),
    },
    ("pair", "time", "request_id"),
)
ALERTS = _Table(
    "alerts",
    {
        "time": (_I64, False),
        "pair": (_STR, False),
        "kind": (_STR, False),
        "zscore": (_F64, False),
        "threshold": (_F64, False),
        "spread": (_F64, False),
        "beta": (_F64, False),
        "x": (_F64, False),
        "y": (_F64, False),
        "message": (_STR, False),
    },
    ("pair", "time", "kind"),
    on_conflict="nothing",
)
OFFSETS_TABLE = "consumer_offsets"
TABLES: tuple[_Table, ...] = (CANDLES, TRADES, BOOK_TICKERS, SIGNALS, ADF_RESULTS, ALERTS)
_COUNTED = tuple(t.name for t in TABLES) + (OFFSETS_TABLE,)

_SAVE_OFFSETS_SQL = (
    'INSERT INTO consumer_offsets (topic, "partition", next_offset, updated_at) VALUES (?, ?, ?, ?) '
    'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = excluded.next_offset, '
    "updated_at = excluded.updated_at"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _ArrowStream:
    """Hands a polars DataFrame to DuckDB through the Arrow C stream interface (no pyarrow needed)."""

    __slots__ = ("df",)

    def __init__(self, df: pl.DataFrame) -> None:
        self.df = df

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self.df.__arrow_c_stream__(requested_schema)


# --------------------------------------------------------------------------------------------- Store


class Store:
    """One DuckDB file, opened read-write by ONE process (the sink). Owns its connection.

    ``Store(path)`` creates the file if needed and brings its schema up to :data:`SCHEMA_VERSION`;
    ``Store(path, read_only=True)`` opens an existing file of exactly this version for reading (use
    :func:`open_snapshot` for the snapshot the sink publishes). Methods are serialised on a lock, so one
    Store may be shared by threads of one process. Close it (or use ``with``) to release the file.
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
                    " readers open the snapshot the sink publishes, see open_snapshot)"
                )
            raise StoreError(f"cannot open {self.path}: {e}{hint}") from None
        # DuckDB guards the file with a POSIX fcntl lock, and POSIX drops ALL of a process's locks on a
        # file when the process closes ANY descriptor of it. So the snapshot copy must never open and
        # close the live file: it reads through this descriptor, kept open until close().
        self._fd: int | None = None
        try:
            if memory_mb is not None:  # DuckDB's buffer pool: pages beyond it are evicted, not kept
                self._con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
            if not read_only:
                self._fd = os.open(self.path, os.O_RDONLY)
            self._version = self._check_or_migrate()
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
        """The schema version of the open file (always :data:`SCHEMA_VERSION` once opened)."""
        return self._version

    @property
    def _c(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"store {self.path} is closed")
        return self._con

    # ----------------------------------------------------------------------------------- migrations

    def _file_version(self) -> int | None:
        """Highest applied migration; 0 for an empty database; None if the file is not an RT-QIS store."""
        tables = {r[0] for r in self._c.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "schema_version" not in tables:
            return 0 if not tables else None
        row = self._c.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _check_or_migrate(self) -> int:
        with self._lock:
            current = self._file_version()
            if current is None:
                raise StoreError(f"{self.path} is a DuckDB file but not an RT-QIS store (no schema_version table)")
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this RT-QIS knows"
                    f" ({SCHEMA_VERSION}); upgrade RT-QIS to open it"
                )
            if current == SCHEMA_VERSION:
                return current
            if self.read_only:
                raise StoreError(
                    f"{self.path} has schema version {current} < {SCHEMA_VERSION}; open it read-write once"
                    " (e.g. start the sink) to upgrade it"
                )
            pending = [mig for mig in MIGRATIONS if mig.version > current]
            try:
                with self._transaction():
                    self._c.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                        " applied_at BIGINT NOT NULL, description VARCHAR NOT NULL)"
                    )
                    for mig in pending:
                        for stmt in mig.statements:
                            self._c.execute(stmt)
                        self._c.execute(
                            "INSERT INTO schema_version VALUES (?, ?, ?)", [mig.version, _now_ms(), mig.description]
                        )
            except duckdb.Error as e:
                raise StoreError(f"{self.path}: migration from v{current} failed, file left at v{current}: {e}") from e
            log.info("%s: schema migrated from v%d to v%d", self.path, current, SCHEMA_VERSION)
            return SCHEMA_VERSION

    # ----------------------------------------------------------------------------------- writes

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        con = self._c
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _require_writable(self) -> None:
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
        source: str | None = None,
    ) -> int:
        """Write everything given, and the consumer ``offsets``, in ONE transaction; return rows written.

        All inputs are validated and converted before the transaction starts; if anything fails inside
        it, nothing (no row, no offset) is stored and :class:`StoreError` is raised. ``source`` overrides
        the ``source`` of every candle (default: each candle's own, ``'stream'`` if absent). The count is
        DuckDB's: rows inserted or replaced (a replayed alert or a protected stream candle counts 0).
        """
        self._require_writable()
        work: list[tuple[_Table, pl.DataFrame]] = []
        if candles is not None and len(candles):
            work.append((CANDLES, _prepare_candles(candles, source)))
        if trades:
            work.append((TRADES, _frames_df(TRADES, trades, TRADE_FRAME.name)))
        if books:
            work.append((BOOK_TICKERS, _frames_df(BOOK_TICKERS, books, BOOK_FRAME.name)))
        if signals:
            work.append((SIGNALS, _models_df(SIGNALS, m.PairSignal, signals)))
        if adf:
            work.append((ADF_RESULTS, _models_df(ADF_RESULTS, m.AdfResult, adf)))
        if alerts:
            work.append((ALERTS, _models_df(ALERTS, m.Alert, alerts)))
        offset_rows = _offset_rows(offsets) if offsets else []
        if not work and not offset_rows:
            return 0
        written = 0
        with self._lock:
            try:
                with self._transaction():
                    for table, df in work:
                        written += self._upsert_df(table, df)
                    if offset_rows:
                        self._save_offsets_tx(offset_rows)
            except duckdb.Error as e:
                raise StoreError(f"write to {self.path} failed, nothing was written: {e}") from e
        return written

    def _upsert_df(self, table: _Table, df: pl.DataFrame) -> int:
        con = self._c
        con.register(_BATCH, _ArrowStream(df))
        try:
            row = con.execute(table.upsert_sql).fetchone()
        finally:
            con.unregister(_BATCH)
        return int(row[0]) if row else 0

    def _save_offsets_tx(self, rows: list[tuple[str, int, int, int]]) -> None:
        self._c.executemany(_SAVE_OFFSETS_SQL, rows)

    def upsert_candles(
        self, rows: pl.DataFrame | Sequence[Mapping[str, Any] | m.Candle], *, source: str | None = None
    ) -> int:
        """Upsert candles (key symbol, interval, open_time); the back-fill rule is in the module docstring."""
        return self.write_batch(candles=rows, source=source)

    def upsert_trades(self, frames: Sequence[Frame]) -> int:
        """Upsert trade frames into the tick archive (key symbol, trade_id)."""
        return self.write_batch(trades=frames)

    def upsert_book(self, frames: Sequence[Frame]) -> int:
        """Upsert book-ticker frames (key symbol, update_id)."""
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

    def publish_snapshot(self, dst_path: str | Path) -> Path:
        """Publish a consistent read-only copy of the database at ``dst_path`` for other processes.

        Checkpoint (so the file alone holds every committed row), copy it to a temporary file next to
        ``dst_path`` while holding the write lock (no write can interleave), fsync, open the copy once to
        check it, then ``os.replace`` it over ``dst_path``: readers see the old or the new snapshot, never
        a partial one. Writes wait while the file is copied (about 0.1 s per 50 MB on a local disk).
        """
        self._require_writable()
        dst = Path(dst_path)
        if dst.resolve() == self.path.resolve():
            raise StoreError("the snapshot path must differ from the database path")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        t0 = time.perf_counter()
        try:
            with self._lock:
                self._c.execute("CHECKPOINT")
                assert self._fd is not None  # a writable store keeps its descriptor until close()
                _copy_fd_to(self._fd, tmp)
            with Store(tmp, read_only=True):
                pass
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(dst.parent)
        log.debug("snapshot %s published in %.3f s", dst, time.perf_counter() - t0)
        return dst

    # ----------------------------------------------------------------------------------- reads

    def _frame(self, table: _Table, sql: str, params: Sequence[Any]) -> pl.DataFrame:
        # fetchnumpy, not DuckDB's Arrow export: that needs pyarrow or, through the Arrow C stream, makes
        # duckdb 2.0 print "nanobind: leaked ... instances" when the process exits
        with self._lock:
            cols = self._c.execute(sql, list(params)).fetchnumpy()
        return _numpy_to_polars(cols, table)

    def _range(
        self,
        table: _Table,
        where: Sequence[tuple[str, Any]],
        time_col: str,
        start_ms: int | None,
        end_ms: int | None,
    ) -> pl.DataFrame:
        conds = [f"{_q(col)} = ?" for col, _ in where]
        params: list[Any] = [v for _, v in where]
        if start_ms is not None:
            conds.append(f"{_q(time_col)} >= ?")
            params.append(int(start_ms))
        if end_ms is not None:
            conds.append(f"{_q(time_col)} < ?")
            params.append(int(end_ms))
        cols = ", ".join(_q(c) for c in table.columns)
        sql = f"SELECT {cols} FROM {_q(table.name)} WHERE {' AND '.join(conds)} ORDER BY {_q(time_col)}"  # noqa: S608  # identifiers are module constants, values are parameters
        return self._frame(table, sql, params)

    def candles(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pl.DataFrame:
        """Candles of one symbol and interval with ``start_ms <= open_time < end_ms``, sorted by open_time."""
        return self._range(CANDLES, [("symbol", symbol), ("interval", interval)], "open_time", start_ms, end_ms)

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
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {_q(t)}" for t in _COUNTED)  # noqa: S608  # constants
        with self._lock:
            rows = self._c.execute(sql).fetchall()
        return {str(name): int(n) for name, n in rows}


def _numpy_to_polars(cols: Mapping[str, np.ndarray], table: _Table) -> pl.DataFrame:
    """DuckDB ``fetchnumpy`` columns (masked arrays where NULLs are possible) -> typed polars frame."""
    out: list[pl.Series] = []
    for name, (dt, _) in table.columns.items():
        arr = cols[name]
        if isinstance(dt, pl.List):
            data, mask = np.ma.getdata(arr), np.ma.getmaskarray(arr)
            vals = [None if null else list(v) for v, null in zip(data.tolist(), mask.tolist(), strict=True)]
            out.append(pl.Series(name, vals, dtype=dt))
        else:
            out.append(pl.Series(name, arr, dtype=dt))
    return pl.DataFrame(out)


def open_snapshot(path: str | Path) -> Store:
    """Open a snapshot published by :meth:`Store.publish_snapshot` for reading (many readers may)."""
    return Store(path, read_only=True)


def _copy_fd_to(src_fd: int, dst: Path) -> None:
    """Copy the whole file behind ``src_fd`` to ``dst`` and fsync it, without moving or closing ``src_fd``."""
    size = os.fstat(src_fd).st_size
    with dst.open("wb") as out:
        done = 0
        try:
            while done < size:  # in-kernel copy (and a reflink where the filesystem can)
                n = os.copy_file_range(src_fd, out.fileno(), size - done, done)
                if n <= 0:
                    break
                done += n
        except (AttributeError, OSError):  # not Linux, or not between these filesystems
            pass
        out.seek(done)
        while done < size:
            chunk = os.pread(src_fd, min(8 << 20, size - done), done)
            if not chunk:
                raise StoreError(f"snapshot copy: the database file shrank while copying ({done} of {size} bytes)")
            out.write(chunk)
            done += len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------- batch preparation


def _finish(table: _Table, df: pl.DataFrame, what: str) -> pl.DataFrame:
    """Cast to the table's dtypes, refuse NULLs in NOT NULL columns, keep the last row of each key."""
    try:
        df = df.select(pl.col(c).cast(dt, strict=True) for c, (dt, _) in table.columns.items())
    except (pl.exceptions.PolarsError, TypeError, ValueError) as e:
        raise StoreError(f"{what}: a column has the wrong type: {e}") from None
    for c, (_, nullable) in table.columns.items():
        if not nullable and df[c].null_count():
            first = int(df[c].is_null().arg_true()[0])
            raise StoreError(f"{what}: row {first}: {c} is missing (NULL)")
    # DuckDB keeps only the FIRST of duplicate keys within one INSERT; a later write must win
    return df.unique(subset=list(table.key), keep="last", maintain_order=True)


def _prepare_candles(rows: pl.DataFrame | Sequence[Mapping[str, Any] | m.Candle], source: str | None) -> pl.DataFrame:
    if isinstance(rows, pl.DataFrame):
        df = rows
    else:
        dicts: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            try:
                bar = r if isinstance(r, m.Candle) else m.Candle.model_validate(r)
            except ValueError as e:
                raise StoreError(f"candles: row {i}: {e}") from None
            dicts.append(bar.model_dump(exclude={"correction"}))
        df = pl.DataFrame(dicts, schema={k: v[0] for k, v in CANDLES.columns.items() if k != "updated_at"})
    unknown = set(df.columns) - set(CANDLES.columns) - {"correction"}
    if unknown:
        raise StoreError(f"candles: unknown columns {sorted(unknown)}")
    required = {c for c, (_, nullable) in CANDLES.columns.items() if not nullable} - {"closed", "source"}
    missing = required - set(df.columns)
    if missing:
        raise StoreError(f"candles: missing columns {sorted(missing)}")
    extra: list[pl.Expr] = [pl.lit(_now_ms(), dtype=pl.Int64()).alias("updated_at")]
    for c, (dt, _) in CANDLES.columns.items():
        if c not in df.columns and c not in ("source", "closed", "updated_at"):
            extra.append(pl.lit(None, dtype=dt).alias(c))
    if source is not None or "source" not in df.columns:
        extra.append(pl.lit(source or "stream", dtype=pl.String()).alias("source"))
    if "closed" not in df.columns:
        extra.append(pl.lit(True).alias("closed"))
    df = df.with_columns(extra)
    bad = df.filter(~pl.col("source").is_in(list(SOURCES)) | pl.col("source").is_null())
    if bad.height:
        raise StoreError(f"candles: source must be one of {list(SOURCES)}, got {bad['source'][0]!r}")
    return _finish(CANDLES, df, "candles")


def _frames_df(table: _Table, frames: Sequence[Frame], type_name: str) -> pl.DataFrame:
    """Concatenate frames of many symbols into one DataFrame, column by column (no per-row work)."""
    frames = [f for f in frames if len(f)]
    for f in frames:
        if f.type.name != type_name:
            raise StoreError(f"{table.name}: expected {type_name} frames, got {f.type.name}")
    if not frames:
        return pl.DataFrame(schema={k: v[0] for k, v in table.columns.items()})
    lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    idx = np.repeat(np.arange(len(frames)), lens)
    data: dict[str, pl.Series] = {
        "symbol": pl.Series("symbol", [f.symbol for f in frames], dtype=pl.String()).gather(idx)
    }
    for name, (dt, _) in table.columns.items():
        if name == "symbol":
            continue
        parts = [f.cols.get(name) for f in frames]
        if all(p is not None for p in parts):
            data[name] = pl.Series(name, np.concatenate(parts))  # type: ignore[arg-type]  # checked not None
        else:
            data[name] = pl.concat(
                [
                    pl.Series(name, p) if p is not None else pl.repeat(None, n, dtype=dt, eager=True).alias(name)
                    for p, n in zip(parts, lens.tolist(), strict=True)
                ]
            ).cast(dt)
    return _finish(table, pl.DataFrame(data), table.name)


def _models_df(table: _Table, model: type[m.Message], rows: Sequence[Mapping[str, Any] | m.Message]) -> pl.DataFrame:
    dicts: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        try:
            obj = r if isinstance(r, model) else model.model_validate(r)
        except ValueError as e:
            raise StoreError(f"{table.name}: row {i}: {e}") from None
        d = obj.model_dump()
        if "request_id" in table.columns and d.get("request_id") is None:
            d["request_id"] = ""
        dicts.append(d)
    df = pl.DataFrame(dicts, schema={k: v[0] for k, v in table.columns.items()})
    return _finish(table, df, table.name)


def _offset_rows(offsets: Mapping[tuple[str, int], int]) -> list[tuple[str, int, int, int]]:
    now = _now_ms()
    out = []
    for key, off in offsets.items():
        try:
            topic, part = key
            out.append((str(topic), int(part), int(off), now))
        except (TypeError, ValueError):
            raise StoreError(f"offsets: expected {{(topic, partition): offset}}, got {key!r}: {off!r}") from None
    return out


# --------------------------------------------------------------------------------------------- intervals

_INTERVAL_RE = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DAY_MS = 86_400_000
_MONDAY_OFFSET_MS = 4 * _DAY_MS  # 1970-01-01 was a Thursday; Binance weeks start on Monday 00:00 UTC


def interval_ms(interval: str) -> int:
    """Nominal length of a Binance interval (``1s``, ``1m``, ``4h``, ``1d``, ``1w``, ``1M`` = 31 days) in ms."""
    mt = _INTERVAL_RE.match(interval)
    if not mt or int(mt.group(1)) <= 0:
        raise StoreError(f"unknown interval {interval!r} (expected e.g. 1s, 1m, 5m, 1h, 1d, 1w, 1M)")
    n, unit = int(mt.group(1)), mt.group(2)
    if unit in "wM" and n != 1:
        raise StoreError(f"unknown interval {interval!r}: only 1w and 1M are weekly / monthly")
    return n * (_UNIT_MS[unit] if unit != "M" else 31 * _DAY_MS)


def _aligned(open_ms: np.ndarray, interval: str) -> np.ndarray:
    """Which open times start an interval: epoch-aligned up to 1d, day-aligned for multi-day bars (their
    phase is exchange specific), Monday for 1w, the first of the month for 1M (all UTC)."""
    unit = interval[-1]
    size = interval_ms(interval)
    if unit == "M":
        d = open_ms.astype("datetime64[ms]")
        return np.asarray(d == d.astype("datetime64[M]").astype("datetime64[ms]"), dtype=bool)
    if unit == "w":
        return (open_ms - _MONDAY_OFFSET_MS) % size == 0
    if size > _DAY_MS:
        return open_ms % _DAY_MS == 0
    return open_ms % size == 0


def _next_open(open_ms: np.ndarray, interval: str) -> np.ndarray:
    """Open time of the bar after each bar (calendar months for ``1M``)."""
    if interval.endswith("M"):
        month = open_ms.astype("datetime64[ms]").astype("datetime64[M]")
        return np.asarray((month + 1).astype("datetime64[ms]").astype(np.int64))
    return open_ms + interval_ms(interval)


# --------------------------------------------------------------------------------------------- CSV import

_BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_REQUIRED_IMPORT = ("open_time", "open", "high", "low", "close", "volume")
_OPTIONAL_FLOAT_IMPORT = ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume", "vwap")


class _Bad:
    """Collects (line, reason) of bad rows; raises the first one."""

    def __init__(self, path: str | Path, lines: np.ndarray) -> None:
        self.path = path
        self.lines = lines
        self.found: list[tuple[int, str]] = []

    def add(self, mask: np.ndarray | pl.Series, reason: str) -> None:
        arr = mask.to_numpy() if isinstance(mask, pl.Series) else mask
        arr = np.asarray(arr, dtype=bool)
        if arr.any():
            i = int(np.flatnonzero(arr)[0])
            self.found.append((int(self.lines[i]), reason))

    def add_row(self, i: int, reason: str) -> None:
        self.found.append((int(self.lines[i]), reason))

    def raise_first(self) -> None:
        if self.found:
            line, reason = min(self.found)
            more = len(self.found) - 1
            if more:
                reason += f" (and {more} more problem{'s' if more > 1 else ''} further on)"
            raise ImportError_(self.path, line, reason)


def _read_csv_cells(path: Path) -> tuple[list[str] | None, list[list[str]], list[int], int]:
    """(header or None, data rows, their 1-based line numbers, header line) of a CSV file."""
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    start = reader.line_num + 1
                    continue
                if header is None and not rows:
                    first = cells[0].strip()
                    if not _looks_numeric(first):
                        header = [c.strip().lower() for c in cells]
                        header_line = start
                        start = reader.line_num + 1
                        continue
                rows.append(cells)
                lines.append(start)
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise StoreError(f"cannot read {path}: {e}") from None
    return header, rows, lines, header_line


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_open_times(values: list[str], bad: _Bad, what: str) -> np.ndarray:
    """Epoch s / ms / µs (one unit for the whole file) or ISO-8601 (UTC if no offset) -> epoch ms."""
    s = pl.Series(values, dtype=pl.String()).str.strip_chars()
    ints = s.cast(pl.Int64, strict=False).to_numpy()
    is_int = ~s.cast(pl.Int64, strict=False).is_null().to_numpy()
    out = np.zeros(len(values), dtype=np.int64)
    units = np.empty(len(values), dtype=object)
    for i in np.flatnonzero(is_int).tolist():
        v = int(ints[i])
        if 10**9 <= v < 10**11:
            units[i], out[i] = "s", v * 1000
        elif 10**11 <= v < 10**14:
            units[i], out[i] = "ms", v
        elif 10**14 <= v < 10**17:
            if v % 1000:
                bad.add_row(i, f"{what} {v} (µs) is not a whole millisecond")
            units[i], out[i] = "µs", v // 1000
        else:
            bad.add_row(i, f"{what} {v} is not epoch seconds, milliseconds or microseconds of a plausible date")
            units[i] = "?"
    for i in np.flatnonzero(~is_int).tolist():
        text = values[i].strip()
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            bad.add_row(i, f"{what} {text!r} is neither an epoch time (s, ms, µs) nor ISO-8601")
            units[i] = "?"
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = dt.timestamp() * 1000
        if ms != int(ms):
            bad.add_row(i, f"{what} {text!r} is not a whole millisecond")
        units[i], out[i] = "iso", int(ms)
    if len(values):
        first = units[0]
        differ = (units != first) & (units != "?")
        if first != "?" and differ.any():
            j = int(np.flatnonzero(differ)[0])
            bad.add_row(j, f"{what} is in {units[j]} but the first row is in {first}")
    return out


def _parse_float(values: list[str], bad: _Bad, name: str, *, optional: bool) -> np.ndarray:
    s = pl.Series(values, dtype=pl.String()).str.strip_chars()
    empty = (s == "").to_numpy()
    num = s.cast(pl.Float64, strict=False)
    nulls = num.is_null().to_numpy()
    if not optional:
        bad.add(empty, f"{name} is empty")
    bad.add(nulls & ~empty, f"{name} is not a number")
    arr = num.to_numpy().astype(np.float64)
    bad.add(~nulls & ~np.isfinite(np.where(nulls, 0.0, arr)), f"{name} is not a finite number")
    return arr  # NaN where empty / bad


def import_candles_csv(store: Store, path: str | Path, *, symbol: str, interval: str = "1m") -> int:
    """Import a candles CSV into ``store`` as ``source='import'``; return the rows written.

    Accepted: a Binance klines CSV (``open_time,open,high,low,close,volume,close_time,quote_volume,count,
    taker_buy_volume,taker_buy_quote_volume,ignore``, with or without that header; times in ms or, for
    the 2025+ spot files, µs), or any CSV with a header naming at least ``open_time,open,high,low,close,
    volume`` (optional: ``close_time``, ``quote_volume``, ``count`` or ``trades``, ``taker_buy_volume``,
    ``taker_buy_quote_volume``, ``vwap``; other columns are ignored). ``open_time`` is epoch s, ms or µs
    (one unit per file) or ISO-8601 (read as UTC without an offset).

    The whole file is validated before anything is written: numbers finite, prices > 0,
    ``high >= max(open, close)``, ``low <= min(open, close)``, volumes >= 0, ``open_time`` aligned to
    ``interval`` and not repeated in the file. A bad file raises :class:`ImportError_` naming the 1-based
    line of the first problem and nothing is written; a good one is upserted in one transaction, so
    re-importing (or overlapping stored rows) replaces rows instead of doubling them. Missing
    ``close_time`` is ``open_time + interval - 1``; missing ``vwap`` is ``quote_volume / volume``
    (NULL when either is missing or volume is 0).
    """
    path = Path(path)
    if not symbol:
        raise StoreError("import: a symbol is required")
    interval_ms(interval)  # refuse an unknown interval before reading the file
    header, rows, lines, header_line = _read_csv_cells(path)
    if header is None:
        names = list(_BINANCE_KLINE_COLUMNS)
        if rows and len(rows[0]) != len(names):
            raise ImportError_(
                path,
                lines[0],
                f"a CSV without header must be Binance klines ({len(names)} columns), got {len(rows[0])} columns",
            )
    else:
        names = header
        missing = [c for c in _REQUIRED_IMPORT if c not in names]
        if missing:
            raise ImportError_(path, header_line, f"header lacks the column(s) {', '.join(missing)}")
        dup = sorted({c for c in names if names.count(c) > 1 and c})
        if dup:
            raise ImportError_(path, header_line, f"header repeats the column(s) {', '.join(dup)}")
    if not rows:
        log.warning("%s: no candles to import", path)
        return 0
    line_arr = np.asarray(lines, dtype=np.int64)
    bad = _Bad(path, line_arr)
    width = len(names)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ImportError_(path, lines[i], f"expected {width} fields, got {len(r)}")
    col = {name: [r[j] for r in rows] for j, name in enumerate(names) if name}

    open_time = _parse_open_times(col["open_time"], bad, "open_time")
    nums = {c: _parse_float(col[c], bad, c, optional=False) for c in ("open", "high", "low", "close", "volume")}
    opt = {c: _parse_float(col[c], bad, c, optional=True) for c in _OPTIONAL_FLOAT_IMPORT if c in col}
    count_name = "count" if "count" in col else ("trades" if "trades" in col else None)
    trades: pl.Series | None = None
    if count_name:
        s = pl.Series(col[count_name], dtype=pl.String()).str.strip_chars()
        trades = s.cast(pl.Int64, strict=False)
        bad.add((trades.is_null() & (s != "")).to_numpy(), f"{count_name} is not a whole number")
        bad.add((trades < 0).fill_null(False).to_numpy(), f"{count_name} < 0")
    close_time: np.ndarray | None = None
    if "close_time" in col:
        ct = pl.Series(col["close_time"], dtype=pl.String()).str.strip_chars().cast(pl.Int64, strict=False)
        bad.add(ct.is_null().to_numpy(), "close_time is not a whole number")
        raw = ct.fill_null(0).to_numpy()
        close_time = np.where(raw >= 10**14, raw // 1000, raw)  # µs files have µs close times

    o, h, lo, c, v = (nums[k] for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        bad.add((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "prices must be > 0")
        bad.add(h < np.maximum(o, c), "high < max(open, close)")
        bad.add(lo > np.minimum(o, c), "low > min(open, close)")
        bad.add(v < 0, "volume < 0")
        for k, arr in opt.items():
            if k != "vwap":
                bad.add(arr < 0, f"{k} < 0")
    bad.add(~_aligned(open_time, interval), f"open_time is not aligned to the {interval} interval")
    next_open = _next_open(open_time, interval)
    if close_time is not None:
        bad.add((close_time < open_time) | (close_time >= next_open), "close_time outside its interval")
    order = np.argsort(open_time, kind="stable")
    st = open_time[order]
    dup_pos = np.flatnonzero(st[1:] == st[:-1]) + 1
    if len(dup_pos):
        later = order[dup_pos]
        first_of = order[dup_pos - 1]
        j = int(np.argmin(later))
        bad.add_row(int(later[j]), f"duplicate open_time (also on line {lines[int(first_of[j])]})")
    bad.raise_first()

    qv = opt.get("quote_volume")
    if "vwap" in opt:
        vwap = opt["vwap"]
    elif qv is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = np.where(v > 0, qv / np.where(v > 0, v, 1.0), np.nan)
    else:
        vwap = np.full(len(rows), np.nan)
    n = len(rows)

    def nullable(arr: np.ndarray | None) -> pl.Series:
        if arr is None:
            return pl.Series([None] * n, dtype=pl.Float64())
        return pl.Series(arr).fill_nan(None)

    df = pl.DataFrame(
        {
            "symbol": pl.Series([symbol] * n, dtype=pl.String()),
            "interval": pl.Series([interval] * n, dtype=pl.String()),
            "open_time": open_time,
            "close_time": close_time if close_time is not None else next_open - 1,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "quote_volume": nullable(qv),
            "trades": trades if trades is not None else pl.Series([None] * n, dtype=pl.Int64()),
            "taker_buy_volume": nullable(opt.get("taker_buy_volume")),
            "taker_buy_quote_volume": nullable(opt.get("taker_buy_quote_volume")),
            "vwap": nullable(vwap),
            "closed": pl.Series([True] * n),
        }
    )
    written = store.upsert_candles(df, source="import")
    log.info("%s: imported %d %s %s candles", path, n, symbol, interval)
    return written


# --------------------------------------------------------------------------------------------- export

EXPORT_COLUMNS: tuple[str, ...] = (
    "symbol",
    "interval",
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "vwap",
)
"""Columns of :func:`export_candles`, in order: a public interface, keep it stable."""

_FORMULA_START = r"^[=+\-@\t\r]"


def _iso_utc(col: str) -> pl.Expr:
    t = pl.from_epoch(pl.col(col), time_unit="ms")
    whole = t.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frac = t.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    return pl.when(pl.col(col) % 1000 == 0).then(whole).otherwise(frac).alias(col)


def _defuse_formula(col: str) -> pl.Expr:
    c = pl.col(col)
    return pl.when(c.str.contains(_FORMULA_START)).then(pl.lit("'") + c).otherwise(c).alias(col)


def export_candles(
    store: Store,
    symbol: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    out: str | Path | IO[bytes] | IO[str],
) -> int:
    """Write the candles of ``symbol`` / ``interval`` in ``[start_ms, end_ms)`` to ``out``; return the rows.

    Columns, exactly and in this order (:data:`EXPORT_COLUMNS`): symbol, interval, open_time (ISO-8601
    UTC text such as ``2024-08-09T00:00:00Z``, ``.sssZ`` only when not a whole second), open, high, low,
    close, volume, quote_volume, trades, taker_buy_volume, vwap; sorted by open_time. The same columns
    and text times in both formats. CSV only: a *text* cell starting with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return gets a leading apostrophe (``'``) so spreadsheets do not run it as a formula; numbers
    are written as numbers. ``out`` is a path (written atomically) or an open file (binary for Parquet).
    """
    if fmt not in ("csv", "parquet"):
        raise StoreError(f"export: unknown format {fmt!r} (csv or parquet)")
    df = store.candles(symbol, interval, start_ms, end_ms).select(EXPORT_COLUMNS).with_columns(_iso_utc("open_time"))
    if fmt == "csv":
        df = df.with_columns(_defuse_formula("symbol"), _defuse_formula("interval"))

    def write(target: Path | IO[bytes] | IO[str]) -> None:
        if fmt == "csv":
            df.write_csv(target)
        else:
            df.write_parquet(target)  # type: ignore[arg-type]  # a binary file object is required here

    if isinstance(out, str | Path):
        dst = Path(out)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        if fmt == "parquet" and isinstance(out, io.TextIOBase):
            raise StoreError("export: Parquet needs a binary file object")
        write(out)
    log.info("exported %d %s %s candles as %s", df.height, symbol, interval, fmt)
    return df.height
