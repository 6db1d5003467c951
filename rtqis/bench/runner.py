""":func:`run_bench`: the chosen sections on the embedded broker (started here) or the configured one,
the results as one dict (the JSON file `rtqis bench` writes) and the closing table."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson

from rtqis import __version__
from rtqis.bench import BROKER_SECTIONS, DEFAULT_SECTIONS
from rtqis.bench.day import bench_day
from rtqis.bench.e2e import bench_e2e, bench_scaling
from rtqis.bench.harness import Say, median_runs, on_own_broker
from rtqis.bench.latency import bench_latency, latency_median
from rtqis.bench.micro import bench_codec, bench_kernels
from rtqis.bench.raw import bench_raw
from rtqis.bench.report import machine, summary_table, versions
from rtqis.bench.shapes import bench_shapes
from rtqis.bench.signals import bench_signals
from rtqis.bench.soak import bench_soak
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.process import free_port
from rtqis.settings import Settings

__all__ = ["run_bench"]

log = logging.getLogger(__name__)


def run_bench(
    settings: Settings,
    *,
    ticks: int = 200_000,
    runs: int = 1,
    sections: tuple[str, ...] = DEFAULT_SECTIONS,
    latency_seconds: float = 30.0,
    latency_runs: int = 1,
    latency_rate: float = 2000.0,
    soak_seconds: float = 600.0,
    signals_seeds: int = 8,
    signals_hours: float = 4.0,
    day_hours: float = 24.0,
    day_days: int = 1,
    day_rate: float = 250.0,
    day_dashboard: bool = True,
    workerday_hours: float = 24.0,
    workerday_rate: float = 150.0,
    json_path: Path | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run the chosen sections (always in the order codec, raw, shapes, kernels, e2e, scaling, scale, latency,
    soak, signals, replay, day, workerday); return the results and write them to ``json_path`` when given. The
    embedded broker is started only for sections that need one (workerday starts its own Apache Kafka)."""
    tmp = settings.data_dir / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    broker = None
    if settings.embedded and set(sections) & set(BROKER_SECTIONS):
        broker = EmbeddedBroker(settings.broker_host, free_port(), settings.broker_bin, tmp / "broker.log").start()
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    res: dict[str, Any] = {
        "version": __version__,
        "versions": versions(broker.binary if broker else None),
        "machine": machine(),
        "config": {
            "broker": "embedded tansu" if broker else settings.bootstrap if not settings.embedded else "none",
            "codec": settings.codec,
            "compression": settings.compression,
            "frame_max_ticks": settings.frame_max_ticks,
            "frame_max_ms": settings.frame_max_ms,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "ticks": ticks,
            "runs": runs,
            "latency_seconds": latency_seconds,
            "latency_rate": latency_rate,
            "latency_runs": latency_runs,
            **({"signals_seeds": signals_seeds, "signals_hours": signals_hours} if "signals" in sections else {}),
            **(
                {"day_hours": day_hours, "day_days": day_days, "day_rate": day_rate, "day_dashboard": day_dashboard}
                if "day" in sections
                else {}
            ),
            **(
                {"workerday_hours": workerday_hours, "workerday_rate": workerday_rate}
                if "workerday" in sections
                else {}
            ),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        if "codec" in sections:
            res["codec"] = bench_codec(say)
        if "raw" in sections:
            res["raw"] = median_runs(lambda: bench_raw(settings, ticks, say), runs, "ticks_per_s")
            res["raw_consume_per_s"] = res["raw"]["ticks_per_s"]
        if "shapes" in sections:
            res["shapes"] = shapes = bench_shapes(settings, ticks, runs, tmp, say)
            default = [
                r for r in shapes if r["frame_ticks"] == settings.frame_max_ticks and r["recovery_fix"] == "end-offsets"
            ]
            if default:
                res["worker_ticks_per_s"] = default[0]["ticks_per_s"]
                res["worker_rss_mb"] = default[0]["worker_rss_mb"]
        if "kernels" in sections:
            res["kernels"] = bench_kernels(say)
        if "e2e" in sections:
            res["e2e"] = median_runs(lambda: bench_e2e(settings, ticks, tmp, say=say), runs, "e2e_ticks_per_s")
            res["e2e_ticks_per_s"] = res["e2e"]["e2e_ticks_per_s"]
            res["worker_rss_mb"] = res["e2e"]["worker_rss_mb_median"]
            if "raw_consume_per_s" in res:
                res["e2e_vs_raw"] = res["e2e_ticks_per_s"] / res["raw_consume_per_s"]
        if "scaling" in sections:
            res["scaling"] = bench_scaling(settings, ticks, runs, tmp, say)
            one, hundred = res["scaling"][0], res["scaling"][1]
            res["cost_100_pairs_vs_1"] = one["e2e_ticks_per_s"] / hundred["e2e_ticks_per_s"]
            # latency at 100 pairs (the 1-pair figure is the latency section's): a quarter of the steady run
            res["latency_100_pairs"] = on_own_broker(
                settings,
                tmp,
                lambda s: bench_latency(s, max(3.0, latency_seconds / 4), latency_rate, say, tmp, pairs=100),
                embedded=broker is not None,
            )
        if "scale" in sections:
            from rtqis.bench.scale import bench_scale

            res["scale"] = bench_scale(settings, ticks, tmp, say)
        if "latency" in sections:
            # one steady run is a few dozen pair samples, and runs on the shared 2 cores differ more than
            # samples within a run: the median of --latency-runs runs, each on a fresh broker
            res["latency"] = latency_median(
                [
                    on_own_broker(
                        settings,
                        tmp,
                        lambda s: bench_latency(s, latency_seconds, latency_rate, say, tmp),
                        embedded=broker is not None,
                    )
                    for _ in range(latency_runs)
                ],
                say,
            )
            res["latency_ms"] = {k: res["latency"][k] for k in ("candle", "signal")}
        if "soak" in sections:
            res["soak"] = bench_soak(
                settings, soak_seconds, latency_rate, tmp, broker_pid=broker.pid if broker else None, say=say
            )
        if "signals" in sections:
            res["signals"] = bench_signals(signals_seeds, signals_hours, say)
        if "replay" in sections:
            from rtqis.bench.replay import bench_replay

            res["replay"] = bench_replay(settings, ticks, runs, tmp, say)
            res["replay_ticks_per_s"] = res["replay"]["ticks_per_s"]
        if "day" in sections:
            res["day"] = bench_day(
                settings, tmp, hours=day_hours, days=day_days, rate=day_rate, dashboard=day_dashboard, say=say
            )
        if "workerday" in sections:
            from rtqis.bench.workerday import bench_workerday

            res["workerday"] = bench_workerday(settings, tmp, hours=workerday_hours, rate=workerday_rate, say=say)
    finally:
        if broker is not None:
            broker.stop()
    table = summary_table(res)
    if table:
        say("\n" + table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        say(f"wrote {json_path}")
    return res
