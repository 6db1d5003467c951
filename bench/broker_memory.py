"""Embedded broker memory growth under the synthetic feed: RSS sampled while ticks flow.

    python bench/broker_memory.py --rate 20 --minutes 10 --port 19301 --json bench/results/broker_memory_20.json

Reports MB at start and end, the slope (MB/hour, least squares over the samples) and ticks/messages sent.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.producers.feed import run_synthetic
from rtqis.settings import load_settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=20.0, help="trades/s per symbol")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=19301)
    ap.add_argument("--compression", default="zstd")
    ap.add_argument("--json")
    a = ap.parse_args()
    with EmbeddedBroker(port=a.port) as b:
        s = load_settings(bootstrap_servers=b.bootstrap, compression=a.compression)
        create_topics(s)
        stop = threading.Event()
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("stats", run_synthetic(s, rate=a.rate, stop=stop)))
        t0 = time.monotonic()
        th.start()
        samples = []
        while time.monotonic() - t0 < a.minutes * 60:
            samples.append((time.monotonic() - t0, b.rss_bytes() / 1e6))
            time.sleep(15)
        stop.set()
        th.join()
        samples.append((time.monotonic() - t0, b.rss_bytes() / 1e6))
    t, mb = np.array(samples).T
    slope_per_h = float(np.polyfit(t, mb, 1)[0] * 3600)
    st = out["stats"]
    ticks = st.trades + st.books
    res = {
        "rate_trades_per_s_per_symbol": a.rate,
        "ticks_per_s": ticks / t[-1],
        "messages_per_s": st.frames / t[-1],
        "compression": a.compression,
        "minutes": a.minutes,
        "rss_start_mb": float(mb[0]),
        "rss_end_mb": float(mb[-1]),
        "growth_mb_per_hour": slope_per_h,
        "bytes_per_tick": slope_per_h * 1e6 / 3600 / max(ticks / t[-1], 1e-9),
    }
    print(json.dumps(res, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
