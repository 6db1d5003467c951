"""The DuckDB schema of the RT-QIS store: every table, its key and conflict rule, and the migrations.

Units: every time is epoch **milliseconds UTC** in a ``BIGINT``; prices and quantities are ``DOUBLE`` in
quote / base currency.

Tables (schema version :data:`SCHEMA_VERSION`; primary key in brackets):

``candles`` [symbol, interval, open_time]
    OHLCV bars of every interval (``1m``, ``5m``, ...): ``close_time``, ``open``, ``high``, ``low``,
    ``close``, ``volume`` (base), ``quote_volume``, ``trades`` (count), ``taker_buy_volume``,
    ``taker_buy_quote_volume``, ``vwap``, ``first_trade_id``, ``last_trade_id``, ``closed`` (false while
    the bar is still forming), ``source`` and ``updated_at`` (epoch ms of the last write; NULL for rows
    written before schema v2). ``source`` is where the row came from: ``'stream'`` (the live candle
    agent), ``'backfill'`` (REST back-fill of holes) or ``'import'`` (a CSV the user imported). A later
    write of the same key replaces the row, with one exception: a ``'backfill'`` or ``'import'`` row never
    replaces a *closed* ``'stream'`` row (back-fill and imports only fill holes and repair bars the stream
    left unfinished; an import counts the rows it skipped).
    ``quote_volume``, ``trades``, ``taker_buy_*`` and ``vwap`` may be NULL for imported files that lack
    them.
``trades`` (symbol, trade_id; no primary key since v5)
    The tick archive of trades: ``price``, ``qty``, ``trade_time``, ``event_time``, ``recv_time`` (local
    receive time), ``buyer_maker``. Append only, in arrival order (so in time order, which DuckDB's zone
    maps turn into fast time-range scans). A re-published trade (id not above the symbol's stored
    high-water mark) is skipped and counted, never stored twice nor overwritten (:mod:`rtqis.sinks.marks`).
    A global key's in-memory index grew with every row ever stored; the marks are a few integers per symbol.
``book_tickers`` (symbol, update_id; no primary key since v5)
    Best bid / ask updates: ``bid_price``, ``bid_qty``, ``ask_price``, ``ask_qty``, ``event_time`` (NULL on
    spot, which sends none), ``recv_time``. Append only, de-duplicated by update-id high-water marks as
    ``trades``.
``signals`` [pair, time]
    :class:`~rtqis.schemas.models.PairSignal` rows, one column per model field, same names (hedge ratios,
    spread, z-score, ...; ``flags`` is a ``VARCHAR[]``). The columns added in v3 (#20: ``innovation_z``,
    ``spread_bp``, ``spread_std_bp``, ``hedge``, ``hedge_se``, ``half_life_s``, ``half_life_se_s``,
    ``coint_stat``, ``coint_pvalue``, ``expected_reversion_bp``, ``round_trip_cost_bp``, ``coint``,
    ``position``, ``below_cost``) are NULL in rows written before. A later write of the same key replaces
    the row.
``adf_results`` [pair, time, request_id]
    :class:`~rtqis.schemas.models.AdfResult` rows; ``request_id`` is ``''`` for the periodic tests (not
    NULL: it is part of the key) and the caller's id for on-demand ones.
``alerts`` [pair, time, kind]
    :class:`~rtqis.schemas.models.Alert` rows, one column per model field (v3 added ``spread_bp``,
    ``expected_reversion_bp``, ``round_trip_cost_bp``, ``hedge``, ``fee_bps``: NULL in older rows). An
    alert is an event: the first write of a key is kept and a replay is a no-op.
``consumer_offsets`` [topic, partition]
    ``next_offset`` (the offset of the next message to consume, Kafka's commit convention) and
    ``updated_at``. Written in the same transaction as the rows those messages carried
    (:meth:`rtqis.sinks.store.Store.write_batch`), so rows and offsets are durable together or not at
    all: a crash can neither lose rows (offset ahead of rows) nor duplicate them (upserts; for the
    key-less tick archive, the id high-water marks of :mod:`rtqis.sinks.marks`).
    ``last_timestamp`` (the message's Kafka timestamp, epoch ms) and ``last_digest`` (a hash of its key
    and value) fingerprint the message at ``next_offset - 1`` (v4, #21; NULL when unknown): the sink
    compares them with the broker's message at that offset to tell the same log from a new one.
``tick_marks`` [symbol, kind]
    The tick archive's high-water marks (:mod:`rtqis.sinks.marks`, v6): per symbol and ``kind``
    (``'trade'``: ``last_id`` the largest trade id, ``last_time`` the largest trade time; ``'book'``:
    ``last_id`` the largest book-ticker update id, ``last_time`` NULL), written in the same transaction as
    the ticks. Retention deletes old ticks, possibly all of a quiet symbol's; the marks stay, so after a
    restart a re-published old tick of that symbol is still recognised as a duplicate.
``schema_version`` [version]
    One row per applied migration (``version``, ``applied_at`` epoch ms, ``description``).

Migrations (:data:`MIGRATIONS`) are an append-only list of SQL steps; :func:`migrate` applies the missing
ones to a file opened read-write in one transaction, and refuses a file newer than this code
(:class:`StoreError`).

All SQL takes user values as parameters; identifiers come only from constants in this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from rtqis.errors import RtqisError

__all__ = [
    "ADF_RESULTS",
    "ALERTS",
    "BATCH",
    "BOOK_TICKERS",
    "CANDLES",
    "COUNTED",
    "MIGRATIONS",
    "OFFSETS_TABLE",
    "SAVE_OFFSETS",
    "SAVE_TICK_MARKS",
    "SCHEMA_VERSION",
    "SIGNALS",
    "SOURCES",
    "TABLES",
    "TRADES",
    "Migration",
    "StoreError",
    "Table",
    "migrate",
    "now_ms",
    "quote",
    "transaction",
    "values_sql",
]

log = logging.getLogger(__name__)


class StoreError(RtqisError):
    """The store cannot be opened, migrated, written or read as asked."""


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
    Migration(
        3,
        "trading z-score of the spread level: hedge, half-life, cointegration and cost columns (#20)",
        (
            *(
                f"ALTER TABLE signals ADD COLUMN {c} DOUBLE"
                for c in (
                    "innovation_z",
                    "spread_bp",
                    "spread_std_bp",
                    "hedge",
                    "hedge_se",
                    "half_life_s",
                    "half_life_se_s",
                    "coint_stat",
                    "coint_pvalue",
                    "expected_reversion_bp",
                    "round_trip_cost_bp",
                )  # fmt: skip
            ),
            "ALTER TABLE signals ADD COLUMN coint VARCHAR",
            'ALTER TABLE signals ADD COLUMN "position" BIGINT',
            "ALTER TABLE signals ADD COLUMN below_cost BIGINT",
            *(
                f"ALTER TABLE alerts ADD COLUMN {c} DOUBLE"
                for c in ("spread_bp", "expected_reversion_bp", "round_trip_cost_bp", "hedge", "fee_bps")
            ),
        ),
    ),
    Migration(
        4,
        "fingerprint of the last stored message of each consumer offset (#21)",
        (
            "ALTER TABLE consumer_offsets ADD COLUMN last_timestamp BIGINT",
            "ALTER TABLE consumer_offsets ADD COLUMN last_digest VARCHAR",
        ),
    ),
    Migration(
        5,
        "tick archive without primary keys: de-duplicated by per-symbol id high-water marks (#22)",
        (
            # DuckDB cannot drop a primary key in place: copy each tick table into a key-less one, in time
            # order (range scans by time then skip by zone maps), and swap it in; same transaction
            """CREATE TABLE trades_v5 (
                symbol VARCHAR NOT NULL, trade_id BIGINT NOT NULL, price DOUBLE NOT NULL, qty DOUBLE NOT NULL,
                trade_time BIGINT NOT NULL, event_time BIGINT NOT NULL, recv_time BIGINT NOT NULL,
                buyer_maker BOOLEAN NOT NULL)""",
            "INSERT INTO trades_v5 SELECT symbol, trade_id, price, qty, trade_time, event_time, recv_time,"
            " buyer_maker FROM trades ORDER BY trade_time, symbol, trade_id",
            "DROP TABLE trades",
            "ALTER TABLE trades_v5 RENAME TO trades",
            """CREATE TABLE book_tickers_v5 (
                symbol VARCHAR NOT NULL, update_id BIGINT NOT NULL, bid_price DOUBLE NOT NULL,
                bid_qty DOUBLE NOT NULL, ask_price DOUBLE NOT NULL, ask_qty DOUBLE NOT NULL, event_time BIGINT,
                recv_time BIGINT NOT NULL)""",
            "INSERT INTO book_tickers_v5 SELECT symbol, update_id, bid_price, bid_qty, ask_price, ask_qty,"
            " event_time, recv_time FROM book_tickers ORDER BY recv_time, symbol, update_id",
            "DROP TABLE book_tickers",
            "ALTER TABLE book_tickers_v5 RENAME TO book_tickers",
        ),
    ),
    Migration(
        6,
        "high-water marks of the tick archive in their own table: retention cannot lose them (#22)",
        (
            """CREATE TABLE tick_marks (
                symbol VARCHAR NOT NULL, kind VARCHAR NOT NULL, last_id BIGINT NOT NULL, last_time BIGINT,
                PRIMARY KEY (symbol, kind))""",
            "INSERT INTO tick_marks SELECT symbol, 'trade', max(trade_id), max(trade_time) FROM trades GROUP BY symbol",
            "INSERT INTO tick_marks SELECT symbol, 'book', max(update_id), NULL FROM book_tickers GROUP BY symbol",
        ),
    ),
)
SCHEMA_VERSION: int = MIGRATIONS[-1].version

SOURCES: tuple[str, ...] = ("stream", "backfill", "import")
"""Allowed values of ``candles.source``."""

_I64, _F64, _STR, _BOOL = pl.Int64(), pl.Float64(), pl.String(), pl.Boolean()


@dataclass(frozen=True)
class Table:
    """The current layout of one table: columns (polars dtype, nullable), key and conflict rule."""

    name: str
    columns: dict[str, tuple[pl.DataType, bool]]
    key: tuple[str, ...]
    on_conflict: Literal["update", "nothing", "append"] = "update"  # append: no key, de-duplicated upstream
    update_where: str = ""  # SQL condition (a constant) that must hold for a conflicting row to be replaced

    @property
    def upsert_sql(self) -> str:
        cols = ", ".join(quote(c) for c in self.columns)
        key = ", ".join(quote(c) for c in self.key)
        if self.on_conflict == "append":
            return f"INSERT INTO {quote(self.name)} ({cols}) SELECT {cols} FROM {BATCH}"  # noqa: S608  # identifiers are module constants
        sql = f"INSERT INTO {quote(self.name)} ({cols}) SELECT {cols} FROM {BATCH} ON CONFLICT ({key}) "  # noqa: S608  # identifiers are module constants
        if self.on_conflict == "nothing":
            return sql + "DO NOTHING"
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in self.columns if c not in self.key)
        return sql + f"DO UPDATE SET {sets}" + (f" WHERE {self.update_where}" if self.update_where else "")


def quote(ident: str) -> str:
    """Quote an identifier (only ever called with names defined in this module's tables)."""
    return '"' + ident.replace('"', '""') + '"'


BATCH = "_rtqis_batch"  # name the batch DataFrame is registered under for INSERT ... SELECT

CANDLES = Table(
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
    # a closed stream bar is never replaced by a back-filled or imported one (also when an import reaches
    # the running sink through its topic, after the importer's check)
    update_where="NOT (candles.source = 'stream' AND candles.closed AND excluded.source IN ('backfill', 'import'))",
)
TRADES = Table(
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
    ("symbol", "trade_id"),  # the identity of a row; no PRIMARY KEY since v5 (:mod:`rtqis.sinks.marks`)
    on_conflict="append",
)
BOOK_TICKERS = Table(
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
    ("symbol", "update_id"),  # the identity of a row; no PRIMARY KEY since v5 (:mod:`rtqis.sinks.marks`)
    on_conflict="append",
)
SIGNALS = Table(
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
        # v3 (#20); NULL in rows written before
        **{k: (_F64, True) for k in ("innovation_z", "spread_bp", "spread_std_bp", "hedge", "hedge_se")},
        **{k: (_F64, True) for k in ("half_life_s", "half_life_se_s", "coint_stat", "coint_pvalue")},
        **{k: (_F64, True) for k in ("expected_reversion_bp", "round_trip_cost_bp")},
        "coint": (_STR, True),
        "position": (_I64, True),
        "below_cost": (_I64, True),
    },
    ("pair", "time"),
)
ADF_RESULTS = Table(
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
ALERTS = Table(
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
        # v3 (#20); NULL in rows written before
        **{k: (_F64, True) for k in ("spread_bp", "expected_reversion_bp", "round_trip_cost_bp", "hedge")},
        "fee_bps": (_F64, True),
    },
    ("pair", "time", "kind"),
    on_conflict="nothing",
)
OFFSETS_TABLE = "consumer_offsets"
TABLES: tuple[Table, ...] = (CANDLES, TRADES, BOOK_TICKERS, SIGNALS, ADF_RESULTS, ALERTS)
COUNTED = tuple(t.name for t in TABLES) + (OFFSETS_TABLE,)


def values_sql(head: str, width: int, tail: str, *, rows: int) -> str:
    """``head VALUES (?, ...), ... tail``: ONE statement for ``rows`` rows of ``width`` parameters each (the
    parameters flattened, row after row). DuckDB's ``executemany`` runs its statement once per row, at
    about 1 ms each: 16 ms of every sink batch went to storing 6 offsets that way."""
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * rows)} {tail}"


#: store the offsets a batch reached, each with the fingerprint (timestamp, digest; NULL: unknown) of the
#: message at ``next_offset - 1``: ``values_sql(*SAVE_OFFSETS, rows=n)``
SAVE_OFFSETS = (
    'INSERT INTO consumer_offsets (topic, "partition", next_offset, updated_at, last_timestamp, last_digest)',
    6,
    'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = excluded.next_offset, '
    "updated_at = excluded.updated_at, last_timestamp = excluded.last_timestamp, last_digest = excluded.last_digest",
)

#: advance the stored high-water marks of (symbol, kind) of the tick archive (never lowers them):
#: ``values_sql(*SAVE_TICK_MARKS, rows=n)``
SAVE_TICK_MARKS = (
    "INSERT INTO tick_marks (symbol, kind, last_id, last_time)",
    4,
    "ON CONFLICT (symbol, kind) DO UPDATE SET last_id = greatest(tick_marks.last_id, excluded.last_id),"
    " last_time = greatest(tick_marks.last_time, excluded.last_time)",
)


def now_ms() -> int:
    """Wall-clock time in epoch ms: the ``updated_at`` / ``applied_at`` stamps (never an event time)."""
    return time.time_ns() // 1_000_000


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One DuckDB transaction: committed if the block ends normally, rolled back if it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _file_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """Highest applied migration; 0 for an empty database; None if the file is not an RT-QIS store."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "schema_version" not in tables:
        return 0 if not tables else None
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool) -> int:
    """Bring the open file ``path`` to :data:`SCHEMA_VERSION` (read-write) or check it is there (read-only).

    Returns the version, always :data:`SCHEMA_VERSION`. Raises :class:`StoreError` for a file that is not
    an RT-QIS store, one newer than this code, an older one opened read-only, or a failed step (then the
    file is left at its old version: every pending step runs in one transaction with its version row).
    """
    current = _file_version(con)
    if current is None:
        raise StoreError(f"{path} is a DuckDB file but not an RT-QIS store (no schema_version table)")
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {current}, newer than this RT-QIS knows"
            f" ({SCHEMA_VERSION}); upgrade RT-QIS to open it"
        )
    if current == SCHEMA_VERSION:
        return current
    if read_only:
        raise StoreError(
            f"{path} has schema version {current} < {SCHEMA_VERSION}; open it read-write once"
            " (e.g. start the sink) to upgrade it"
        )
    pending = [mig for mig in MIGRATIONS if mig.version > current]
    try:
        with transaction(con):
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " applied_at BIGINT NOT NULL, description VARCHAR NOT NULL)"
            )
            for mig in pending:
                for stmt in mig.statements:
                    con.execute(stmt)
                con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [mig.version, now_ms(), mig.description])
    except duckdb.Error as e:
        raise StoreError(f"{path}: migration from v{current} failed, file left at v{current}: {e}") from e
    log.info("%s: schema migrated from v%d to v%d", path, current, SCHEMA_VERSION)
    return SCHEMA_VERSION
