"""The dashboard's parts without a browser: merging by key, chart columns, history/CSV/upload I/O against a
real DuckDB file, ADF on demand, the live hub against the real broker, and the `rtqis ui` command line."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtqis.errors import PortInUseError
from rtqis.kafka.clients import MessageProducer
from rtqis.schemas import models as m
from rtqis.settings import Settings, load_settings
from rtqis.sinks.candle_files import EXPORT_COLUMNS
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import ALERTS, CANDLES_1M, DEADLETTER, PAIR
from rtqis.ui import charts as ch
from rtqis.ui import data
from rtqis.ui import tables as tb
from rtqis.ui.hub import Batch, LiveHub
from rtqis.ui.server import check_port, panel_argv
from tests.conftest import env_of, wait_until
from tests.test_cli import assert_one_line_error, run_cli

PAIR_NAME = "ETHUSDT/BTCUSDT"


def cols(**kw: list[float]) -> tb.Cols:
    return {k: np.asarray(v) for k, v in kw.items()}


# ------------------------------------------------------------------------------------------ tables


def test_upsert_sorts_by_key_keeps_the_newest_version_and_the_last_rows() -> None:
    base = cols(t=[1, 2, 3], v=[10.0, 20.0, 30.0])
    new = cols(t=[3, 5, 4, 5], v=[31.0, 50.0, 40.0, 51.0])  # 3 revised, 5 twice (the later wins), unsorted
    out = tb.upsert(base, new, "t")
    assert out["t"].tolist() == [1, 2, 3, 4, 5]
    assert out["v"].tolist() == [10.0, 20.0, 31.0, 40.0, 51.0]
    assert tb.upsert(base, new, "t", cap=2)["t"].tolist() == [4, 5]
    assert tb.upsert({}, new, "t")["v"].tolist() == [31.0, 40.0, 51.0]
    assert tb.upsert(base, {}, "t")["t"].tolist() == [1, 2, 3]


def test_tail_plan_patches_drawn_keys_streams_new_ones_and_drops_older() -> None:
    drawn = np.array([10, 20, 30])
    plan = tb.tail_plan(drawn, cols(t=[5, 20, 30, 40, 50], v=[0.5, 2.0, 3.0, 4.0, 5.0]), "t")
    assert plan.patches == [(1, 1), (2, 2)]  # (index drawn, row of the new rows)
    assert plan.stream["t"].tolist() == [40, 50]
    first = tb.tail_plan(np.array([]), cols(t=[1, 2], v=[1.0, 2.0]), "t")
    assert first.patches == [] and first.stream["t"].tolist() == [1, 2]


def test_a_batch_with_a_repeated_or_late_key_is_queued_sorted_once() -> None:
    """A batch as at-least-once delivery can bring it (a key twice, out of order) leaves the queue sorted,
    one row per key, the later version winning: the chart streams it without a duplicate point."""
    from rtqis.ui.session import ChartQueues

    view = ChartQueues()
    batch = {"time": np.array([3_000, 1_000, 2_000, 3_000]), "zscore": np.array([0.3, 0.1, 0.2, 0.31])}
    view.queue("zscore", batch, "time")
    assert view.pending["zscore"]["time"].tolist() == [1_000, 2_000, 3_000]
    assert view.pending["zscore"]["zscore"].tolist() == [0.1, 0.2, 0.31]
    view.queue("zscore", {"time": np.array([2_000, 4_000]), "zscore": np.array([0.25, 0.4])}, "time")
    assert view.pending["zscore"]["time"].tolist() == [1_000, 2_000, 3_000, 4_000]
    assert view.pending["zscore"]["zscore"].tolist() == [0.1, 0.25, 0.31, 0.4]


def test_bucket_last_and_time_window() -> None:
    book = cols(t=[1000, 1040, 1099, 1100, 1250], bid=[1.0, 2.0, 3.0, 4.0, 5.0])
    out = tb.bucket_last(book, "t", 100)
    assert out["t"].tolist() == [1000, 1100, 1200] and out["bid"].tolist() == [3.0, 4.0, 5.0]
    assert tb.time_window(out, "t", 1100, 1200)["t"].tolist() == [1100]
    assert tb.time_window(out, "t", None, None)["t"].tolist() == [1000, 1100, 1200]


def test_rows_to_cols_keeps_list_values_whole_and_none_as_nan() -> None:
    rows = [{"a": 1.0, "f": ["x", "y"]}, {"a": None, "f": ["z", "w"]}]
    out = tb.rows_to_cols(rows, {"a": np.float64, "f": object})
    assert np.isnan(out["a"][1]) and out["f"].shape == (2,) and out["f"][0] == ["x", "y"]


def test_depth_ladder_is_cumulative_from_the_best_price_outwards() -> None:
    bids = ch.depth_display([99.0, 100.0, 98.0], [1.0, 2.0, 3.0], "bid")
    # ascending prices; at 98 all three levels (6), between 98 and 99 the two upper ones (3), then 2, then 0
    assert bids["price"].tolist() == [98.0, 98.0, 99.0, 99.0, 100.0, 100.0]
    assert bids["cum"].tolist() == [6.0, 3.0, 3.0, 2.0, 2.0, 0.0]
    asks = ch.depth_display([102.0, 101.0], [1.0, 4.0], "ask")
    assert asks["price"].tolist() == [101.0, 101.0, 102.0, 102.0]
    assert asks["cum"].tolist() == [0.0, 4.0, 4.0, 5.0]


def test_candle_columns_centre_bars_and_flag_up_candles() -> None:
    c = ch.candle_display(
        cols(open_time=[0, 60_000], open=[1.0, 2.0], high=[2.0, 2.5], low=[0.5, 1.0], close=[2.0, 1.5], volume=[3, 4]),
        60_000,
    )
    assert c["x"].tolist() == [30_000, 90_000] and c["up"].tolist() == [1.0, 0.0]
    assert c["top"].tolist() == [2.0, 2.0] and c["bottom"].tolist() == [1.0, 1.5]


# ------------------------------------------------------------------------------------------ history, CSV, upload


@pytest.fixture
def offline(tmp_path: Path) -> Settings:
    """Settings whose DuckDB is a file in tmp_path and whose broker nobody runs (no sink: direct writes)."""
    return load_settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")


def _signal(t: int, z: float) -> m.PairSignal:
    return m.PairSignal(
        time=t, pair=PAIR_NAME, x=100.0, y=50.0, ols_beta=0.5, kalman_beta=0.5, spread=z, zscore=z, n_obs=10,
        flags=["warming_up"] if t == 1000 else [],
    )  # fmt: skip


def test_signals_csv_merges_history_and_live_rows_of_the_range(offline: Settings) -> None:
    with Store(sink_paths(offline)[0]) as st:
        st.upsert_signals([_signal(t, 1.0) for t in (1000, 2000, 3000)])
    live = tb.upsert({}, tb.rows_to_cols([_signal(3000, 9.0), _signal(4000, 4.0)], _signal_fields()), "time")
    live["flags"] = np.array(["", ""], dtype=object)
    body, n = data.signals_csv(offline, PAIR_NAME, live, 2000, 4000)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert tuple(rows[0]) == data.SIGNAL_CSV_COLUMNS and n == 3
    assert [r["time"] for r in rows] == ["1970-01-01T00:00:02Z", "1970-01-01T00:00:03Z", "1970-01-01T00:00:04Z"]
    assert [r["zscore"] for r in rows] == ["1.0", "9.0", "4.0"]  # the live version of 3000 wins
    assert rows[0]["ols_alpha"] == "" and rows[0]["pair"] == PAIR_NAME
    body, _ = data.signals_csv(offline, PAIR_NAME, {}, None, None)
    assert list(csv.DictReader(io.StringIO(body.decode())))[0]["flags"] == "warming_up"


def test_signals_csv_carries_the_new_fields_and_nulls_where_rows_lack_them(offline: Settings) -> None:
    import polars as pl

    old = pl.DataFrame({"time": [1000], "x": [100.0], "y": [50.0], "zscore": [0.5], "n_obs": [3], "flags": [[]]})
    cols = data._signal_cols(old)  # a store written before #20: the new columns come as nulls
    assert np.isnan(cols["hedge_se"][0]) and cols["coint"][0] is None and np.isnan(cols["below_cost"][0])
    new = _signal(2000, 2.5).model_copy(
        update={"coint": "cointegrated", "coint_pvalue": 0.01, "position": -1, "below_cost": 4, "hedge": 0.03}
    )
    live = tb.rows_to_cols([new], _signal_fields())
    live["flags"] = np.array([""], dtype=object)
    old_live = {k: v for k, v in tb.rows_to_cols([_signal(3000, 1.0)], _signal_fields()).items() if k != "coint"}
    old_live["flags"] = np.array([""], dtype=object)
    body, n = data.signals_csv(
        offline, PAIR_NAME, tb.concat([live, {**old_live, "coint": np.array([None])}]), None, None
    )
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert n == 2 and tuple(rows[0]) == data.SIGNAL_CSV_COLUMNS
    assert (rows[0]["coint"], rows[0]["position"], rows[0]["below_cost"]) == ("cointegrated", "-1", "4")
    assert (rows[1]["coint"], rows[1]["position"], rows[1]["hedge"]) == ("", "", "")
    body, _ = data.signals_csv(offline, PAIR_NAME, old_live, None, None)  # live rows without a column
    assert list(csv.DictReader(io.StringIO(body.decode())))[0]["coint"] == ""


def _signal_fields() -> dict[str, object]:
    from rtqis.ui.hub import SIGNAL_FIELDS

    return SIGNAL_FIELDS


def test_upload_refuses_a_bad_file_with_its_line_and_imports_a_good_one(offline: Settings) -> None:
    bad = (
        b"open_time,open,high,low,close,volume\n"
        b"2024-08-09T00:00:00Z,1,2,0.5,1.5,3\n"
        b"2024-08-09T00:01:00Z,1,0.9,0.5,0.8,3\n"  # line 3: high below the open
    )  # fmt: skip
    with pytest.raises(data.UploadError, match=r"bad\.csv: line 3: high < max\(open, close\); nothing was imported"):
        data.upload_candles(offline, "bad.csv", bad, symbol="BTCUSDT", interval="1m")
    if sink_paths(offline)[0].exists():
        with Store(sink_paths(offline)[0], read_only=True) as st:
            assert st.candles("BTCUSDT", "1m").is_empty()
    with pytest.raises(data.UploadError, match="upload limit"):
        data.upload_candles(offline, "big.csv", b"x" * (data.MAX_UPLOAD_BYTES + 1), symbol="BTCUSDT", interval="1m")
    good = bad.replace(b",1,0.9,0.5,0.8,", b",1,2,0.5,1.2,")
    r = data.upload_candles(offline, "good.csv", good, symbol="BTCUSDT", interval="1m")
    assert (r.rows, r.how) == (2, "written") and r.candles["close"].tolist() == [1.5, 1.2]
    body, n = data.candles_csv(offline, "BTCUSDT", "1m", {}, None, None)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert n == 2 and tuple(rows[0]) == EXPORT_COLUMNS and rows[1]["open_time"] == "2024-08-09T00:01:00Z"


def test_history_without_a_database_is_empty_with_a_reason(offline: Settings) -> None:
    h = data.load_history(offline, symbol="BTCUSDT", interval="1m", pair=PAIR_NAME, end_ms=0, bars=10, signals_ms=1)
    assert h.candles == {} and h.signals == {} and "no candle history yet" in h.note


def test_spread_adf_tells_a_cointegrated_pair_from_two_random_walks() -> None:
    from rtqis.analytics.pair_model import spread_adf

    rng = np.random.default_rng(5)
    e = rng.standard_normal(600)
    ar = np.zeros(600)
    for i in range(1, 600):
        ar[i] = 0.8 * ar[i - 1] + e[i]
    x = 90_000 + np.cumsum(rng.standard_normal(600) * 20)
    assert spread_adf(x, 0.0333 * x + ar).mean_reverting
    assert not spread_adf(x, 0.0333 * x + np.cumsum(e)).mean_reverting
    with pytest.raises(ValueError, match="too short"):
        spread_adf(x[:3], ar[:3])


def test_on_demand_adf_is_the_worker_periodic_adf(offline: Settings) -> None:
    """The dashboard's button and the pair agent's periodic test give the same numbers on the same samples."""
    from rtqis.analytics.pair_model import PairModel, PairParams
    from rtqis.ui.hub import SIGNAL_FIELDS

    rng = np.random.default_rng(3)
    n = 400
    x = 3_000 + np.cumsum(rng.standard_normal(n))
    y = 0.05 * x + 1 + np.cumsum(rng.standard_normal(n)) * 0.01
    model = PairModel(PAIR_NAME, PairParams.from_settings(offline))
    model.hist.extend((1_000 * (i + 1), float(x[i]), float(y[i]), 0.0) for i in range(n))
    worker = model.adf(300)
    assert worker is not None
    live = tb.rows_to_cols(
        [m.PairSignal(time=1_000 * (i + 1), pair=PAIR_NAME, x=float(x[i]), y=float(y[i]), n_obs=i) for i in range(n)],
        SIGNAL_FIELDS,
    )
    r, used = data.pair_adf(offline, PAIR_NAME, live, 300)
    assert used == worker["window"] == 300
    assert (r.stat, r.pvalue, r.lags, r.nobs, r.mean_reverting) == (
        worker["stat"], worker["pvalue"], worker["lags"], worker["nobs"], worker["mean_reverting"],
    )  # fmt: skip
    assert r.crit["5%"] == worker["crit_5"]


def test_pair_adf_tests_the_ols_residual_of_history_and_live_samples(offline: Settings) -> None:
    rng = np.random.default_rng(8)
    n = 500
    x = 90_000 + np.cumsum(rng.standard_normal(n) * 20)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.7 * noise[i - 1] + rng.standard_normal()
    y = 0.0333 * x + 5 + noise  # cointegrated
    rows = [
        m.PairSignal(time=1_000 * (i + 1), pair=PAIR_NAME, x=float(x[i]), y=float(y[i]), n_obs=i) for i in range(n)
    ]  # fmt: skip
    with Store(sink_paths(offline)[0]) as st:
        st.upsert_signals(rows[:400])  # history; the rest is "live" in the hub
    from rtqis.ui.hub import SIGNAL_FIELDS

    live = tb.rows_to_cols(rows[400:], SIGNAL_FIELDS)
    r, used = data.pair_adf(offline, PAIR_NAME, live, 300)
    assert used == 300 and r.mean_reverting and r.pvalue < 0.01
    r, used = data.pair_adf(offline, PAIR_NAME, {}, 1000)
    assert used == 400  # history only, all there is
    other = "BTCUSDT/ETHUSDT"  # y an independent random walk: no cointegration
    y2 = 3000 + np.cumsum(rng.standard_normal(n) * 3)
    with Store(sink_paths(offline)[0]) as st:
        st.upsert_signals([row.model_copy(update={"pair": other, "y": float(y2[i])}) for i, row in enumerate(rows)])
    r, _ = data.pair_adf(offline, other, {}, 500)
    assert not r.mean_reverting


# ------------------------------------------------------------------------------------------ hub (real broker)


@pytest.mark.broker
def test_hub_fans_out_batches_and_knows_old_alerts_from_new_ones(settings: Settings) -> None:
    p = MessageProducer(settings)
    now = int(time.time() * 1000)
    old = m.Alert(
        time=now - 5000, pair=PAIR_NAME, kind="exit", zscore=0.1, threshold=0.5, spread=0.0, beta=0.5, x=1.0,
        y=1.0, message="before the hub started",
    )  # fmt: skip
    p.send(ALERTS, old, key=PAIR_NAME)
    dl = m.DeadLetter(time=now, stage="test", reason="bad", payload=b"x")
    p.send(DEADLETTER, dl, key="test")
    assert p.flush() == 0
    hub = LiveHub(settings, batch_ms=100).start()
    got: list[Batch] = []
    seen = threading.Event()

    def on_batch(b: Batch) -> None:
        got.append(b)
        if any(ev.live for ev in b.alerts):
            seen.set()

    try:
        wait_until(lambda: hub.stats.state == "live" and hub.snapshot().alerts, 30, "the hub to catch up")
        snap, unsubscribe = hub.subscribe(on_batch)
        assert [ev.live for ev in snap.alerts] == [False]  # consumed while catching up: not news
        assert hub.stats.deadletters == 1 and hub.stats.sessions == 1
        candle = m.Candle(
            symbol="BTCUSDT", interval="1m", open_time=now - now % 60_000, close_time=now - now % 60_000 + 59_999,
            open=1.0, high=2.0, low=0.5, close=1.5, volume=3.0, quote_volume=4.5, trades=3, taker_buy_volume=1.0,
            taker_buy_quote_volume=1.5, vwap=1.5,
        )  # fmt: skip
        p.send(CANDLES_1M, candle, key="BTCUSDT")
        p.send(PAIR, _signal(now, 2.5), key=PAIR_NAME)
        p.send(ALERTS, old.model_copy(update={"time": now, "kind": "enter_short_spread", "zscore": 2.5}), key=PAIR_NAME)
        assert p.flush() == 0
        assert seen.wait(30), got
        wait_until(lambda: ("BTCUSDT", "1m") in hub.snapshot().candles and PAIR_NAME in hub.snapshot().signals, 30)
        snap2 = hub.snapshot()
        assert snap2.seq > snap.seq
        assert snap2.candles[("BTCUSDT", "1m")]["close"].tolist() == [1.5]
        assert snap2.signals[PAIR_NAME]["zscore"].tolist() == [2.5]
        assert all(b.seq > snap.seq for b in got)
        unsubscribe()
        assert hub.stats.sessions == 0
    finally:
        hub.stop()


# ------------------------------------------------------------------------------------------ serving


def test_panel_serve_arguments_follow_the_settings(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, ui_port=5123, log_level="warning")
    argv = panel_argv(s, "127.0.0.1", 5123)
    assert argv[0].endswith("rtqis/ui/dashboard.py") and "--setup" in argv
    assert argv[argv.index("--port") + 1] == "5123" and argv[argv.index("--num-procs") + 1] == "1"
    assert "127.0.0.1:5123" in argv and "localhost:5123" in argv
    assert panel_argv(s, "0.0.0.0", 80, ["trader.example:80"]).count("--allow-websocket-origin") == 1  # noqa: S104


def test_ui_on_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError):
            check_port("127.0.0.1", port)
        s = load_settings(data_dir=tmp_path, ui_port=port)
        r = run_cli("ui", env=env_of(s), timeout=60)
    assert_one_line_error(r, f"127.0.0.1:{port}", "RTQIS_UI_PORT")
