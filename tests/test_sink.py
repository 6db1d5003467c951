"""The DuckDB sink with the rest of the pipeline: real Binance trades -> worker -> sink -> DuckDB, read
while the sink runs; SIGKILL of worker and sink loses and duplicates nothing; import, export, back-fill."""

from __future__ import annotations

import csv
import gzip
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rtqis.kafka.admin import create_topics
from rtqis.settings import Settings
from rtqis.sinks.history import backfill, open_history
from rtqis.sinks.sink import open_for_writing, sink_paths
from rtqis.sinks.store import Store, StoreError
from tests.conftest import Procs, env_of, make_settings, wait_until, worker_progress
from tests.test_candles_pipeline import COMPLETE, FEED_SPEED, KLINES, UM_ETH, binance_klines
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]

N_TRADES = len(gzip.decompress(UM_ETH.read_bytes()).splitlines()) - 1  # header


def _history_counts(s: Settings) -> tuple[int, int]:
    try:
        with open_history(s) as st:
            closed = st.candles("ETHUSDT", "1m").filter(closed=True).height
            return st.counts()["trades"], closed
    except Exception:  # noqa: BLE001 - no snapshot yet
        return 0, 0


def _check(s: Settings) -> None:
    with open_history(s) as st:
        df = st.candles("ETHUSDT", "1m")
        assert df["open_time"].n_unique() == df.height  # no duplicate rows
        kl = binance_klines()
        for row in df.filter(df["open_time"].is_in(COMPLETE)).iter_rows(named=True):
            k = kl[row["open_time"]]
            assert (row["open"], row["high"], row["low"], row["close"]) == tuple(float(x) for x in k[1:5])
            assert row["trades"] == int(k[8]) and row["volume"] == pytest.approx(float(k[5]), rel=1e-9)
        assert st.counts()["trades"] == N_TRADES


def test_replay_to_duckdb_read_while_the_sink_runs(bootstrap: str, tmp_path: Path, procs: Procs) -> None:
    s = make_settings(bootstrap, tmp_path, candle_grace_ms=0)
    create_topics(s)
    procs.start(s, "worker", name="worker")
    sink = procs.start(s, "sink", name="sink")
    assert run_cli("produce", "file", str(UM_ETH), env=env_of(s), timeout=120).returncode == 0
    wait_until(lambda: _history_counts(s) == (N_TRADES, 6), 90, "trades and 6 closed candles in DuckDB")
    assert sink.poll() is None  # read the snapshot while the sink holds the live file
    _check(s)
    # the CLI exports from the snapshot too, while the sink runs
    r = run_cli("candles", "export", "--symbol", "ETHUSDT", "--interval", "1m", env=env_of(s))
    assert r.returncode == 0, r.stderr
    header, *rows = list(csv.reader(r.stdout.splitlines()))
    assert header == [
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
    ]
    assert len(rows) >= 6 and rows[1][2] == "2024-08-08T23:55:00Z"


def test_sigkill_worker_and_sink_mid_replay(bootstrap: str, tmp_path: Path, procs: Procs) -> None:
    s = make_settings(bootstrap, tmp_path, candle_grace_ms=0, frame_max_ticks=50)
    create_topics(s)
    # fed while worker and sink run, so both kills land mid-stream whatever their speed
    feed = procs.start(s, "produce", "file", "--speed", str(FEED_SPEED), str(UM_ETH), name="feed")
    w = procs.start(s, "worker", name="worker1")
    k = procs.start(s, "sink", name="sink1")
    wait_until(lambda: _history_counts(s)[0] > 0, 60, "the sink to store something")
    Procs.stop(k, signal.SIGKILL)
    Procs.stop(w, signal.SIGKILL)
    done_at_kill = worker_progress(s)[0]
    procs.start(s, "worker", name="worker2")
    procs.start(s, "sink", name="sink2")
    assert feed.wait(120) == 0, procs.log_of(feed)[-2000:]
    assert done_at_kill < worker_progress(s)[1]  # the second worker had work left
    wait_until(lambda: _history_counts(s) == (N_TRADES, 6), 90, "all trades and 6 closed candles")
    _check(s)


def test_import_export_round_trip_and_bad_file(settings: Settings, tmp_path: Path) -> None:
    env = env_of(settings)
    r = run_cli("candles", "import", str(KLINES), "--symbol", "ETHUSDT", env=env)
    assert r.returncode == 0, r.stderr
    n = len(binance_klines())
    assert f"imported {n} 1m candles" in r.stdout
    assert run_cli("candles", "import", str(KLINES), "--symbol", "ETHUSDT", env=env).returncode == 0  # upsert
    out = tmp_path / "out.csv"
    r = run_cli("candles", "export", "--symbol", "ETHUSDT", "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == n  # not doubled
    assert [float(x["open"]) for x in rows] == [float(k[1]) for k in binance_klines().values()]
    bad = tmp_path / "bad.csv"
    lines = KLINES.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], "-1", 1)  # high below open
    bad.write_text("\n".join(lines) + "\n")
    r = run_cli("candles", "import", str(bad), "--symbol", "BTCUSDT", env=env)
    assert_one_line_error(r, "line 4")
    with Store(sink_paths(settings)[0], read_only=True) as st:
        assert st.candles("BTCUSDT", "1m").height == 0  # nothing imported
    r = run_cli("candles", "import", str(KLINES), "--symbol", "BADUSDT", env=env)
    assert_one_line_error(r, "unknown symbol 'BADUSDT'")


def test_backfill_fills_exactly_the_missing_minutes(settings: Settings) -> None:
    from tests.test_binance_rest import KLINES as REST_KLINES
    from tests.test_binance_rest import FakeBinance

    first = REST_KLINES[0][0]
    with FakeBinance() as fake:
        s = settings.model_copy(update={"binance_rest_url": fake.base_url, "symbols": ["ETHUSDT"], "pairs": []})
        with Store(sink_paths(s)[0]) as st:
            present = [first + 60_000 * i for i in (0, 1, 5, 6)]
            st.upsert_candles(
                [
                    {"symbol": "ETHUSDT", "interval": "1m", "open_time": t, "close_time": t + 59_999, "open": 1.0,
                     "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0, "quote_volume": 1.0, "trades": 1,
                     "taker_buy_volume": 0.0, "taker_buy_quote_volume": 0.0, "vwap": 1.0, "closed": True,
                     "source": "stream"}
                    for t in present
                ]
            )  # fmt: skip
            end = first + 10 * 60_000
            n = backfill(s, lookback_h=10 / 60, now_ms=end + 30_000, store=st)
            assert n == 6  # minutes 2, 3, 4, 7, 8, 9
            df = st.candles("ETHUSDT", "1m", first, end)
            assert df.height == 10 and st.missing_minutes("ETHUSDT", first, end) == []
            assert df.filter(source="stream")["open_time"].to_list() == present  # stream rows kept
            assert st.candles("ETHUSDT", "5m", first, end).height >= 1
        requested = [x for x in fake.seen if x.path == "/api/v3/klines"]
        assert requested and all(x.params["symbol"] == "ETHUSDT" for x in requested)


def _hold(path: Path, read_only: bool, seconds: float) -> subprocess.Popen[str]:
    """Another process holding ``path`` open; returns once it has the file."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(path)!r}, read_only={read_only})\n"
        "print('open', flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "open"
    return p


def test_sink_waits_for_a_reader_and_names_a_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reader holding the live file (read-only) when the sink starts is waited for; another writer
    still fails, with DuckDB's reason, after the wait."""
    path = tmp_path / "live.duckdb"
    Store(path).close()
    reader = _hold(path, read_only=True, seconds=1.5)
    try:
        with pytest.raises(StoreError, match="lock"):
            Store(path)  # what the sink met before: the reader's lock
        with caplog.at_level(logging.INFO, logger="rtqis.sinks.sink"):
            store = open_for_writing(path, threading.Event(), wait_s=30)  # waits for the reader to go
        assert any("held by another process" in r.getMessage() for r in caplog.records)
        # The reader ran its course (it was not killed): the lock went when its connection closed, which
        # is a moment before its process exits, so wait for the exit rather than poll it.
        assert reader.wait(timeout=30) == 0
        store.close()
    finally:
        reader.kill()
        reader.communicate()
    writer = _hold(path, read_only=False, seconds=30)
    try:
        with pytest.raises(StoreError, match="lock"):
            open_for_writing(path, threading.Event(), wait_s=1)
    finally:
        writer.kill()
        writer.communicate()
