"""Section ``scale``: 1 vs 2 workers on 4 partitions, on a many-symbol load and the 100-pair case, with
the CPU time of every process (producer, broker, each worker, sink) and each worker's share.

Why: 2 workers were measured no faster than 1 (section ``scaling``). Two causes are separated here:

- the keys: the producer hashes the symbol to a partition (librdkafka's default, CRC-32), and the
  benchmark's names ``SYM00USDT``... all land on partitions 2 and 3 of 4, so a worker given
  partitions 0 and 1 gets no trades at all. Runs with the same count of real-looking names
  (:data:`SPREAD_SYMBOLS`, spread over all four partitions) show what the split does when the keys allow it;
- the machine: every process of the run shares 2 cores. The sum of their CPU seconds over 2 is the
  shortest wall time the run can take (the ceiling), whatever the number of workers.

Then the live 100-pair case (15 symbols at 2,000 trades/s) with 1 and 2 workers:
:func:`rtqis.bench.latency.bench_latency`'s latency per path.

Each throughput run is :func:`rtqis.bench.e2e.bench_e2e` (producer -> worker(s) -> sink) with its ``cpu_s``,
``worker_shares`` and ``idle_cpu_pct``; this section adds ``cpu_ms_per_1k_ticks`` per process and
``ceiling_ticks_per_s``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rtqis.bench.e2e import bench_e2e
from rtqis.bench.harness import Say, symbols_for
from rtqis.bench.latency import bench_latency
from rtqis.settings import Settings

__all__ = ["SCALE_PLAN", "SPREAD_SYMBOLS", "bench_scale"]

log = logging.getLogger(__name__)

#: 20 real-looking names; over 4 partitions the producer's hash puts 6, 6, 5 and 3 of them on 0..3
SPREAD_SYMBOLS: tuple[str, ...] = tuple(
    f"{c}USDT"
    for c in [
        "BTC",
        "ETH",
        "BNB",
        "SOL",
        "XRP",
        "ADA",
        "DOGE",
        "AVAX",
        "DOT",
        "LINK",
        "LTC",
        "TRX",
        "MATIC",
        "ATOM",
        "UNI",
        "ETC",
        "XLM",
        "BCH",
        "FIL",
        "APT",
    ]
)
#: seconds of no input before each feed, over which each process's idle CPU is measured
IDLE_S = 3.0
#: partitions of every scale run
PARTITIONS = 4
#: the live 100-pair case of the latency runs: trades/s in all, seconds of steady feed
LATENCY_RATE, LATENCY_S = 2000.0, 30.0
#: (label, symbols, pairs) of each load; each runs with 1 then 2 workers
SCALE_PLAN: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("20 symbols SYMnn, 10 pairs", tuple(symbols_for(20)), 10),
    ("20 symbols spread, 10 pairs", SPREAD_SYMBOLS, 10),
    ("15 symbols SYMnn, 100 pairs", tuple(symbols_for(15)), 100),
)


def _figures(r: dict[str, Any], cores: int) -> dict[str, Any]:
    """CPU ms per 1,000 trades per process, and the ceiling: trades/s if every core were busy."""
    n = r["trades_produced"] / 1000
    per = {k: 1000 * v / n for k, v in r["cpu_s"].items()}
    return {
        "cpu_ms_per_1k_ticks": per,
        # 1,000 trades cost total ms of CPU: at most cores * 1e6 / total trades/s
        "ceiling_ticks_per_s": 1e6 * cores / per["total"] if per.get("total") else None,
        "cpu_busy": r["cpu_s"]["total"] / (r["e2e_seconds"] * cores),
    }


def bench_scale(settings: Settings, ticks: int, tmp: Path, say: Say) -> list[dict[str, Any]]:
    """Every load of :data:`SCALE_PLAN` with 1 and 2 workers on ``ticks`` / 5 trades."""
    cores = os.cpu_count() or 1
    out = []
    for label, symbols, pairs in SCALE_PLAN:
        for workers in (1, 2):
            say(f"scale: {label}, {workers} worker(s)")
            r = bench_e2e(
                settings,
                max(1, ticks // 5),
                tmp,
                pairs=pairs,
                partitions=PARTITIONS,
                workers=workers,
                symbols=list(symbols),
                idle_s=IDLE_S,
                say=say,
            )
            r |= {"load": label} | _figures(r, cores)
            per = r["cpu_ms_per_1k_ticks"]
            say(
                "  CPU ms per 1k trades: "
                + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
                + f"; ceiling on {cores} cores {r['ceiling_ticks_per_s'] or 0:,.0f} trades/s; "
                f"cores busy {r['cpu_busy']:.0%}"
            )
            out.append(r)
    for workers in (1, 2):  # the 100-pair live case: does a second worker bring the signals back in time?
        say(f"scale: latency, 100 pairs of 15 spread symbols at {LATENCY_RATE:,.0f} trades/s, {workers} worker(s)")
        lat = bench_latency(
            settings,
            LATENCY_S,
            LATENCY_RATE,
            say,
            tmp,
            pairs=100,
            partitions=PARTITIONS,
            workers=workers,
            symbols=list(SPREAD_SYMBOLS[:15]),
        )
        out.append(lat | {"load": "latency, 100 pairs live"})
    return out
