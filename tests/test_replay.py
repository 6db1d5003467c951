"""``rtqis replay``: real Binance trades (BTCUSDT + ETHUSDT, so pair signals exist) through the real
worker and sink in a namespace of their own. The same input gives the same digest twice (the second run
into the same namespace resets it first) and after a SIGKILLed worker; live topics, groups and the live
DuckDB file are untouched; a bad file is one error line and a non-zero exit."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.replay import (
    REPLAY_FRAME_MAX_TICKS,
    REPLAY_SINK_FLUSH_ROWS,
    FeedPlan,
    ReplayResult,
    default_namespace,
    digest,
    feed_plan,
    replay_settings,
    run_replay,
)
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import ALERTS, PAIR, TRADES
from tests.conftest import BINANCE_DATA, env_of, make_settings
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]

FILES = [str(next((BINANCE_DATA / "trades").glob(f"{s}-spot-trades-*.csv"))) for s in ("BTCUSDT", "ETHUSDT")]
#: small frames, fed at 50 x real time (the files span 650 s: about 13 s): the worker commits part of
#: the input while the rest is still coming, so the SIGKILL lands mid-stream whatever the worker's
#: speed. (CI at ce2d088 saw no commit between the first and the end, so no kill: Faust's patched flush
#: then waited for an empty producer buffer, which under load it never was; fixed in a670603.) The
#: outputs do not depend on how the ticks are framed or paced, so the digest is the baseline's.
SMALL_FRAMES = {"frame_max_ticks": 20}
KILL_SPEED = 50.0


def _file_sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted replay next to a live system: the live (namespace '') topics hold messages and
    the live DuckDB file exists before it; what they looked like before and after is recorded."""
    tmp = tmp_path_factory.mktemp("replay")
    live = make_settings(bootstrap, tmp, namespace="")
    create_topics(live)
    p = MessageProducer(live)
    sig = m.Alert(time=1, pair="ETHUSDT/BTCUSDT", kind="exit", zscore=0.1, threshold=0.5, spread=0.0, beta=1.0,
                  x=1.0, y=1.0, message="live")  # fmt: skip
    p.send(ALERTS, sig, key=sig.pair)
    p.flush()
    live_db = sink_paths(live)[0]
    with Store(live_db) as st:
        st.insert_alerts([sig])
    names = [t.full_name("") for t in (TRADES, PAIR, ALERTS)]

    def ends() -> dict[tuple[str, int], int]:
        return {(r.topic, r.partition): r.end for r in topic_offsets(live, names)}

    before = {"ends": ends(), "db": _file_sha(live_db), "groups": _live_committed(live, names)}
    res = run_replay(live, FILES)
    after = {"ends": ends(), "db": _file_sha(live_db), "groups": _live_committed(live, names)}
    return {"settings": live, "result": res, "before": before, "after": after, "live_db": live_db}


def _live_committed(s: Settings, names: list[str]) -> list[Any]:
    return [(r.topic, r.committed) for g in ("rtqis", "rtqis-sink") for r in topic_offsets(s, names, group=g)]


def test_replay_summary_and_isolation(baseline: dict[str, Any]) -> None:
    res: ReplayResult = baseline["result"]
    s: Settings = baseline["settings"]
    summary = res.summary()
    assert summary["ticks"] == 34_419  # every trade of both files
    assert summary["signals"] > 500 and summary["candles"] >= 20 and summary["adf"] > 0
    assert set(summary) >= {"ticks", "candles", "signals", "alerts", "seconds", "ticks_per_s", "digest"}
    assert 0 < summary["worker_ready_s"] < summary["seconds"] and res.worker_restarts == 0
    assert len(res.digest) == 64 and res.digest == digest(res.database)
    assert res.namespace == default_namespace(FILES, ["BTCUSDT", "ETHUSDT"]) and res.namespace.startswith("r")
    # its own DuckDB file, next to the live one
    assert res.database == sink_paths(s.model_copy(update={"namespace": res.namespace}))[0]
    assert res.database != baseline["live_db"]
    # live topics, live groups and the live DuckDB file untouched
    assert baseline["before"] == baseline["after"]
    assert baseline["before"]["ends"][(ALERTS.full_name(""), 0)] == 1
    with Store(baseline["live_db"], read_only=True) as st:
        assert st.counts()["alerts"] == 1 and st.counts()["signals"] == 0


def test_same_input_twice_gives_the_same_digest(baseline: dict[str, Any]) -> None:
    """Into the same namespace again: it is reset first (else the input would be there twice)."""
    first: ReplayResult = baseline["result"]
    bar = io.StringIO()
    again = run_replay(baseline["settings"], FILES, progress=bar)
    assert again.namespace == first.namespace
    assert "ticks published" in bar.getvalue() and "% processed" in bar.getvalue()  # the progress line
    timing = ("seconds", "ticks_per_s", "worker_ready_s", "ticks_per_s_after_start", "phases_s")
    assert {k: v for k, v in again.summary().items() if k not in timing} == {
        k: v for k, v in first.summary().items() if k not in timing
    }
    assert again.digest == first.digest


def test_a_sigkilled_worker_gives_the_same_digest(baseline: dict[str, Any]) -> None:
    first: ReplayResult = baseline["result"]
    s = baseline["settings"].model_copy(update=SMALL_FRAMES)
    res = run_replay(s, FILES, namespace="killed", speed=KILL_SPEED, kill_worker_after=1)
    assert res.worker_restarts == 1  # the worker was killed part-way, not after the end
    assert res.counts == first.counts
    assert res.digest == first.digest


def test_the_replay_feed_cuts_frames_by_event_time() -> None:
    """As fast as possible, frames are cut by event time: at most half the aligner's wait (else a
    sparse symbol's frame of 500 trades could span minutes: one leg ran ahead, and the pair went on with
    the other's stale price, other signals than live), and by count only at :data:`REPLAY_FRAME_MAX_TICKS`
    (the live cap of 500 bounds a live frame's latency, which a replay does not have). The baseline
    replays with these frames and the SIGKILL test with paced frames of 20 trades: the same digest."""
    s = make_settings("127.0.0.1:1", Path("/nonexistent"), align_wait_s=60.0, frame_max_ticks=500, frame_max_ms=20)
    assert feed_plan(s, None) == FeedPlan(speed=None, slice_ms=30_000, max_ticks=REPLAY_FRAME_MAX_TICKS)
    assert feed_plan(s.model_copy(update={"frame_max_ticks": 20_000}), None).max_ticks == 20_000
    assert feed_plan(s, 50.0) == FeedPlan(speed=50.0, slice_ms=None, max_ticks=500)  # paced: as configured


def test_the_replays_sink_writes_larger_batches(tmp_path: Path) -> None:
    """As fast as the feed goes, a live sink's batches (a DuckDB transaction every 0.1 s) cost the replay
    CPU its worker needs: the replay's sink writes 50,000 rows at a time, or more if configured."""
    s = make_settings("127.0.0.1:1", tmp_path)
    assert s.sink_flush_rows < REPLAY_SINK_FLUSH_ROWS
    files = [str(BINANCE_DATA / "x")]
    assert replay_settings(s, files, "r1", None).sink_flush_rows == REPLAY_SINK_FLUSH_ROWS
    more = s.model_copy(update={"sink_flush_rows": 200_000})
    assert replay_settings(more, files, "r1", None).sink_flush_rows == 200_000


def test_cli_replay_writes_the_summary(baseline: dict[str, Any], tmp_path: Path) -> None:
    s: Settings = baseline["settings"]
    out = tmp_path / "summary.json"
    r = run_cli("replay", *FILES, "--namespace", "cli", "--json", str(out), env=env_of(s), timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got == json.loads(r.stdout)
    assert got["namespace"] == "cli" and got["digest"] == baseline["result"].digest
    assert got["ticks"] == 34_419 and got["ticks_per_s"] > 0


def test_a_bad_file_is_one_line_and_a_non_zero_exit(bootstrap: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not market data\n")
    s = make_settings(bootstrap, tmp_path)
    r = run_cli("replay", FILES[0], str(bad), env=env_of(s), timeout=60)
    assert_one_line_error(r, "notes.txt")
    assert not list(tmp_path.glob("rtqis-*.duckdb"))  # nothing started
    r = run_cli("replay", str(tmp_path / "missing.csv"), env=env_of(s), timeout=60)
    assert_one_line_error(r, "missing.csv")


# --- rtqis backtest --namespace ----------------------------------------------------------------------


def _replay_db(tmp_path: Path, namespace: str, quotes: bool) -> Path:
    """A replay's DuckDB by hand: 7 signals of ETHUSDT/BTCUSDT one second apart, long spread from the
    2nd to the 5th, and (``quotes``) best bid/ask of both legs half a second after each signal."""
    import duckdb

    db = sink_paths(Settings(data_dir=tmp_path, namespace=namespace))[0]
    t0 = 1_723_161_600_000
    pos = [0, 1, 1, 1, 0, 0, 0]
    y = [3000.0, 3000.0, 3003.0, 3006.0, 3009.0, 3009.0, 3009.0]
    rows = [
        m.PairSignal(
            time=t0 + 1000 * i,
            pair="ETHUSDT/BTCUSDT",
            x=60_000.0,
            y=y[i],
            zscore=-2.5 + i,
            hedge=0.05,
            n_obs=100 + i,
            position=pos[i],
        )  # fmt: skip
        for i in range(7)
    ]
    with Store(db) as st:
        st.upsert_signals(rows)
    if quotes:
        con = duckdb.connect(str(db))
        for i in range(7):
            for sym, mid, half in (("BTCUSDT", 60_000.0, 1.0), ("ETHUSDT", y[i], 0.5)):
                at = t0 + 1000 * i + 500  # ETHUSDT as a bookTicker archive stores it: no event time
                con.execute(
                    "INSERT INTO book_tickers VALUES (?, ?, ?, 1.0, ?, 1.0, ?, ?)",
                    [sym, i, mid - half, mid + half, at if sym == "BTCUSDT" else None, at],
                )
        con.close()
    return db


@pytest.mark.parametrize("quotes", [True, False], ids=["replayed-quotes", "no-quotes"])
def test_backtest_of_a_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quotes: bool,
                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from rtqis.backtest_report import run_replay_backtest
    from rtqis.cli import main

    db = _replay_db(tmp_path, "bt", quotes)
    res, metrics, summary, _ = run_replay_backtest(db, fee_bps=0.0)
    assert metrics["round_trips"] == 1 and metrics["crossed_spread"] is quotes
    # long spread from row 1 (y 3000) to row 4 (y 3009), x flat. With quotes each leg fills at its first
    # quote after the signal (0.5 s later, mid = that row's y): 9 at mid, and buying y at the ask and
    # selling at the bid costs 2 x 0.5 on y alone; without, at the next row's x/y (as --signals): 3003 -> 3009
    assert res.gross_pnl == pytest.approx(9.0 if quotes else 6.0)
    if quotes:
        assert metrics["spread_cost"] >= 1.0 - 1e-9
    else:
        assert metrics["spread_cost"] == 0
    assert res.net_pnl == pytest.approx(res.gross_pnl - metrics["spread_cost"])
    # 6 s of signals: totals only
    assert all(metrics[k] is None for k in ("sharpe_gross", "sharpe_net", "sortino_gross", "sortino_net"))
    assert metrics["span_days"] < 30 and "totals only" in summary
    assert ("no best bid/ask" in summary) is not quotes
    # the command: same numbers in the JSON
    monkeypatch.setenv("RTQIS_DATA_DIR", str(tmp_path))
    out, html = tmp_path / "m.json", tmp_path / "r.html"
    assert main(["backtest", "--namespace", "bt", "--fee-bps", "0", "--json", str(out), "--html", str(html)]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(metrics))
    assert "round trips 1" in capsys.readouterr().out and html.read_text().startswith("<!DOCTYPE html>")


def test_backtest_of_a_replay_refuses_what_it_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from rtqis.cli import main

    monkeypatch.setenv("RTQIS_DATA_DIR", str(tmp_path))
    _replay_db(tmp_path, "bt", quotes=False)
    assert main(["backtest", "--namespace", "none"]) != 0
    assert main(["backtest", "--namespace", "bt", "--pair", "BTCUSDT/ETHUSDT"]) != 0
    assert main(["backtest", "--namespace", "bt", "--z-enter", "1"]) != 0  # --z-enter goes with --rule
    err = capsys.readouterr().err
    assert "rtqis-none.duckdb: no such file" in err and "no signals of pair 'BTCUSDT/ETHUSDT'" in err
    assert "--z-enter and --z-exit go with --rule" in err
    assert main(["backtest", "--namespace", "bt", "--rule", "bands", "--z-enter", "1", "--z-exit", "0.2"]) == 0
    assert "bands rule at +-1 / 0.2" in capsys.readouterr().out


def test_sweep_of_a_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rtqis.backtest_report import parse_sweep
    from rtqis.cli import main

    assert parse_sweep(["z_enter=1.5:3:0.25"])["z_enter"] == [1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]
    monkeypatch.setenv("RTQIS_DATA_DIR", str(tmp_path))
    _replay_db(tmp_path, "bt", quotes=True)
    out, html = tmp_path / "sweep.json", tmp_path / "sweep.html"
    argv = ["backtest", "--namespace", "bt", "--sweep", "z_enter=1:2:0.5", "z_exit=0:1:0.5", "--json", str(out)]
    assert main([*argv, "--html", str(html)]) == 0
    d = json.loads(out.read_text())
    # bands: only z_exit < z_enter (1/0, 1/0.5, 1.5/0, 1.5/0.5, 1.5/1, 2/0, 2/0.5, 2/1)
    assert [(r["z_enter"], r["z_exit"]) for r in d["grid"]] == [
        (1.0, 0.0), (1.0, 0.5), (1.5, 0.0), (1.5, 0.5), (1.5, 1.0), (2.0, 0.0), (2.0, 0.5), (2.0, 1.0)
    ]  # fmt: skip
    assert d["best"]["in_sample"] is True and d["best"]["net_pnl"] == max(r["net_pnl"] for r in d["grid"])
    assert d["crossed_spread"] is True and all(r["round_trips"] >= 1 for r in d["grid"])  # z runs -2.5 .. 3.5
    assert "in-sample best" in capsys.readouterr().out and "in-sample" in html.read_text()
    assert main(["backtest", "--namespace", "bt", "--sweep", "z_enter=3:1:0.5"]) != 0
    assert main(["backtest", "--signals", str(out), "--sweep", "z_enter=1:2:0.5"]) != 0
    err = capsys.readouterr().err
    assert "need 0 <= START <= STOP" in err and "--sweep goes with --namespace" in err


def test_bench_input_files_are_binance_trade_files(tmp_path: Path) -> None:
    from rtqis.bench.replay import write_trade_files
    from rtqis.producers.files import inspect_file

    paths = write_trade_files(tmp_path, 5_000)
    assert [inspect_file(p).symbol for p in paths] == ["BTCUSDT", "ETHUSDT"]
    assert sum(len(p.read_text().splitlines()) for p in paths) >= 5_000


def test_the_end_is_watched_on_the_topics_the_worker_reads() -> None:
    """ticks.book is read by the worker only for mid-price pairs, pairs.legs only when the pairs are not
    computed in the tick agent: a topic nobody in the worker reads would never reach its end."""
    from rtqis.replay import worker_inputs

    s = Settings()
    assert worker_inputs(s) == ("ticks.trade",)
    assert worker_inputs(s.model_copy(update={"pair_price": "mid"})) == ("ticks.trade", "ticks.book")
    assert worker_inputs(s.model_copy(update={"colocate_pairs": False})) == ("ticks.trade", "pairs.legs")


def test_worker_start_up_is_timed_by_its_log_line(tmp_path: Path) -> None:
    """The summary's ``worker_ready_s`` comes from the time written on the worker's "Ready" line, not from
    when the replay's polling loop read it (it lagged by seconds while the feed published, and reported
    the worker ready exactly when the feed ended)."""
    from datetime import datetime
    from types import SimpleNamespace

    from rtqis.replay import _WORKER_READY, _logged_at

    log = tmp_path / "worker.log"
    child = SimpleNamespace(log_path=log)
    assert _logged_at(child, _WORKER_READY) is None  # type: ignore[arg-type]  # no log yet
    log.write_bytes(
        b"[2024-08-09 10:00:01,250] [7] [INFO] [^SafeStopWorker]: Starting... \n"
        b"+Final Subscription---+\n"
    )
    assert _logged_at(child, _WORKER_READY) is None  # type: ignore[arg-type]
    with log.open("ab") as f:
        f.write(b"[2024-08-09 10:00:04,500] [7] [INFO] [^SafeStopWorker]: Ready \n[2024-08-09 10:00:09,000] x\n")
    want = datetime(2024, 8, 9, 10, 0, 4, 500_000).astimezone().timestamp()
    assert _logged_at(child, _WORKER_READY) == want  # type: ignore[arg-type]
