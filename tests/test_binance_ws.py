"""BinanceStream against a real local WebSocket server replaying recorded Binance messages.

The frames are the first 2,000 lines of the spot BTCUSDT and ETHUSDT captures of 2024-08-08 (merged by
receive time), served by :class:`binance_replay_server.ReplayServer`. Each test runs its own event loop
with ``asyncio.run``; timeouts only guard against hangs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
import pytest
from binance_replay_server import Plan, ReplayServer, free_port, load_recorded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtqis.errors import ConfigError
from rtqis.producers.binance_format import (
    BadMessage,
    BookEvent,
    ControlEvent,
    DepthDiffEvent,
    TradeEvent,
    parse_ws_message,
)
from rtqis.producers.binance_ws import BadFrame, BinanceStream, StreamItem
from tests.conftest import BINANCE_DATA

RAW = BINANCE_DATA / "streams_raw"
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
SYMBOL_SET = set(SYMBOLS)
T = TypeVar("T")


@functools.cache
def recorded() -> tuple[str, ...]:
    lines = load_recorded([RAW / "spot_btcusdt_20240808.gz", RAW / "spot_ethusdt_20240808.gz"], limit=2000)
    return tuple(r.text for r in lines)


class Clock:
    """A ms clock that moves by 1 at every call, so each frame gets its own receive time."""

    def __init__(self, start: int = 1_723_161_254_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def make_stream(url: str, **kw: Any) -> BinanceStream:
    opts: dict[str, Any] = {
        "idle_timeout_s": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "open_timeout_s": 2.0,
        "clock_ms": Clock(),
        "rng": random.Random(7),
    }
    opts.update(kw)
    return BinanceStream(SYMBOLS, base_url=url, **opts)


def stream_of(frame: str | bytes) -> str | None:
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return obj.get("stream") if isinstance(obj, dict) else None


def strip(item: StreamItem) -> StreamItem:
    """The item with its receive time set to 0 (receive times are checked separately)."""
    if isinstance(item, TradeEvent):
        return TradeEvent(item.trade.model_copy(update={"recv_time": 0}))
    if isinstance(item, BookEvent):
        return BookEvent(item.book.model_copy(update={"recv_time": 0}))
    if isinstance(item, DepthDiffEvent):
        return dataclasses.replace(item, recv_time=0)
    if isinstance(item, BadFrame):
        return dataclasses.replace(item, recv_time_ms=0)
    return item


def recv_time(item: StreamItem) -> int:
    if isinstance(item, TradeEvent):
        return item.trade.recv_time
    if isinstance(item, BookEvent):
        return item.book.recv_time
    if isinstance(item, DepthDiffEvent):
        return item.recv_time
    assert isinstance(item, BadFrame)
    return item.recv_time_ms


def expected(frames: Sequence[str | bytes], sent: Sequence[int]) -> list[StreamItem]:
    """What the client should yield for these frames sent in this order (receive times 0).

    Reference model: parse every frame; control messages are not yielded; a trade whose id is not above
    the last one of its symbol is a duplicate and dropped.
    """
    out: list[StreamItem] = []
    last: dict[str, int] = {}
    for i in sent:
        f = frames[i]
        raw = f.encode() if isinstance(f, str) else f
        try:
            ev = parse_ws_message(raw, 0, SYMBOL_SET)
        except BadMessage as e:
            out.append(BadFrame(raw, e.reason, 0))
            continue
        if isinstance(ev, ControlEvent):
            continue
        if isinstance(ev, TradeEvent):
            t = ev.trade
            if t.symbol in last and t.trade_id <= last[t.symbol]:
                continue
            last[t.symbol] = t.trade_id
        out.append(ev)
    return out


def until_all_sent(server: ReplayServer, also: Callable[[], bool] = lambda: True) -> Callable[[list[StreamItem]], bool]:
    """Stop condition: the server sent all its frames and the client yielded everything expected."""
    need: list[int] = []

    def until(items: list[StreamItem]) -> bool:
        if not server.exhausted.is_set():
            return False
        if not need:
            need.append(len(expected(server.frames, server.sent)))
        return len(items) >= need[0] and also()

    return until


async def consume(
    stream: BinanceStream,
    stop: asyncio.Event,
    until: Callable[[list[StreamItem]], bool],
    items: list[StreamItem] | None = None,
    timeout_s: float = 10.0,
) -> list[StreamItem]:
    """Iterate until ``until(items)`` holds, then set ``stop`` and let the iterator end by itself.

    ``until`` is checked after every item and every 10 ms (the last item may come before the server
    has told us that it was the last), so ``stop`` is often set while the client waits for a frame.
    """
    got: list[StreamItem] = [] if items is None else items

    async def read() -> None:
        async with aclosing(stream.events(stop)) as it:
            async for item in it:
                got.append(item)
                if until(got):
                    stop.set()

    async def watch() -> None:
        while not stop.is_set():
            if until(got):
                stop.set()
            await asyncio.sleep(0.01)

    async def both() -> None:
        watcher = asyncio.create_task(watch())
        try:
            await read()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    try:
        await asyncio.wait_for(both(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s with {len(got)} items; {stream.stats}") from None
    return got


async def wait_for_condition(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def trade_ids(items: Sequence[StreamItem], symbol: str) -> list[int]:
    return [x.trade.trade_id for x in items if isinstance(x, TradeEvent) and x.trade.symbol == symbol]


def is_trade_frame(f: str | bytes) -> bool:
    s = stream_of(f)
    return s is not None and s.endswith("@trade")


# --------------------------------------------------------------------------------------------------
# Configuration


def test_streams_and_config() -> None:
    s = BinanceStream(["BTCUSDT", "ethusdt"])
    assert s.streams() == ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@trade", "ethusdt@bookTicker"]
    assert s.url == "wss://stream.binance.com:9443/stream"
    s = BinanceStream(["BTCUSDT"], trades=False, book_ticker=False, agg_trades=True, depth=True)
    assert s.streams() == ["btcusdt@aggTrade", "btcusdt@depth@100ms"]
    assert BinanceStream(["BTCUSDT"], depth=True, book_ticker=False, depth_speed="").streams() == [
        "btcusdt@trade",
        "btcusdt@depth",
    ]
    bad_options: list[dict[str, Any]] = [
        {"symbols": []},
        {"symbols": ["BTC USDT"]},
        {"trades": False, "book_ticker": False},
        {"depth_speed": "fast"},
        {"idle_timeout_s": 0},
        {"backoff_max_s": 0.1},
        {"base_url": "http://example.com"},
        {"queue_size": 0},
    ]
    for bad in bad_options:
        kw: dict[str, Any] = {"symbols": ["BTCUSDT"], **bad}
        with pytest.raises(ConfigError):
            BinanceStream(**kw)


def test_backoff_is_full_jitter_exponential() -> None:
    s = BinanceStream(["BTCUSDT"], backoff_initial_s=0.5, backoff_max_s=60.0, rng=random.Random(1))
    for attempt in range(12):
        cap = min(60.0, 0.5 * 2**attempt)
        delays = [s.backoff_delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap  # uniform over the whole range, not a fixed fraction of it
    assert 0.0 <= s.backoff_delay(10_000) <= 60.0  # no overflow for long outages


# --------------------------------------------------------------------------------------------------
# 1. Normal flow


def test_normal_flow_yields_every_recorded_trade_and_book_once_in_order(caplog: pytest.LogCaptureFixture) -> None:
    frames = recorded()
    caplog.set_level(logging.INFO, logger="rtqis.producers.binance_ws")

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem], int | None]:
        async with ReplayServer(frames) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0)
            got = await consume(stream, asyncio.Event(), until_all_sent(server))
            conn = server.connections[0]
            await asyncio.wait_for(conn.wait_closed(), 5)  # the client closed the socket on stop
            return server, stream, got, conn.close_code

    server, stream, got, close_code = run(main())
    assert close_code == 1000
    assert server.paths == ["/stream"]
    assert server.requests == [
        {
            "method": "SUBSCRIBE",
            "params": ["btcusdt@trade", "btcusdt@bookTicker", "ethusdt@trade", "ethusdt@bookTicker"],
            "id": 1,
        }
    ]
    # the server sends the subscribed streams, and the two REST depth snapshots of the capture
    wanted = [i for i, f in enumerate(frames) if stream_of(f) in (None, *server.requests[0]["params"])]
    assert server.sent == wanted
    snapshots = [i for i in wanted if stream_of(frames[i]) is None]
    assert len(snapshots) == 2
    event_idx = [i for i in wanted if i not in snapshots]
    assert [strip(x) for x in got] == expected(frames, wanted)
    assert len(got) == len(event_idx)
    for i, x in zip(event_idx, got, strict=True):
        assert parse_ws_message(frames[i], recv_time(x), SYMBOL_SET) == x
    times = [recv_time(x) for x in got]
    assert times == sorted(set(times))  # stamped by clock_ms() as each frame arrived
    n_trades = sum(is_trade_frame(frames[i]) for i in event_idx)
    st_ = stream.stats
    assert (st_.trades, st_.books) == (n_trades, len(event_idx) - n_trades)
    assert n_trades > 400 and st_.books > 2000
    assert (st_.bad, st_.reconnects, st_.trade_gaps, st_.missing_trades, st_.duplicates) == (0, 0, 0, 0, 0)
    # the {"result": null, "id": 1} reply (and the snapshots) are handled and logged, not yielded
    assert st_.controls == 1 + len(snapshots)
    assert "subscribed to 4 streams (request id 1)" in caplog.text
    assert st_.messages == len(wanted) + 1
    assert st_.last_message_ms is not None and st_.last_message_ms >= times[-1]
    for sym in SYMBOLS:
        ids = trade_ids(got, sym)
        assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_depth_and_stop_while_waiting() -> None:
    """Depth diffs pass through; stop ends the iterator while it waits on a silent server."""
    frames = recorded()[:400]

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames) as server:
            stream = make_stream(server.url, depth=True, idle_timeout_s=60.0)
            # stop is set by the watcher while the client waits for a frame that will not come
            got = await asyncio.wait_for(consume(stream, asyncio.Event(), until_all_sent(server)), 5)
            return server, stream, got

    server, stream, got = run(main())
    assert server.sent == list(range(len(frames)))  # all of trade, bookTicker and depth subscribed
    assert server.requests[0]["params"] == [
        "btcusdt@trade",
        "btcusdt@bookTicker",
        "btcusdt@depth@100ms",
        "ethusdt@trade",
        "ethusdt@bookTicker",
        "ethusdt@depth@100ms",
    ]
    assert [strip(x) for x in got] == expected(frames, server.sent)
    assert stream.stats.depth_diffs == sum(isinstance(x, DepthDiffEvent) for x in got) > 10


# --------------------------------------------------------------------------------------------------
# 2. Pings


def test_server_ping_gets_a_pong_while_the_consumer_is_busy() -> None:
    frames = recorded()[:50]

    async def main() -> float:
        async with ReplayServer(frames) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0)
            stop = asyncio.Event()
            async with aclosing(stream.events(stop)) as it:
                await anext(it)  # the consumer now holds the iterator suspended at a yield
                conn = await server.wait_connections(1)
                pong = await conn.ping(b"binance ping payload")
                latency = await asyncio.wait_for(pong, 5)
                stop.set()
                async for _ in it:
                    pass
            return latency

    assert run(main()) >= 0.0


# --------------------------------------------------------------------------------------------------
# 3. Server closes mid-stream; duplicates and gaps


def test_server_close_reconnect_resubscribe_duplicates_and_gap(caplog: pytest.LogCaptureFixture) -> None:
    frames = recorded()
    caplog.set_level(logging.INFO, logger="rtqis.producers.binance_ws")
    plans = [
        Plan(send=700, then="close", close_code=1001),  # like Binance's 24 h disconnect
        Plan(rewind=150, send=700, then="abort"),  # re-sends 150 frames (duplicates); then a dropped link
        Plan(skip=200),  # 200 frames never sent: a gap
    ]

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames, plans=plans) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0)
            got = await consume(stream, asyncio.Event(), until_all_sent(server))
            return server, stream, got

    server, stream, got = run(main())
    marks = server.starts
    st_ = stream.stats
    assert st_.reconnects == 2
    assert [r["id"] for r in server.requests] == [1, 2, 3]
    assert all(r["params"] == server.requests[0]["params"] for r in server.requests)
    assert [strip(x) for x in got] == expected(frames, server.sent)

    rewound = range(marks[1] - 150, marks[1])
    skipped = range(marks[2], marks[2] + 200)
    dup_trades = sum(is_trade_frame(frames[i]) for i in rewound)
    assert dup_trades > 0
    assert st_.duplicates == dup_trades
    gap_syms = {stream_of(frames[i]) for i in skipped if is_trade_frame(frames[i])}
    missing = sum(is_trade_frame(frames[i]) for i in skipped)
    assert missing > 0
    assert (st_.trade_gaps, st_.missing_trades) == (len(gap_syms), missing)
    assert "trade id gap right after a reconnect" in caplog.text
    assert "duplicate dropped" in caplog.text
    for sym in SYMBOLS:
        ids = trade_ids(got, sym)
        assert ids == sorted(set(ids))  # each trade once, in order


# --------------------------------------------------------------------------------------------------
# 4. Idle server


def test_idle_server_causes_reconnect() -> None:
    frames = recorded()[:1000]

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames, plans=[Plan(send=300, then="hold")]) as server:
            stream = make_stream(server.url, idle_timeout_s=0.5)
            got = await consume(stream, asyncio.Event(), until_all_sent(server))
            return server, stream, got

    server, stream, got = run(main())
    assert stream.stats.idle_timeouts >= 1
    assert stream.stats.reconnects >= 1
    assert len(server.requests) >= 2
    assert [strip(x) for x in got] == expected(frames, server.sent)
    assert (stream.stats.trade_gaps, stream.stats.duplicates) == (0, 0)


# --------------------------------------------------------------------------------------------------
# 5. Server down at start, then rejecting handshakes


def test_server_down_at_start_then_up() -> None:
    frames = recorded()[:300]

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        port = free_port()
        stream = make_stream(f"ws://127.0.0.1:{port}", backoff_initial_s=0.02, backoff_max_s=0.1)
        server = ReplayServer(frames, port=port, reject_first=2)  # then HTTP 503 twice
        stop = asyncio.Event()
        items: list[StreamItem] = []
        task = asyncio.create_task(consume(stream, stop, until_all_sent(server), items))
        try:
            await wait_for_condition(lambda: stream.stats.connect_errors >= 3, what="refused connections")
            assert not items
            await server.start()
            got = await asyncio.wait_for(task, 10)
        finally:
            stop.set()
            await server.stop()
        return server, stream, got

    server, stream, got = run(main())
    assert server.handshakes >= 3
    assert stream.stats.connect_errors >= 5  # >= 3 refused + 2 rejected handshakes
    assert stream.stats.reconnects == 0  # failed attempts are not reconnects
    assert len(server.requests) == 1
    assert [strip(x) for x in got] == expected(frames, server.sent)


def test_stop_during_backoff_is_prompt() -> None:
    async def main() -> BinanceStream:
        stream = make_stream(f"ws://127.0.0.1:{free_port()}", backoff_initial_s=30.0, backoff_max_s=60.0)
        stop = asyncio.Event()
        task = asyncio.create_task(consume(stream, stop, lambda _: False))
        await wait_for_condition(lambda: stream.stats.connect_errors >= 1)
        stop.set()
        assert await asyncio.wait_for(task, 5) == []
        return stream

    assert run(main()).stats.connect_errors >= 1


def test_a_bug_in_the_reader_is_raised_not_swallowed() -> None:
    def broken_clock() -> int:
        raise RuntimeError("clock is broken")

    async def main() -> None:
        async with ReplayServer(recorded()[:10]) as server:
            stream = make_stream(server.url, clock_ms=broken_clock)
            async with aclosing(stream.events(asyncio.Event())) as it:
                await asyncio.wait_for(anext(it), 5)

    with pytest.raises(RuntimeError, match="clock is broken"):
        run(main())


# --------------------------------------------------------------------------------------------------
# 6. Bad frames


def _trade(tid: int, **over: Any) -> str:
    d = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": tid, "p": "61837.63000000", "q": "0.02000000"}
    d |= {"T": 1723161255342, "m": True, "M": True}
    d |= over
    d = {k: v for k, v in d.items() if v is not None}
    return orjson.dumps({"stream": "btcusdt@trade", "data": d}).decode()


def test_bad_frames_are_yielded_counted_and_the_stream_goes_on() -> None:
    good = list(recorded()[:600])
    first_trade = next(orjson.loads(f)["data"]["t"] for f in good if stream_of(f) == "btcusdt@trade")
    bad: list[tuple[str | bytes, str]] = [
        ("this is not json{", "not valid JSON"),
        (_trade(first_trade + 10_000, p="-1"), "price <= 0"),
        (_trade(first_trade + 10_000, s="XRPUSDT"), "unknown symbol"),
        (b"\x00\xff\x81garbage\xfe", "not valid JSON"),  # a binary frame
        (_trade(first_trade + 10_000, q=None), "missing field quantity"),
        (_trade(first_trade + 10_000, t="123"), "trade id ('t') must be an integer"),
        ('{"stream":"btcusdt@trade","data":[1,2]}', "is not an object"),
        ('{"stream":"btcusdt@trade","data":{"e":"kline","s":"BTCUSDT"}}', "not supported"),
    ]
    frames: list[str | bytes] = []
    for k, f in enumerate(good):
        frames.append(f)
        if k % 70 == 69 and bad:
            frames.append(bad[0][0])
            bad.append(bad.pop(0))  # keep the order; every bad frame is used once
    reasons = [r for _, r in bad]
    assert len(frames) == len(good) + len(bad)

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0)
            got = await consume(stream, asyncio.Event(), until_all_sent(server))
            return server, stream, got

    server, stream, got = run(main())
    assert [strip(x) for x in got] == expected(frames, server.sent)
    bad_got = [x for x in got if isinstance(x, BadFrame)]
    assert len(bad_got) == stream.stats.bad == len(bad)
    for frame, reason in zip(bad_got, reasons, strict=True):
        assert reason in frame.reason
    assert bad_got[3].raw == b"\x00\xff\x81garbage\xfe"
    assert stream.stats.reconnects == 0  # bad frames never cost the connection
    assert stream.stats.trade_gaps == 0  # the bad trades with far-away ids did not move the sequence
    assert isinstance(got[-1], TradeEvent | BookEvent)  # good frames keep coming after the bad ones


# --------------------------------------------------------------------------------------------------
# 7. Proactive reconnect


def test_proactive_reconnect_when_the_connection_is_old() -> None:
    frames = recorded()[:500]

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames, interval_s=0.003) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0, max_connection_age_s=0.3)
            got = await consume(stream, asyncio.Event(), until_all_sent(server))
            return server, stream, got

    server, stream, got = run(main())
    st_ = stream.stats
    assert st_.age_reconnects >= 1
    assert st_.reconnects >= st_.age_reconnects
    assert st_.idle_timeouts == 0
    assert len(server.requests) == st_.reconnects + 1  # subscribed again on every connection
    # the old connection is read until the server's close frame: nothing in flight is lost
    assert [strip(x) for x in got] == expected(frames, server.sent)
    assert (st_.trade_gaps, st_.duplicates) == (0, 0)


def test_server_shutdown_event_reconnects_at_once() -> None:
    frames: list[str | bytes] = list(recorded()[:200])
    frames.insert(100, '{"e":"serverShutdown","E":1723161255343}')

    async def main() -> tuple[ReplayServer, BinanceStream, list[StreamItem]]:
        async with ReplayServer(frames, interval_s=0.002) as server:
            stream = make_stream(server.url, idle_timeout_s=5.0, backoff_initial_s=30.0, backoff_max_s=60.0)
            got = await consume(stream, asyncio.Event(), until_all_sent(server, lambda: len(server.requests) >= 2))
            return server, stream, got

    server, stream, got = run(main())
    assert stream.stats.reconnects == 1  # without the 30 s backoff, or the test would time out
    n_snapshots = sum(stream_of(frames[i]) is None for i in server.sent) - 1
    assert stream.stats.controls == 3 + n_snapshots  # two subscription replies and the shutdown notice
    assert [strip(x) for x in got] == expected(frames, server.sent)


# --------------------------------------------------------------------------------------------------
# 8. Random frames never crash the client

_json_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_trade_like = st.fixed_dictionaries(
    {"stream": st.sampled_from(["btcusdt@trade", "ethusdt@bookTicker", "x"])},
) | st.fixed_dictionaries(
    {
        "stream": st.just("btcusdt@trade"),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "e": st.sampled_from(["trade", "aggTrade", "depthUpdate", "bookTicker", "kline"]) | _json_scalar,
                "s": st.sampled_from(["BTCUSDT", "ethusdt", "XRPUSDT", ""]) | _json_scalar,
                "t": st.integers(min_value=-5, max_value=2**70) | _json_scalar,
                "p": st.sampled_from(["1.5", "0", "-1", "nan", "1e400"]) | _json_scalar,
                "q": st.sampled_from(["0.1", "0"]) | _json_scalar,
                "T": st.integers(min_value=-1, max_value=2**64) | _json_scalar,
                "E": st.integers(min_value=-1, max_value=2**64) | _json_scalar,
                "m": _json_scalar,
                "u": _json_scalar,
                "b": _json_scalar | st.lists(st.lists(_json_scalar, max_size=3), max_size=3),
                "a": _json_scalar | st.lists(st.lists(_json_scalar, max_size=3), max_size=3),
                "result": _json_scalar,
                "id": _json_scalar,
            },
        ),
    }
)
_frames = (
    st.binary(max_size=300)
    | st.text(st.characters(codec="utf-8"), max_size=300)
    | _trade_like.map(json.dumps)  # stdlib: ints beyond 64 bits, NaN
)


def test_random_frames_never_crash_the_client() -> None:
    """One server and one client for all examples; after each random frame the server sends a marker
    bookTicker, and everything the client yields before the marker must be one event or BadFrame."""

    async def main() -> BinanceStream:
        loop = asyncio.get_running_loop()
        async with ReplayServer() as server:
            stream = make_stream(server.url, idle_timeout_s=30.0)
            stop = asyncio.Event()
            items: asyncio.Queue[StreamItem] = asyncio.Queue()

            async def pump() -> None:
                async with aclosing(stream.events(stop)) as it:
                    async for item in it:
                        items.put_nowait(item)

            task = asyncio.create_task(pump())
            await server.wait_connections(1)

            async def exchange(frame: str | bytes, marker: int) -> list[StreamItem]:
                book = {"u": marker, "s": "BTCUSDT", "b": "1.0", "B": "1.0", "a": "2.0", "A": "1.0"}
                await server.broadcast(frame)
                await server.broadcast(orjson.dumps({"stream": "btcusdt@bookTicker", "data": book}))
                out: list[StreamItem] = []
                while True:
                    item = await asyncio.wait_for(items.get(), 5)
                    if isinstance(item, BookEvent) and item.book.update_id == marker and item.book.ask_price == 2.0:
                        return out
                    out.append(item)

            counter = iter(range(10**12, 2 * 10**12))
            examples: list[int] = []

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(frame=_frames)
            def check(frame: str | bytes) -> None:
                got = asyncio.run_coroutine_threadsafe(exchange(frame, next(counter)), loop).result(10)
                examples.append(1)
                raw = frame.encode() if isinstance(frame, str) else frame
                try:
                    ev = parse_ws_message(raw, 0, SYMBOL_SET)
                except BadMessage as e:
                    assert [strip(x) for x in got] == [BadFrame(raw, e.reason, 0)]
                    return
                if isinstance(ev, ControlEvent):
                    assert got == []
                else:
                    assert len(got) <= 1  # a trade may be dropped as a duplicate
                    assert all(not isinstance(x, BadFrame) for x in got)

            try:
                await asyncio.to_thread(check)
            finally:
                stop.set()
                await asyncio.wait_for(task, 5)
            assert len(examples) >= 20
            return stream

    stream = run(main())
    assert stream.stats.reconnects == 0  # no random frame cost the connection
