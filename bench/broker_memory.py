"""Local broker memory under a Binance-like feed, on either engine, and what a broker restart keeps.

    # real time: RSS sampled every 15 s while the synthetic market sends ~250 ticks/s (slope = MB/hour)
    python bench/broker_memory.py --engine tansu --ticks-per-s 250 --minutes 10 --json bench/results/mem-tansu.json
    # accelerated: an hour's worth of ticks (900,000 at 250/s) sent as fast as the broker takes them,
    # RSS sampled against the ticks stored; then the broker is restarted and the ticks it kept are counted
    python bench/broker_memory.py --engine kafka --ticks-per-s 250 --fast-hours 1 --restart

``--engine`` is the local broker of ``RTQIS_BROKER`` (``tansu``: embedded, memory only; ``kafka``: Apache
Kafka from its jars, data on disk in a temporary data dir). The synthetic market sends trades and book
tickers (2 per trade) on every symbol, so ``--ticks-per-s`` sets the trade rate per symbol to
ticks / 3 / symbols. Reports RSS at start and end, the slope (MB/hour of wall time in real time; MB per
hour of feed in the accelerated run), bytes per tick, and with ``--restart`` the messages stored in the
tick topics before and after a restart (Tansu keeps nothing; Kafka keeps its log).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtqis.errors import BrokerError
from rtqis.kafka.admin import create_topics, list_topics
from rtqis.kafka.embedded import LocalBroker, local_broker
from rtqis.kafka.offsets import topic_offsets
from rtqis.producers.feed import FeedStats, run_synthetic
from rtqis.settings import Settings, load_settings

#: book tickers per trade in the synthetic market (its book_rate default: 2 x trade_rate)
_TICKS_PER_TRADE = 3.0


def stored_messages(s: Settings, tries: int = 3) -> int | None:
    """Messages the broker holds in the tick topics (end - earliest offset, summed); 0 when it has none;
    None when the broker did not say (Tansu's true-end probe can time out right after a heavy load)."""
    names = [t.name for t in list_topics(s) if t.name.startswith("ticks.")]
    if not names:
        return 0
    for _ in range(tries):
        try:
            return sum(r.end - r.earliest for r in topic_offsets(s, names))
        except BrokerError:
            time.sleep(5.0)
    return None


def _broker(engine: str, data_dir: Path, port: int) -> LocalBroker:
    s = load_settings(broker=engine, data_dir=data_dir, broker_port=port)
    return local_broker(s, port, data_dir / f"{engine}.log")


def measure(
    engine: str, *, ticks_per_s: float, minutes: float, fast_hours: float, restart: bool, port: int
) -> dict[str, Any]:
    """One run (real time for ``minutes``, or ``fast_hours`` of feed as fast as possible); the figures."""
    with tempfile.TemporaryDirectory(prefix=f"rtqis-mem-{engine}-") as tmp:
        data = Path(tmp)
        b = _broker(engine, data, port).start(timeout_s=180.0)
        try:
            s = load_settings(bootstrap_servers=b.bootstrap, data_dir=data)
            rate = ticks_per_s / _TICKS_PER_TRADE / len(s.symbols)
            if fast_hours:
                # the frames a live feed sends (one frame_max_ms slice each), not 500-tick replay frames:
                # the broker's memory per message, not per tick, is what grows
                s = s.model_copy(update={"frame_max_ticks": max(1, round(rate * s.frame_max_ms / 1000))})
            create_topics(s)
            latest: dict[str, FeedStats] = {}
            stop = threading.Event()
            kw: dict[str, Any] = {"rate": rate, "stop": stop, "report_every_s": 1.0}
            kw["on_progress"] = lambda st: latest.__setitem__("st", st)
            if fast_hours:
                kw |= {"max_rate": True, "keep_rate": True, "limit": int(fast_hours * 3600 * rate * len(s.symbols))}
            out: dict[str, FeedStats] = {}
            th = threading.Thread(target=lambda: out.setdefault("st", run_synthetic(s, **kw)))
            t0 = time.monotonic()
            th.start()
            samples: list[tuple[float, float, int]] = []  # (s, RSS MB, ticks sent)
            every = 1.0 if fast_hours else 15.0
            while th.is_alive() and (fast_hours or time.monotonic() - t0 < minutes * 60):
                st = latest.get("st")
                samples.append((time.monotonic() - t0, b.rss_bytes() / 1e6, st.trades + st.books if st else 0))
                th.join(every)
            stop.set()
            th.join()
            wall = time.monotonic() - t0
            time.sleep(2.0)  # let the broker settle (Kafka flushes, GC) before the last sample
            st = out["st"]
            ticks = st.trades + st.books
            samples.append((time.monotonic() - t0, b.rss_bytes() / 1e6, ticks))
            stored = stored_messages(s)
            # the messages on disk: Kafka's segment files (*.log), not its index files, which it preallocates
            # (10 MB each per partition: apparent size, not data)
            disk = sum(f.stat().st_size for f in data.rglob("*.log") if f.is_file() and f.parent != data)
            res: dict[str, Any] = {
                "engine": engine,
                "mode": f"fast {fast_hours:g} h of feed" if fast_hours else f"real time {minutes:g} min",
                "ticks_per_s_target": ticks_per_s,
                "ticks": ticks,
                "frames": st.frames,
                "wall_s": round(wall, 1),
                "ticks_per_s_sent": round(ticks / wall, 1),
                "rss_start_mb": round(samples[0][1], 1),
                "rss_end_mb": round(samples[-1][1], 1),
                "rss_max_mb": round(max(m for _, m, _ in samples), 1),
                "messages_stored": stored,
                "disk_mb": round(disk / 1e6, 1),  # Kafka's log segments (Tansu writes none)
            }
            t, mb, n = (np.array(x, dtype=float) for x in zip(*samples, strict=True))
            if fast_hours:
                # MB per tick stored (least squares), as MB per hour of feed at ticks_per_s
                per_tick = float(np.polyfit(n, mb, 1)[0])
                res["growth_mb_per_feed_hour"] = round(per_tick * ticks_per_s * 3600, 1)
                res["bytes_per_tick"] = round(per_tick * 1e6, 1)
            else:
                slope_h = float(np.polyfit(t, mb, 1)[0] * 3600)
                res["growth_mb_per_hour"] = round(slope_h, 1)
                res["bytes_per_tick"] = round(slope_h * 1e6 / 3600 / max(ticks / wall, 1e-9), 1)
            res["samples"] = [(round(a, 1), round(m, 1), int(k)) for a, m, k in samples]
            if restart:
                b.stop()
                b = _broker(engine, data, port).start(timeout_s=180.0)
                res["messages_after_restart"] = stored_messages(s)
                res["rss_after_restart_mb"] = round(b.rss_bytes() / 1e6, 1)
        finally:
            b.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["tansu", "kafka"], default="tansu", help="the local broker (RTQIS_BROKER)")
    ap.add_argument("--ticks-per-s", type=float, default=250.0, help="feed rate: trades + book tickers per second")
    ap.add_argument("--minutes", type=float, default=10.0, help="real-time run length")
    ap.add_argument("--fast-hours", type=float, default=0.0, help="send this many hours of feed as fast as possible")
    ap.add_argument("--restart", action="store_true", help="then restart the broker and count what it kept")
    ap.add_argument("--port", type=int, default=19301, help="broker port (Kafka's controller: port + 1)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    res = measure(
        a.engine,
        ticks_per_s=a.ticks_per_s,
        minutes=a.minutes,
        fast_hours=a.fast_hours,
        restart=a.restart,
        port=a.port,
    )
    shown = {k: v for k, v in res.items() if k != "samples"}
    print(json.dumps(shown, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
