"""Opt-in section ``soak``: worker, sink (and embedded broker) RSS under a steady live-like feed, and
whether it stays flat."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtqis.bench.harness import Say, fresh_namespace, start_rtqis, wait_ready
from rtqis.process import rss_bytes
from rtqis.producers.feed import run_synthetic
from rtqis.settings import Settings

__all__ = ["bench_soak"]

log = logging.getLogger(__name__)

#: "flat": the least-squares RSS slope after warm-up is under this (MB/min)
_FLAT_MB_PER_MIN = 1.0


def bench_soak(
    settings: Settings, seconds: float, rate: float, tmp: Path, *, broker_pid: int | None = None, say: Say = print
) -> dict[str, Any]:
    """Opt-in soak: worker + sink under a steady live-like feed (``rate`` trades/s and book tickers) for
    ``seconds``; RSS of each process every ``every`` seconds and its growth. The first fifth of the run
    (at least 30 s) is warm-up (allocator pools, caches, the pair windows filling) and is left out of the
    slope; "flat" means the least-squares slope over the rest is under 1 MB/min. The embedded broker
    keeps every message in memory by design (no retention), so its growth is reported, not judged."""
    s = fresh_namespace(settings, data_dir=tmp / f"soak-{uuid.uuid4().hex[:6]}")
    every = max(1.0, min(10.0, seconds / 30))
    warm = max(30.0, seconds / 5) if seconds >= 60 else seconds / 5
    worker = start_rtqis(s, tmp / "soak-worker.log", "worker")
    sink = start_rtqis(s, tmp / "soak-sink.log", "sink")
    procs: dict[str, Callable[[], float]] = {"worker": worker.rss_mb, "sink": sink.rss_mb}
    if broker_pid is not None:
        procs["broker"] = lambda: rss_bytes(broker_pid) / 1e6
    samples: list[dict[str, float]] = []
    try:
        wait_ready(worker)
        feed = s.model_copy(update={"synthetic_rate": rate / len(s.symbols)})
        th = threading.Thread(target=run_synthetic, args=(feed,), kwargs={"duration_s": seconds, "report_every_s": 1e9})
        t0 = time.monotonic()
        th.start()
        next_say = t0 + 60
        while th.is_alive() or not samples:
            samples.append({"t": round(time.monotonic() - t0, 1)} | {k: f() for k, f in procs.items()})
            if time.monotonic() >= next_say:
                next_say += 60
                now = samples[-1]
                say(f"soak {now['t']:.0f}/{seconds:.0f} s: " + ", ".join(f"{k} {now[k]:.0f} MB" for k in procs))
            th.join(every)
        for child in (worker, sink):
            if child.poll() is not None:
                raise RuntimeError(f"{child.name} exited during the soak: see {child.log_path}")
    finally:
        worker.stop()
        sink.stop()
    res: dict[str, Any] = {"seconds": seconds, "rate_trades_per_s": rate, "warmup_seconds": warm, "every_s": every}
    steady = [x for x in samples if x["t"] >= warm] or samples
    for k in procs:
        t = np.array([x["t"] for x in steady])
        v = np.array([x[k] for x in steady])
        slope = float(np.polyfit(t, v, 1)[0] * 60) if len(steady) > 2 else 0.0
        res[k] = {
            "start_mb": steady[0][k],
            "end_mb": steady[-1][k],
            "peak_mb": max(x[k] for x in samples),
            "growth_mb": steady[-1][k] - steady[0][k],
            "slope_mb_per_min": slope,
        }
        if k != "broker":
            res[k]["flat"] = abs(slope) < _FLAT_MB_PER_MIN
        say(
            f"soak {k:<6} RSS {steady[0][k]:6.0f} -> {steady[-1][k]:6.0f} MB after warm-up "
            f"(slope {slope:+.2f} MB/min, peak {res[k]['peak_mb']:.0f} MB)"
        )
    res["samples"] = samples
    return res
