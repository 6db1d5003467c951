"""Section ``replay`` (opt-in): ``rtqis replay`` end to end on Binance-format trade files, with the raw
consumer ceiling measured in the same run.

The input is the seeded synthetic market (BTCUSDT at 90,000, ETHUSDT at 3,000, cointegrated) written
as two Binance archive trade CSVs (``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``) at a
live-like density of ``rate`` trades/s per symbol of event time (the recorded capture: ~30 and ~22),
starting 2024-08-09 00:00 UTC, so the pair analytics cost what they cost on real data. Each run is one
whole :func:`rtqis.replay.run_replay` (fresh namespace reset, worker and sink started, the files
published, the end proven, the digest read back); its ``ticks_per_s`` is the input ticks over the time
from the first tick published to the last output durable (worker start-up included;
``ticks_per_s_after_start`` leaves out the worker's start-up, from its launch to Faust's "Ready"). Each run
also prints its phases (:meth:`rtqis.replay.ReplayResult.summary` ``phases_s``: worker ready, last tick
published, worker done, sink done, in s from the start), which say where the time goes. The
figure is the median of ``runs``; the digests of every run are reported (they must be equal)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rtqis.bench.harness import Say, median_runs
from rtqis.bench.raw import bench_raw
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.replay import run_replay
from rtqis.settings import Settings

__all__ = ["bench_replay", "write_trade_files"]

log = logging.getLogger(__name__)

#: 2024-08-09 00:00 UTC (ms): the synthetic day starts where the recorded test data ends
_START_MS = 1_723_161_600_000


def write_trade_files(folder: Path, n: int, rate: float = 25.0, seed: int = 1) -> list[Path]:
    """``n`` synthetic trades (both symbols together) as one Binance archive trades CSV per symbol."""
    import polars as pl

    m = SyntheticMarket(
        [SymbolSpec("BTCUSDT", 90_000.0), SymbolSpec("ETHUSDT", 3_000.0)],
        seed=seed,
        trade_rate=rate,
        start_ms=_START_MS,
    )
    parts: dict[str, list[Any]] = {"BTCUSDT": [], "ETHUSDT": []}
    total = 0
    while total < n:
        trades, _ = m.advance(60_000)
        for b in trades:
            parts[b.symbol].append(b)
            total += len(b)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sym, batches in parts.items():
        cat = {k: np.concatenate([getattr(b, k) for b in batches]) for k in ("trade_id", "price", "qty", "event_time")}
        maker = np.concatenate([b.buyer_maker for b in batches])
        df = pl.DataFrame(
            {
                "id": cat["trade_id"],
                "price": cat["price"],
                "qty": cat["qty"],
                "quote_qty": cat["price"] * cat["qty"],
                "time": cat["event_time"],
                "is_buyer_maker": maker,
                "is_best_match": np.ones(len(maker), bool),
            }
        )
        path = folder / f"{sym}-spot-trades-synthetic-{n}.csv"
        df.write_csv(path, include_header=False)
        paths.append(path)
    return paths


def bench_replay(settings: Settings, n: int, runs: int, tmp: Path, say: Say) -> dict[str, Any]:
    """The replay of ``n`` synthetic trades, median of ``runs``, and the raw consumer ceiling on the same
    broker in the same run (median of ``runs`` too)."""
    files = [str(p) for p in write_trade_files(tmp / "replay-input", n)]
    ticks = sum(1 for p in files for _ in open(p, "rb"))  # noqa: SIM115, PTH123  # line count, closed by GC
    digests: list[str] = []

    def one() -> dict[str, Any]:
        res = run_replay(settings.model_copy(update={"data_dir": tmp / "replay"}), files, namespace="benchreplay")
        digests.append(res.digest)
        out = res.summary()
        say(
            f"replay of {res.ticks:,} trades: {out['ticks_per_s']:,.0f} ticks/s ({res.seconds:.1f} s; after the "
            f"worker's start-up of {out['worker_ready_s']} s: {out['ticks_per_s_after_start'] or 0:,.0f} ticks/s), "
            f"{out['signals']:,} signals, digest {res.digest[:12]}; phases (s from the start): {out['phases_s']}"
        )
        return out

    res = median_runs(one, runs, "ticks_per_s")
    raw = median_runs(lambda: bench_raw(settings, ticks, say), runs, "ticks_per_s")
    res |= {
        "input_ticks": ticks,
        "raw_consume_per_s": raw["ticks_per_s"],
        "replay_vs_raw": res["ticks_per_s"] / raw["ticks_per_s"],
        "digests": digests,
        "digests_equal": len(set(digests)) == 1,
    }
    say(
        f"replay: {res['ticks_per_s']:,.0f} ticks/s (median of {runs}), raw consumer {raw['ticks_per_s']:,.0f} "
        f"ticks/s in the same run ({100 * res['replay_vs_raw']:.0f} %); digests equal: {res['digests_equal']}"
    )
    return res
