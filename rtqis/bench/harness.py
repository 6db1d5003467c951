"""What the benchmark sections share: a fresh namespace per run, the synthetic market, child ``rtqis``
processes (through :mod:`rtqis.process`, like `rtqis up`), consumers assigned to a whole topic, and the
median of several runs."""

from __future__ import annotations

import logging
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer, new_consumer
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.process import ChildProcess, free_port, rtqis_argv, settings_env
from rtqis.producers.feed import trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.settings import Settings
from rtqis.topics import TRADES, TopicSpec

__all__ = [
    "Say",
    "assigned_consumer",
    "fresh_namespace",
    "market",
    "median_runs",
    "on_own_broker",
    "pairs_of",
    "produce_trades",
    "start_rtqis",
    "symbols_for",
    "wait_ready",
]

log = logging.getLogger(__name__)

#: where a section's lines go (``print`` for the CLI, a list's ``append`` in tests)
Say = Callable[[str], None]

#: the line a Faust worker logs once it has joined its group and recovered its tables
_WORKER_READY = b"Worker]: Ready"
#: a benchmark child gets this long to stop cleanly after SIGTERM (a worker flushes and commits) (s)
_STOP_TIMEOUT_S = 30.0


def fresh_namespace(settings: Settings, **update: Any) -> Settings:
    """``settings`` in a new namespace (``bench`` + 8 hex digits) with its own worker web port and its
    topics created: runs never see each other's messages, groups or tables."""
    values = {"namespace": "bench" + uuid.uuid4().hex[:8], "worker_web_port": free_port(), **update}
    s = settings.model_copy(update=values)
    create_topics(s)
    return s


def market(rate: float, seed: int = 1) -> SyntheticMarket:
    """The benchmark's synthetic market: BTCUSDT at 90,000 and ETHUSDT at 3,000, ``rate`` trades/s each."""
    return SyntheticMarket(
        [SymbolSpec("BTCUSDT", 90_000.0), SymbolSpec("ETHUSDT", 3_000.0)], seed=seed, trade_rate=rate
    )


def produce_trades(settings: Settings, n: int, frame_ticks: int) -> int:
    """``n`` synthetic trades to ``ticks.trade`` as frames of ``frame_ticks`` (max rate); returns the
    trades sent."""
    m = market(50_000)
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
                event_time = f.cols["event_time"]
                assert event_time is not None  # a trade frame always has it
                p.send(TRADES, f, key=f.symbol, timestamp_ms=int(event_time[0]))
                sent += len(f)
    p.flush()
    return sent


def start_rtqis(settings: Settings, log_path: Path, *args: str) -> ChildProcess:
    """``rtqis ARGS...`` (worker, sink, produce ...) as a child using exactly ``settings``, its output in
    ``log_path`` (truncated: a readiness line from an earlier run must not count). Call it from the main
    thread and stop it in a ``finally``: `rtqis bench` unwinds on SIGTERM/SIGINT, and the child gets
    SIGTERM if the bench dies without unwinding (:func:`rtqis.process.die_with_parent`)."""
    name = log_path.stem
    child = ChildProcess(name, rtqis_argv(*args), log_path, stop_timeout_s=_STOP_TIMEOUT_S)
    return child.start(settings_env(settings), append=False)


def wait_ready(worker: ChildProcess, timeout_s: float = 60.0) -> None:
    """Block until a worker child has joined its group (raises if it exits or takes ``timeout_s``)."""
    worker.wait_for_log(_WORKER_READY, timeout_s)


def assigned_consumer(settings: Settings, spec: TopicSpec, **overrides: Any) -> Consumer:
    """A group-less consumer assigned to every partition of ``spec`` (in the settings' namespace) from
    offset 0."""
    topic = spec.full_name(settings.namespace)
    c = new_consumer(settings, **overrides)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    return c


def symbols_for(n: int) -> list[str]:
    """``n`` symbols: the two real ones for 2 or fewer, else SYM00USDT, SYM01USDT, ..."""
    return ["BTCUSDT", "ETHUSDT"] if n <= 2 else [f"SYM{i:02d}USDT" for i in range(n)]


def pairs_of(symbols: list[str], n: int) -> list[str]:
    """The first ``n`` pairs ``Y/X`` of ``symbols`` (each symbol against every later one)."""
    out = [f"{y}/{x}" for i, x in enumerate(symbols) for y in symbols[i + 1 :]]
    if len(out) < n:
        raise ValueError(f"{len(symbols)} symbols give {len(out)} pairs, not {n}")
    return out[:n]


def median_runs(fn: Callable[[], dict[str, Any]], runs: int, key: str) -> dict[str, Any]:
    """``fn`` run ``runs`` times: the run of median ``key`` with ``runs`` and, for ``key`` and the RSS
    figures, ``_min`` / ``_max`` / ``_median`` over every run."""
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


def on_own_broker(
    settings: Settings, tmp: Path, fn: Callable[[Settings], dict[str, Any]], *, embedded: bool
) -> dict[str, Any]:
    """``fn`` on a fresh embedded broker (when the run uses the embedded one). The embedded broker keeps
    every message (no retention), so after the throughput sections it holds millions of replayed ticks
    that a live broker would not; a latency figure should not depend on which sections ran before it."""
    if not embedded:
        return fn(settings)
    broker = EmbeddedBroker(settings.broker_host, free_port(), settings.broker_bin, tmp / "broker-latency.log")
    broker.start()
    try:
        return fn(settings.model_copy(update={"bootstrap_servers": broker.bootstrap})) | {"own_broker": True}
    finally:
        broker.stop()
