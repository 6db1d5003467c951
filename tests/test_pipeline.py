"""End to end on a real broker: synthetic producer -> Faust worker -> analytics.ticker, dead letters,
and exact table state after SIGTERM / SIGKILL restarts with batched changelog writes."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import broker_capabilities, topic_offsets
from rtqis.producers.feed import trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.topics import DEADLETTER, TICKER, TRADES
from rtqis.topics.registry import changelog_topics
from tests.conftest import Procs, collect, env_of, make_settings
from tests.test_cli import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration, pytest.mark.both_brokers]


def expected_last(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per symbol: count and last trade, read back from ticks.trade itself (independent of the worker)."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"trades": 0})
    for row in collect(settings, TRADES.name, lambda rows: False, until_end=True):
        e = out[row["symbol"]]
        e["trades"] += 1
        e["trade_id"], e["price"], e["event_time"] = row["trade_id"], row["price"], row["event_time"]
    return dict(out)


def latest_tickers(settings: Settings, want: dict[str, int], timeout_s: float = 90) -> dict[str, dict[str, Any]]:
    """Read analytics.ticker until each symbol's trade count reaches ``want``; return the last per symbol."""
    last: dict[str, dict[str, Any]] = {}

    def done(rows: list[dict[str, Any]]) -> bool:
        r = rows[-1]
        last[r["symbol"]] = r
        return all(last.get(s, {}).get("trades", -1) >= n for s, n in want.items())

    collect(settings, TICKER.name, done, timeout_s=timeout_s)
    return last


def _last_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["symbol"]] = r["trades"]
    return out


def test_synthetic_ticks_flow_through_the_worker(settings: Settings, procs: Procs) -> None:
    r = run_cli("produce", "synthetic", "--rate", "max", "--limit", "5000", env=env_of(settings))
    assert r.returncode == 0, r.stderr
    assert "sent 5000 trades" in r.stdout
    expected = expected_last(settings)
    assert sum(e["trades"] for e in expected.values()) == 5000
    assert set(expected) == {"BTCUSDT", "ETHUSDT"}

    worker = procs.start(settings, "worker", name="worker")
    got = latest_tickers(settings, {s: e["trades"] for s, e in expected.items()})
    assert worker.poll() is None, procs.log_of(worker)
    for sym, e in expected.items():
        t = got[sym]
        assert (t["trades"], t["trade_id"], t["price"], t["event_time"]) == (
            e["trades"],
            e["trade_id"],
            e["price"],
            e["event_time"],
        )
    # the tail CLI prints the same ticks, one per line
    out = run_cli("tail", TRADES.name, "--from-beginning", "--limit", "3", "--json", env=env_of(settings))
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3 and '"trade_id"' in out.stdout


def _frame(symbol: str, ids: list[int], price: float = 100.0, t0: int = 1_723_161_600_000) -> Frame:
    n = len(ids)
    return Frame(
        TRADE_FRAME,
        symbol,
        {
            "trade_id": np.array(ids, dtype=np.int64),
            "price": np.full(n, price),
            "qty": np.full(n, 0.5),
            "trade_time": t0 + np.arange(n, dtype=np.int64),
            "event_time": t0 + np.arange(n, dtype=np.int64),
            "recv_time": t0 + np.arange(n, dtype=np.int64),
            "buyer_maker": np.zeros(n, dtype=bool),
        },
    )


def test_bad_messages_go_to_deadletter_and_the_worker_goes_on(settings: Settings, procs: Procs) -> None:
    p = MessageProducer(settings)
    p.send(TRADES, _frame("BTCUSDT", [1, 2, 3]), key="BTCUSDT")
    raw = Producer({"bootstrap.servers": settings.bootstrap})
    raw.produce(TRADES.full_name(settings.namespace), value=b"{not json", key=b"BTCUSDT")
    raw.produce(TRADES.full_name(settings.namespace), value=b'{"symbol": "BTCUSDT"}', key=b"BTCUSDT")
    raw.flush()
    bad = _frame("BTCUSDT", [4, 5, 6, 7])
    bad.cols["price"][1] = -3.0  # type: ignore[index]
    bad.cols["qty"][2] = 0.0  # type: ignore[index]
    p.send(TRADES, bad, key="BTCUSDT")
    p.send(TRADES, _frame("BTCUSDT", [8, 9], price=101.5), key="BTCUSDT")
    p.flush()

    procs.start(settings, "worker", name="worker")
    last = latest_tickers(settings, {"BTCUSDT": 7})
    # 3 + 2 valid rows of the bad frame + 2 = 7 trades; the last one is id 9 at 101.5
    assert (last["BTCUSDT"]["trades"], last["BTCUSDT"]["trade_id"], last["BTCUSDT"]["price"]) == (7, 9, 101.5)

    dls = collect(settings, DEADLETTER.name, lambda rows: len(rows) >= 3)
    reasons = [d["reason"] for d in dls]
    assert "not valid json" in reasons[0]
    assert "missing columns" in reasons[1]
    assert (
        reasons[2].startswith("2 invalid rows")
        and "row 1: price <= 0" in reasons[2]
        and "row 2: qty <= 0" in reasons[2]
    )
    assert dls[0]["payload"] == b"{not json"
    assert all(d["source_topic"] == TRADES.full_name(settings.namespace) and d["offset"] is not None for d in dls)


@pytest.mark.parametrize(
    ("sig", "fix"),
    [(signal.SIGTERM, "auto"), (signal.SIGKILL, "auto")],
    ids=["sigterm", "sigkill"],
)
def test_table_state_is_exact_after_restart(bootstrap: str, tmp_path: Path, procs: Procs, sig: int, fix: str) -> None:
    """Many frames, batched changelog writes by the worker, a restart mid-stream: counts stay exact.

    ``RTQIS_RECOVERY_FIX=off`` makes this fail on the embedded broker (table restored short)."""
    settings = make_settings(bootstrap, tmp_path, recovery_fix=os.environ.get("RTQIS_RECOVERY_FIX", fix))
    create_topics(settings)
    market = SyntheticMarket([SymbolSpec("BTCUSDT", 90_000.0), SymbolSpec("ETHUSDT", 3_000.0)], seed=7, trade_rate=400)
    p = MessageProducer(settings, **{"linger.ms": 50})  # batching producer
    total: dict[str, int] = defaultdict(int)

    def send(seconds: int) -> None:
        for _ in range(seconds * 10):
            trades, _ = market.advance(100)
            for b in trades:
                for f in trade_frames(b, 20):  # small frames: many changelog writes
                    p.send(TRADES, f, key=f.symbol, timestamp_ms=int(f.cols["event_time"][0]))  # type: ignore[index]
                    total[f.symbol] += len(f)
        assert p.flush() == 0

    caps = broker_capabilities(settings)
    changelog = changelog_topics(settings.namespace)[0]

    def reported_end() -> int:
        c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "probe"})
        try:
            return int(c.get_watermark_offsets(TopicPartition(changelog, 0), timeout=10, cached=False)[1])
        finally:
            c.close()

    # Stop the worker part-way until the changelog ends in a batch of several records: only then
    # does a broker with inexact end offsets (Tansu) make a naive recovery come back short
    # (batch1 writes one record per batch, so its changelog end is always exact).
    for attempt in range(5):
        send(4)  # ~3,200 trades in ~160 frames
        target = sum(total.values()) - 1_000
        worker = procs.start(settings, "worker", name=f"worker{attempt}")
        collect(settings, TICKER.name, lambda rows, t=target: sum(_last_counts(rows).values()) >= t, timeout_s=90)
        assert Procs.stop(worker, sig) is not None
        true_end = topic_offsets(settings, [changelog])[0].end
        if caps.exact_end_offsets or settings.recovery_fix == "batch1" or reported_end() < true_end:
            break
    else:
        pytest.fail("no attempt left the changelog with a multi-record last batch")
    before = len(collect(settings, TICKER.name, lambda rows: False, until_end=True))
    send(2)  # more trades arrive while it is down
    procs.start(settings, "worker", name="worker-final")
    try:
        got = latest_tickers(settings, dict(total))
    except AssertionError:
        rows = collect(settings, TICKER.name, lambda rows: False, until_end=True)
        bad = next((i for i, r in enumerate(rows) if r["trades"] != r["trade_id"]), None)
        raise AssertionError(
            f"count drifted at ticker row {bad} of {len(rows)} ({before} written before the last restart): "
            f"{rows[bad - 2 : bad + 2] if bad is not None else None}"
        ) from None
    assert {s: t["trades"] for s, t in got.items()} == dict(total)
    expected = expected_last(settings)
    assert {s: e["trades"] for s, e in expected.items()} == dict(total)
