"""The agents' outboxes: what must be published stays in the table state until this process has seen
its delivery, is sent once, and leaves the books' memory when it leaves the outbox (no growth)."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np

from rtqis.agents.books import PairBook, SymbolBook
from rtqis.agents.outbox import Outbox, Output
from rtqis.schemas import models as m
from rtqis.settings import Settings

PAIRS = ["ETHUSDT/BTCUSDT", "SOLUSDT/BTCUSDT"]


def test_outbox_keeps_an_entry_until_its_delivery_and_forgets_it_when_the_state_is_written() -> None:
    box: Outbox[dict[str, Any]] = Outbox(lambda e: f"{e['sym']}|{e['t']}")
    draft = box.restore([])
    keys = [box.add(draft, {"sym": sym, "t": 1}) for sym in ("A", "B")]  # same time, two identities
    assert keys == ["A|1", "B|1"] and draft.entries == [{"sym": "A", "t": 1}, {"sym": "B", "t": 1}]
    box.commit(draft)
    stored = draft.entries
    box.on_delivered("A|1")
    again = box.restore(stored)
    assert again.entries == [{"sym": "B", "t": 1}] and again.gone == ["A|1"] and again.changed
    assert again.resend == []  # this process sent B already: not twice
    assert box.sent == {"A|1", "B|1"}  # nothing forgotten before the state without A is written
    box.commit(again)
    assert box.sent == {"B|1"} and box.delivered == set()


def test_outbox_replays_what_a_new_process_never_sent() -> None:
    stored = [{"sym": "A", "t": 1}, {"sym": "A", "t": 2}]  # restored from the changelog
    box: Outbox[dict[str, Any]] = Outbox(lambda e: f"{e['sym']}|{e['t']}")
    draft = box.restore(stored)
    assert draft.resend == stored and draft.entries == stored and not draft.changed
    assert box.restore(stored).resend == []  # once


def test_outbox_sends_again_what_failed_to_be_delivered() -> None:
    """A delivery that failed (the broker away past the producer's message timeout) is sent again at the
    next event of its state, as a restarted worker would send it; before, it waited for a restart."""
    box: Outbox[dict[str, Any]] = Outbox(lambda e: f"{e['sym']}|{e['t']}")
    draft = box.restore([])
    box.add(draft, {"sym": "A", "t": 1})
    box.add(draft, {"sym": "A", "t": 2})
    box.commit(draft)
    box.on_failed("A|1")
    again = box.restore(draft.entries)
    assert again.resend == [{"sym": "A", "t": 1}] and again.entries == draft.entries  # A|2 is in flight
    assert box.restore(again.entries).resend == []  # once per failure


def test_outbox_settles_reports_that_came_during_the_event_before_the_state_is_written() -> None:
    """Reports served just before the write (``serve``, the producer's poll) take their entries out of
    the state being written; without ``serve`` nothing changes until the next restore."""
    reports: list[str] = []

    def serve() -> None:  # the producer's poll: runs the delivery callbacks
        for key in reports:
            box.on_delivered(key)

    box: Outbox[dict[str, Any]] = Outbox(lambda e: f"{e['sym']}|{e['t']}", serve)
    draft = box.restore([])
    box.add(draft, {"sym": "A", "t": 1})
    box.add(draft, {"sym": "A", "t": 2})
    box.commit(draft)
    again = box.restore(draft.entries)  # the next event: nothing reported yet
    assert again.entries == draft.entries and again.gone == []
    box.add(again, {"sym": "A", "t": 3})  # this event's own output
    reports.append("A|1")  # delivered while the event was applied
    box.settle(again)
    assert again.entries == [{"sym": "A", "t": 2}, {"sym": "A", "t": 3}] and again.gone == ["A|1"]
    box.commit(again)
    assert box.sent == {"A|2", "A|3"} and box.delivered == set()
    lazy: Outbox[dict[str, Any]] = Outbox(lambda e: f"{e['sym']}|{e['t']}")  # no serve: settle is a no-op
    d = lazy.restore([{"sym": "A", "t": 1}])
    lazy.on_delivered("A|1")
    lazy.settle(d)
    assert d.entries == [{"sym": "A", "t": 1}] and d.gone == []


def legs(t0: int, n: int, rng: np.random.Generator) -> list[m.LegSamples]:
    """Both legs of both pairs over the same sample times (so their outputs share times)."""
    times = [1000 * (t0 + i) for i in range(n)]
    x = 9e4 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    out = []
    for pair in PAIRS:
        y = 0.05 * x * np.exp(rng.normal(0, 1e-4, n))
        ysym, xsym = pair.split("/")
        out += [
            m.LegSamples(pair=pair, leg=leg, symbol=sym, time=times, price=p.tolist(), last_time=times)
            for leg, sym, p in (("x", xsym, x), ("y", ysym, y))
        ]
    return out


def test_pair_outbox_holds_undelivered_rows_only_and_memory_stays_flat() -> None:
    s = Settings(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], pairs=PAIRS)
    book, table = PairBook(s), defaultdict(dict)  # a Faust Table(default=dict) in memory
    rng = np.random.default_rng(5)
    published: list[str] = []
    peak = 0
    for k in range(30):  # 30 messages of 20 samples per leg
        out: list[Output] = []
        for msg in legs(20 * k + 1, 20, rng):
            out += book.apply(msg, table)
        keys = [key for _, _, key in out if key is not None]
        assert not set(keys) & set(published)  # nothing sent twice
        published += keys
        if k < 25:
            for key in keys:
                book.outbox.on_delivered(key)  # the producer's callbacks
            peak = max(peak, len(book.outbox.sent), len(book.outbox.delivered))
    assert len(published) >= 2 * 590  # a PairSignal per sample after the first, ADF results, alerts
    assert peak < 200  # bounded by one message's outputs, not by the run
    # the last 5 messages' outputs were never confirmed: they are still in the stored outboxes
    stored = {key for pair in PAIRS for _, _, key in table[pair]["outbox"]}
    assert len(stored) >= 2 * 5 * 20 and stored <= set(published[-2 * (5 * 20 + 10) :])
    assert stored.isdisjoint(book.outbox.delivered)
    # a new process restoring this state sends exactly those again, once
    fresh = PairBook(s)
    again = [key for msg in legs(601, 1, rng) for _, _, key in fresh.apply(msg, table) if key in stored]
    assert sorted(again) == sorted(stored)


def test_symbol_outbox_forgets_delivered_rows() -> None:
    s = Settings()
    book = SymbolBook(s, candles=True, sample=True)
    stored: dict[str, Any] = {"BTCUSDT": {}, "ETHUSDT": {}}
    published: set[str] = set()
    rng = np.random.default_rng(2)
    sizes = []
    tid = 0
    for k in range(200):  # 200 frames of 50 trades, 2 s of event time each: candles close, samples flow
        n = 50
        t = 1_700_000_000_000 + 2000 * k + np.sort(rng.integers(0, 2000, n))
        ids = np.arange(tid, tid + n)
        tid += n
        cols = {
            "trade_time": t,
            "price": 100 + rng.normal(0, 1, n),
            "qty": np.ones(n),
            "buyer_maker": rng.integers(0, 2, n).astype(bool),
            "trade_id": ids,
        }
        for sym in ("BTCUSDT", "ETHUSDT"):  # same times and counts: closed candles differ only by symbol
            out, new = book.update(sym, stored[sym], cols, (t, cols["price"], ids))
            if new is not None:
                stored[sym] = new
            keys = [o.key for o in out if o.key is not None]
            assert not set(keys) & published
            published.update(keys)
            if k < 190:
                for key in keys:
                    book.outbox.on_delivered(key)
        sizes.append(len(book.outbox.sent) + len(book.outbox.delivered))
    assert max(sizes[100:190]) < 40 and sum(1 for k in published if "|1m|" in k) >= 2 * 6
    for sym in ("BTCUSDT", "ETHUSDT"):  # the unconfirmed rows of the last frames, and only those
        box = [book.outbox.key(r) for r in stored[sym]["outbox"]]
        assert box and all(k.startswith(f"{sym}|") or k.startswith("leg|") for k in box)


def test_align_wait_lets_a_late_leg_catch_up() -> None:
    """One leg 150 samples ahead of the other (a replay reading one partition ahead): with the default
    RTQIS_ALIGN_WAIT_S (60 s) the pair goes on without the late leg (flagged stale_leg); with a wait
    longer than the skew it waits and every signal has both legs."""
    rng = np.random.default_rng(9)
    both = [msg for msg in legs(1, 10, rng) if msg.pair == PAIRS[0]]  # in step for 10 samples
    msgs = both + [msg for msg in legs(11, 150, rng) if msg.pair == PAIRS[0]]  # then x 150 ahead of y
    s = Settings(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"], pairs=PAIRS)
    for wait, stale_expected in ((60.0, True), (200.0, False)):
        book, table = PairBook(s.model_copy(update={"align_wait_s": wait})), defaultdict(dict)
        out = [row for msg in msgs for kind, row, _ in book.apply(msg, table) if kind == "analytics.pair"]
        stale = [r for r in out if "stale_leg" in r["flags"]]
        assert len(out) >= 159 and bool(stale) == stale_expected, (wait, len(stale))


def test_pair_state_leaves_out_what_was_delivered_while_its_event_was_applied() -> None:
    """The worker serves delivery reports just before it writes a pair state (``PairBook(serve=...)``):
    outputs of earlier events delivered meanwhile are not written again with the state. Before, reports
    were served after the event's own sends, so a replay wrote each pair state with the outputs of the
    two events before it (34 entries, 32 KB, on average)."""
    s = Settings(symbols=["BTCUSDT", "ETHUSDT"], pairs=PAIRS[:1])
    in_flight: list[str] = []

    def serve() -> None:  # the broker acknowledged everything sent before this event
        while in_flight:
            book.outbox.on_delivered(in_flight.pop())

    book, table = PairBook(s, serve=serve), defaultdict(dict)
    lazy, lazy_table = PairBook(s), defaultdict(dict)  # no serve: reports seen only at a later restore
    lazy_in_flight: deque[list[str]] = deque()
    rng = np.random.default_rng(7)
    stored_sizes, lazy_sizes = [], []
    for k in range(10):
        for msg in [msg for msg in legs(20 * k + 1, 20, rng) if msg.pair == PAIRS[0]]:
            sent = [key for _, _, key in book.apply(msg, table) if key is not None]
            in_flight.extend(sent)
            stored = [key for _, _, key in table[msg.pair]["outbox"]]
            assert stored == sent  # only this event's own outputs
            stored_sizes.append(len(stored))
            lazy_in_flight.append([key for _, _, key in lazy.apply(msg, lazy_table) if key is not None])
            lazy_sizes.append(len(lazy_table[msg.pair]["outbox"]))
            if len(lazy_in_flight) > 2:  # delivered while the next two events were applied
                for key in lazy_in_flight.popleft():
                    lazy.outbox.on_delivered(key)
    assert sum(stored_sizes) > 0 and sum(lazy_sizes) > 1.5 * sum(stored_sizes)
    assert table[PAIRS[0]]["model"] == lazy_table[PAIRS[0]]["model"]  # the same numbers
