"""Binance payload normalisers: real WebSocket samples, every rejection rule, CSV rows, and fuzzing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtqis.producers import binance_format as bf
from rtqis.producers.binance_format import (
    AggTradeEvent,
    BadMessage,
    BookEvent,
    ControlEvent,
    DepthDiffEvent,
    TradeEvent,
    parse_ws_message,
)
from tests.conftest import TEST_DATA

DATA = TEST_DATA
RECV = 1_723_161_254_087

TRADE = {
    "e": "trade",
    "E": 1723161255343,
    "s": "BTCUSDT",
    "t": 3735683259,
    "p": "61837.63000000",
    "q": "0.02000000",
    "T": 1723161255342,
    "m": True,
    "M": True,
}
SPOT_BOOK = {
    "u": 50093239212,
    "s": "BTCUSDT",
    "b": "61837.63000000",
    "B": "3.78826000",
    "a": "61837.64000000",
    "A": "1.54698000",
}
AGG = {
    "e": "aggTrade",
    "E": 1633998523963,
    "s": "NKNUSDT",
    "a": 15683430,
    "p": "0.35280000",
    "q": "58.00000000",
    "f": 19862790,
    "l": 19862791,
    "T": 1633998523963,
    "m": False,
    "M": True,
}
DEPTH = {
    "e": "depthUpdate",
    "E": 1723161255308,
    "s": "BTCUSDT",
    "U": 50093239203,
    "u": 50093239207,
    "b": [["55653.87000000", "0.00000000"]],
    "a": [["61838.04000000", "0.32332000"]],
}


def _msg(d: dict[str, Any], stream: str | None = None) -> bytes:
    return json.dumps({"stream": stream, "data": d} if stream else d).encode()


def _samples(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_real_hftbacktest_samples() -> None:
    kinds: dict[str, int] = {}
    for obj in _samples("hftbacktest_ws_samples.jsonl"):
        raw = json.dumps(obj)
        ev = parse_ws_message(raw, RECV)
        data = obj["data"]
        kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1
        if isinstance(ev, TradeEvent):
            t = ev.trade
            assert (t.symbol, t.trade_id, t.trade_time, t.event_time, t.buyer_maker) == (
                data["s"],
                data["t"],
                data["T"],
                data["E"],
                data["m"],
            )
            assert t.price == float(data["p"]) and t.qty == float(data["q"])
            assert t.recv_time == RECV
        elif isinstance(ev, BookEvent):
            b = ev.book
            assert b.update_id == data["u"] and b.bid_price == float(data["b"]) and b.ask_qty == float(data["A"])
            # spot sends no event time; futures send E (and T): we keep E
            assert b.event_time == data.get("E")
            assert b.bid_price < b.ask_price
        else:
            assert isinstance(ev, DepthDiffEvent)
            assert ev.first_update_id == data["U"] and ev.final_update_id == data["u"]
            assert len(ev.bids) == len(data["b"]) and len(ev.asks) == len(data["a"])
            assert ev.prev_final_update_id == data.get("pu")
    assert kinds == {"TradeEvent": 18, "BookEvent": 18, "DepthDiffEvent": 3}


def test_real_cryptofeed_samples_aggtrade_and_kline() -> None:
    n_agg = n_book = n_kline = 0
    for obj in _samples("cryptofeed_ws_samples.jsonl"):
        raw = json.dumps(obj).encode()
        data = obj["data"]
        if data.get("e") == "kline":
            with pytest.raises(BadMessage, match="not supported"):
                parse_ws_message(raw, RECV)
            n_kline += 1
            continue
        ev = parse_ws_message(raw, RECV)
        if isinstance(ev, AggTradeEvent):
            assert ev.trade.trade_id == data["a"]
            assert (ev.first_trade_id, ev.last_trade_id) == (data["f"], data["l"])
            assert ev.trade.price == float(data["p"])
            n_agg += 1
        else:
            assert isinstance(ev, BookEvent) and ev.book.event_time == data.get("E")
            n_book += 1
    assert (n_agg, n_book, n_kline) == (5, 6, 5)


def test_combined_and_bare_payloads_agree() -> None:
    for d in (TRADE, SPOT_BOOK, AGG, DEPTH):
        assert parse_ws_message(_msg(d, "x@y"), RECV) == parse_ws_message(_msg(d), RECV)
    ev = parse_ws_message(_msg(TRADE).decode(), RECV)  # str as well as bytes
    assert isinstance(ev, TradeEvent) and ev.trade.price == 61837.63


def test_control_messages() -> None:
    ev = parse_ws_message(b'{"result": null, "id": 3}', RECV)
    assert ev == ControlEvent("result", {"result": None, "id": 3})
    ev = parse_ws_message(b'{"error": {"code": 2, "msg": "Invalid request"}, "id": 4}', RECV)
    assert isinstance(ev, ControlEvent) and ev.kind == "other"
    ev = parse_ws_message(b'{"lastUpdateId": 1, "bids": [], "asks": []}', RECV)
    assert isinstance(ev, ControlEvent) and ev.kind == "other"


def test_depth_qty_zero_is_allowed() -> None:
    ev = parse_ws_message(_msg(DEPTH), RECV)
    assert isinstance(ev, DepthDiffEvent) and ev.bids == [(55653.87, 0.0)]


def test_microsecond_times_become_ms() -> None:
    d = {**TRADE, "T": 1723161255342123, "E": 1723161255343999}
    ev = parse_ws_message(_msg(d), RECV)
    assert isinstance(ev, TradeEvent)
    assert (ev.trade.trade_time, ev.trade.event_time) == (1723161255342, 1723161255343)
    assert bf.to_ms(1723161254087891268) == 1723161254087  # ns
    assert bf.to_ms(1723161254087) == 1723161254087


def _with(d: dict[str, Any], **kw: Any) -> bytes:
    out = {k: v for k, v in d.items() if k not in kw or kw[k] is not ...}
    out.update({k: v for k, v in kw.items() if v is not ...})
    return _msg(out)


BAD = [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"stream": "x", "data": 5}', "'data'"),
    (b'{"e": "kline", "s": "BTCUSDT"}', "event type"),
    (b'{"foo": 1}', "no event type"),
    (_with(TRADE, p=...), "missing field price"),
    (_with(TRADE, t="12"), "trade id"),
    (_with(TRADE, m="true"), "buyer-maker"),
    (_with(TRADE, p="abc"), "price ('p') is not a number"),
    (_with(TRADE, p="NaN"), "price is not a finite number"),
    (_with(TRADE, q="Infinity"), "qty is not a finite number"),
    (_with(TRADE, p="0"), "price <= 0"),
    (_with(TRADE, q="-0.5"), "qty <= 0"),
    (_with(TRADE, p=True), "price ('p') has the wrong type"),
    (_with(TRADE, T=-5), "trade_time <= 0"),
    (_with(TRADE, t=-1), "trade_id < 0"),
    (_with(TRADE, t=2**63), "out of range"),
    (_with(TRADE, t=2**64), "must be an integer"),
    (_with(TRADE, s=""), "symbol"),
    (_with(SPOT_BOOK, b="61837.64000000"), "crossed book"),
    (_with(SPOT_BOOK, B="0.00000000"), "bid_qty <= 0"),
    (_with(SPOT_BOOK, a=None), "ask price ('a') has the wrong type"),
    (_with(DEPTH, b=[["0", "1"]]), "bid price"),
    (_with(DEPTH, a=[["1"]]), "not [price, qty]"),
    (_with(DEPTH, a=[["1", "-1"]]), "ask quantity"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_bad_messages_are_explained(raw: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as ei:
        parse_ws_message(raw, RECV)
    assert reason in ei.value.reason
    assert "\n" not in ei.value.reason and len(ei.value.reason) < 200


def test_unknown_symbol() -> None:
    assert isinstance(parse_ws_message(_msg(TRADE), RECV, {"BTCUSDT"}), TradeEvent)
    with pytest.raises(BadMessage, match="unknown symbol 'BTCUSDT'"):
        parse_ws_message(_msg(TRADE), RECV, {"ETHUSDT"})
    with pytest.raises(BadMessage, match="unknown symbol"):
        parse_ws_message(_msg(SPOT_BOOK), RECV, {"ETHUSDT"})


def test_fast_and_checked_paths_agree() -> None:
    # lower-case symbol and a numeric price skip the fast path; the result is the same as the fast one
    slow = bf.trade_fields({**TRADE, "s": "btcusdt", "p": 61837.63})
    assert slow == bf.trade_fields(TRADE)
    slow_b = bf.book_fields({**SPOT_BOOK, "s": "btcusdt", "b": 61837.63})
    assert slow_b == bf.book_fields(SPOT_BOOK)


# --------------------------------------------------------------------------------------------------
# Fuzzing: only BadMessage escapes, and what is returned is sane

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["nan", "inf", "-1", "0", "1e400", "0.00000001", "61837.63", "1_0", " 5 "]),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=4),
    max_leaves=12,
)

_valid = st.sampled_from([TRADE, SPOT_BOOK, AGG, DEPTH, {**SPOT_BOOK, "e": "bookTicker", "E": 1, "T": 1}])


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid payload with some fields replaced, dropped or added: reaches the deep checks."""
    d = dict(draw(_valid))
    for key in draw(st.lists(st.sampled_from(sorted(d) + ["x", "E"]), max_size=3)):
        if draw(st.booleans()):
            d[key] = draw(_json)
        else:
            d.pop(key, None)
    obj: Any = {"stream": "s", "data": d} if draw(st.booleans()) else d
    return json.dumps(obj).encode()


def _check_event(ev: bf.WsEvent) -> None:
    if isinstance(ev, TradeEvent | AggTradeEvent):
        t = ev.trade
        assert math.isfinite(t.price) and t.price > 0 and math.isfinite(t.qty) and t.qty > 0
        assert t.trade_time > 0 and t.event_time > 0 and 0 <= t.trade_id < 2**63
    elif isinstance(ev, BookEvent):
        b = ev.book
        for x in (b.bid_price, b.bid_qty, b.ask_price, b.ask_qty):
            assert math.isfinite(x) and x > 0
        assert b.bid_price < b.ask_price
    elif isinstance(ev, DepthDiffEvent):
        for p, q in ev.bids + ev.asks:
            assert math.isfinite(p) and p > 0 and math.isfinite(q) and q >= 0
    else:
        assert isinstance(ev, ControlEvent)


def _parse_or_bad(raw: str | bytes) -> None:
    try:
        ev = parse_ws_message(raw, RECV)
    except BadMessage as e:
        assert e.reason and "\n" not in e.reason
        return
    _check_event(ev)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_fuzz_text_and_bytes(raw: str | bytes) -> None:
    _parse_or_bad(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json)
def test_fuzz_json_values(obj: Any) -> None:
    _parse_or_bad(json.dumps(obj))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_fuzz_mutated_payloads(raw: bytes) -> None:
    _parse_or_bad(raw)
