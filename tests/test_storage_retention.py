"""Retention per kind and disk use (#22), applied by the sink without stopping, and a small run of the
day bench (the storage path it measures, end to end). No broker is needed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rtqis.bench.day import bench_day
from rtqis.settings import load_settings
from rtqis.sinks.retention import Housekeeper, apply_retention, disk_use, retention_rules
from rtqis.sinks.store import Store
from tests.test_store import T0, book_frame, candle, signal, trade_frame

DAY = 86_400_000


def fill(st: Store) -> None:
    """Ten days of one trade, one candle and one signal per hour, the newest trade at T0 + 10 days."""
    hours = [T0 + h * 3_600_000 for h in range(240)]
    frames = []
    for h, t in enumerate(hours):
        f = trade_frame("BTCUSDT", h, 1)
        f.cols["trade_time"] = np.array([t], dtype=np.int64)
        frames.append(f)
    st.write_batch(trades=frames, candles=[candle(t) for t in hours], signals=[signal(t) for t in hours])


def test_retention_per_kind_counts_back_from_the_event_clock(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, retain_ticks_days=7, retain_signals_days=2, retain_candles_days=0)
    assert [t.name for t, _, _ in retention_rules(s)] == ["trades", "book_tickers", "signals", "adf_results", "alerts"]
    with Store(tmp_path / "db.duckdb") as st:
        assert apply_retention(st, s) == {}  # no clock yet: nothing is deleted
        fill(st)
        newest = T0 + 239 * 3_600_000
        got = apply_retention(st, s)
        assert got["trades"] == 240 - 7 * 24 - 1 and got["signals"] == 240 - 2 * 24 - 1
        assert st.counts()["candles"] == 240  # forever
        assert st.trades("BTCUSDT")["trade_time"].min() == newest - 7 * DAY
        assert st.signals("BTCUSDT/ETHUSDT")["time"].min() == newest - 2 * DAY
        assert apply_retention(st, s) == {k: 0 for k in got}  # idempotent
        # the marks survive the deletes: an old trade id is still a re-publication
        assert st.upsert_trades([trade_frame("BTCUSDT", 3, 1)]) == 0


def test_the_marks_of_a_quiet_symbol_survive_retention_and_a_restart(tmp_path: Path) -> None:
    """Retention deleting every tick of a quiet symbol must not lose its high-water marks: after a
    restart (the marks are loaded again) an old tick of it re-published is still a duplicate."""
    s = load_settings(data_dir=tmp_path, retain_ticks_days=1, retain_book_days=1)
    path = tmp_path / "db.duckdb"
    with Store(path) as st:
        st.write_batch(trades=[trade_frame("ETHUSDT", 1, 5)], books=[book_frame("ETHUSDT", 1, 4)])
        late = trade_frame("BTCUSDT", 1, 1)
        late.cols["trade_time"] = np.array([T0 + 3 * DAY], dtype=np.int64)  # the clock moves on
        st.write_batch(trades=[late])
        got = apply_retention(st, s)
        assert got["trades"] == 5 and got["book_tickers"] == 4
        assert st.trades("ETHUSDT").height == 0 and st.book_tickers("ETHUSDT").height == 0
    with Store(path) as st:
        marks = st.tick_marks()
        assert marks.trade_id == {"ETHUSDT": 5, "BTCUSDT": 1} and marks.update_id == {"ETHUSDT": 4}
        assert marks.trade_time["ETHUSDT"] == T0 + 5 and marks.trade_time["BTCUSDT"] == T0 + 3 * DAY
        assert st.write_batch(trades=[trade_frame("ETHUSDT", 1, 5)], books=[book_frame("ETHUSDT", 1, 4)]) == 0
        assert st.duplicates_skipped == 9
        assert st.write_batch(trades=[trade_frame("ETHUSDT", 6, 1)], books=[book_frame("ETHUSDT", 5, 1)]) == 2
    with Store(path) as st:  # the marks stored with the last batch
        assert st.tick_marks().trade_id["ETHUSDT"] == 6 and st.tick_marks().update_id["ETHUSDT"] == 5


def test_the_housekeeper_runs_when_due_and_warns_before_the_disk_fills(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = load_settings(data_dir=tmp_path, retain_ticks_days=1, disk_warn_free_mb=10**9)  # always "short"
    with Store(tmp_path / "db.duckdb") as st:
        fill(st)
        keeper = Housekeeper(s, st, every_s=60)
        with caplog.at_level(logging.INFO, logger="rtqis.sinks.retention"):
            keeper.run_due(now=1000.0)
            assert keeper.deleted["trades"] == 240 - 24 - 1
            assert "disk almost full" in caplog.text and "MB free" in caplog.text
            caplog.clear()
            keeper.run_due(now=1030.0)  # not due
            assert not caplog.text
        use = disk_use(st.path)
        assert keeper.last_use is not None and use.db_bytes > 0 and 0 < use.free_bytes <= use.total_bytes
        assert use.line().startswith("store ")


def test_a_small_day_bench_runs_the_storage_path_and_measures_reads(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    res = bench_day(s, tmp_path, hours=0.05, days=2, rate=5.0, dashboard=False, say=lambda _: None)
    (mark,) = res["marks"]
    assert mark["sim_hour"] == 0.05 and mark["refused"] == 0
    assert mark["rows"]["trades"] > 0.6 * 5 * 86_400  # the bulk-written day and the simulated minutes
    assert mark["signals_24h_rows"] >= 86_000
    assert mark["sink_rss_mb"] > 0 and mark["disk_bytes"] > 0 and mark["copy_before_s"] > 0
    assert mark["visible_ms"] > 0 and mark["history_24h_ms"] > 0 and mark["dashboard_load_ms"] > 0
