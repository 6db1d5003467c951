"""In-process costs, no broker: the codec (encode + decode of a trade frame, JSON vs Avro) and the
incremental analytic kernels (per-update cost, batch cost per sample, 1 vs 100 pairs)."""

from __future__ import annotations

import logging
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from rtqis.bench.harness import Say, market
from rtqis.producers.feed import trade_frames
from rtqis.schemas.codec import CodecName, decode, encode

__all__ = ["bench_codec", "bench_kernels"]

log = logging.getLogger(__name__)

_CODECS: tuple[CodecName, ...] = ("json", "avro")


def bench_codec(say: Say) -> dict[str, Any]:
    """Bytes per frame and encode / decode microseconds of one 500-tick trade frame, per codec."""
    b = market(50_000).advance(100)[0][0]
    f = trade_frames(b, 500)[0]
    out: dict[str, Any] = {"frame_ticks": len(f)}
    for codec in _CODECS:
        enc = encode(f, codec)
        n = 300
        e_us = timeit.timeit(partial(encode, f, codec), number=n) / n * 1e6
        d_us = timeit.timeit(partial(decode, *enc), number=n) / n * 1e6
        out[codec] = {
            "bytes": len(enc.value),
            "encode_us": e_us,
            "decode_us": d_us,
            "us_per_tick": (e_us + d_us) / len(f),
        }
        say(
            f"codec {codec:<4}  {len(enc.value):>7} B/frame  encode {e_us:7.1f} us  decode {d_us:7.1f} us  "
            f"= {(e_us + d_us) / len(f):.3f} us/tick"
        )
    return out


def bench_kernels(say: Say) -> dict[str, Any]:
    """Per-update cost of each incremental kernel (microseconds), batch cost per sample, 1 vs 100 pairs."""
    from rtqis.analytics import HuberFairValue, KalmanHedge, RollingOLS, RollingZScore, kalman_hedge, rolling_ols
    from rtqis.analytics.pair_model import PairModel, PairParams

    rng = np.random.default_rng(3)
    n = 20_000
    x = 90_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    y = 0.033 * x + rng.normal(0, 1.0, n)
    xs, ys = x.tolist(), y.tolist()

    def per_update(make: Callable[[], Any], step: Callable[[Any, int], Any], k: int = n) -> float:
        obj = make()
        t = time.perf_counter()
        for i in range(k):
            step(obj, i)
        return (time.perf_counter() - t) / k * 1e6

    out: dict[str, Any] = {
        "rolling_ols_us": per_update(lambda: RollingOLS(300), lambda o, i: o.update(xs[i], ys[i])),
        "zscore_us": per_update(lambda: RollingZScore(300), lambda o, i: o.update(ys[i])),
        "kalman_1_pair_us": per_update(lambda: KalmanHedge(1), lambda o, i: o.update(xs[i], ys[i])),
        "huber_refit30_us": per_update(lambda: HuberFairValue(600, 30), lambda o, i: o.update(xs[i], ys[i]), 3000),
    }
    x100, y100 = np.repeat(x[:, None], 100, axis=1), np.repeat(y[:, None], 100, axis=1)
    out["kalman_100_pairs_us"] = per_update(lambda: KalmanHedge(100), lambda o, i: o.update(x100[i], y100[i]), 5000)
    t = time.perf_counter()
    rolling_ols(x, y, 300)
    out["rolling_ols_batch_us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    kalman_hedge(x, y)
    out["kalman_batch_us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    kalman_hedge(x100[:5000], y100[:5000])
    out["kalman_batch_100_pairs_us"] = (time.perf_counter() - t) / 5000 * 1e6
    model = PairModel("Y/X", PairParams())
    t = time.perf_counter()
    for i in range(5000):
        model.step(1000 * (i + 1), xs[i], ys[i], 1000 * (i + 1), 1000 * (i + 1))
    out["pair_model_step_us"] = (time.perf_counter() - t) / 5000 * 1e6
    model.adf()  # the first call imports statsmodels' MacKinnon tables: not part of the cost
    t = time.perf_counter()
    for _ in range(20):
        model.adf()
    out["adf_600_ms"] = (time.perf_counter() - t) / 20 * 1e3
    for k, v in out.items():
        say(f"kernel {k:<28} {v:10.2f}")
    return out
