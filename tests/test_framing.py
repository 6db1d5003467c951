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
