"""Sections ``e2e`` and ``scaling``: synthetic trades through the whole pipeline (producer -> worker ->
sink), timed until the sink has committed everything; scaled to 100 pairs, 4 partitions, 2 workers."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from rtqis.bench.cpu import CpuMeter, worker_shares
from rtqis.bench.harness import Say, fresh_namespace, median_runs, pairs_of, start_rtqis, symbols_for, wait_ready
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import free_port
from rtqis.producers.feed import run_synthetic
from rtqis.settings import Settings
from rtqis.topics import ADF, CANDLES_1M, LEGS, PAIR, TRADES, TopicSpec
from rtqis.topics.registry import app_id

__all__ = ["SCALING_PLAN", "bench_e2e", "bench_scaling"]

log = logging.getLogger(__name__)

#: (pairs, partitions, workers) of each scaling run, in order; the first two give the 100-pair cost
SCALING_PLAN: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (100, 1, 1), (1, 4, 1), (1, 4, 2))


def _lags(settings: Settings, topics: list[TopicSpec], group: str) -> int:
    """The consumer group's total lag over ``topics`` (in the settings' namespace)."""
    names = [t.full_name(settings.namespace) for t in topics]
    return sum(r.lag or 0 for r in topic_offsets(settings, names, group=group))


def bench_e2e(
    settings: Settings,
    n: int,
    tmp: Path,
    *,
    pairs: int = 1,
    partitions: int = 1,
    workers: int = 1,
    rate: float = 25.0,
    symbols: list[str] | None = None,
    idle_s: float = 0.0,
    say: Say = print,
) -> dict[str, Any]:
    """``n`` synthetic trades through the whole pipeline: producer -> worker (candles, pair sampler,
    pair analytics) -> sink (DuckDB), produced as fast as the broker takes them at a live-like density
    of ``rate`` trades/s per symbol of event time (the recorded Binance capture: BTCUSDT 30, ETHUSDT
    22), so the per-sample analytics cost what they cost on real data. Timed from the first tick
    produced to the moment the sink has committed every trade, candle and signal (it commits only
    after the rows are durable). ``symbols`` (default: :func:`symbols_for`) names the symbols.

    The result's ``cpu_s`` is the CPU time (user + system, s) of each process over the run: producer
    (this process), broker (when it listens on this machine), each worker, sink; ``idle_cpu_pct`` the
    same processes' CPU (% of one core) over ``idle_s`` seconds before the feed, with no input (fetch polls,
    heartbeats, timers); ``worker_shares`` which ticks.trade partitions each worker held and the share
    of the frames in them."""
    if symbols is None:
        symbols = symbols_for(max(2, min(15, pairs + 1)) if pairs > 1 else 2)
    s = fresh_namespace(
        settings,
        symbols=symbols,
        pairs=pairs_of(symbols, pairs),
        partitions=partitions,
        data_dir=tmp / f"e2e-{uuid.uuid4().hex[:6]}",
        # over several partitions one symbol's ticks can be read far ahead of another's at full speed:
        # let the pair aligner wait for the late leg over the whole replay instead of going stale
        **({"align_wait_s": 86_400.0} if partitions > 1 else {}),
    )
    # each worker binds its own web port
    kids = [
        start_rtqis(
            s if i == 0 else s.model_copy(update={"worker_web_port": free_port()}), tmp / f"e2e-worker{i}.log", "worker"
        )
        for i in range(workers)
    ]
    sink = start_rtqis(s, tmp / "e2e-sink.log", "sink")
    res: dict[str, Any] = {"ticks": n, "pairs": pairs, "symbols": len(symbols), "partitions": partitions}
    res["align_wait_s"] = s.align_wait_s
    res["workers"] = workers
    cpu = CpuMeter(s)
    try:
        for k in kids:
            wait_ready(k)
        feed = s.model_copy(update={"synthetic_rate": rate})
        cpu.start({f"worker{i}": k.pid for i, k in enumerate(kids)} | {"sink": sink.pid})
        idle = cpu.idle(idle_s) if idle_s > 0 else {}
        t0 = time.monotonic()
        # the market starts on a whole sample time: from a random phase of the grid, when each pair's
        # first joint sample falls varied, and with it the first minute's signal count (52,779 - 52,873
        # for 100 pairs; the rest equal)
        start = int(time.time() * 1000) // s.sample_ms * s.sample_ms
        stats = run_synthetic(
            feed, rate=rate, max_rate=True, keep_rate=True, limit=n, report_every_s=1e9, book=False, start_ms=start
        )
        t_prod = time.monotonic() - t0
        cpu.mark("producer")
        worker_group = app_id(s.namespace)
        sink_group = f"rtqis-sink-{s.namespace}"
        peak = {"worker": 0.0, "sink": 0.0, "worker_anon": 0.0}
        deadline = time.monotonic() + max(300.0, n / 2000)
        t_worker = None
        last_signals = -1
        while time.monotonic() < deadline:
            peak["worker"] = max(peak["worker"], sum(k.rss_mb() for k in kids))
            peak["worker_anon"] = max(peak["worker_anon"], sum(k.anon_mb() for k in kids))
            peak["sink"] = max(peak["sink"], sink.rss_mb())
            if t_worker is None and _lags(s, [TRADES, LEGS], worker_group) == 0:
                t_worker = time.monotonic() - t0
            if t_worker is not None and _lags(s, [TRADES, PAIR, CANDLES_1M, ADF], sink_group) == 0:
                # the worker commits its input before its outbox's signals are delivered (they are safe in
                # the table state): drained once the signal topic has stopped growing and the sink has it all
                n_signals = sum(r.end for r in topic_offsets(s, [PAIR.full_name(s.namespace)]))
                if n_signals > 0 and n_signals == last_signals:
                    break
                last_signals = n_signals
            time.sleep(0.2)
        else:
            raise TimeoutError(f"pipeline not drained in time: see {tmp}")
        t_all = time.monotonic() - t0
        cpu_s = cpu.stop()
        signals = sum(r.end for r in topic_offsets(s, [PAIR.full_name(s.namespace)]))
        shares = worker_shares(s, [k.log_path for k in kids])
    finally:
        for k in [*kids, sink]:
            k.stop()
    res |= {
        "trades_produced": stats.trades,
        "signals": signals,
        "event_hours": round(stats.trades / rate / len(symbols) / 3600, 2),
        "producer_ticks_per_s": stats.trades / t_prod,
        "worker_ticks_per_s": stats.trades / t_worker,
        "e2e_ticks_per_s": stats.trades / t_all,
        "e2e_seconds": t_all,
        "worker_rss_mb": peak["worker"],
        "worker_rss_anon_mb": peak["worker_anon"],
        "sink_rss_mb": peak["sink"],
        "cpu_s": cpu_s,
        "idle_cpu_pct": idle,
        "worker_shares": shares,
    }
    say(
        f"end to end, {n:,} trades ({res['event_hours']} h of {len(symbols)} symbols), {pairs} pair(s), "
        f"{partitions} partition(s), {workers} worker(s): {res['e2e_ticks_per_s']:,.0f} ticks/s "
        f"(producer {res['producer_ticks_per_s']:,.0f}, worker {res['worker_ticks_per_s']:,.0f}); "
        f"{signals:,} signals; worker RSS {peak['worker']:.0f} MB ({peak['worker_anon']:.0f} anonymous), "
        f"sink {peak['sink']:.0f} MB"
    )
    say("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_s.items()) + f" in {t_all:.1f} s wall")
    if idle:
        say("  idle CPU % of a core: " + ", ".join(f"{k} {v:.0f}" for k, v in idle.items()))
    if workers > 1:
        say(
            "  "
            + "; ".join(
                f"worker{i}: partitions {sorted(w['partitions'])}, {w['share']:.0%} of the frames"
                for i, w in enumerate(shares)
            )
        )
    return res


def bench_scaling(settings: Settings, ticks: int, runs: int, tmp: Path, say: Say) -> list[dict[str, Any]]:
    """Every run of :data:`SCALING_PLAN` on ``ticks`` / 5 trades, each the median of its runs."""
    out = []
    for p, k, w in SCALING_PLAN:

        def one(p: int = p, k: int = k, w: int = w) -> dict[str, Any]:
            return bench_e2e(settings, max(1, ticks // 5), tmp, pairs=p, partitions=k, workers=w, say=say)

        # the 100-pair target rides on the first two; the partition and worker figures get one run
        # fewer, which keeps `make bench` under 10 minutes with two latency runs on a slow day
        out.append(median_runs(one, runs if k == 1 else max(1, runs - 1), "e2e_ticks_per_s"))
    return out
