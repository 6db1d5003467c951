"""Publish a tick source to the tick topics as frames, with counters and a clean shutdown.

A *source* yields ``(trade_batches, book_batches)`` for successive slices of event time; this module
cuts them into frames of at most ``RTQIS_FRAME_MAX_TICKS`` ticks and publishes them keyed by symbol,
each message stamped with its first tick's event time (so partitions stay in time order and
``--from-time`` seeks work).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

import numpy as np

from rtqis.kafka.clients import MessageProducer
from rtqis.process import set_from_signal_handler
from rtqis.producers.synthetic import BookBatch, SymbolSpec, SyntheticMarket, TradeBatch
from rtqis.schemas import models as m
from rtqis.schemas.deadletters import bounded_dead_letter
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.topics import BOOK, DEADLETTER, DEPTH, TRADES

__all__ = ["FeedStats", "book_frames", "frame_time", "run_files", "run_synthetic", "trade_frames"]

log = logging.getLogger(__name__)

SYNTHETIC_DEPTH_EVERY_MS = 500
"""Event time between two synthetic ``ticks.depth`` snapshots of a symbol (live mode): 2 per second."""

DEFAULT_START_PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0, "BNBUSDT": 600.0}


@dataclass
class FeedStats:
    trades: int = 0
    books: int = 0
    frames: int = 0
    dead_lettered: int = 0


def trade_frames(b: TradeBatch, max_ticks: int, recv_time: np.ndarray | None = None) -> list[Frame]:
    """Frames of at most ``max_ticks`` trades from a batch (synthetic trades: trade time = event time)."""
    cols = {
        "trade_id": b.trade_id,
        "price": b.price,
        "qty": b.qty,
        "trade_time": b.event_time,
        "event_time": b.event_time,
        "recv_time": b.event_time if recv_time is None else recv_time,
        "buyer_maker": b.buyer_maker,
    }
    return Frame.build(TRADE_FRAME, b.symbol, cols).split(max_ticks)


def book_frames(b: BookBatch, max_ticks: int) -> list[Frame]:
    """Frames of at most ``max_ticks`` book tickers from a batch (synthetic: receive time = event time)."""
    cols = {
        "update_id": b.update_id,
        "bid_price": b.bid_price,
        "bid_qty": b.bid_qty,
        "ask_price": b.ask_price,
        "ask_qty": b.ask_qty,
        "event_time": b.event_time,
        "recv_time": b.event_time,
    }
    return Frame.build(BOOK_FRAME, b.symbol, cols).split(max_ticks)


def frame_time(f: Frame) -> int:
    """Timestamp of a frame's message: its first tick's event time (receive time where there is none)."""
    t = f.cols["event_time"] if f.cols["event_time"] is not None else f.cols["recv_time"]
    return int(t[0])  # type: ignore[index]


def _publish(producer: MessageProducer, frames: list[tuple[Any, Frame]], stats: FeedStats) -> None:
    # Send in time order of first tick so each partition's timestamps never go backwards.
    frames.sort(key=lambda tf: frame_time(tf[1]))
    for topic, f in frames:
        producer.send(topic, f, key=f.symbol, timestamp_ms=frame_time(f))
        stats.frames += 1
        if f.type is TRADE_FRAME:
            stats.trades += len(f)
        else:
            stats.books += len(f)


def run_synthetic(
    settings: Settings,
    *,
    rate: float | None = None,
    max_rate: bool = False,
    keep_rate: bool = False,
    book: bool = True,
    limit: int | None = None,
    duration_s: float | None = None,
    start_ms: int | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[FeedStats], None] | None = None,
    report_every_s: float = 10.0,
) -> FeedStats:
    """Run the synthetic market into the tick topics until ``limit`` trades, ``duration_s`` or ``stop``.

    Live mode paces event time with the wall clock (``frame_max_ms`` slices); ``max_rate`` generates
    as fast as the broker takes it (event time then runs ahead of the wall clock), at 50,000 trades/s
    per symbol of event time unless ``keep_rate`` keeps ``rate`` (a live-like density, for benchmarks
    of the time-driven analytics). ``book=False`` leaves out the book tickers.
    In live mode with book tickers, a depth book around each symbol's last quote
    (:meth:`SyntheticMarket.depth`, ``depth_levels`` per side) goes to ``ticks.depth`` every
    :data:`SYNTHETIC_DEPTH_EVERY_MS` of event time, as the Binance source publishes its local book.
    """
    stop = stop or threading.Event()
    specs = [SymbolSpec(s, DEFAULT_START_PRICES.get(s, 100.0)) for s in settings.symbols]
    trade_rate = rate or settings.synthetic_rate
    if max_rate and not keep_rate:
        trade_rate = max(trade_rate, 50_000.0)
    now_ms = int(time.time() * 1000)
    market = SyntheticMarket(specs, seed=settings.seed, trade_rate=trade_rate, start_ms=start_ms or now_ms)
    producer = MessageProducer(settings)
    stats = FeedStats()
    step_ms = max(settings.frame_max_ms, 1)
    if max_rate:
        # about one full frame per symbol per step
        step_ms = max(1, int(1000 * settings.frame_max_ticks / trade_rate))
    t0 = time.monotonic()
    next_report = t0 + report_every_s
    next_depth = market.now_ms
    try:
        while not stop.is_set():
            trades, books = market.advance(step_ms)  # the slice (now - step, now] of event time
            if limit is not None:
                trades = _cap(trades, limit - stats.trades)
            if not max_rate:
                # Pace event time with the wall clock: a slice is published once it is over, as a live
                # framer would (its ticks are at most ``frame_max_ms`` old when they leave). A live framer
                # also sends at once the tick that crosses a sample time (FrameBuffer's ``cut_ms``): it
                # closes the pair sample of its leg, so it does not wait out the slice.
                def at(t_ms: int) -> bool:
                    return stop.wait(max(0.0, (t_ms - now_ms) / 1000.0 - (time.monotonic() - t0)))

                trades, books = _send_crossings(
                    producer, market.now_ms - step_ms, step_ms, settings.sample_ms, trades, books if book else [],
                    at, stats, settings.frame_max_ticks,
                )  # fmt: skip
                if at(market.now_ms):
                    break
            out: list[tuple[Any, Frame]] = []
            for tb in trades:
                out.extend((TRADES, f) for f in trade_frames(tb, settings.frame_max_ticks))
            for bb in books if book else ():
                out.extend((BOOK, f) for f in book_frames(bb, settings.frame_max_ticks))
            _publish(producer, out, stats)
            if book and not max_rate and market.now_ms >= next_depth:
                next_depth = market.now_ms + SYNTHETIC_DEPTH_EVERY_MS
                _publish_depth(producer, market, settings)
            now = time.monotonic()
            if on_progress is not None:
                on_progress(stats)
            if now >= next_report:
                log.info(
                    "sent %d trades, %d book tickers in %d frames; %d delivery failures",
                    stats.trades,
                    stats.books,
                    stats.frames,
                    producer.stats.failed,
                )
                next_report = now + report_every_s
            if (limit is not None and stats.trades >= limit) or (duration_s is not None and now - t0 >= duration_s):
                break
    finally:
        producer.finish(stopped=stop.is_set())
        log.info("synthetic feed stopped: %s, %d delivery failures", stats, producer.stats.failed)
    return stats


def _publish_depth(producer: MessageProducer, market: SyntheticMarket, settings: Settings) -> None:
    """One ``ticks.depth`` snapshot per symbol, built around its last quote (none before the first)."""
    for sym in settings.symbols:
        d = market.depth(sym, settings.depth_levels)
        if d is None:
            continue
        snap = m.DepthSnapshot(
            symbol=sym, last_update_id=d.update_id, event_time=d.event_time, recv_time=d.event_time,
            bid_price=d.bid_price, bid_qty=d.bid_qty, ask_price=d.ask_price, ask_qty=d.ask_qty,
        )  # fmt: skip
        producer.send(DEPTH, snap, key=sym, timestamp_ms=d.event_time)


def _split(b: Any, i: int) -> tuple[Any, Any]:
    """A Trade/BookBatch cut before row ``i``: (rows < i, rows >= i)."""
    names = [f.name for f in fields(b)][1:]
    return (
        type(b)(b.symbol, *(getattr(b, n)[:i] for n in names)),
        type(b)(b.symbol, *(getattr(b, n)[i:] for n in names)),
    )


def _send_crossings(
    producer: MessageProducer,
    start_ms: int,
    step_ms: int,
    sample_ms: int,
    trades: list[TradeBatch],
    books: list[BookBatch],
    wait_until: Callable[[int], bool],
    stats: FeedStats,
    max_ticks: int,
) -> tuple[list[TradeBatch], list[BookBatch]]:
    """Within the slice (start, start + step], if a sample time ``b`` falls in it: for each symbol, the
    ticks up to and including its first tick at/after ``b`` are published when that tick happens (event
    time on the wall clock). Returns what is left for the end of the slice."""
    b = (start_ms // sample_ms + 1) * sample_ms
    if b > start_ms + step_ms:
        return trades, books
    cuts: list[tuple[int, int, Any]] = []  # (time of the crossing tick, batch index, head batch)
    rest: dict[int, Any] = {}
    every: list[TradeBatch | BookBatch] = [*trades, *books]
    for k, batch in enumerate(every):
        i = int(np.searchsorted(batch.event_time, b, side="left"))
        if i < len(batch.event_time):
            head, rest[k] = _split(batch, i + 1)
            cuts.append((int(batch.event_time[i]), k, head))
    for t, k, head in sorted(cuts, key=lambda c: c[0]):
        if wait_until(t):
            break  # stopping: the rest of the slice is not sent (as if it had not happened yet)
        topic, frames = (
            (TRADES, trade_frames(head, max_ticks)) if k < len(trades) else (BOOK, book_frames(head, max_ticks))
        )
        _publish(producer, [(topic, f) for f in frames], stats)
        every[k] = rest[k]
        producer.poll(0)
    return cast(list[TradeBatch], every[: len(trades)]), cast(list[BookBatch], every[len(trades) :])


def _cap(batches: list[TradeBatch], left: int) -> list[TradeBatch]:
    out = []
    for b in batches:
        k = max(0, min(len(b.trade_id), left))
        left -= k
        if k:
            out.append(
                TradeBatch(b.symbol, b.trade_id[:k], b.price[:k], b.qty[:k], b.event_time[:k], b.buyer_maker[:k])
            )
    return out


def install_stop_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` so the feed flushes and exits cleanly."""

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        set_from_signal_handler(stop)

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def run_files(
    settings: Settings,
    paths: list[str],
    *,
    speed: float | None = None,
    limit: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    symbols: set[str] | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[FeedStats, int, int], None] | None = None,
    slice_ms: int | None = None,
    max_ticks: int | None = None,
) -> FeedStats:
    """Replay Binance data files (archive CSV/zip/Parquet, raw WebSocket captures) into the tick topics.

    Files are merged by event time with bounded memory. ``speed`` None = as fast as possible, 1 = real
    time, 60 = 60x. Bad rows go to ``deadletter`` with file and line, and are counted. A file of an
    unknown format fails before anything is published (:class:`rtqis.producers.files.SourceFormatError`).

    Frames: the merged ticks are cut into slices of ``slice_ms`` of event time (default: the settings'
    ``frame_max_ms`` when paced, no slices as fast as possible), each symbol's ticks of a slice into
    frames of at most ``max_ticks`` (default: the settings' ``frame_max_ticks``).
    """
    from rtqis.producers.files import Pacer, inspect_file, merge_sources

    stop = stop or threading.Event()
    for p in paths:
        inspect_file(p)  # every file is recognised before anything is sent
    producer = MessageProducer(settings)
    pacer = Pacer(speed)
    stats = FeedStats()
    progress = {"done": 0, "total": 1}

    def _on_file_progress(rows: int, done: int, total: int) -> None:
        progress["done"], progress["total"] = done, total

    if slice_ms is None and speed is not None:
        slice_ms = settings.frame_max_ms
    max_ticks = max_ticks or settings.frame_max_ticks
    try:
        for batch in merge_sources(
            [Path(p) for p in paths],
            symbols=symbols,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            slice_ms=slice_ms,
            on_progress=_on_file_progress,
        ):
            if stop.is_set():
                break
            for bad in batch.bad:
                producer.send(
                    DEADLETTER,
                    bounded_dead_letter(
                        "producer.file",
                        bad.reason,
                        bad.raw.encode("utf-8", "replace"),
                        location=f"{bad.file}:{bad.line}",
                    ),
                    key="producer.file",
                )
                stats.dead_lettered += 1
            if not len(batch):
                continue
            pacer.wait_until(batch.t0)
            frames = batch.frames(max_ticks)
            _publish(producer, [(TRADES if f.type is TRADE_FRAME else BOOK, f) for f in frames], stats)
            if on_progress is not None:
                on_progress(stats, progress["done"], progress["total"])
    finally:
        producer.finish(stopped=stop.is_set())
    log.info("file feed done: %s, %d delivery failures", stats, producer.stats.failed)
    return stats
