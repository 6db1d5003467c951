"""What each agent does with one event: decode and validate it (dead-lettering what is bad), apply it to
its book and tables, then publish. The wiring (which topic, which table) is in :mod:`rtqis.agents.app`.

Every table write of an event happens before its first await, so a stop or crash never leaves an event
half applied; what must reach a topic is in an outbox in the same state (:mod:`rtqis.agents.outbox`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rtqis.agents.books import LOCAL_LEG, PairBook, StateTable, SymbolBook
from rtqis.agents.outbox import Output
from rtqis.agents.outputs import Outputs
from rtqis.errors import DecodeError
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame, invalid_rows_reason, validate_book_frame, validate_trade_frame
from rtqis.topics import BOOK, LEGS, TICKER, TRADES, TopicSpec

__all__ = ["BookHandler", "LegsHandler", "TradesHandler"]


async def valid_frame(
    outputs: Outputs,
    event: Any,
    spec: TopicSpec,
    validate: Callable[[Frame], Any],
    stage: str,
    screen: Callable[[Frame], list[tuple[int, str]]] | None = None,
) -> Frame | None:
    """The event's tick frame without its invalid rows (dead-lettered with the reasons, in one dead
    letter); None if nothing valid is left. ``screen`` (the stateful bounds of the symbol's book,
    :meth:`SymbolBook.screen`) sees the rows that keep the row rules, before anything is applied."""
    try:
        frame = decode(event.value, event.headers, spec.value_schema)
        if not isinstance(frame, Frame):
            raise DecodeError(f"expected a {spec.value_schema}, got {type(frame).__name__}")
    except DecodeError as e:
        await outputs.dead_letter(event, str(e), event.value or b"", stage)
        return None
    good, bad = validate(frame)
    if bad:
        frame = frame.take(good)
    if screen is not None and len(frame):
        refused = screen(frame)
        if refused:
            kept = np.flatnonzero(good) if bad else np.arange(len(good))  # row of frame -> row of the message
            bad = sorted([*bad, *((int(kept[i]), r) for i, r in refused)])
            keep = np.ones(len(frame), dtype=bool)
            keep[[i for i, _ in refused]] = False
            frame = frame.take(keep)
    if bad:
        await outputs.dead_letter(event, invalid_rows_reason(bad), event.value, stage)
    return frame if len(frame) else None


class _TickHandler:
    """Shared by the tick agents: their leg samples go to the co-located pairs (one partition), whose
    state lives in the tick agent's own table so that one event's writes stay in one changelog
    partition, in order."""

    stage = "worker.ticks"  # the dead letters' stage

    def __init__(self, outputs: Outputs, symbols: SymbolBook, table: StateTable, pairs: PairBook) -> None:
        self.outputs = outputs
        self.symbols = symbols
        self.table = table
        self.pairs = pairs

    def forget(self) -> None:
        """Start the next event from the tables, as a restarted worker (after a failed event)."""
        self.symbols.forget()
        self.pairs.forget()

    def apply_local_legs(self, out: list[Output]) -> list[tuple[str, list[Output]]]:
        """Leg samples of a frame applied to their (co-located) pairs: (pair, outputs to send), in order."""
        return [
            (o.row["pair"], self.pairs.apply(m.LegSamples(**o.row), self.table)) for o in out if o.kind == LOCAL_LEG
        ]

    def send(self, sym: str, out: list[Output], pair_out: list[tuple[str, list[Output]]]) -> None:
        self.outputs.send(self.symbols.outbox, out, sym)
        for pair, rows in pair_out:
            self.outputs.send(self.pairs.outbox, rows, pair)


class TradesHandler(_TickHandler):
    """A trade frame -> ``candles`` table (closed candles, corrections, live ones <= 4/s, leg samples)
    and ``last_trade`` table (last trade and counts per symbol) -> their topics. Idempotent: trade ids
    already applied are skipped, so a frame redelivered after a crash changes nothing."""

    stage = "worker.trades"

    def __init__(
        self, outputs: Outputs, symbols: SymbolBook, candles: StateTable, last_trade: StateTable, pairs: PairBook
    ) -> None:
        super().__init__(outputs, symbols, candles, pairs)
        self.last_trade = last_trade

    def _screen_trades(self, frame: Frame) -> list[tuple[int, str]]:
        c, sym = frame.cols, frame.symbol
        stored = self.table[sym] if sym in self.symbols.symbols else {}  # never a table key for an unknown one
        return self.symbols.screen(sym, stored, c["trade_time"], c["trade_id"])

    async def __call__(self, event: Any) -> None:
        frame = await valid_frame(self.outputs, event, TRADES, validate_trade_frame, self.stage, self._screen_trades)
        if frame is None:
            return
        sym = frame.symbol
        c = frame.cols
        out, new_state = self.symbols.update(sym, self.table[sym], c, (c["trade_time"], c["price"], c["trade_id"]))
        # the pairs' writes go before the symbol's: a crash between them redelivers the frame, and the
        # pair aligner skips the samples it already has
        pair_out = self.apply_local_legs(out)
        if new_state is not None:
            self.table[sym] = new_state
        state = self.last_trade[sym]
        ids = c["trade_id"]
        assert ids is not None
        fresh = ids > state.get("trade_id", -1)
        n = int(fresh.sum())
        if n == 0:
            self.send(sym, out, pair_out)
            return
        i = int(np.flatnonzero(fresh)[-1])
        new = {
            "trade_id": int(ids[i]),
            "price": float(c["price"][i]),  # type: ignore[index]
            "event_time": int(c["event_time"][i]),  # type: ignore[index]
            "trades": state.get("trades", 0) + n,
            "frames": state.get("frames", 0) + 1,
        }
        self.last_trade[sym] = new
        self.send(sym, out, pair_out)
        self.outputs.publish(TICKER, m.Ticker(symbol=sym, **new), sym)


class BookHandler(_TickHandler):
    """A best bid/ask frame -> mid-price leg samples for the pairs (``RTQIS_PAIR_PRICE=mid``), with the bid
    and ask of each sampled update (the pairs' round-trip cost), state in the ``book_legs`` table."""

    stage = "worker.book"

    def _screen_book(self, frame: Frame) -> list[tuple[int, str]]:
        c = frame.cols
        t = c["event_time"] if c.get("event_time") is not None else c["recv_time"]
        stored = self.table[frame.symbol] if frame.symbol in self.symbols.symbols else {}
        return self.symbols.screen(frame.symbol, stored, t, None)

    async def __call__(self, event: Any) -> None:
        frame = await valid_frame(self.outputs, event, BOOK, validate_book_frame, self.stage, self._screen_book)
        if frame is None:
            return
        c = frame.cols
        t = c["event_time"] if c.get("event_time") is not None else c["recv_time"]  # spot: no event time
        mid = (c["bid_price"] + c["ask_price"]) / 2.0  # type: ignore[operator]
        out, new_state = self.symbols.update(
            frame.symbol, self.table[frame.symbol], c, (t, mid, c["update_id"]), (c["bid_price"], c["ask_price"])
        )
        pair_out = self.apply_local_legs(out)
        if new_state is not None:
            self.table[frame.symbol] = new_state
        self.send(frame.symbol, out, pair_out)


class LegsHandler:
    """A message of leg samples (``pairs.legs``, keyed by pair) -> the pair's state in ``pair_state`` ->
    ``analytics.pair``, ``alerts``, ``analytics.adf``. Messages that do not decode, or name a pair that
    is not configured, are dead-lettered."""

    stage = "worker.pairs"

    def __init__(self, outputs: Outputs, pairs: PairBook, table: StateTable) -> None:
        self.outputs = outputs
        self.pairs = pairs
        self.table = table

    def forget(self) -> None:
        """Start the next event from the table, as a restarted worker (after a failed event)."""
        self.pairs.forget()

    async def __call__(self, event: Any) -> None:
        try:
            msg = decode(event.value, event.headers, LEGS.value_schema)
            if not isinstance(msg, m.LegSamples):
                raise DecodeError(f"expected {LEGS.value_schema}, got {type(msg).__name__}")
            if msg.pair not in self.pairs.pairs:
                raise DecodeError(f"unknown pair {msg.pair!r} (configured: {', '.join(self.pairs.pairs)})")
        except DecodeError as e:
            await self.outputs.dead_letter(event, str(e), event.value or b"", self.stage)
            return
        out = self.pairs.apply(msg, self.table)  # every table write before the first await
        self.outputs.send(self.pairs.outbox, out, msg.pair)
