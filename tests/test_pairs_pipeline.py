"""Real Binance trades -> broker -> Faust pair agent: the PairSignals equal the batch kernels on the same
samples; a SIGKILLed and restarted worker publishes exactly the numbers of an uninterrupted run; bad leg
messages are dead-lettered. Both ways the pairs are computed: in the tick agent (one
partition, the default) and through pairs.legs in the pairs agent."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtqis.analytics.pair_model import SIGNAL_FIELDS, PairModel, PairParams, batch_pair
from rtqis.analytics.sampling import LegSampler, PairAligner
from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.topics import ADF, DEADLETTER, LEGS, PAIR
from tests.conftest import BINANCE_DATA, Procs, collect, env_of, make_settings, worker_progress
from tests.test_cli import run_cli

# on Tansu only in make test: its logic is the least broker-specific; the Kafka pass has the pipeline tests
pytestmark = [pytest.mark.broker, pytest.mark.integration]

TRADES = BINANCE_DATA / "trades"
FILES = [str(next(TRADES.glob(f"{s}-spot-trades-*.csv"))) for s in ("BTCUSDT", "ETHUSDT")]
#: x real time for the SIGKILL test's feed: the files' 650 s of trades in about 16 s
FEED_SPEED = 40
WINDOWS = {"ols_window": 60, "zscore_window": 60, "huber_window": 120, "huber_refit_every": 10, "adf_window": 200}


def _settings(bootstrap: str, tmp_path: Path, **kw: Any) -> Settings:
    s = make_settings(bootstrap, tmp_path, adf_every_s=60.0, **WINDOWS, **kw)
    create_topics(s)
    return s


def reference(s: Settings) -> tuple[Any, list[dict[str, Any]]]:
    """The aligned samples of the two files and the signals of an uninterrupted in-process run."""
    a = PairAligner()
    fill = int(s.stale_after_s * 1000 // s.sample_ms) + 1
    for leg, path in (("x", FILES[0]), ("y", FILES[1])):
        raw = np.loadtxt(path, delimiter=",", usecols=(1, 4))
        a.push(leg, *LegSampler(max_fill=fill).update(raw[:, 1].astype(np.int64), raw[:, 0]))
    r = a.drain()
    model = PairModel("ETHUSDT/BTCUSDT", PairParams.from_settings(s))
    sig = []
    for row in zip(r.time.tolist(), r.x.tolist(), r.y.tolist(), r.x_time.tolist(), r.y_time.tolist(), strict=True):
        st = model.step(*row)
        assert st is not None
        sig.append(st.signal)
    return r, sig


def signals(s: Settings, n: int) -> dict[int, dict[str, Any]]:
    rows = collect(s, PAIR.name, lambda rows: len({r["time"] for r in rows}) >= n, timeout_s=120)
    by_time: dict[int, dict[str, Any]] = {}
    for row in rows:  # at-least-once: a redelivered sample is published again, identical
        assert by_time.setdefault(row["time"], row) == row
    return by_time


PATHS = pytest.mark.parametrize("colocate", [True, False], ids=["in-tick-agent", "via-legs-topic"])


@PATHS
def test_pair_signals_equal_the_batch_kernels(bootstrap: str, tmp_path: Path, procs: Procs, colocate: bool) -> None:
    s = _settings(bootstrap, tmp_path, colocate_pairs=colocate)
    assert s.pairs_colocated is colocate
    r, _ = reference(s)
    assert run_cli("produce", "file", *FILES, env=env_of(s), timeout=120).returncode == 0
    procs.start(s, "worker", name="worker")
    got = signals(s, len(r))
    assert sorted(got) == r.time.tolist()
    ref = batch_pair(r.time, r.x, r.y, PairParams.from_settings(s))
    for name in SIGNAL_FIELDS:
        col = np.array([np.nan if got[t][name] is None else got[t][name] for t in r.time.tolist()])
        assert np.array_equal(np.isnan(col), np.isnan(ref[name])), name
        ok = ~np.isnan(ref[name])
        scale = np.abs(ref[name][ok]) + (1.0 if name in ("spread", "spread_ols", "zscore") or "alpha" in name else 0.0)
        assert np.max(np.abs(col[ok] - ref[name][ok]) / scale, initial=0) < 1e-9, name
    # ADF every 60 s of event time, on the OLS residual of the window
    adf = collect(s, ADF.name, lambda rows: len(rows) >= len(r) // 60 - 1, timeout_s=30)
    assert all(a["pair"] == "ETHUSDT/BTCUSDT" and math.isfinite(a["pvalue"]) for a in adf)
    assert [a["time"] % 60_000 for a in adf[1:]] == [0] * (len(adf) - 1)
    # computed in the tick agent, the pairs publish no leg messages: the pairs.legs hop is gone
    legs = sum(o.end for o in topic_offsets(s, [LEGS.full_name(s.namespace)]))
    assert (legs == 0) is colocate, legs
    # bad leg messages: a pair that is not configured, raw bytes that do not decode
    p = MessageProducer(s)
    nope = m.LegSamples(pair="NOPE/BTCUSDT", leg="x", symbol="BTCUSDT", time=[1000], price=[1.0], last_time=[1000])
    p.send(LEGS, nope, key="NOPE/BTCUSDT")
    p._p.produce(LEGS.full_name(s.namespace), value=b"not json", key=b"ETHUSDT/BTCUSDT")  # raw bad bytes
    p.close()
    dead = collect(s, DEADLETTER.name, lambda rows: len(rows) >= 2, timeout_s=30)
    reasons = " ".join(d["reason"] for d in dead)
    assert "unknown pair 'NOPE/BTCUSDT'" in reasons and {d["stage"] for d in dead} >= {"worker.pairs"}


@PATHS
def test_sigkill_mid_stream_gives_the_numbers_of_an_uninterrupted_run(
    bootstrap: str, tmp_path: Path, procs: Procs, colocate: bool
) -> None:
    s = _settings(bootstrap, tmp_path, frame_max_ticks=50, colocate_pairs=colocate)  # many frames, many legs
    r, want = reference(s)
    # fed at FEED_SPEED while the worker runs, so the kill lands mid-stream whatever the worker's speed
    feed = procs.start(s, "produce", "file", "--speed", str(FEED_SPEED), *FILES, name="feed")
    w = procs.start(s, "worker", name="worker1")
    signals(s, 150)  # part-way through
    Procs.stop(w, signal.SIGKILL)
    done_at_kill = worker_progress(s)[0]
    procs.start(s, "worker", name="worker2")
    assert feed.wait(120) == 0, procs.log_of(feed)[-2000:]
    assert done_at_kill < worker_progress(s)[1]  # killed mid-stream: the second worker had work left
    got = signals(s, len(r))
    assert [got[sig["time"]] for sig in want] == want  # exactly, not approximately


def test_mid_prices_from_best_bid_ask(bootstrap: str, tmp_path: Path, procs: Procs) -> None:
    s = _settings(bootstrap, tmp_path, pair_price="mid")
    book = BINANCE_DATA / "bookticker"
    files = [str(book / f"{sym}-spot-bookTicker-2024-08-08_2024-08-09.csv.gz") for sym in ("BTCUSDT", "ETHUSDT")]
    a = PairAligner()
    fill = int(s.stale_after_s * 1000 // s.sample_ms) + 1
    for leg, path in zip(("x", "y"), files, strict=True):
        raw = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2, 4), dtype=np.float64)
        ns = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0,), dtype=np.int64)
        mid = (raw[:, 2] + raw[:, 3]) / 2.0
        a.push(leg, *LegSampler(max_fill=fill).update(ns // 1_000_000, mid, raw[:, 1].astype(np.int64)))
    r = a.drain()
    assert len(r) > 600
    assert run_cli("produce", "file", *files, env=env_of(s), timeout=120).returncode == 0
    procs.start(s, "worker", name="worker")
    got = signals(s, len(r))
    assert sorted(got) == r.time.tolist()
    assert [got[t]["x"] for t in r.time.tolist()] == r.x.tolist()  # mids, sampled exactly
    assert [got[t]["y"] for t in r.time.tolist()] == r.y.tolist()
