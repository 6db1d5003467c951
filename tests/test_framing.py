"""FrameBuffer: frames cut by size and by age, one symbol and kind per frame, nothing lost."""

from __future__ import annotations

from rtqis.producers.framing import FrameBuffer
from rtqis.schemas import models as m
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME


def trade(i: int, sym: str = "BTCUSDT") -> m.Trade:
    return m.Trade(
        symbol=sym,
        trade_id=i,
        price=100.0 + i,
        qty=1.0,
        trade_time=i,
        event_time=i,
        recv_time=i + 1,
        buyer_maker=i % 2 == 0,
    )


def book(i: int, event_time: int | None = None) -> m.BookTicker:
    return m.BookTicker(
        symbol="ETHUSDT",
        update_id=i,
        bid_price=10.0,
        bid_qty=1.0,
        ask_price=10.5,
        ask_qty=2.0,
        event_time=event_time,
        recv_time=i,
    )


def test_cut_by_size_then_by_age() -> None:
    now = [0.0]
    buf = FrameBuffer(max_ticks=3, max_ms=20, clock=lambda: now[0])
    assert buf.add(trade(1)) is None and buf.add(trade(2)) is None
    full = buf.add(trade(3))
    assert full is not None and full.type is TRADE_FRAME and full.cols["trade_id"].tolist() == [1, 2, 3]  # type: ignore[union-attr]
    buf.add(trade(4))
    buf.add(trade(5, "ETHUSDT"))
    now[0] = 0.019
    assert buf.due() == []
    now[0] = 0.020
    due = buf.due()
    assert sorted((f.symbol, f.cols["trade_id"].tolist()) for f in due) == [("BTCUSDT", [4]), ("ETHUSDT", [5])]  # type: ignore[union-attr]
    assert len(buf) == 0
    assert [r.model_dump() for r in full.models()] == [trade(i).model_dump() for i in (1, 2, 3)]


def test_books_without_event_time_keep_a_null_column_and_flush_returns_the_rest() -> None:
    buf = FrameBuffer(max_ticks=10, max_ms=20, clock=lambda: 0.0)
    buf.add(book(1))
    buf.add(book(2))
    buf.add(trade(7))
    frames = {f.type.name: f for f in buf.flush()}
    assert frames[BOOK_FRAME.name].cols["event_time"] is None
    assert frames[BOOK_FRAME.name].models() == [book(1), book(2)]
    assert frames[TRADE_FRAME.name].models() == [trade(7)]
    assert len(buf) == 0 and buf.flush() == []


def test_a_tick_in_a_new_sample_period_ends_its_frame_at_once() -> None:
    """cut_ms: the first tick at/after a multiple of cut_ms (event time) is sent with its frame at once,
    for each symbol on its own; without cut_ms the same ticks wait for size or age."""
    now = [0.0]
    buf = FrameBuffer(max_ticks=100, max_ms=20, clock=lambda: now[0], cut_ms=1000)
    plain = FrameBuffer(max_ticks=100, max_ms=20, clock=lambda: now[0])
    for b in (buf, plain):
        assert b.add(trade(998)) is None and b.add(trade(999)) is None and b.add(trade(999, "ETHUSDT")) is None
    cut = buf.add(trade(1000))
    assert cut is not None and cut.symbol == "BTCUSDT" and cut.cols["trade_id"].tolist() == [998, 999, 1000]  # type: ignore[union-attr]
    assert plain.add(trade(1000)) is None
    assert buf.add(trade(1001)) is None  # a new frame, in the same period as its first tick
    eth = buf.add(trade(1500, "ETHUSDT"))
    assert eth is not None and eth.cols["trade_id"].tolist() == [999, 1500]  # type: ignore[union-attr]
    assert [f.cols["trade_id"].tolist() for f in buf.flush()] == [[1001]]  # type: ignore[union-attr]


def test_synthetic_live_feed_sends_the_crossing_tick_when_it_happens() -> None:
    """The synthetic live feed's slice (start, start + step] holding sample time b: each symbol's ticks up
    to its first tick at/after b go out at that tick's time, the rest at the end of the slice; nothing is
    sent twice or lost."""
    import numpy as np

    from rtqis.producers.feed import FeedStats, _send_crossings
    from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket

    market = SyntheticMarket(
        [SymbolSpec("BTCUSDT", 9e4), SymbolSpec("ETHUSDT", 3e3)], seed=3, trade_rate=400.0, start_ms=990
    )
    trades, books = market.advance(20)  # (990, 1010]: holds b = 1000
    sent: list[tuple[int, str, list[int]]] = []
    clock: list[int] = []

    class Producer:
        def send(self, topic: object, f: object, key: str, timestamp_ms: int) -> None:
            ids = f.cols["trade_id" if "trade_id" in f.cols else "update_id"].tolist()  # type: ignore[attr-defined]
            sent.append((clock[-1], key, ids))

        def poll(self, timeout: float = 0) -> None:
            pass

    stats = FeedStats()
    left_t, left_b = _send_crossings(
        Producer(),
        990,
        20,
        1000,
        trades,
        books,
        lambda t: clock.append(t) is not None,
        stats,
        500,  # type: ignore[arg-type]
    )
    for before, after, batches in ((trades, left_t, "trades"), (books, left_b, "books")):
        for b0, b1 in zip(before, after, strict=True):
            i = int(np.searchsorted(b0.event_time, 1000))
            assert i < len(b0.event_time), f"no {batches} tick after the boundary: pick another seed"
            head = b0.trade_id if batches == "trades" else b0.update_id
            rest = b1.trade_id if batches == "trades" else b1.update_id
            assert (int(b0.event_time[i]), b0.symbol, head[: i + 1].tolist()) in sent
            assert np.concatenate([head[: i + 1], rest]).tolist() == head.tolist()
    assert clock == sorted(clock) and all(t >= 1000 for t in clock) and stats.frames == len(sent) == 4
    # a slice without a sample time in it is left alone
    t2, b2 = market.advance(20)
    assert _send_crossings(Producer(), 1010, 20, 1000, t2, b2, lambda t: False, stats, 500) == (t2, b2)  # type: ignore[arg-type]
