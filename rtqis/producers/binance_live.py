"""`rtqis produce binance`: the live Binance feed into the tick topics.

The WebSocket client (:mod:`rtqis.producers.binance_ws`) yields normalised trades, best bid/ask and
depth diffs. Trades and book tickers are cut into frames (:class:`FrameBuffer`, <= 20 ms old) and
published to ``ticks.trade`` / ``ticks.book``. Depth diffs keep a local order book per symbol
(:mod:`rtqis.producers.orderbook`, synced from REST snapshots) whose top N levels go to ``ticks.depth``
at most ``RTQIS_DEPTH_MAX_PER_S`` times a second. Bad frames go to ``deadletter`` with the raw
payload and the reason. Counters are logged every ``RTQIS_STATS_EVERY_S`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

from rtqis.kafka.clients import MessageProducer
from rtqis.producers.binance_format import BookEvent, DepthDiffEvent, TradeEvent
from rtqis.producers.binance_rest import AsyncBinanceRest
from rtqis.producers.binance_ws import BadFrame, BinanceStream
from rtqis.producers.feed import frame_time
from rtqis.producers.framing import FrameBuffer
from rtqis.producers.orderbook import LocalOrderBook, Throttle
from rtqis.schemas.deadletters import bounded_dead_letter
from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.topics import BOOK, DEADLETTER, DEPTH, TRADES

__all__ = ["LiveStats", "run_binance"]

log = logging.getLogger(__name__)


@dataclass
class LiveStats:
    trades: int = 0
    books: int = 0
    frames: int = 0
    depth_published: int = 0
    dead_lettered: int = 0
    snapshots: int = 0
    snapshot_errors: int = 0


class _Feed:
    def __init__(self, settings: Settings, stream: BinanceStream) -> None:
        self.s = settings
        self.stream = stream
        self.producer = MessageProducer(settings)
        self.buf = FrameBuffer(settings.frame_max_ticks, settings.frame_max_ms, cut_ms=settings.sample_ms)
        self.stats = LiveStats()
        # USD-M / COIN-M streams (fstream/dstream hosts) continue depth diffs by `pu`, spot by `U`
        futures = any(h in settings.binance_ws_url for h in ("fstream", "dstream"))
        self.books = {
            sym: LocalOrderBook(sym, depth_levels=settings.depth_levels, futures=futures) for sym in settings.symbols
        }
        self.throttles = {sym: Throttle(settings.depth_max_per_s) for sym in settings.symbols}
        self.snapshot_tasks: dict[str, asyncio.Task[None]] = {}
        self.rest: AsyncBinanceRest | None = None

    def send_frame(self, f: Frame) -> None:
        topic = TRADES if f.type is TRADE_FRAME else BOOK
        self.producer.send(topic, f, key=f.symbol, timestamp_ms=frame_time(f))
        self.stats.frames += 1
        if f.type is TRADE_FRAME:
            self.stats.trades += len(f)
        else:
            self.stats.books += len(f)

    def dead_letter(self, raw: bytes, reason: str, recv_ms: int) -> None:
        dl = bounded_dead_letter("producer.binance", reason, raw, location="websocket", now_ms=recv_ms)
        self.producer.send(DEADLETTER, dl, key="producer.binance")
        self.stats.dead_lettered += 1

    async def snapshot(self, symbol: str) -> None:
        assert self.rest is not None
        try:
            snap = await self.rest.depth_snapshot(symbol, limit=max(1000, self.s.depth_levels))
            book = self.books[symbol]
            book.on_snapshot(snap.last_update_id, snap.bids, snap.asks, int(time.time() * 1000))
            self.stats.snapshots += 1
            if not book.needs_snapshot and self.throttles[symbol].allow(time.monotonic()):
                self.publish_depth(symbol)  # buffered diffs may have synced it already
        except Exception as e:  # noqa: BLE001 - a failed snapshot is retried on the next diff
            self.stats.snapshot_errors += 1
            log.warning("depth snapshot for %s failed: %s", symbol, e)
        finally:
            self.snapshot_tasks.pop(symbol, None)

    def on_depth(self, ev: DepthDiffEvent) -> None:
        book = self.books.get(ev.symbol)
        if book is None:
            return
        book.on_diff(ev)
        if book.needs_snapshot:
            if ev.symbol not in self.snapshot_tasks:
                self.snapshot_tasks[ev.symbol] = asyncio.get_running_loop().create_task(self.snapshot(ev.symbol))
            return
        if self.throttles[ev.symbol].allow(time.monotonic()):
            self.publish_depth(ev.symbol)

    def publish_depth(self, symbol: str) -> None:
        top = self.books[symbol].top(self.s.depth_levels)
        if top is not None:
            self.producer.send(DEPTH, top, key=symbol, timestamp_ms=top.event_time or top.recv_time)
            self.stats.depth_published += 1

    async def flusher(self, stop: asyncio.Event) -> None:
        tick = max(self.s.frame_max_ms / 4000.0, 0.002)
        next_log = time.monotonic() + self.s.stats_every_s
        while not stop.is_set():
            await asyncio.sleep(tick)
            for f in self.buf.due():
                self.send_frame(f)
            now = time.monotonic()
            for sym, throttle in self.throttles.items():
                if throttle.due(now):  # the latest book state held back by the rate limit
                    self.publish_depth(sym)
            self.producer.poll(0)
            if time.monotonic() >= next_log:
                next_log += self.s.stats_every_s
                log.info(
                    "binance: %s; stream %s; %d delivery failures",
                    self.stats,
                    self.stream.stats,
                    self.producer.stats.failed,
                )

    async def run(self, stop: asyncio.Event) -> LiveStats:
        if self.s.binance_depth:
            self.rest = AsyncBinanceRest(self.s.binance_rest_url)
        flusher = asyncio.create_task(self.flusher(stop))
        try:
            async for ev in self.stream.events(stop):
                if isinstance(ev, TradeEvent):
                    f = self.buf.add(ev.trade)
                elif isinstance(ev, BookEvent):
                    f = self.buf.add(ev.book)
                elif isinstance(ev, DepthDiffEvent):
                    self.on_depth(ev)
                    continue
                elif isinstance(ev, BadFrame):
                    self.dead_letter(ev.raw, ev.reason, ev.recv_time_ms)
                    continue
                else:  # aggTrade (counted by the stream) and control replies
                    continue
                if f is not None:
                    self.send_frame(f)
        finally:
            stopped = stop.is_set()  # by a signal, not by the end of the stream
            stop.set()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            for t in list(self.snapshot_tasks.values()):
                t.cancel()
            for f in self.buf.flush():
                self.send_frame(f)
            if self.rest is not None:
                await self.rest.aclose()
            self.producer.finish(stopped=stopped)
            log.info("binance feed stopped: %s; stream %s", self.stats, self.stream.stats)
        return self.stats


def run_binance(settings: Settings, stop: asyncio.Event | None = None, *, handle_signals: bool = False) -> LiveStats:
    """Run the live feed until ``stop`` is set (or SIGINT/SIGTERM with ``handle_signals``)."""

    async def main() -> LiveStats:
        ev = stop or asyncio.Event()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, ev.set)
        stream = BinanceStream(
            settings.symbols,
            base_url=settings.binance_ws_url,
            depth=settings.binance_depth,
            agg_trades=settings.binance_agg_trades,
        )
        return await _Feed(settings, stream).run(ev)

    return asyncio.run(main())
