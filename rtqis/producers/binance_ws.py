"""Live Binance market data: a reconnecting asyncio client for the combined WebSocket stream.

:class:`BinanceStream` connects to ``{base_url}/stream``, sends one ``SUBSCRIBE`` request for its streams
(``<symbol>@trade``, ``@bookTicker``, ``@aggTrade``, ``@depth@<speed>``) and yields every message as a
normalised event (:data:`rtqis.producers.binance_format.WsEvent`, parsed by
:func:`~rtqis.producers.binance_format.parse_ws_message`) or, when a frame cannot be used, as a
:class:`BadFrame` for the caller to dead-letter. It runs until the caller sets its ``stop`` event and
survives what the real service does:

* **Disconnects** (Binance drops every connection after 24 h, announces maintenance with
  ``serverShutdown``, networks fail): reconnect and subscribe again. Connections older than
  ``max_connection_age_s`` are replaced proactively, and a ``serverShutdown`` is acted on at once; both
  reconnect without delay. Every other reconnect, and every failed attempt to connect (refused, DNS,
  TLS, HTTP handshake, timeout), waits a *full-jitter* exponential backoff:
  ``uniform(0, min(backoff_max_s, backoff_initial_s * 2**attempt))``, where ``attempt`` counts the
  attempts since a connection last delivered market data.
  A connection we close on purpose (age, ``serverShutdown``) is read until the server's close frame, so
  nothing already in flight is lost; messages published while the new connection is being opened
  (one handshake, ~1-3 round trips) are missed and show up as trade-id gaps. The new connection is
  opened after the old one is closed, not before (no overlap, hence no duplicate book updates).
* **Silence**: no frame for ``idle_timeout_s`` closes the connection and reconnects.
* **Pings**: the ``websockets`` library answers the server's pings itself, as long as frames are read;
  a background task reads the socket continuously into a bounded queue (``queue_size`` items), so a
  consumer that is busy between two items does not stop the pongs. If the queue fills, reading pauses
  (back-pressure) rather than buffering without bound. The library also sends its own keepalive ping
  every 20 s and drops a connection whose pong does not come within 20 s.
* **Trade-id continuity**, per symbol (``@trade`` ids ``t``; ``@aggTrade`` aggregate ids ``a``, tracked
  separately): an id above ``last + 1`` is a gap (counted in ``WsStats.trade_gaps`` and
  ``WsStats.missing_trades``, logged as a warning that says whether it came right after a reconnect);
  an id ``<= last`` is a duplicate (a re-sent message after a reconnect): dropped and counted in
  ``WsStats.duplicates``, never yielded twice. Book tickers and depth diffs are passed through as they
  come (a depth-book builder checks its own update-id sequence).
* **Bad frames** (not JSON, binary garbage, missing or mistyped fields, price or quantity <= 0, unknown
  symbol, unsupported event type) are yielded as :class:`BadFrame` and counted; the connection goes on.
  Frames are read as bytes, text or binary alike (Binance only sends text): a binary frame holding a
  valid message is accepted, and invalid UTF-8 is a bad frame rather than a protocol error that would
  cost the connection.

Control messages (:class:`~rtqis.producers.binance_format.ControlEvent`: the ``{"result": null, "id": N}``
reply to our subscription, error replies, ``serverShutdown``) are handled and logged here and are
**not yielded**; ``WsStats.controls`` counts them.

Units: times are epoch milliseconds (``recv_time_ms`` and every event's ``recv_time`` come from
``clock_ms()``, called when the reader task takes the frame off the connection); durations (``*_s``) are
seconds. Counters in :attr:`BinanceStream.stats` are updated as frames arrive; logging them
periodically is the caller's job.

Usage::

    stream = BinanceStream(["BTCUSDT", "ETHUSDT"])
    async with contextlib.aclosing(stream.events(stop)) as items:
        async for item in items:
            if isinstance(item, BadFrame):
                dead_letter(item.raw, item.reason)
            else:
                publish(item)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from rtqis.errors import ConfigError
from rtqis.producers.binance_format import (
    AggTradeEvent,
    BadMessage,
    BookEvent,
    ControlEvent,
    DepthDiffEvent,
    TradeEvent,
    WsEvent,
    parse_ws_message,
)

__all__ = ["BadFrame", "BinanceStream", "StreamItem", "WsStats"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 0.5
"""How long closing a connection waits for the server's close frame before dropping the TCP link."""
MAX_FRAME_BYTES = 4 * 2**20
"""Largest accepted frame; Binance's market-data frames are far smaller."""
MAX_BACKOFF_EXPONENT = 32  # 2**32 * any sane initial delay is far above any sane maximum

_SYMBOL_RE = re.compile(r"^[^\s@/]+$")
_DEPTH_SPEED_RE = re.compile(r"^\d+ms$")

_End = Literal["closed", "idle", "age", "shutdown"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class WsStats:
    """Counters of one :class:`BinanceStream`, updated as frames arrive (never reset by reconnects)."""

    messages: int = 0  # frames received, of any kind
    trades: int = 0  # trade events yielded (duplicates not included)
    books: int = 0
    agg_trades: int = 0
    depth_diffs: int = 0
    bad: int = 0  # BadFrames yielded
    reconnects: int = 0  # connections opened after the first one
    trade_gaps: int = 0  # jumps in a symbol's trade id (or aggregate id for @aggTrade)
    missing_trades: int = 0  # ids skipped by those jumps
    last_message_ms: int | None = None  # clock_ms() of the last frame received
    duplicates: int = 0  # trades / aggTrades dropped because their id was not above the last one
    idle_timeouts: int = 0  # connections closed by us after idle_timeout_s without a frame
    age_reconnects: int = 0  # connections replaced because they reached max_connection_age_s
    connect_errors: int = 0  # failed attempts to connect (refused, DNS, TLS, handshake, timeout)
    controls: int = 0  # subscription replies and other control messages (handled, not yielded)


@dataclass(frozen=True)
class BadFrame:
    """A frame that could not be used: its bytes as received, why (one sentence), and when (epoch ms)."""

    raw: bytes
    reason: str
    recv_time_ms: int


StreamItem = WsEvent | BadFrame
"""What :meth:`BinanceStream.events` yields (never a ``ControlEvent``, see the module docstring)."""


@dataclass
class _Connection:
    """State of one connection."""

    request_id: int
    delivered: bool = False  # at least one market event arrived
    bad: int = 0  # bad frames on this connection (only the first is logged as a warning)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class BinanceStream:
    """Reconnecting client for Binance's combined stream; see the module docstring for the behaviour.

    ``symbols`` are Binance symbols in any case (``"BTCUSDT"``); ``base_url`` is the endpoint without
    path (``wss://stream.binance.com:9443``, ``wss://data-stream.binance.vision``, or the futures
    ``wss://fstream.binance.com``). ``depth_speed`` is the ``@depth`` update speed suffix (``"100ms"``;
    ``""`` for the stream's default). ``rng`` drives the backoff jitter (seed it in tests).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        base_url: str = "wss://stream.binance.com:9443",
        trades: bool = True,
        book_ticker: bool = True,
        agg_trades: bool = False,
        depth: bool = False,
        depth_speed: str = "100ms",
        idle_timeout_s: float = 30.0,
        max_connection_age_s: float = 23.5 * 3600,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        open_timeout_s: float = 10.0,
        clock_ms: Callable[[], int] = _now_ms,
        rng: random.Random | None = None,
        queue_size: int = 10_000,
    ) -> None:
        if isinstance(symbols, str):
            symbols = [symbols]
        if not symbols:
            raise ConfigError("BinanceStream needs at least one symbol")
        for s in symbols:
            if not isinstance(s, str) or not _SYMBOL_RE.match(s):
                raise ConfigError(f"invalid Binance symbol {s!r}")
        if not (trades or book_ticker or agg_trades or depth):
            raise ConfigError("BinanceStream needs at least one of trades, book_ticker, agg_trades, depth")
        if depth_speed and not _DEPTH_SPEED_RE.match(depth_speed):
            raise ConfigError(f"depth_speed must look like '100ms' (or be empty), got {depth_speed!r}")
        for name, v in (
            ("idle_timeout_s", idle_timeout_s),
            ("max_connection_age_s", max_connection_age_s),
            ("backoff_initial_s", backoff_initial_s),
            ("open_timeout_s", open_timeout_s),
        ):
            if not v > 0:
                raise ConfigError(f"{name} must be > 0, got {v!r}")
        if not backoff_max_s >= backoff_initial_s:
            raise ConfigError(f"backoff_max_s ({backoff_max_s!r}) must be >= backoff_initial_s ({backoff_initial_s!r})")
        if queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {queue_size!r}")
        base = base_url.rstrip("/")
        try:
            uri = parse_uri(base + "/stream")
        except InvalidURI as e:
            raise ConfigError(f"invalid Binance WebSocket URL {base_url!r}: {e}") from None

        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(s.upper() for s in symbols))
        self.url = base + "/stream"
        self.trades = trades
        self.book_ticker = book_ticker
        self.agg_trades = agg_trades
        self.depth = depth
        self.depth_speed = depth_speed
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_connection_age_s = float(max_connection_age_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.open_timeout_s = float(open_timeout_s)
        self.queue_size = queue_size
        self.stats = WsStats()
        self._clock_ms = clock_ms
        self._rng = rng if rng is not None else random.Random()
        self._symbol_set = set(self.symbols)
        self._streams = self._make_streams()
        # Loopback servers (tests, local relays) are never reached through a system proxy.
        self._proxy: Literal[True] | None = None if _is_loopback(uri.host) else True
        self._running = False
        self._request_id = 0
        self._connections = 0
        self._last_ids: dict[tuple[str, str], int] = {}  # (stream kind, symbol) -> last id yielded
        self._seen_on_connection: set[tuple[str, str]] = set()
        self._duplicates_on_connection = 0

    # ----------------------------------------------------------------------------------------------
    # Public API

    def streams(self) -> list[str]:
        """Stream names subscribed to, e.g. ``["btcusdt@trade", "btcusdt@bookTicker"]``."""
        return list(self._streams)

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before connection attempt ``attempt + 1`` (full jitter, see module docstring)."""
        cap = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(max(attempt, 0), MAX_BACKOFF_EXPONENT))
        return self._rng.uniform(0.0, cap)

    async def events(self, stop: asyncio.Event) -> AsyncGenerator[StreamItem, None]:
        """Yield events and bad frames until ``stop`` is set (then return promptly, socket closed).

        Network failures never end the iterator (they are retried); a bug that kills the reader task
        is re-raised here. Only one iteration may run at a time per instance.
        """
        if self._running:
            raise RuntimeError("BinanceStream.events() is already running")
        self._running = True
        queue: asyncio.Queue[StreamItem] = asyncio.Queue(maxsize=self.queue_size)
        reader = asyncio.create_task(self._run(queue), name="binance-ws-reader")
        stopper = asyncio.create_task(stop.wait(), name="binance-ws-stop")
        getter: asyncio.Task[StreamItem] | None = None
        try:
            while not stop.is_set():
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    getter = asyncio.create_task(queue.get())
                    await asyncio.wait((getter, stopper, reader), return_when=asyncio.FIRST_COMPLETED)
                    if reader.done():
                        reader.result()  # re-raise a crash of the reader
                        return
                    if not getter.done() or stop.is_set():
                        return  # an item already taken off the queue is dropped: the caller stopped
                    item = getter.result()
                    getter = None
                yield item
        finally:
            self._running = False
            tasks = [t for t in (getter, stopper, reader) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ----------------------------------------------------------------------------------------------
    # Connection management

    def _make_streams(self) -> list[str]:
        depth_suffix = f"@depth@{self.depth_speed}" if self.depth_speed else "@depth"
        out = []
        for s in self.symbols:
            low = s.lower()
            if self.trades:
                out.append(f"{low}@trade")
            if self.agg_trades:
                out.append(f"{low}@aggTrade")
            if self.book_ticker:
                out.append(f"{low}@bookTicker")
            if self.depth:
                out.append(low + depth_suffix)
        return out

    async def _run(self, out: asyncio.Queue[StreamItem]) -> None:
        """Connect, read, reconnect, forever (until cancelled by :meth:`events`)."""
        attempt = 0
        replacing = False  # the last connection ended for its age: the next one replaces it
        while True:
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.open_timeout_s,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_FRAME_BYTES,
                    proxy=self._proxy,
                )
            except (OSError, TimeoutError, WebSocketException) as e:
                self.stats.connect_errors += 1
                delay = self.backoff_delay(attempt)
                attempt += 1
                log.warning("cannot connect to %s (%s); retrying in %.2f s", self.url, _describe(e), delay)
                await asyncio.sleep(delay)
                continue
            self._connections += 1
            if self._connections > 1:
                self.stats.reconnects += 1
                # counted once replaced: an old connection closed as the stream stops was not (the two
                # counts differed by one when a test stopped the stream between the close and the connect)
                if replacing:
                    self.stats.age_reconnects += 1
            log.info("connected to %s (connection %d)", self.url, self._connections)
            try:
                end, delivered = await self._session(ws, out)
            finally:
                await ws.close()
            replacing = end == "age"
            if delivered:
                attempt = 0
            if end in ("age", "shutdown"):
                continue  # replace the connection now: nothing is wrong with the server
            delay = self.backoff_delay(attempt)
            attempt += 1
            log.info("reconnecting to %s in %.2f s", self.url, delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection, out: asyncio.Queue[StreamItem]) -> tuple[_End, bool]:
        """Subscribe and read one connection until it ends; return why, and whether it delivered data."""
        loop = asyncio.get_running_loop()
        self._request_id += 1
        conn = _Connection(request_id=self._request_id)
        request = {"method": "SUBSCRIBE", "params": self._streams, "id": conn.request_id}
        try:
            await ws.send(orjson.dumps(request).decode())
        except ConnectionClosed as e:
            log.warning("connection closed before subscribing (%s)", _describe(e))
            return "closed", False
        log.debug("sent SUBSCRIBE id %d for %d streams", conn.request_id, len(self._streams))
        self._seen_on_connection.clear()
        self._duplicates_on_connection = 0
        deadline = loop.time() + self.max_connection_age_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._drain(ws, out, conn, self._aged())
                return "age", conn.delivered
            age_limited = remaining < self.idle_timeout_s
            try:
                async with asyncio.timeout(min(self.idle_timeout_s, remaining)):
                    raw = await ws.recv(decode=False)  # bytes even for text frames: bad UTF-8 is a BadFrame
            except TimeoutError:
                if age_limited:
                    await self._drain(ws, out, conn, self._aged())
                    return "age", conn.delivered
                self.stats.idle_timeouts += 1
                log.warning("no message for %.1f s on %s: reconnecting", self.idle_timeout_s, self.url)
                return "idle", conn.delivered
            except ConnectionClosed as e:
                log.warning("connection to %s closed (%s)", self.url, _describe(e))
                return "closed", conn.delivered
            if await self._handle(raw, out, conn):
                await self._drain(ws, out, conn, "server announced a shutdown")
                return "shutdown", conn.delivered

    async def _drain(self, ws: ClientConnection, out: asyncio.Queue[StreamItem], conn: _Connection, why: str) -> None:
        """Close a healthy connection without losing what is in flight: read until the server's close frame."""
        log.info("closing the connection to %s (%s) and reconnecting now", self.url, why)
        closing = asyncio.create_task(ws.close())
        try:
            while True:
                try:
                    raw = await ws.recv(decode=False)
                except ConnectionClosed:
                    break
                await self._handle(raw, out, conn)
        finally:
            await closing

    async def _handle(self, raw: bytes | str, out: asyncio.Queue[StreamItem], conn: _Connection) -> bool:
        """Parse, check and queue one frame; True if it announces a server shutdown."""
        recv_ms = self._clock_ms()
        self.stats.messages += 1
        self.stats.last_message_ms = recv_ms
        item: StreamItem
        try:
            ev = parse_ws_message(raw, recv_ms, self._symbol_set)
        except BadMessage as e:
            item = self._bad(raw, e.reason, recv_ms, first=conn.bad == 0)
            conn.bad += 1
        except Exception as e:  # a parser bug must not end the stream: the frame is dead-lettered
            log.exception("unexpected error parsing a frame")
            item = self._bad(raw, f"parser error: {_describe(e)}", recv_ms, first=False)
            conn.bad += 1
        else:
            if isinstance(ev, ControlEvent):
                self.stats.controls += 1
                return self._control(ev, conn.request_id)
            conn.delivered = True
            if not self._count(ev):
                return False
            item = ev
        await out.put(item)
        return False

    def _aged(self) -> str:
        return f"older than max_connection_age_s = {self.max_connection_age_s:g} s"

    # ----------------------------------------------------------------------------------------------
    # Per-frame bookkeeping

    def _bad(self, raw: str | bytes, reason: str, recv_ms: int, *, first: bool) -> BadFrame:
        self.stats.bad += 1
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        if first:
            log.warning("bad frame (%s): %r", reason, data[:120])
        else:
            log.debug("bad frame (%s): %r", reason, data[:120])
        return BadFrame(raw=data, reason=reason, recv_time_ms=recv_ms)

    def _control(self, ev: ControlEvent, request_id: int) -> bool:
        """Log a control message; True if the connection should be replaced now (``serverShutdown``)."""
        p = ev.payload
        if ev.kind == "result":
            if p.get("id") == request_id and p.get("result") is None:
                log.info("subscribed to %d streams (request id %d)", len(self._streams), request_id)
            else:
                log.info("reply to request %r: %.200r", p.get("id"), p.get("result"))
            return False
        if p.get("e") == "serverShutdown":
            log.warning("server announced a shutdown: reconnecting now")
            return True
        if "error" in p:
            log.error("Binance rejected request %r: %.200r", p.get("id"), p.get("error"))
            return False
        log.info("ignored control message: %.200r", p)
        return False

    def _count(self, ev: WsEvent) -> bool:
        """Update counters for a market event; False if it is a duplicate to drop."""
        if isinstance(ev, TradeEvent):
            if not self._in_sequence("trade", ev.trade.symbol, ev.trade.trade_id):
                return False
            self.stats.trades += 1
        elif isinstance(ev, AggTradeEvent):
            if not self._in_sequence("aggTrade", ev.trade.symbol, ev.trade.trade_id):
                return False
            self.stats.agg_trades += 1
        elif isinstance(ev, BookEvent):
            self.stats.books += 1
        elif isinstance(ev, DepthDiffEvent):
            self.stats.depth_diffs += 1
        return True

    def _in_sequence(self, kind: str, symbol: str, tid: int) -> bool:
        key = (kind, symbol)
        first_here = key not in self._seen_on_connection
        self._seen_on_connection.add(key)
        last = self._last_ids.get(key)
        if last is not None:
            if tid <= last:
                self.stats.duplicates += 1
                self._duplicates_on_connection += 1
                log.log(
                    logging.INFO if self._duplicates_on_connection == 1 else logging.DEBUG,
                    "%s %s id %d is not above the last one yielded (%d): duplicate dropped",
                    symbol,
                    kind,
                    tid,
                    last,
                )
                return False
            if tid > last + 1:
                missing = tid - last - 1
                self.stats.trade_gaps += 1
                self.stats.missing_trades += missing
                after = " right after a reconnect" if first_here and self._connections > 1 else ""
                log.warning("%s %s id gap%s: %d -> %d, %d missing", symbol, kind, after, last, tid, missing)
        self._last_ids[key] = tid
        return True


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
