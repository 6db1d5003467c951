"""Opt-in section ``shapes``: Faust worker throughput by message shape (one tick per message vs frames
of 50/500/5000 ticks), with and without the exact-recovery fix (one changelog record per batch)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rtqis.bench.harness import Say, assigned_consumer, fresh_namespace, median_runs, produce_trades, start_rtqis
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import TICKER

__all__ = ["PLAN", "bench_shapes", "bench_worker"]

log = logging.getLogger(__name__)

#: (ticks per frame, recovery fix) of each run, in order
PLAN: tuple[tuple[int, str], ...] = (
    (1, "end-offsets"),
    (1, "batch1"),
    (1, "off"),
    (50, "end-offsets"),
    (500, "end-offsets"),
    (500, "batch1"),
    (500, "off"),
    (5000, "end-offsets"),
)
#: one-tick messages are slow: their runs take at most this many ticks
_ONE_TICK_MAX = 20_000


def _tickers(settings: Settings, until_trades: int, timeout_s: float) -> list[tuple[int, dict[str, Any]]]:
    """(kafka timestamp ms, Ticker) of analytics.ticker until the symbols' trade counts sum to ``until_trades``."""
    c = assigned_consumer(settings, TICKER)
    out: list[tuple[int, dict[str, Any]]] = []
    last: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in c.consume(1000, 0.5):
                if msg.error():
                    continue
                ticker = decode(msg.value(), msg.headers())
                if isinstance(ticker, Frame):  # analytics.ticker carries models only
                    continue
                t = ticker.model_dump()
                out.append((msg.timestamp()[1], t))
                last[t["symbol"]] = t["trades"]
            if sum(last.values()) >= until_trades:
                return out
    finally:
        c.close()
    raise TimeoutError(f"worker output reached {sum(last.values())} of {until_trades} trades in {timeout_s:.0f} s")


def bench_worker(settings: Settings, n: int, frame_ticks: int, fix: str, tmp: Path) -> dict[str, Any]:
    """One worker over ``n`` trades produced beforehand as frames of ``frame_ticks``, recovery fix ``fix``:
    throughput between its first and last output (start-up and group join excluded) and its RSS."""
    s = fresh_namespace(settings, recovery_fix=fix)
    sent = produce_trades(s, n, frame_ticks)
    w = start_rtqis(s, tmp / f"worker-{frame_ticks}-{fix}.log", "worker")
    try:
        rows = _tickers(s, sent, timeout_s=max(120.0, n / 1000))
        rss = w.rss_mb()
    finally:
        w.stop()
    (t_first, first), (t_last, _) = rows[0], rows[-1]
    dt = (t_last - t_first) / 1000
    ticks = sent - first["trades"]
    return {
        "frame_ticks": frame_ticks,
        "recovery_fix": fix,
        "ticks": sent,
        "frames": len(rows),
        "ticks_per_s": ticks / dt if dt > 0 else float("nan"),
        "frames_per_s": (len(rows) - 1) / dt if dt > 0 else float("nan"),
        "worker_rss_mb": rss,
    }


def bench_shapes(settings: Settings, ticks: int, runs: int, tmp: Path, say: Say) -> list[dict[str, Any]]:
    """Every run of :data:`PLAN`, each the median of ``runs``."""
    shapes = []
    for frame, fix in PLAN:
        n = min(ticks, _ONE_TICK_MAX) if frame == 1 else ticks

        def one(frame: int = frame, fix: str = fix, n: int = n) -> dict[str, Any]:
            return bench_worker(settings, n, frame, fix, tmp)

        r = median_runs(one, runs, "ticks_per_s")
        say(
            f"worker, frames of {frame:>5} ticks, recovery fix {fix:<11}: {r['ticks_per_s']:>11,.0f} ticks/s "
            f"({r['frames_per_s']:,.0f} frames/s), worker RSS {r['worker_rss_mb']:.0f} MB"
        )
        shapes.append(r)
    return shapes
