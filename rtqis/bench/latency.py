"""Section ``latency``: a steady live-like feed and the latency of each hop, in ms: tick produced ->
consumed; tick -> worker output (Ticker); tick -> live candle published; sample time -> leg message
-> PairSignal published. Several runs combine into per-path medians."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtqis.bench.harness import Say, assigned_consumer, fresh_namespace, pairs_of, start_rtqis, symbols_for, wait_ready
from rtqis.process import ChildProcess, free_port
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import CANDLES_1M, LEGS, PAIR, TICKER, TRADES, TopicSpec

__all__ = ["LATENCY_PATHS", "WARMUP_S", "bench_latency", "latency_median", "percentiles"]

log = logging.getLogger(__name__)

#: latency counted after this much of the steady feed (s): the first seconds warm caches and fetches
WARMUP_S = 5.0

#: the result keys of the measured paths
LATENCY_PATHS = (
    "tick_to_consumer_ms", "tick_to_worker_output_ms", "candle", "signal", "sample_to_leg_ms", "leg_to_signal_ms"
)  # fmt: skip


def percentiles(xs: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max and the count ``n`` of ``xs`` ({} when empty)."""
    a = np.asarray(xs)
    if not len(a):
        return {}
    return {k: float(np.percentile(a, q)) for k, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} | {
        "n": len(a)
    }


def bench_latency(
    settings: Settings,
    seconds: float,
    rate: float,
    say: Say,
    tmp: Path,
    *,
    pairs: int = 1,
    partitions: int = 1,
    workers: int = 1,
    symbols: list[str] | None = None,
) -> dict[str, Any]:
    """Steady live-like feed (``rate`` trades/s in all, plus book tickers), latency in ms per path:
    tick produced -> consumed; tick -> worker output (Ticker); tick -> live candle update published
    (from the candle's last trade); sample time -> PairSignal published. ``pairs`` > 1: that many pairs
    of 15 symbols (as the scaling run; or of ``symbols``), the same total rate. ``workers`` workers share
    ``partitions`` partitions (the scale section: 1 vs 2 workers)."""
    if pairs > 1 or symbols is not None:
        symbols = symbols or symbols_for(max(2, min(15, pairs + 1)))
        s = fresh_namespace(settings, symbols=symbols, pairs=pairs_of(symbols, pairs), partitions=partitions)
    else:
        s = fresh_namespace(settings, partitions=partitions)
    ws = [
        start_rtqis(
            s if i == 0 else s.model_copy(update={"worker_web_port": free_port()}),
            tmp / f"worker-latency{i}.log",
            "worker",
        )
        for i in range(workers)
    ]
    w = ws[0]
    producer: ChildProcess | None = None
    hops: dict[str, list[float]] = {
        "consumer": [], "ticker": [], "candle": [], "signal": [], "leg": [], "leg_to_signal": []
    }  # fmt: skip
    leg_ts: dict[tuple[str, str, int], int] = {}  # (pair, leg, sample time) -> leg message timestamp
    trade_time: dict[tuple[str, int], int] = {}
    stop = threading.Event()
    warm = [float("inf")]  # epoch ms after which latencies count: the first seconds warm caches and fetches

    def consume_ticks() -> None:
        c = assigned_consumer(s, TRADES)
        while not stop.is_set():
            msg = c.poll(0.1)  # poll, not consume(n, t): consume waits for n messages or t
            if msg is not None and not msg.error():
                now = time.time() * 1000
                f = decode(msg.value(), msg.headers())
                if not isinstance(f, Frame):
                    continue
                ids, times = f.cols["trade_id"], f.cols["event_time"]
                assert ids is not None and times is not None  # a trade frame always has both
                if now >= warm[0]:
                    hops["consumer"].extend((now - times).tolist())
                trade_time.update(zip(((f.symbol, int(i)) for i in ids), times.tolist(), strict=True))
        c.close()

    def consume(spec: TopicSpec, on: Callable[[int, Any], None]) -> None:
        c = assigned_consumer(s, spec)
        while not stop.is_set():
            for msg in c.consume(100, 0.1):
                if not msg.error() and msg.timestamp()[1] >= warm[0]:
                    on(msg.timestamp()[1], decode(msg.value(), msg.headers()))
        c.close()

    def on_ticker(ts: int, t: Any) -> None:
        hops["ticker"].append(ts - t.event_time)

    def on_candle(ts: int, c: Any) -> None:
        # the live candle of the current window (the previous one stays open through its grace period)
        if not c.closed and c.close_time >= ts and (tt := trade_time.get((c.symbol, c.last_trade_id))) is not None:
            hops["candle"].append(ts - tt)

    def on_leg(ts: int, legs: Any) -> None:
        # hop 1 of the signal path: sample time -> its leg message published by the trades agent
        hops["leg"].append(ts - legs.time[-1])
        for t in legs.time:
            leg_ts[(legs.pair, legs.leg, t)] = ts

    def on_signal(ts: int, sig: Any) -> None:
        hops["signal"].append(ts - sig.time)
        # hop 2: the later of the sample's two leg messages -> PairSignal published by the pairs agent
        x, y = leg_ts.get((sig.pair, "x", sig.time)), leg_ts.get((sig.pair, "y", sig.time))
        if x is not None and y is not None:
            hops["leg_to_signal"].append(ts - max(x, y))

    try:
        for wk in ws:
            wait_ready(wk)  # let the workers join their group before the clock starts
        paths: list[tuple[TopicSpec, Callable[[int, Any], None]]] = [
            (TICKER, on_ticker),
            (CANDLES_1M, on_candle),
            (PAIR, on_signal),
        ]
        if not s.pairs_colocated:  # leg messages exist only on the pairs.legs route
            paths.append((LEGS, on_leg))
        threads = [threading.Thread(target=consume_ticks)] + [threading.Thread(target=consume, args=a) for a in paths]
        for t in threads:
            t.start()
        # the feed runs in its own process, as `rtqis produce` does live: in this one it would share the
        # interpreter lock with the measuring consumers and publish late under their load
        feed = s.model_copy(update={"synthetic_rate": rate / len(s.symbols)})
        warm[0] = time.time() * 1000 + 1000 * WARMUP_S
        producer = start_rtqis(
            feed, tmp / "latency-producer.log", "produce", "synthetic", "--duration", f"{seconds + WARMUP_S}"
        )
        if producer.wait(timeout_s=seconds + WARMUP_S + 60) != 0:
            raise RuntimeError(f"the synthetic feed failed: see {producer.log_path}")
        time.sleep(1.5)  # the last ticks' outputs are still on their way
        stop.set()
        for t in threads:
            t.join()
        rss = w.rss_mb()
    finally:
        stop.set()
        if producer is not None:
            producer.stop()
        for wk in ws:
            wk.stop()
    res: dict[str, Any] = {
        "rate_trades_per_s": rate,
        "pairs": len(s.pairs),
        "symbols": len(s.symbols),
        "partitions": partitions,
        "workers": workers,
        "seconds": seconds,
        "warmup_seconds": WARMUP_S,
        "fetch_max_wait_ms": s.fetch_max_wait_ms,
        "frame_max_ms": s.frame_max_ms,
        "tick_to_consumer_ms": percentiles(hops["consumer"]),
        "tick_to_worker_output_ms": percentiles(hops["ticker"]),
        "candle": percentiles(hops["candle"]),
        "signal": percentiles(hops["signal"]),
        "sample_to_leg_ms": percentiles(hops["leg"]),
        "leg_to_signal_ms": percentiles(hops["leg_to_signal"]),
        "worker_rss_mb": rss,
    }
    label = "latency" if pairs == 1 else f"latency ({pairs} pairs)"
    if workers > 1 or partitions > 1:
        label += f" ({partitions} partitions, {workers} workers)"
    for k in LATENCY_PATHS:
        p = res[k]
        if p:
            say(
                f"{label} {k:<26} n {p['n']:6d}  p50 {p['p50']:6.1f}  p95 {p['p95']:6.1f}  "
                f"p99 {p['p99']:6.1f}  max {p['max']:7.1f} ms"
            )
    return res


def latency_median(results: list[dict[str, Any]], say: Say) -> dict[str, Any]:
    """Several latency runs as one: per path, the median of each run's p50 / p95 / p99, the p99's min and
    max, the largest max and the samples of all runs; each run's figures are kept under ``per_run``."""
    out = dict(results[0])
    for k in LATENCY_PATHS:
        per = [r[k] for r in results if r[k]]
        if not per:
            continue
        out[k] = {q: statistics.median(p[q] for p in per) for q in ("p50", "p95", "p99")} | {
            "max": max(p["max"] for p in per),
            "n": sum(p["n"] for p in per),
            "p99_min": min(p["p99"] for p in per),
            "p99_max": max(p["p99"] for p in per),
        }
    out["runs"] = len(results)
    out["per_run"] = [{k: r[k] for k in LATENCY_PATHS} for r in results]
    if len(results) > 1:
        for k in ("candle", "signal"):
            if p := out[k]:
                say(
                    f"latency, median of {len(results)} runs: {k} p50 {p['p50']:.1f}  p99 {p['p99']:.1f} ms "
                    f"(p99 {p['p99_min']:.1f} - {p['p99_max']:.1f})"
                )
    return out
