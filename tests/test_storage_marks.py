"""The tick archive without primary keys (#22): the v3 -> v5 migrations, de-duplication by per-symbol
high-water marks (re-published ticks skipped and counted, never stored twice nor overwritten), and the
worker's plausibility bounds applied by the sink against the same marks. No broker is needed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.schemas.plausibility import MAX_AHEAD_MS, implausible_rows
from rtqis.sinks.marks import TickMarks, fresh_ids, screen_frame
from rtqis.sinks.schema import MIGRATIONS, SCHEMA_VERSION
from rtqis.sinks.sink import _Batch
from rtqis.sinks.store import Store, StoreError
from tests.test_store import T0, V1_VERSION_TABLE, book_frame, signal, trade_frame

Y2100 = 4_102_444_800_000  # 2100-01-01T00:00:00Z


def trades(symbol: str, ids: list[int], *, price: float = 1.0, times: list[int] | None = None) -> Frame:
    a = np.asarray(ids, dtype=np.int64)
    t = np.asarray(times, dtype=np.int64) if times is not None else T0 + a
    return Frame.build(
        TRADE_FRAME,
        symbol,
        {
            "trade_id": a,
            "price": np.full(len(a), price),
            "qty": np.full(len(a), 0.5),
            "trade_time": t,
            "event_time": t,
            "recv_time": t + 3,
            "buyer_maker": a % 2 == 0,
        },
    )


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def v3_file(path: Path) -> None:
    """A store as schema v3 left it, with ticks under the old primary keys."""
    with duckdb.connect(str(path)) as con:
        con.execute(V1_VERSION_TABLE)
        for mig in MIGRATIONS[:3]:
            for stmt in mig.statements:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, 0, 'old')", [mig.version])
        for i in (3, 1, 2):  # stored out of time order: the migration sorts
            con.execute(
                "INSERT INTO trades VALUES ('BTCUSDT', ?, 100.0, 0.5, ?, ?, ?, true)", [i, T0 + i, T0 + i, T0 + i]
            )
        con.execute("INSERT INTO trades VALUES ('ETHUSDT', 7, 10.0, 0.5, ?, ?, ?, false)", [T0 + 50, T0 + 50, T0 + 50])
        con.execute("INSERT INTO book_tickers VALUES ('BTCUSDT', 40, 1, 1, 2, 1, NULL, ?)", [T0])


def test_fresh_ids_is_the_workers_running_max_rule() -> None:
    assert fresh_ids(np.array([1, 2, 3]), None).tolist() == [True, True, True]
    assert fresh_ids(np.array([1, 2, 3]), 2).tolist() == [False, False, True]
    # an id repeated within the frame, and one below an earlier row of the frame, are duplicates
    assert fresh_ids(np.array([5, 5, 3, 6, 6, 7]), 4).tolist() == [True, False, False, True, False, True]
    assert fresh_ids(np.array([], dtype=np.int64), 1).tolist() == []


def test_migration_from_v3_drops_the_tick_keys_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    v3_file(path)
    before = sorted(rows(path, "SELECT * FROM trades"))
    books = rows(path, "SELECT * FROM book_tickers")
    assert rows(
        path,
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'trades' AND constraint_type = 'PRIMARY KEY'",
    ) == [(1,)]
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 6
        marks = s.tick_marks()
        assert marks.trade_id == {"BTCUSDT": 3, "ETHUSDT": 7}
        assert marks.trade_time == {"BTCUSDT": T0 + 3, "ETHUSDT": T0 + 50}
        assert marks.update_id == {"BTCUSDT": 40}
        # the marks carry the old rows' identity: re-publishing them stores nothing
        assert s.upsert_trades([trades("BTCUSDT", [1, 2, 3, 4])]) == 1
    assert sorted(rows(path, "SELECT * FROM trades WHERE trade_id <> 4 OR symbol <> 'BTCUSDT'")) == before
    assert rows(path, "SELECT * FROM book_tickers") == books
    assert rows(path, "SELECT trade_id FROM trades WHERE symbol = 'BTCUSDT' LIMIT 3") == [(1,), (2,), (3,)]
    for table in ("trades", "book_tickers"):  # no key, no index: nothing that grows with the archive in memory
        assert rows(
            path,
            f"SELECT count(*) FROM duckdb_constraints() WHERE table_name = '{table}'"  # noqa: S608
            " AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
        ) == [(0,)]
        assert rows(path, f"SELECT count(*) FROM duckdb_indexes() WHERE table_name = '{table}'") == [(0,)]  # noqa: S608
    rows_v = rows(path, "SELECT version FROM schema_version ORDER BY version")
    assert [int(r[0]) for r in rows_v] == [1, 2, 3, 4, 5, 6]  # type: ignore[call-overload]


def test_a_republished_tick_is_skipped_and_never_overwrites_the_archived_one(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        assert s.upsert_trades([trades("BTCUSDT", [10, 11, 12], price=59_965.23)]) == 3
        # a reused id with another price (issue #21): skipped, the archived trade stays
        assert s.upsert_trades([trades("BTCUSDT", [11], price=12_345.0)]) == 0
        assert s.duplicates_skipped == 1
        assert s.upsert_book([book_frame("BTCUSDT", 0, 5), book_frame("BTCUSDT", 3, 5)]) == 8
        assert s.duplicates_skipped == 3
    with Store(path) as s:  # a restart: the marks come back from the rows
        assert s.upsert_trades([trades("BTCUSDT", [12, 13])]) == 1
        assert s.upsert_trades([trades("ETHUSDT", [11])]) == 1  # marks are per symbol
        assert s.duplicates_skipped == 1
    assert rows(path, "SELECT trade_id, price FROM trades WHERE symbol = 'BTCUSDT' ORDER BY trade_id") == [
        (10, 59_965.23),
        (11, 59_965.23),
        (12, 59_965.23),
        (13, 1.0),
    ]
    assert rows(path, "SELECT count(*), count(DISTINCT update_id) FROM book_tickers") == [(8, 8)]


def test_a_failed_write_leaves_the_marks_as_they_were(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as s:
        bad = signal(T0)
        bad["n_obs"] = "many"
        with pytest.raises(StoreError):
            s.write_batch(trades=[trade_frame("BTCUSDT", 0, 10)], signals=[bad])
        assert s.tick_marks().trade_id == {}
        assert s.write_batch(trades=[trade_frame("BTCUSDT", 0, 10)]) == 10  # nothing was lost to the marks
        assert s.tick_marks().trade_id == {"BTCUSDT": 9}


def test_the_sink_screens_frames_with_the_workers_bounds_against_its_marks() -> None:
    now = T0 + 1_000
    marks = TickMarks()
    # the three hostile inputs of #21 and then good trades
    kept, refused, dup = screen_frame(marks, trades("BTCUSDT", [100], times=[Y2100]), now)
    assert kept is None and dup == 0 and "ahead of the wall clock" in refused[0][1]
    kept, refused, dup = screen_frame(marks, trades("BTCUSDT", [100, 101]), now)
    assert kept is not None and kept.cols["trade_id"].tolist() == [100, 101] and not refused  # type: ignore[union-attr]
    hostile = trades("BTCUSDT", [102, 9 * 10**18, 103], times=[T0 + 102, T0 + 103, T0 - 5])
    expected = implausible_rows(hostile.cols["trade_time"], hostile.cols["trade_id"], T0 + 101, 101, now)
    kept, refused, dup = screen_frame(marks, hostile, now)
    assert refused == expected and [i for i, _ in refused] == [1] and "trade_id" in refused[0][1]
    assert kept is not None and kept.cols["trade_id"].tolist() == [102, 103]  # type: ignore[union-attr]
    # refused rows do not move the marks; a later good trade is still fresh
    assert marks.trade_id == {"BTCUSDT": 103} and marks.trade_time == {"BTCUSDT": T0 + 102}
    kept, refused, dup = screen_frame(marks, trades("BTCUSDT", [103, 104]), now)
    assert dup == 1 and not refused and kept is not None and kept.cols["trade_id"].tolist() == [104]  # type: ignore[union-attr]
    # book tickers: time bound against the symbol's trade clock, no id bound, de-duplicated by update id
    far = T0 + 102 + MAX_AHEAD_MS + 1 + 10**9
    b = book_frame("BTCUSDT", 0, 3)
    b.cols["event_time"] = np.array([T0, far, T0 + 1], dtype=np.int64)
    kept, refused, dup = screen_frame(marks, b, now)
    assert [i for i, _ in refused] == [1] and kept is not None and kept.cols["update_id"].tolist() == [0, 2]  # type: ignore[union-attr]
    kept, refused, dup = screen_frame(marks, book_frame("BTCUSDT", 0, 4), now)
    assert dup == 3 and kept is not None and kept.cols["update_id"].tolist() == [3]  # type: ignore[union-attr]
    assert kept.type is BOOK_FRAME


def test_a_batch_starts_from_the_committed_marks(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as s:
        s.upsert_trades([trade_frame("BTCUSDT", 0, 5)])
        batch = _Batch(s.tick_marks())
        kept, _, dup = screen_frame(batch.marks, trade_frame("BTCUSDT", 3, 5), T0)
        assert dup == 2 and kept is not None
        batch.add(kept)
        # a batch that is never written (the sink re-reads its messages) leaves the store's marks alone
        assert s.tick_marks().trade_id == {"BTCUSDT": 4}
        assert batch.write(s) == 3
        assert s.tick_marks().trade_id == {"BTCUSDT": 7}
