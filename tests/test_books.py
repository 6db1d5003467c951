"""The agents' books without a broker: a SymbolBook closes candles and emits leg samples, a PairBook emits
signals, alerts and ADF results; both keep what must not be lost in their outbox until delivered, replay
it after a restart, and never mix two symbols or two pairs that share the same times."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from rtqis.agents.books import LOCAL_LEG, PairBook, SymbolBook, candle_output_key
from rtqis.agents.outbox import Output
from rtqis.analytics.pair_model import PairModel, PairParams
from rtqis.schemas import models as m
from rtqis.settings import Settings
from rtqis.topics import ADF, ALERTS, PAIR

T0 = 1_700_000_040_000  # a minute boundary (epoch ms)


def trades(times: list[int], prices: list[float], first_id: int) -> dict[str, Any]:
    """Trade columns as the trades agent hands them to a SymbolBook."""
    n = len(times)
    return {
        "trade_time": np.array(times, dtype=np.int64),
        "price": np.array(prices, dtype=np.float64),
        "qty": np.full(n, 2.0),
        "buyer_maker": np.zeros(n, dtype=bool),
        "trade_id": np.arange(first_id, first_id + n, dtype=np.int64),
    }


def apply(book: SymbolBook, stored: dict[str, Any], sym: str, cols: dict[str, Any]) -> list[Output]:
    """One frame through the book, the new state written back as the agent does."""
    out, new = book.update(sym, stored.get(sym, {}), cols, (cols["trade_time"], cols["price"], cols["trade_id"]))
    if new is not None:
        stored[sym] = new
    return out


def closed(out: list[Output]) -> list[Output]:
    return [o for o in out if o.kind == "1m" and o.row["closed"]]


def test_symbol_book_closes_a_candle_once_and_keeps_it_until_delivered() -> None:
    s = Settings(symbols=["BTCUSDT"], pairs=[], candle_intervals=["1m"], candle_grace_ms=0)
    book, stored = SymbolBook(s, candles=True, sample=False), {}
    first = apply(book, stored, "BTCUSDT", trades([T0 + 1_000, T0 + 30_000, T0 + 59_000], [10.0, 12.0, 11.0], 1))
    assert closed(first) == [] and all(o.key is None for o in first)  # live candles only: no outbox
    out = apply(book, stored, "BTCUSDT", trades([T0 + 60_000], [13.0], 4))  # the next minute starts
    (candle,) = closed(out)
    row = candle.row
    assert (row["open_time"], row["open"], row["high"], row["low"], row["close"]) == (T0, 10.0, 12.0, 10.0, 11.0)
    assert (row["trades"], row["volume"], row["first_trade_id"], row["last_trade_id"]) == (3, 6.0, 1, 3)
    assert candle.key == candle_output_key(row) == f"BTCUSDT|1m|{T0}|3|False"
    m.Candle(**row)  # a valid model, as published
    assert stored["BTCUSDT"]["outbox"] == [row]
    # not delivered yet: it stays in the outbox and is not sent again by this process
    out = apply(book, stored, "BTCUSDT", trades([T0 + 61_000], [13.5], 5))
    assert closed(out) == [] and stored["BTCUSDT"]["outbox"] == [row]
    # delivered: the next write drops it, and the book forgets its key
    book.outbox.on_delivered(candle.key)
    apply(book, stored, "BTCUSDT", trades([T0 + 62_000], [14.0], 6))
    assert stored["BTCUSDT"]["outbox"] == []
    assert book.outbox.sent == set() and book.outbox.delivered == set()


def test_symbol_book_replays_its_outbox_after_a_restart_and_ignores_redelivered_trades() -> None:
    s = Settings(symbols=["BTCUSDT"], pairs=[], candle_intervals=["1m"], candle_grace_ms=0)
    book, stored = SymbolBook(s, candles=True, sample=False), {}
    apply(book, stored, "BTCUSDT", trades([T0 + 1_000, T0 + 2_000], [10.0, 11.0], 1))
    (candle,) = closed(apply(book, stored, "BTCUSDT", trades([T0 + 60_000], [12.0], 3)))
    # a crash before the delivery report: a new process restores the table
    restarted = SymbolBook(s, candles=True, sample=False)
    redelivered = trades([T0 + 60_000], [12.0], 3)  # the last frame again (offsets not committed)
    out, new = restarted.update("BTCUSDT", stored["BTCUSDT"], redelivered, None)
    assert out == [Output("1m", candle.row, candle.key)]  # sent again, once; the trade itself is skipped
    assert new is None  # nothing changed: the state is not rewritten
    out, _ = restarted.update("BTCUSDT", stored["BTCUSDT"], redelivered, None)
    assert out == []  # not a second time


def test_two_symbols_with_the_same_trades_keep_separate_outboxes() -> None:
    s = Settings(symbols=["BTCUSDT", "ETHUSDT"], pairs=[], candle_intervals=["1m"], candle_grace_ms=0)
    book, stored = SymbolBook(s, candles=True, sample=False), {}
    keys: dict[str, str | None] = {}
    for sym in ("BTCUSDT", "ETHUSDT"):
        apply(book, stored, sym, trades([T0 + 1_000, T0 + 2_000], [10.0, 11.0], 1))
        (candle,) = closed(apply(book, stored, sym, trades([T0 + 60_000], [12.0], 3)))
        keys[sym] = candle.key
    assert keys["BTCUSDT"] != keys["ETHUSDT"]
    book.outbox.on_delivered(str(keys["BTCUSDT"]))  # only BTCUSDT's was delivered
    for sym in ("BTCUSDT", "ETHUSDT"):
        apply(book, stored, sym, trades([T0 + 61_000], [12.5], 4))
    assert stored["BTCUSDT"]["outbox"] == []
    assert [candle_output_key(r) for r in stored["ETHUSDT"]["outbox"]] == [keys["ETHUSDT"]]


def test_symbol_book_leg_samples_go_to_the_outbox_or_to_the_local_pairs() -> None:
    """Leg samples: published to pairs.legs through the outbox, or (co-located) handed to the same agent."""
    s = Settings(symbols=["BTCUSDT", "ETHUSDT"], pairs=["ETHUSDT/BTCUSDT"], candle_intervals=["1m"])
    cols = trades([T0 + 100, T0 + 1_100, T0 + 2_100, T0 + 3_100], [10.0, 11.0, 12.0, 13.0], 1)
    for colocated in (False, True):
        book, stored = SymbolBook(s, candles=False, sample=True, colocated=colocated), {}
        (leg,) = apply(book, stored, "BTCUSDT", cols)
        assert leg.row["pair"] == "ETHUSDT/BTCUSDT" and leg.row["leg"] == "x" and leg.row["symbol"] == "BTCUSDT"
        assert leg.row["time"] == [T0 + 1_000, T0 + 2_000, T0 + 3_000]
        m.LegSamples(**leg.row)
        if colocated:
            assert leg.kind == LOCAL_LEG and leg.key is None and stored["BTCUSDT"]["outbox"] == []
        else:
            assert leg.kind == "leg" and leg.key == f"leg|ETHUSDT/BTCUSDT|x|{T0 + 1_000}|{T0 + 3_000}"
            assert stored["BTCUSDT"]["outbox"] == [leg.row]


PAIRS = ["ETHUSDT/BTCUSDT", "SOLUSDT/BTCUSDT"]


def leg_messages(pair: str, t0: int, n: int, seed: int) -> list[m.LegSamples]:
    """Both legs of ``pair`` over the same sample times, y following x."""
    rng = np.random.default_rng(seed)
    times = [1000 * (t0 + i) for i in range(n)]
    x = 9e4 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    y = 0.05 * x * np.exp(rng.normal(0, 1e-3, n))
    ysym, xsym = pair.split("/")
    return [
        m.LegSamples(pair=pair, leg=leg, symbol=sym, time=times, price=p.tolist(), last_time=times)
        for leg, sym, p in (("x", xsym, x), ("y", ysym, y))
    ]


def pair_settings() -> Settings:
    return Settings(
        symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        pairs=PAIRS,
        ols_window=30,
        zscore_window=30,
        huber_window=60,
        huber_refit_every=10,
        adf_window=60,
        adf_every_s=30.0,
    )


def test_pair_book_emits_signals_alerts_and_adf_results_through_the_outbox() -> None:
    book, table = PairBook(pair_settings()), defaultdict(dict)
    out = [o for msg in leg_messages(PAIRS[0], 1, 200, seed=3) for o in book.apply(msg, table)]
    kinds = {o.kind for o in out}
    assert kinds <= {PAIR.name, ALERTS.name, ADF.name} and {PAIR.name, ADF.name} <= kinds
    signals = [o.row for o in out if o.kind == PAIR.name]
    assert [r["time"] for r in signals] == [1000 * (1 + i) for i in range(len(signals))] and len(signals) >= 199
    for o in out:
        model = {PAIR.name: m.PairSignal, ALERTS.name: m.Alert, ADF.name: m.AdfResult}[o.kind]
        model(**o.row)  # valid models, as published
        assert o.key == f"{o.kind}|{PAIRS[0]}|{o.row['time']}|{o.row.get('kind', '')}"
    assert len({o.key for o in out}) == len(out)  # every output its own identity
    assert [key for _, _, key in table[PAIRS[0]]["outbox"]] == [o.key for o in out]  # none delivered yet
    # delivered: the next message's write drops them, and the book forgets their keys
    for o in out:
        book.outbox.on_delivered(str(o.key))
    more = [o for msg in leg_messages(PAIRS[0], 201, 1, seed=4) for o in book.apply(msg, table)]
    assert [key for _, _, key in table[PAIRS[0]]["outbox"]] == [o.key for o in more]
    assert book.outbox.delivered == set() and book.outbox.sent == {o.key for o in more}


def test_pair_book_replays_after_a_restart_and_ignores_a_redelivered_message() -> None:
    book, table = PairBook(pair_settings()), defaultdict(dict)
    msgs = leg_messages(PAIRS[0], 1, 50, seed=5)
    out = [o for msg in msgs for o in book.apply(msg, table)]
    assert out and book.apply(msgs[-1], table) == []  # redelivered: nothing new, nothing sent twice
    restarted = PairBook(pair_settings())
    replay = restarted.apply(msgs[-1], table)  # the redelivered message, in a new process
    assert replay == out  # every undelivered output, once, in order
    assert restarted.apply(msgs[-1], table) == []


def test_two_pairs_with_the_same_times_do_not_collide() -> None:
    """Both pairs publish at the same sample times; a delivery of one pair's signal never drops the other's."""
    book, table = PairBook(pair_settings()), defaultdict(dict)
    out = {pair: [o for msg in leg_messages(pair, 1, 40, seed=6) for o in book.apply(msg, table)] for pair in PAIRS}
    times = [[o.row["time"] for o in out[pair] if o.kind == PAIR.name] for pair in PAIRS]
    assert times[0] == times[1] and times[0]
    keys = [{o.key for o in out[pair]} for pair in PAIRS]
    assert keys[0].isdisjoint(keys[1])
    for o in out[PAIRS[0]]:
        book.outbox.on_delivered(str(o.key))
    for pair in PAIRS:
        book.apply(leg_messages(pair, 41, 1, seed=7)[0], table)  # one more x sample: the states are written
    left = [{key for _, _, key in table[pair]["outbox"]} for pair in PAIRS]
    assert left[0].isdisjoint(keys[0]) and left[1] >= keys[1]


# ---------------------------------------------------------------------------------- quotes and costs (#20)


def test_mid_samples_carry_the_bid_and_ask_of_the_sampled_update() -> None:
    """With quotes, each mid sample ships the bid/ask of the last book update strictly before its time."""
    s = Settings(symbols=["BTCUSDT", "ETHUSDT"], pairs=["ETHUSDT/BTCUSDT"], candle_intervals=["1m"])
    book, stored = SymbolBook(s, candles=False, sample=True, colocated=True, quotes=True), {}
    times = np.array([T0 + 100, T0 + 900, T0 + 1_000, T0 + 2_500, T0 + 3_100], dtype=np.int64)
    bid = np.array([10.0, 10.5, 11.0, 12.0, 13.0])
    ask = bid + np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    ids = np.arange(1, 6, dtype=np.int64)
    cols = {"bid_price": bid[:3], "ask_price": ask[:3]}
    out, new = book.update("BTCUSDT", {}, cols, (times[:3], (bid[:3] + ask[:3]) / 2, ids[:3]), (bid[:3], ask[:3]))
    assert new is not None and "quotes" in new
    stored["BTCUSDT"] = new
    (leg,) = out
    assert leg.row["time"] == [T0 + 1_000] and leg.row["bid"] == [10.5] and leg.row["ask"] == [10.7]
    book.cache.clear()  # a restart: the quote samplers come back from the table
    rest = (times[3:], (bid[3:] + ask[3:]) / 2, ids[3:])
    (leg,) = book.update("BTCUSDT", stored["BTCUSDT"], {}, rest, (bid[3:], ask[3:]))[0]
    assert leg.row["time"] == [T0 + 2_000, T0 + 3_000]
    assert (leg.row["bid"], leg.row["ask"]) == ([11.0, 12.0], [11.3, 12.4])
    assert leg.row["price"] == [11.15, 12.2]
    m.LegSamples(**leg.row)
    # trade prices: no quotes
    trade_book = SymbolBook(s, candles=False, sample=True, colocated=True)
    (leg,) = apply(trade_book, {}, "BTCUSDT", trades([T0 + 100, T0 + 1_100], [10.0, 11.0], 1))
    assert "bid" not in leg.row and m.LegSamples(**leg.row).bid is None


def quoted_messages(t0: int, n: int, seed: int) -> list[m.LegSamples]:
    """Both legs of ETHUSDT/BTCUSDT with a fast mean-reverting spread and quoted bid/ask."""
    rng = np.random.default_rng(seed)
    times = [1000 * (t0 + i) for i in range(n)]
    x = 6e4 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = 0.9 * s[i - 1] + rng.normal(0, 2e-3)
    y = 0.05 * x * np.exp(s)
    msgs = []
    for leg, sym, p, half in (("x", "BTCUSDT", x, 3e-4), ("y", "ETHUSDT", y, 1e-4)):
        bid, ask = p * (1 - half), p * (1 + half)
        msgs.append(
            m.LegSamples(
                pair=PAIRS[0],
                leg=leg,
                symbol=sym,
                time=times,
                price=p.tolist(),
                last_time=times,
                bid=bid.tolist(),
                ask=ask.tolist(),
            )  # fmt: skip
        )
    return msgs


def chunks(msgs: list[m.LegSamples], size: int) -> list[m.LegSamples]:
    """The messages cut in messages of ``size`` samples, legs interleaved."""
    out = []
    for lo in range(0, len(msgs[0].time), size):
        for msg in msgs:
            d = msg.model_dump()
            out.append(m.LegSamples(**{k: v[lo : lo + size] if isinstance(v, list) else v for k, v in d.items()}))
    return out


def test_pair_book_passes_the_quotes_to_the_model_and_the_cost_details_to_the_alerts() -> None:
    s = pair_settings().model_copy(update={"fee_bps": 1.0})
    msgs = chunks(quoted_messages(1, 900, seed=11), 50)
    book, table = PairBook(s), defaultdict(dict)
    out = [o for msg in msgs[:10] for o in book.apply(msg, table)]
    restarted = PairBook(s)  # a new process half-way: the quote queues come back from the table
    for o in out:
        restarted.outbox.on_delivered(str(o.key))
    out += [o for msg in msgs[10:] for o in restarted.apply(msg, table)]
    # the reference: the model fed directly with the same prices and quotes
    model = PairModel(PAIRS[0], PairParams.from_settings(s))
    full = quoted_messages(1, 900, seed=11)
    want_sig, want_alerts = [], []
    for i, t in enumerate(full[0].time):
        x, y = full[0], full[1]
        st = model.step(t, x.price[i], y.price[i], t, t, x.bid[i], x.ask[i], y.bid[i], y.ask[i])  # type: ignore[index]
        assert st is not None
        want_sig.append(st.signal)
        want_alerts += [(st.signal, kind, d) for (kind, _), d in zip(st.alerts, st.alert_details, strict=True)]
    got_sig = {o.row["time"]: o.row for o in out if o.kind == PAIR.name}
    assert [got_sig[w["time"]] for w in want_sig] == want_sig
    costs = [w for w in want_sig if w["round_trip_cost_bp"] is not None]
    assert costs, "the level z-score was published"
    hedged = [w for w in costs if w["hedge"] is not None]
    assert hedged
    for w in hedged:  # fees on both legs in and out, plus both quoted spreads (y: 2 bp, x: 6 bp)
        b = abs(w["hedge"] * w["x"] / w["y"])  # x notional per unit of y notional
        assert math.isclose(w["round_trip_cost_bp"], 2.0 * 1.0 * (1 + b) + 2.0 + b * 6.0, rel_tol=1e-9)
    alerts = [o.row for o in out if o.kind == ALERTS.name]
    assert alerts and len(alerts) == len(want_alerts)
    for row, (sig, kind, detail) in zip(alerts, want_alerts, strict=True):
        m.Alert(**row)
        assert row["kind"] == kind and row["time"] == sig["time"]
        assert {k: row[k] for k in detail} == detail and row["fee_bps"] == 1.0
        if sig["hedge"] is None:  # an exit while the hedge is unpublished: the calibration's estimate
            assert kind == "exit" and row["hedge"] is None and math.isfinite(row["beta"])
        else:
            assert row["beta"] == row["hedge"] == sig["hedge"]
        if kind != "exit":
            assert row["hedge"] == row["beta"] == sig["hedge"] and row["expected_reversion_bp"] > 0


# -- one record never poisons state (#21) ------------------------------------------------------------------

Y2100 = 4_102_444_800_000  # 2100-01-01 (epoch ms)


def screened_apply(
    book: SymbolBook, stored: dict[str, Any], sym: str, cols: dict[str, Any], now_ms: int
) -> tuple[list[Output], list[tuple[int, str]]]:
    """What the trades agent does with a frame: the row rules, then the book's bounds on the rows left,
    then the rows that pass both applied. (outputs, [(row, reason)] dead-lettered)."""
    from rtqis.schemas.rows import check_columns

    good, bad = check_columns("trade", cols, len(cols["trade_time"]))
    cols = {k: v[good] for k, v in cols.items()}
    refused = book.screen(sym, stored.get(sym, {}), cols["trade_time"], cols["trade_id"], now_ms=now_ms)
    keep = np.ones(len(cols["trade_time"]), dtype=bool)
    keep[[i for i, _ in refused]] = False
    kept = np.flatnonzero(good)
    bad = sorted([*bad, *((int(kept[i]), r) for i, r in refused)])
    return apply(book, stored, sym, {k: v[keep] for k, v in cols.items()}), bad


def test_a_far_future_time_a_negative_time_or_a_huge_id_never_freezes_a_symbol() -> None:
    """2100-01-01, -5 ms and id 9e18, each followed by good trades: the bad rows are refused with their
    reason (not applied), the good ones still close the right candles and the pair still gets samples."""
    s = Settings(symbols=["BTCUSDT", "ETHUSDT"], pairs=["ETHUSDT/BTCUSDT"], candle_intervals=["1m"], candle_grace_ms=0)
    # a replay of old trades: the wall clock (now) is years ahead of them
    now = 1_765_000_000_000
    for sym, first in (("BTCUSDT", 3_735_683_259), ("ETHUSDT", 1_520_538_925)):
        book, stored = SymbolBook(s, candles=True, sample=True), {}
        out, bad = screened_apply(book, stored, sym, trades([T0 + 1_000, T0 + 2_000], [10.0, 11.0], first), now)
        assert bad == [] and closed(out) == []
        hostile = trades([Y2100, -5, T0 + 3_000, T0 + 4_000], [99.0, 98.0, 12.0, 97.0], first + 2)
        hostile["trade_id"][3] = 9_000_000_000_000_000_000
        out, bad = screened_apply(book, stored, sym, hostile, now)
        assert [i for i, _ in bad] == [0, 1, 3]  # the good row 2 of the same frame is applied
        assert "ahead of the symbol's clock and the wall clock" in bad[0][1]
        assert bad[1][1] == "trade_time <= 0"  # the stateless row rule
        assert "trade_id 9000000000000000000 jumps more than" in bad[2][1]
        assert stored[sym]["state"]["1m"]["max_time"] == T0 + 3_000
        # later good trades: the next minute closes the first with only the good trades
        out, bad = screened_apply(book, stored, sym, trades([T0 + 60_000, T0 + 61_000], [13.0, 14.0], first + 6), now)
        assert bad == []
        (candle,) = closed(out)
        r = candle.row
        assert (r["open_time"], r["open"], r["high"], r["low"], r["close"], r["trades"]) == (
            T0,
            10.0,
            12.0,
            10.0,
            12.0,
            3,
        )
        assert r["last_trade_id"] == first + 4
        legs = [o for o in out if o.kind == "leg"]
        assert legs and legs[-1].row["time"][-1] == T0 + 61_000 and legs[-1].row["price"][-1] == 13.0
        assert max(legs[-1].row["price"]) < 90.0  # no sample of a refused price


def test_the_bounds_follow_real_gaps_and_refuse_unknown_symbols() -> None:
    s = Settings(symbols=["BTCUSDT"], pairs=[], candle_intervals=["1m"], candle_grace_ms=0)
    book, stored = SymbolBook(s, candles=True, sample=False), {}
    now = T0 + 10_000  # live: the wall clock is with the trades
    # a symbol's first trade: only the wall clock bounds its time, only MAX_TRADE_ID its id
    out, bad = screened_apply(book, stored, "BTCUSDT", trades([now + 6 * 60_000], [10.0], 1), now)
    assert [r for _, r in bad] == [f"time {now + 360_000} more than 300000 ms ahead of the wall clock"]
    out, bad = screened_apply(book, stored, "BTCUSDT", trades([T0], [10.0], 10**13), now)
    assert "above the largest plausible first trade id" in bad[0][1]
    assert "BTCUSDT" not in stored  # nothing applied
    out, bad = screened_apply(book, stored, "BTCUSDT", trades([T0 + 1_000], [10.0], 5), now)
    assert bad == []
    # a worker stopped for a day: the trades after it are far ahead of the symbol's clock, with ids
    # ~2 million further on, but not ahead of the wall clock: applied
    day = 86_400_000
    out, bad = screened_apply(book, stored, "BTCUSDT", trades([T0 + day], [11.0], 2_000_000), now + day)
    assert bad == [] and closed(out)[0].row["open_time"] == T0
    # the same jump of ids with no time passed is beyond ID_SLACK + 100/ms: refused
    out, bad = screened_apply(book, stored, "BTCUSDT", trades([T0 + day], [11.0], 2_000_001 + 10_000_001), now + day)
    assert len(bad) == 1 and "jumps more than 10000000" in bad[0][1]
    out, bad = screened_apply(
        book,
        stored,
        "DOGEUSDT",
        trades(
            [T0],
            [
                1.0,
            ],
            1,
        ),
        now,
    )
    assert bad == [(0, "unknown symbol 'DOGEUSDT' (configured: BTCUSDT)")] and "DOGEUSDT" not in stored


def test_an_alert_at_the_first_z_sample_has_a_spread() -> None:
    # the calibrated Kalman filter has no prior at the first calibration, the sample where the z-score
    # starts: an alert there carried spread None, failed validation and crashed the trades agent
    from rtqis.agents.books import _alert_row
    from rtqis.schemas.models import Alert

    sig = {"time": 1, "pair": "ETHUSDT/BTCUSDT", "zscore": 2.5, "hedge": 0.03, "spread": None, "spread_bp": 12.0}
    sig |= {"x": 100_000.0, "y": 3_000.0}
    row = _alert_row(sig, "enter_short_spread", 2.0, {}, None)
    assert row["spread"] == 12.0 * 3_000.0 / 1e4
    Alert(**row)  # validates
    sig["spread"] = -1.5
    assert _alert_row(sig, "enter_short_spread", 2.0, {}, None)["spread"] == -1.5
