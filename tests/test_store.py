"""The DuckDB store against real files in tmp_path: upserts, atomic batches, migrations, CSV import and
export, the back-fill rule, hostile strings, and snapshot reads while another process writes."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest

from rtqis.errors import IntervalError, RtqisError
from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.sinks import schema
from rtqis.sinks.candle_files import EXPORT_COLUMNS, ImportError_, export_candles, import_candles_csv
from rtqis.sinks.schema import CANDLES, MIGRATIONS, SCHEMA_VERSION, SIGNALS
from rtqis.sinks.snapshot import open_snapshot, publish_snapshot
from rtqis.sinks.store import Store, StoreError
from tests.conftest import BINANCE_DATA

ROOT = Path(__file__).resolve().parents[1]
KLINES = BINANCE_DATA / "klines" / "ETHUSDT-UM-1m-2024-08-08T2353_2024-08-09T0006.excerpt.csv"

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
MIN = 60_000
HOSTILE = "x'); DROP TABLE candles;--"

# The v1 DDL exactly as released: files created by v1 code look like this. Frozen here on purpose, so that
# an edit of a released migration step (instead of a new step) fails the test below.
V1_DDL = (
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
)
V1_VERSION_TABLE = """CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL, description VARCHAR NOT NULL)"""


# ------------------------------------------------------------------------------------------- helpers


def candle(t: int, *, symbol: str = "BTCUSDT", close: float = 100.0, **kw: Any) -> dict[str, Any]:
    row = m.Candle(
        symbol=symbol,
        interval="1m",
        open_time=t,
        close_time=t + MIN - 1,
        open=100.0,
        high=max(101.0, close),
        low=min(99.0, close),
        close=close,
        volume=5.0,
        quote_volume=500.0,
        trades=10,
        taker_buy_volume=2.0,
        taker_buy_quote_volume=200.0,
        vwap=100.0,
        first_trade_id=1,
        last_trade_id=10,
        closed=True,
    ).model_dump()
    row.update(kw)
    return row


def trade_frame(symbol: str, first_id: int, n: int, price: float = 1.0) -> Frame:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return Frame.build(
        TRADE_FRAME,
        symbol,
        {
            "trade_id": ids,
            "price": np.full(n, price),
            "qty": np.full(n, 0.5),
            "trade_time": T0 + ids,
            "event_time": T0 + ids,
            "recv_time": T0 + ids + 3,
            "buyer_maker": ids % 2 == 0,
        },
    )


def book_frame(symbol: str, first_id: int, n: int, *, event_time: bool = True) -> Frame:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return Frame.build(
        BOOK_FRAME,
        symbol,
        {
            "update_id": ids,
            "bid_price": np.full(n, 10.0),
            "bid_qty": np.full(n, 1.0),
            "ask_price": np.full(n, 10.5),
            "ask_qty": np.full(n, 2.0),
            "event_time": (T0 + ids) if event_time else None,
            "recv_time": T0 + ids,
        },
    )


def signal(t: int, pair: str = "BTCUSDT/ETHUSDT", z: float = 1.0) -> dict[str, Any]:
    return m.PairSignal(time=t, pair=pair, x=1.0, y=2.0, zscore=z, n_obs=30, flags=["warmup"]).model_dump()


def adf(t: int, request_id: str | None = None, stat: float = -3.5) -> dict[str, Any]:
    return m.AdfResult(
        time=t,
        pair="BTCUSDT/ETHUSDT",
        window=500,
        stat=stat,
        pvalue=0.01,
        lags=2,
        nobs=497,
        crit_1=-3.4,
        crit_5=-2.9,
        crit_10=-2.6,
        regression="c",
        mean_reverting=True,
        request_id=request_id,
    ).model_dump()


def alert(t: int, message: str = "z above 2") -> dict[str, Any]:
    return m.Alert(
        time=t,
        pair="BTCUSDT/ETHUSDT",
        kind="entry",
        zscore=2.5,
        threshold=2.0,
        spread=0.1,
        beta=1.2,
        x=1.0,
        y=2.0,
        message=message,
    ).model_dump()


def columns_of(path: Path) -> dict[str, list[str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


def full_batch() -> dict[str, Any]:
    return {
        "candles": [candle(T0 + i * MIN) for i in range(3)],
        "trades": [trade_frame("BTCUSDT", 0, 100), trade_frame("ETHUSDT", 0, 50)],
        "books": [book_frame("BTCUSDT", 0, 20), book_frame("ETHUSDT", 0, 10, event_time=False)],
        "signals": [signal(T0 + i * 1000) for i in range(4)],
        "adf": [adf(T0), adf(T0, "req-1")],
        "alerts": [alert(T0)],
        "offsets": {("trades", 0): 100, ("trades", 1): 50},
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "rtqis.duckdb") as s:
        yield s


# ------------------------------------------------------------------------------------------- schema


def test_fresh_store_schema_matches_models(tmp_path: Path) -> None:
    path = tmp_path / "fresh.duckdb"
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        assert s.counts() == {
            "candles": 0,
            "trades": 0,
            "book_tickers": 0,
            "signals": 0,
            "adf_results": 0,
            "alerts": 0,
            "consumer_offsets": 0,
        }
    cols = columns_of(path)
    assert cols["candles"] == [f for f in m.Candle.model_fields if f != "correction"] + ["updated_at"]
    assert cols["trades"] == list(m.Trade.model_fields)
    assert cols["book_tickers"] == list(m.BookTicker.model_fields)
    assert cols["signals"] == list(m.PairSignal.model_fields)
    assert cols["adf_results"] == list(m.AdfResult.model_fields)
    assert cols["alerts"] == list(m.Alert.model_fields)
    with duckdb.connect(str(path), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == [
            mig.version for mig in MIGRATIONS
        ]


def test_upgrade_from_v1_file(tmp_path: Path) -> None:
    assert MIGRATIONS[0].version == 1
    assert MIGRATIONS[0].statements == V1_DDL, "released migration steps are append-only: add a new step instead"
    path = tmp_path / "v1.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(V1_VERSION_TABLE)
        for stmt in V1_DDL:
            con.execute(stmt)
        con.execute("INSERT INTO schema_version VALUES (1, 0, 'v1')")
        con.execute(
            'INSERT INTO candles (symbol, "interval", open_time, close_time, "open", high, low, "close", volume)'
            " VALUES ('BTCUSDT', '1m', ?, ?, 1, 2, 0.5, 1.5, 3)",
            [T0, T0 + MIN - 1],
        )
        con.execute("INSERT INTO consumer_offsets VALUES ('candles.1m', 0, 42, 0)")

    with pytest.raises(StoreError, match="open it read-write once"):
        Store(path, read_only=True)

    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        old = s.candles("BTCUSDT", "1m")
        assert old.height == 1
        assert old["source"][0] == "stream"  # v1 rows could only come from the live sink
        assert old["updated_at"][0] is None
        assert s.load_offsets() == {("candles.1m", 0): 42}
        # the new tables work, and a back-fill does not replace the (closed) v1 stream row
        s.upsert_adf([adf(T0)])
        s.insert_alerts([alert(T0)])
        s.upsert_candles([candle(T0, close=1.9, source="backfill")])
        assert s.candles("BTCUSDT", "1m")["close"].to_list() == [1.5]
        assert s.counts()["adf_results"] == 1
    fresh = tmp_path / "fresh.duckdb"
    Store(fresh).close()
    assert columns_of(path) == columns_of(fresh)
    with Store(path) as s:  # re-opening an up-to-date file changes nothing
        assert s.schema_version == SCHEMA_VERSION


def full_signal(t: int) -> m.PairSignal:
    """A PairSignal with every field set (the #20 additions included)."""
    fields = m.PairSignal.model_fields
    floats = {f: 0.5 + i for i, f in enumerate(fields) if fields[f].annotation == float | None}
    ints = {"n_obs": 3600, "position": -1, "below_cost": 7}
    base = {"time": t, "pair": "BTCUSDT/ETHUSDT", "x": 1.0, "y": 2.0, "flags": ["below_cost"], "coint": "cointegrated"}
    return m.PairSignal(**floats, **ints, **base)


def full_alert(t: int) -> m.Alert:
    extra = {"spread_bp": -31.5, "expected_reversion_bp": 55.0, "round_trip_cost_bp": 42.0, "hedge": 0.81}
    return m.Alert(**{**alert(t), **extra, "fee_bps": 10.0})


def test_upgrade_from_v2_file_adds_the_signal_columns(tmp_path: Path) -> None:
    """A v2 store (pre-#20 signals and alerts) migrates: old rows read NULL in the new columns, new rows
    keep every field of the models."""
    path = tmp_path / "v2.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(V1_VERSION_TABLE)
        for mig in MIGRATIONS[:2]:
            for stmt in mig.statements:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, 0, 'old')", [mig.version])
        con.execute(
            'INSERT INTO signals ("time", pair, x, y, zscore, n_obs, flags)'
            " VALUES (?, 'BTCUSDT/ETHUSDT', 1, 2, 1.5, 30, ['warming_up'])",
            [T0],
        )
        con.execute("INSERT INTO alerts VALUES (?, 'BTCUSDT/ETHUSDT', 'exit', 0.4, 0.5, 0.1, 1.2, 1, 2, 'old')", [T0])
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 6
        s.upsert_signals([full_signal(T0 + 1000)])
        s.insert_alerts([full_alert(T0 + 1000)])
        sig = s.signals("BTCUSDT/ETHUSDT")
        al = s.alerts("BTCUSDT/ETHUSDT")
    assert sig.columns == list(m.PairSignal.model_fields) and al.columns == list(m.Alert.model_fields)
    old, new = sig.row(0, named=True), sig.row(1, named=True)
    assert old["zscore"] == 1.5 and old["flags"] == ["warming_up"]
    assert all(old[f] is None for f in ("innovation_z", "hedge", "half_life_s", "coint", "position", "below_cost"))
    assert m.PairSignal(**new) == full_signal(T0 + 1000)
    assert al.row(0, named=True)["hedge"] is None
    assert m.Alert(**al.row(1, named=True)) == full_alert(T0 + 1000)
    fresh = tmp_path / "fresh.duckdb"
    Store(fresh).close()
    assert columns_of(path) == columns_of(fresh)


def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    Store(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO schema_version VALUES (?, 0, 'from the future')", [SCHEMA_VERSION + 1])
    for ro in (False, True):
        with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than .*upgrade RT-QIS"):
            Store(path, read_only=ro)
    assert issubclass(StoreError, RtqisError)


def test_foreign_duckdb_file_and_missing_file(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
    with pytest.raises(StoreError, match="not an RT-QIS store"):
        Store(other)
    with pytest.raises(StoreError, match="no such file"):
        open_snapshot(tmp_path / "absent.duckdb")


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    Store(path).close()
    with open_snapshot(path) as s:
        with pytest.raises(StoreError, match="read-only"):
            s.upsert_candles([candle(T0)])
        with pytest.raises(StoreError, match="read-only"):
            publish_snapshot(s, tmp_path / "x.duckdb")
        assert s.counts()["candles"] == 0
    with pytest.raises(StoreError, match="closed"):
        s.counts()


# ------------------------------------------------------------------------------------------- upserts


def table_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` but its write time (test-only SQL over known table names)."""
    with duckdb.connect(str(path), read_only=True) as con:
        cols = [c for c in columns_of(path)[table] if c != "updated_at"]
        sql = "SELECT " + ", ".join(f'"{c}"' for c in cols) + f" FROM {table} ORDER BY ALL"
        return list(con.execute(sql).fetchall())


def test_same_batch_twice_gives_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "idem.duckdb"
    with Store(path) as s:
        n1 = s.write_batch(**full_batch())
        first = s.counts()
    assert first == {
        "candles": 3,
        "trades": 150,
        "book_tickers": 30,
        "signals": 4,
        "adf_results": 2,
        "alerts": 1,
        "consumer_offsets": 2,
    }
    assert n1 == 3 + 150 + 30 + 4 + 2 + 1
    tables = ("candles", "trades", "book_tickers", "signals", "adf_results", "alerts")
    once = {t: table_rows(path, t) for t in tables}
    with Store(path) as s:
        n2 = s.write_batch(**full_batch())
        assert s.counts() == first
        # the re-published ticks are skipped by the marks loaded from the file (no key since v5)
        assert s.duplicates_skipped == 150 + 30
    assert n2 == n1 - 1 - 150 - 30  # the replayed alert and ticks are no-ops, the rest replaced by equal rows
    assert {t: table_rows(path, t) for t in tables} == once


def test_replays_never_duplicate_and_last_write_wins(store: Store) -> None:
    # overlapping replays of tick frames
    store.upsert_trades([trade_frame("BTCUSDT", 0, 100)])
    store.upsert_trades([trade_frame("BTCUSDT", 50, 100), trade_frame("BTCUSDT", 50, 10)])
    store.upsert_book([book_frame("BTCUSDT", 0, 10), book_frame("BTCUSDT", 5, 10, event_time=False)])
    counts = store.counts()
    assert counts["trades"] == 150
    assert counts["book_tickers"] == 15
    # the same key twice within one batch: the later row is the one stored
    store.upsert_candles([candle(T0, close=100.0, closed=False), candle(T0, close=102.0)])
    c = store.candles("BTCUSDT", "1m")
    assert c["close"].to_list() == [102.0]
    assert c["closed"].to_list() == [True]
    store.upsert_signals([signal(T0, z=1.0), signal(T0, z=2.0)])
    store.upsert_signals([signal(T0, z=3.0)])
    sig = store.signals("BTCUSDT/ETHUSDT")
    assert sig["zscore"].to_list() == [3.0]
    assert sig["flags"].to_list() == [["warmup"]]
    # alerts: the first record of a key stays
    store.insert_alerts([alert(T0, "first")])
    assert store.insert_alerts([alert(T0, "second")]) == 0
    assert store.alerts("BTCUSDT/ETHUSDT")["message"].to_list() == ["first"]
    # ADF: request_id None is '' and part of the key
    store.upsert_adf([adf(T0), adf(T0, "r1"), adf(T0, stat=-4.0)])
    a = store.adf("BTCUSDT/ETHUSDT").sort("request_id")
    assert a["request_id"].to_list() == ["", "r1"]
    assert a["stat"].to_list() == [-4.0, -3.5]


def test_frames_of_many_symbols_and_null_event_times(store: Store) -> None:
    store.upsert_book([book_frame("BTCUSDT", 0, 3), book_frame("ETHUSDT", 0, 2, event_time=False)])
    counts = store.counts()
    assert counts["book_tickers"] == 5
    with pytest.raises(StoreError, match="expected rtqis.TradeFrame"):
        store.upsert_trades([book_frame("BTCUSDT", 0, 1)])
    assert store.upsert_trades([]) == 0


def test_invalid_rows_are_rejected_before_writing(store: Store) -> None:
    bad_signal = signal(T0)
    bad_signal["n_obs"] = "many"
    with pytest.raises(StoreError, match="signals: row 1"):
        store.write_batch(candles=[candle(T0)], signals=[signal(T0), bad_signal], offsets={("t", 0): 1})
    with pytest.raises(StoreError, match="source must be one of"):
        store.upsert_candles([candle(T0)], source="guess")
    with pytest.raises(StoreError, match="unknown columns"):
        store.upsert_candles(pl.DataFrame({"symbol": ["A"], "bogus": [1]}))
    assert store.counts()["candles"] == 0
    assert store.load_offsets() == {}


def test_offsets_are_stored_with_the_rows_or_not_at_all(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_batch(trades=[trade_frame("BTCUSDT", 0, 10)], offsets={("trades", 0): 10})
    assert store.load_offsets() == {("trades", 0): 10}

    def crash(*_: Any) -> None:
        raise RuntimeError("power cut")

    # the crash comes after every row of the batch was written inside the transaction
    monkeypatch.setattr(store, "_save_offsets_tx", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.write_batch(**full_batch())
    monkeypatch.undo()
    counts = store.counts()
    assert counts["trades"] == 10
    assert counts["candles"] == counts["signals"] == counts["alerts"] == 0
    assert store.load_offsets() == {("trades", 0): 10}

    # a crash halfway through the rows: nothing of them, no offset
    real = store._upsert_df
    calls = 0

    def upsert_then_crash(table: Any, df: pl.DataFrame) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk full")
        return real(table, df)

    monkeypatch.setattr(store, "_upsert_df", upsert_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        store.write_batch(**full_batch())
    monkeypatch.undo()
    assert store.counts()["trades"] == 10
    assert store.counts()["candles"] == 0
    assert store.load_offsets() == {("trades", 0): 10}

    # and after the failures the store still writes
    store.write_batch(**full_batch())
    assert store.load_offsets() == {("trades", 0): 100, ("trades", 1): 50}
    store.save_offsets({("trades", 0): 120})
    assert store.load_offsets()[("trades", 0)] == 120


# ------------------------------------------------------------------------------------------- candles rules and reads


def test_backfill_only_fills_holes(store: Store) -> None:
    store.upsert_candles([candle(T0, close=100.0), candle(T0 + MIN, close=100.0, closed=False)])
    store.upsert_candles(
        [candle(T0, close=90.0), candle(T0 + MIN, close=91.0), candle(T0 + 2 * MIN, close=92.0)], source="backfill"
    )
    c = store.candles("BTCUSDT", "1m")
    assert c["close"].to_list() == [100.0, 91.0, 92.0]  # closed stream kept; unfinished bar and hole filled
    assert c["source"].to_list() == ["stream", "backfill", "backfill"]
    # a back-fill re-run may replace back-filled rows; the stream replaces back-filled rows
    store.upsert_candles([candle(T0 + 2 * MIN, close=93.0)], source="backfill")
    store.upsert_candles([candle(T0 + MIN, close=95.0)])
    c = store.candles("BTCUSDT", "1m")
    assert c["close"].to_list() == [100.0, 95.0, 93.0]
    assert c["source"].to_list() == ["stream", "stream", "backfill"]
    # nor does an import, even one that reaches the store through the running sink's topic (#21);
    # it replaces back-filled rows
    store.upsert_candles([candle(T0, close=80.0), candle(T0 + 2 * MIN, close=81.0)], source="import")
    c = store.candles("BTCUSDT", "1m")
    assert c["close"].to_list() == [100.0, 95.0, 81.0]
    assert c["source"].to_list() == ["stream", "stream", "import"]
    assert c["updated_at"].null_count() == 0


def test_candle_reads_are_ranged_and_sorted(store: Store) -> None:
    store.upsert_candles([candle(T0 + i * MIN) for i in (5, 1, 3, 0)])
    store.upsert_candles([candle(T0 + MIN, symbol="ETHUSDT")])
    assert store.candles("BTCUSDT", "1m")["open_time"].to_list() == [T0 + i * MIN for i in (0, 1, 3, 5)]
    assert store.candles("BTCUSDT", "1m", T0 + MIN, T0 + 5 * MIN)["open_time"].to_list() == [T0 + MIN, T0 + 3 * MIN]
    empty = store.candles("BTCUSDT", "5m")
    assert empty.height == 0
    assert empty.schema["open_time"] == pl.Int64
    assert empty.schema["close"] == pl.Float64
    assert empty.columns == list(CANDLES.columns) and empty.schema["symbol"] == pl.String
    # the columns the query fixes are filled in, not fetched: same values, types and order as stored;
    # a read right after a fetchone() (an unfinished duckdb result) works
    assert store.memory_bytes() > 0
    got = store.candles("BTCUSDT", "1m")
    assert got.columns == list(CANDLES.columns)
    assert got["symbol"].to_list() == ["BTCUSDT"] * 4 and got["interval"].to_list() == ["1m"] * 4
    store.upsert_signals([signal(T0 + 2000), signal(T0), signal(T0 + 1000)])
    sig = store.signals("BTCUSDT/ETHUSDT", T0 + 1)
    assert sig["time"].to_list() == [T0 + 1000, T0 + 2000]
    assert sig["pair"].to_list() == ["BTCUSDT/ETHUSDT"] * 2 and sig.columns == list(SIGNALS.columns)
    assert sig["flags"].to_list() == [["warmup"], ["warmup"]]


def test_missing_minutes(store: Store) -> None:
    store.upsert_candles([candle(T0 + i * MIN) for i in (0, 1, 4, 5, 9)])
    store.upsert_candles([candle(T0 + 2 * MIN, symbol="ETHUSDT")])  # another symbol fills nothing
    assert store.missing_minutes("BTCUSDT", T0, T0 + 10 * MIN) == [
        (T0 + 2 * MIN, T0 + 4 * MIN),
        (T0 + 6 * MIN, T0 + 9 * MIN),
    ]
    # before, after, unaligned bounds
    assert store.missing_minutes("BTCUSDT", T0 - 2 * MIN, T0 + 2 * MIN) == [(T0 - 2 * MIN, T0)]
    assert store.missing_minutes("BTCUSDT", T0 + 9 * MIN, T0 + 12 * MIN + 30_000) == [(T0 + 10 * MIN, T0 + 13 * MIN)]
    assert store.missing_minutes("BTCUSDT", T0 + 1, T0 + 2 * MIN) == []  # starts at the next minute
    assert store.missing_minutes("BTCUSDT", T0, T0 + 2 * MIN) == []
    assert store.missing_minutes("BTCUSDT", T0, T0) == []
    assert store.missing_minutes("NOPE", T0, T0 + 3 * MIN) == [(T0, T0 + 3 * MIN)]


# ------------------------------------------------------------------------------------------- import


def test_import_binance_klines_with_and_without_header(store: Store, tmp_path: Path) -> None:
    n = import_candles_csv(store, KLINES, symbol="ETHUSDT").written
    with KLINES.open() as f:
        rows = list(csv.reader(f))[1:]
    assert n == len(rows) == 14
    c = store.candles("ETHUSDT", "1m")
    assert c["open_time"].to_list() == [int(r[0]) for r in rows]
    assert c["close_time"].to_list() == [int(r[6]) for r in rows]
    assert c["high"].to_list() == [float(r[2]) for r in rows]
    assert c["trades"].to_list() == [int(r[8]) for r in rows]
    assert c["taker_buy_quote_volume"].to_list() == [float(r[10]) for r in rows]
    assert c["vwap"][0] == pytest.approx(5096158.28124 / 1901.349)
    assert set(c["source"].to_list()) == {"import"}
    assert c["closed"].all()

    headerless = tmp_path / "noheader.csv"
    headerless.write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert import_candles_csv(store, headerless, symbol="ETHUSDT").written == 14  # same keys: replaced, not doubled
    assert store.counts()["candles"] == 14

    # Binance spot files since 2025 use microseconds
    micro = tmp_path / "micro.csv"
    micro.write_text(
        "\n".join(",".join([str(int(r[0]) * 1000), *r[1:6], str(int(r[6]) * 1000 + 999), *r[7:]]) for r in rows[:3])
    )
    assert import_candles_csv(store, micro, symbol="ETHUSDT_SPOT").written == 3
    spot = store.candles("ETHUSDT_SPOT", "1m")
    assert spot["open_time"].to_list() == [int(r[0]) for r in rows[:3]]
    assert spot["close_time"].to_list() == [int(r[6]) for r in rows[:3]]


def test_import_generic_csv_with_iso_times(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "generic.csv"
    p.write_text(
        "Date,Open_Time,open,high,low,close,volume,note\n"
        "x,2024-08-09T00:00:00Z,10,12,9,11,100,a\n"
        "\n"
        "x,2024-08-09T00:05:00+00:00,11,11.5,10.5,11,0,b\n"
        "x,2024-08-09 00:10:00,11,11,11,11,3,c\n"
    )
    assert import_candles_csv(store, p, symbol="SOLUSDT", interval="5m").written == 3
    c = store.candles("SOLUSDT", "5m")
    assert c["open_time"].to_list() == [T0, T0 + 5 * MIN, T0 + 10 * MIN]
    assert c["close_time"].to_list() == [T0 + 5 * MIN - 1, T0 + 10 * MIN - 1, T0 + 15 * MIN - 1]
    assert c["quote_volume"].null_count() == 3
    assert c["vwap"].null_count() == 3
    assert c["trades"].null_count() == 3

    secs = tmp_path / "secs.csv"
    secs.write_text(f"open_time,open,high,low,close,volume,quote_volume\n{T0 // 1000},1,2,1,2,4,6\n")
    import_candles_csv(store, secs, symbol="ADAUSDT", interval="1h")
    a = store.candles("ADAUSDT", "1h")
    assert a["open_time"].to_list() == [T0]
    assert a["vwap"].to_list() == [1.5]


def test_import_monthly_and_weekly_bars(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "monthly.csv"
    p.write_text(
        "open_time,open,high,low,close,volume\n2024-02-01T00:00:00Z,1,2,1,2,1\n2024-03-01T00:00:00Z,2,3,2,3,1\n"
    )
    import_candles_csv(store, p, symbol="BTCUSDT", interval="1M")
    feb, mar = 1_706_745_600_000, 1_709_251_200_000  # 2024-02-01, 2024-03-01 UTC
    assert store.candles("BTCUSDT", "1M")["close_time"].to_list() == [mar - 1, 1_711_929_600_000 - 1]
    p.write_text(f"open_time,open,high,low,close,volume\n{feb},1,2,1,2,1\n")  # a Thursday
    with pytest.raises(ImportError_, match="line 2: open_time is not aligned to the 1w interval"):
        import_candles_csv(store, p, symbol="BTCUSDT", interval="1w")


GOOD = "open_time,open,high,low,close,volume\n"


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (f"{T0},10,9,8,9.5,1\n", 2, "high < max(open, close)"),
        (f"{T0},10,11,10.5,10.8,1\n", 2, "low > min(open, close)"),
        (f"{T0},10,11,9,10,1\n{T0 + MIN},10,11,9,10,-1\n", 3, "volume < 0"),
        (f"{T0},10,11,9,10,1\n{T0 + 30_000},10,11,9,10,1\n", 3, "not aligned to the 1m interval"),
        (f"{T0},10,11,9,10,1\n{T0 + MIN},10,11,9,10,1\n{T0},10,11,9,10,1\n", 4, "duplicate open_time (also on line 2)"),
        (f"{T0},10,11,9,10,1\n{T0 + MIN},nan,11,9,10,1\n", 3, "open is not a finite number"),
        (f"{T0},10,11,9,10,inf\n", 2, "volume is not a finite number"),
        (f"{T0},10,eleven,9,10,1\n", 2, "high is not a number"),
        (f"{T0},10,11,9,10\n", 2, "expected 6 fields, got 5"),
        (f"{T0},10,11,9,,1\n", 2, "close is empty"),
        (f"{T0},0,11,0,10,1\n", 2, "prices must be > 0"),
        ("yesterday,10,11,9,10,1\n", 2, "neither an epoch time"),
        (f"{T0},10,11,9,10,1\n\n{T0 // 1000 + 60},10,11,9,10,1\n", 4, "open_time is in s but the first row is in ms"),
    ],
)
def test_bad_csv_names_the_line_and_imports_nothing(
    store: Store, tmp_path: Path, body: str, line: int, reason: str
) -> None:
    store.upsert_candles([candle(T0 - MIN, symbol="ETHUSDT", close=1.0)])
    p = tmp_path / "bad.csv"
    # good rows first: the file is validated whole, so they must not be written either
    p.write_text(GOOD + body)
    with pytest.raises(ImportError_) as ei:
        import_candles_csv(store, p, symbol="ETHUSDT")
    assert ei.value.line == line
    assert reason in ei.value.reason
    assert f"line {line}:" in str(ei.value)
    assert isinstance(ei.value, StoreError)
    assert store.candles("ETHUSDT", "1m")["open_time"].to_list() == [T0 - MIN]


def test_bad_csv_layouts(store: Store, tmp_path: Path) -> None:
    p = tmp_path / "short.csv"
    p.write_text(f"{T0},1,2,1,2,3\n")
    with pytest.raises(ImportError_, match="line 1: a CSV without header must be Binance klines"):
        import_candles_csv(store, p, symbol="X")
    p.write_text("time,open,high,low,close,volume\n1,1,1,1,1,1\n")
    with pytest.raises(ImportError_, match="line 1: header lacks the column.s. open_time"):
        import_candles_csv(store, p, symbol="X")
    p.write_text(GOOD)
    assert import_candles_csv(store, p, symbol="X").written == 0
    with pytest.raises(IntervalError, match="unknown interval '7x'") as ei:
        import_candles_csv(store, p, symbol="X", interval="7x")
    assert isinstance(ei.value, RtqisError)  # one readable line from the CLI
    assert store.counts()["candles"] == 0


# ------------------------------------------------------------------------------------------- export


def test_export_round_trip_csv_and_parquet(store: Store, tmp_path: Path) -> None:
    import_candles_csv(store, KLINES, symbol="ETHUSDT")
    stored = store.candles("ETHUSDT", "1m", T0 - 2 * MIN, T0 + 3 * MIN)
    n = export_candles(store, "ETHUSDT", "1m", T0 - 2 * MIN, T0 + 3 * MIN, fmt="csv", out=tmp_path / "c.csv")
    assert n == stored.height == 5
    header, *lines = (tmp_path / "c.csv").read_text().splitlines()
    assert header == ",".join(EXPORT_COLUMNS)
    assert EXPORT_COLUMNS == (
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
        "closed",
    )
    assert lines[2].startswith("ETHUSDT,1m,2024-08-09T00:00:00Z,2681.59,2683.77,2678.18,2678.19,1702.88,")
    got = pl.read_csv(tmp_path / "c.csv")
    assert got.columns == list(EXPORT_COLUMNS)
    assert got["open_time"].to_list() == [
        "2024-08-08T23:58:00Z",
        "2024-08-08T23:59:00Z",
        "2024-08-09T00:00:00Z",
        "2024-08-09T00:01:00Z",
        "2024-08-09T00:02:00Z",
    ]
    back = got.with_columns(
        pl.col("open_time").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC").dt.epoch("ms").alias("open_time")
    )
    for col in EXPORT_COLUMNS:
        if col != "open_time":
            assert back[col].to_list() == stored[col].to_list(), col
    assert back["open_time"].to_list() == stored["open_time"].to_list()

    # re-importing the export (generic header CSV with ISO times) gives the same candles
    import_candles_csv(store, tmp_path / "c.csv", symbol="ETHUSDT_COPY")
    copy = store.candles("ETHUSDT_COPY", "1m")
    for col in ("open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades", "vwap"):
        assert copy[col].to_list() == stored[col].to_list(), col

    buf = io.BytesIO()
    assert export_candles(store, "ETHUSDT", "1m", T0 - 2 * MIN, T0 + 3 * MIN, fmt="parquet", out=buf) == 5
    buf.seek(0)
    pq = pl.read_parquet(buf)
    assert pq.columns == list(EXPORT_COLUMNS)
    assert pq.equals(got.with_columns(pl.col("trades").cast(pl.Int64)))
    assert export_candles(store, "ETHUSDT", "1m", fmt="parquet", out=tmp_path / "all.parquet") == 14
    assert pl.read_parquet(tmp_path / "all.parquet")["open_time"].is_sorted()

    text = io.StringIO()
    assert export_candles(store, "NOPE", "1m", out=text) == 0
    assert text.getvalue().strip() == ",".join(EXPORT_COLUMNS)
    with pytest.raises(StoreError, match="unknown format"):
        export_candles(store, "ETHUSDT", "1m", fmt="xlsx", out=text)  # type: ignore[arg-type]
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_defuses_spreadsheet_formulas(store: Store) -> None:
    for sym in ('=HYPERLINK("http://evil")', "+1", "-2", "@SUM(A1)", "BTCUSDT"):
        store.upsert_candles([candle(T0, symbol=sym, close=100.0)])
    for sym, want in (
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("BTCUSDT", "BTCUSDT"),
    ):
        out = io.StringIO()
        export_candles(store, sym, "1m", out=out)
        row = next(csv.DictReader(io.StringIO(out.getvalue())))
        assert row["symbol"] == want
        assert row["open"] == "100.0"  # numbers stay numbers
        pq = io.BytesIO()
        export_candles(store, sym, "1m", fmt="parquet", out=pq)
        pq.seek(0)
        assert pl.read_parquet(pq)["symbol"].to_list() == [sym]  # typed format: the text is kept as is


def test_import_never_replaces_a_closed_streamed_candle(store: Store, tmp_path: Path) -> None:
    # the reported case: one uploaded row with price 1 for a closed live minute replaced the streamed candle
    store.upsert_candles([candle(T0, symbol="BTCUSDT", close=60_000.0, closed=True)])  # closed, streamed
    store.upsert_candles([candle(T0 + MIN, symbol="BTCUSDT", close=60_100.0, closed=False)])  # still forming
    store.upsert_candles([candle(T0 + 2 * MIN, symbol="BTCUSDT", close=60_200.0, closed=True)], source="backfill")
    p = tmp_path / "one.csv"
    p.write_text(GOOD + "".join(f"{T0 + k * MIN},1,1,1,1,1\n" for k in range(4)))
    r = import_candles_csv(store, p, symbol="BTCUSDT")
    assert (r.written, r.skipped, r.skipped_open_times) == (3, 1, (T0,))
    assert r.summary("BTCUSDT", "1m") == (
        "imported 3 1m candles of BTCUSDT (written); 1 row skipped: they would replace streamed candles"
    )
    c = store.candles("BTCUSDT", "1m")
    assert c["open_time"].to_list() == [T0 + k * MIN for k in range(4)]
    assert c["source"].to_list() == ["stream", "import", "import", "import"]
    assert c["close"].to_list() == [60_000.0, 1.0, 1.0, 1.0]  # the streamed close is untouched
    # the same file again: still skipped, the rest replaced (not doubled)
    r = import_candles_csv(store, p, symbol="BTCUSDT")
    assert (r.written, r.skipped) == (3, 1) and store.counts()["candles"] == 4
    # another symbol or interval of the same minute is another series: not skipped
    assert import_candles_csv(store, p, symbol="ETHUSDT").skipped == 0
    assert import_candles_csv(store, p, symbol="BTCUSDT", interval="1s").skipped == 0
    # every row streamed: nothing written, all counted
    store.upsert_candles([candle(T0 + k * MIN, symbol="BTCUSDT", close=60_000.0, closed=True) for k in range(4)])
    r = import_candles_csv(store, p, symbol="BTCUSDT")
    assert (r.written, r.skipped) == (0, 4)
    assert r.summary("BTCUSDT", "1m").endswith("; 4 rows skipped: they would replace streamed candles")
    assert set(store.candles("BTCUSDT", "1m")["source"].to_list()) == {"stream"}


def test_export_has_a_closed_column_for_forming_candles(store: Store) -> None:
    store.upsert_candles([candle(T0, closed=True), candle(T0 + MIN, closed=False)])
    out = io.StringIO()
    assert export_candles(store, "BTCUSDT", "1m", out=out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == EXPORT_COLUMNS and EXPORT_COLUMNS[-1] == "closed"
    assert [r["closed"] for r in rows] == ["true", "false"]
    pq = io.BytesIO()
    export_candles(store, "BTCUSDT", "1m", fmt="parquet", out=pq)
    pq.seek(0)
    assert pl.read_parquet(pq)["closed"].to_list() == [True, False]


# ------------------------------------------------------------------------------------------- hostile input


def test_sql_looking_strings_are_data(store: Store, tmp_path: Path) -> None:
    evil_pair = "a' OR '1'='1"
    store.upsert_candles([candle(T0, symbol=HOSTILE), candle(T0 + MIN, symbol=HOSTILE)])
    store.upsert_trades([trade_frame(HOSTILE, 0, 5)])
    store.upsert_book([book_frame(HOSTILE, 0, 5)])
    store.upsert_signals([signal(T0, pair=evil_pair)])
    store.save_offsets({("t'; DELETE FROM consumer_offsets;--", 0): 7})
    store.upsert_candles([candle(T0, symbol="BTCUSDT")])

    c = store.candles(HOSTILE, "1m")
    assert c["symbol"].to_list() == [HOSTILE, HOSTILE]
    assert store.candles("x", "1m").height == 0
    assert store.candles("' OR 1=1 --", "1m").height == 0
    assert store.signals(evil_pair)["pair"].to_list() == [evil_pair]
    assert store.signals("a").height == 0
    assert store.missing_minutes(HOSTILE, T0, T0 + 3 * MIN) == [(T0 + 2 * MIN, T0 + 3 * MIN)]
    out = tmp_path / "evil.csv"
    assert export_candles(store, HOSTILE, "1m", out=out) == 2
    assert pl.read_csv(out)["symbol"].to_list() == [HOSTILE, HOSTILE]
    with pytest.raises(ImportError_):
        bad = tmp_path / "bad.csv"
        bad.write_text(GOOD + f"{T0},1,0,1,1,1\n")
        import_candles_csv(store, bad, symbol=HOSTILE)
    assert import_candles_csv(store, KLINES, symbol=HOSTILE).skipped == 2  # its two streamed candles stay
    assert store.load_offsets() == {("t'; DELETE FROM consumer_offsets;--", 0): 7}
    assert store.counts() == {
        "candles": 14 + 1,  # 12 imported + the two streamed hostile candles it skipped + BTCUSDT
        "trades": 5,
        "book_tickers": 5,
        "signals": 1,
        "adf_results": 0,
        "alerts": 0,
        "consumer_offsets": 1,
    }


# ------------------------------------------------------------------------------- readers while the sink writes


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from rtqis.schemas.frames import TRADE_FRAME, Frame
    from rtqis.sinks.snapshot import publish_snapshot
    from rtqis.sinks.store import Store

    live, snap, stop = (Path(a) for a in sys.argv[1:4])
    n, i = 2000, 0
    deadline = time.monotonic() + 60
    with Store(live) as s:
        publish_snapshot(s, snap)
        print("ready", flush=True)
        while not stop.exists() and time.monotonic() < deadline:
            ids = np.arange(i * n, (i + 1) * n, dtype=np.int64)
            cols = dict(trade_id=ids, price=np.full(n, 1.0), qty=np.full(n, 1.0), trade_time=ids + 1,
                        event_time=ids + 1, recv_time=ids + 1, buyer_maker=ids % 2 == 0)
            s.write_batch(trades=[Frame.build(TRADE_FRAME, "BTCUSDT", cols)], offsets={("trades", 0): int(ids[-1]) + 1})
            i += 1
            if i % 3 == 0:
                publish_snapshot(s, snap)
        publish_snapshot(s, snap)
    print("done", i, flush=True)
    """
)


def test_readers_use_snapshots_while_another_process_writes(tmp_path: Path) -> None:
    live, snap, stop = tmp_path / "live.duckdb", tmp_path / "snap.duckdb", tmp_path / "stop"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(live), str(snap), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        # why snapshots: while the writer holds the live file, nobody else can open it, not even read-only
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(live), read_only=True)
        with pytest.raises(StoreError, match="one process open a file for writing"):
            Store(live, read_only=True)

        seen: list[int] = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline or len(set(seen)) < 3:
            assert time.monotonic() < deadline + 10, f"the snapshot never advanced: {seen}"
            with open_snapshot(snap) as r:
                n = r.counts()["trades"]
                offsets = r.load_offsets()
            # rows and offsets travel in one transaction, so every snapshot has both or neither
            assert offsets.get(("trades", 0), 0) == n
            assert not seen or n >= seen[-1], f"count went back from {seen[-1]} to {n}"
            seen.append(n)
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        # publishing many snapshots did not cost the writer its lock (POSIX drops a process's fcntl
        # locks when it closes any descriptor of the file, so a naive file copy would)
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(live), read_only=True)
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    batches = int(out.split()[-1])
    with open_snapshot(snap) as r:
        assert r.counts()["trades"] == batches * 2000 >= seen[-1]
    with Store(live, read_only=True) as r:  # once the writer is gone the live file opens too
        assert r.counts()["trades"] == batches * 2000
    assert not list(tmp_path.glob(".*.tmp"))


def test_publish_snapshot_in_process(store: Store, tmp_path: Path) -> None:
    store.write_batch(**full_batch())
    dst = tmp_path / "snaps" / "snap.duckdb"
    assert publish_snapshot(store, dst) == dst
    store.upsert_candles([candle(T0 + 10 * MIN)])
    with open_snapshot(dst) as r:
        assert r.counts()["candles"] == 3  # as of the snapshot
        assert r.schema_version == SCHEMA_VERSION
        assert r.load_offsets() == {("trades", 0): 100, ("trades", 1): 50}
    publish_snapshot(store, dst)
    with open_snapshot(dst) as r:
        assert r.counts()["candles"] == 4
    with pytest.raises(StoreError, match="must differ"):
        publish_snapshot(store, store.path)
    assert schema.SOURCES == ("stream", "backfill", "import")


def test_memory_limit_bounds_duckdbs_page_cache(tmp_path: Path) -> None:
    """The sink's store caps DuckDB's buffer pool (RTQIS_SINK_MEMORY_MB): without it the page cache may
    grow with the file up to 80% of RAM."""
    with Store(tmp_path / "a.duckdb", memory_mb=64) as st:
        assert st._con is not None
        limit = st._con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert limit.replace(" ", "") in ("64.0MiB", "61.0MiB", "64MiB", "61MiB"), limit
    with Store(tmp_path / "b.duckdb") as st:
        assert st._con is not None
        default = st._con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert default != limit
