"""Normalisers for Binance WebSocket payloads, and the value conventions every Binance format shares.

Pure functions, no I/O: the live WebSocket client and the capture reader of the file source
(:mod:`rtqis.producers.files`) both turn Binance's messages into our models/columns here, so that the
two agree on every rule; archive CSV rows are :mod:`rtqis.producers.binance_csv`.

Units and conventions (the same as :mod:`rtqis.schemas.models`):

* Times are epoch **milliseconds** UTC (int). Binance sends ms by default; newer archive files and
  ``timeUnit=MICROSECOND`` streams use microseconds, local capture clocks use nanoseconds. Any time
  >= 1e14 is taken as microseconds and >= 1e17 as nanoseconds, and is cut down to ms by integer
  division (:func:`to_ms`): sub-millisecond precision is dropped on purpose (our schemas are ms).
* Prices and quantities arrive as decimal strings (``"61737.63000000"``) and are stored as float64:
  ``float(text)`` is the correctly rounded nearest double of the exact decimal.
* What a trade, book ticker or kline row must satisfy (finite prices > 0, ids >= 0, times > 0, bid <
  ask, ...) is :mod:`rtqis.schemas.rows`, the rules every reader, the worker and the sink share; this
  module checks that each field *is* a number, integer or flag, then asks those rules. A depth diff
  may carry qty 0 (level removed) but never a price <= 0. Anything else is rejected with
  :class:`BadMessage`, whose ``reason`` is one short sentence naming the field.

WebSocket payloads handled by :func:`parse_ws_message` (bare or in the combined-stream wrapper
``{"stream": ..., "data": ...}``): ``trade``, ``aggTrade``, ``bookTicker`` (spot: no ``e`` and no event
time; futures: ``e``, ``E`` and ``T``), ``depthUpdate``, subscription replies ``{"result": null, "id": N}``
and, as ``ControlEvent(kind="other")``, error replies, ``serverShutdown`` and REST depth snapshots.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import ValidationError

from rtqis.errors import RtqisError
from rtqis.schemas.models import BookTicker, Trade
from rtqis.schemas.rows import RowKind, first_problem

__all__ = [
    "MAX_INT64",
    "MIN_INT64",
    "AggTradeEvent",
    "BadMessage",
    "check_row",
    "BookEvent",
    "ControlEvent",
    "DepthDiffEvent",
    "TradeEvent",
    "WsEvent",
    "agg_trade_fields",
    "book_fields",
    "classify_payload",
    "depth_fields",
    "parse_ws_message",
    "short_repr",
    "to_ms",
    "to_ms_array",
    "trade_fields",
]

log = logging.getLogger(__name__)

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
_US_FROM = 10**14  # epoch ms reaches 1e14 in the year 5138; epoch us is ~1.7e15 today
_NS_FROM = 10**17  # epoch ns is ~1.7e18 today
_FINF = math.inf


class BadMessage(RtqisError):
    """A payload or row that cannot be normalised; ``reason`` is one readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """One ``@trade`` message."""

    trade: Trade


@dataclass(frozen=True, slots=True)
class AggTradeEvent:
    """One ``@aggTrade`` message; ``trade.trade_id`` is the aggregate id ``a``."""

    trade: Trade
    first_trade_id: int
    last_trade_id: int


@dataclass(frozen=True, slots=True)
class BookEvent:
    """One ``@bookTicker`` message (``book.event_time`` is None for spot, which sends none)."""

    book: BookTicker


@dataclass(frozen=True, slots=True)
class DepthDiffEvent:
    """One ``depthUpdate``: levels ``(price, qty)`` to set; qty 0 removes the level."""

    symbol: str
    first_update_id: int
    final_update_id: int
    event_time: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    recv_time: int
    prev_final_update_id: int | None = None  # futures ``pu``
    transaction_time: int | None = None  # futures ``T``


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Not market data: a subscription reply (``result``) or anything else we recognise (``other``)."""

    kind: Literal["result", "other"]
    payload: dict[str, Any]


WsEvent = TradeEvent | AggTradeEvent | BookEvent | DepthDiffEvent | ControlEvent


# --------------------------------------------------------------------------------------------------
# Scalars


def to_ms(t: int) -> int:
    """Epoch time in ms from ms, us (>= 1e14) or ns (>= 1e17); sub-ms precision is dropped."""
    if t >= _NS_FROM:
        return t // 1_000_000
    if t >= _US_FROM:
        return t // 1_000
    return t


def to_ms_array(t: np.ndarray) -> np.ndarray:
    """Vectorised :func:`to_ms` over an int64 array (returns a new array only if something changes)."""
    t = np.asarray(t, dtype=np.int64)
    if t.size == 0 or t.max() < _US_FROM:
        return t
    return np.where(t >= _NS_FROM, t // 1_000_000, np.where(t >= _US_FROM, t // 1_000, t))


def short_repr(v: Any) -> str:
    """``repr(v)`` cut to 40 characters, to quote a bad value in a reason."""
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise BadMessage(f"missing field {what} ({key!r})") from None


def _number(v: Any, key: str, what: str) -> float:
    """A JSON number or decimal string as a float (any float: whether it is usable is a row rule)."""
    if isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            raise BadMessage(f"{what} ({key!r}) is not a number: {short_repr(v)}") from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        try:
            x = float(v)
        except OverflowError:
            raise BadMessage(f"{what} ({key!r}) is out of range") from None
    else:
        raise BadMessage(f"{what} ({key!r}) has the wrong type: {type(v).__name__}")
    return x


def _float(v: Any, key: str, what: str) -> float:
    """A finite number (depth levels, which are not rows with rules of their own)."""
    x = _number(v, key, what)
    if not math.isfinite(x):
        raise BadMessage(f"{what} ({key!r}) is not a finite number: {short_repr(v)}")
    return x


def _field_number(d: Mapping[str, Any], key: str, what: str) -> float:
    return _number(_get(d, key, what), key, what)


def _nonneg(v: Any, key: str, what: str) -> float:
    x = _float(v, key, what)
    if x < 0:
        raise BadMessage(f"{what} ({key!r}) must be >= 0, got {short_repr(v)}")
    return x


def _int(d: Mapping[str, Any], key: str, what: str) -> int:
    v = _get(d, key, what)
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadMessage(f"{what} ({key!r}) must be an integer, got {type(v).__name__}")
    if not 0 <= v <= MAX_INT64:
        raise BadMessage(f"{what} ({key!r}) is out of range: {short_repr(v)}")
    return v


def _time(d: Mapping[str, Any], key: str, what: str) -> int:
    """A depth diff's time (depth diffs are not rows of :mod:`rtqis.schemas.rows`): > 0, cut to ms."""
    t = _int(d, key, what)
    if t <= 0:
        raise BadMessage(f"{what} ({key!r}) must be > 0, got {t}")
    return to_ms(t)


def _int64(d: Mapping[str, Any], key: str, what: str) -> int:
    """Any 64-bit integer (ids and times: their sign is a row rule)."""
    v = _get(d, key, what)
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadMessage(f"{what} ({key!r}) must be an integer, got {type(v).__name__}")
    if not MIN_INT64 <= v <= MAX_INT64:
        raise BadMessage(f"{what} ({key!r}) is out of range: {short_repr(v)}")
    return v


def check_row(kind: RowKind, row: Mapping[str, Any]) -> None:
    """Raise :class:`BadMessage` with the reason of :mod:`rtqis.schemas.rows` if the row breaks a rule."""
    reason = first_problem(kind, row)
    if reason is not None:
        raise BadMessage(reason)


def _bool(d: Mapping[str, Any], key: str, what: str) -> bool:
    v = _get(d, key, what)
    if not isinstance(v, bool):
        raise BadMessage(f"{what} ({key!r}) must be true or false, got {type(v).__name__}")
    return v


def _symbol(d: Mapping[str, Any], symbols: set[str] | frozenset[str] | None) -> str:
    v = _get(d, "s", "symbol")
    if not isinstance(v, str) or not v:
        raise BadMessage(f"symbol ('s') must be a non-empty string, got {short_repr(v)}")
    s = v.upper()
    if symbols is not None and s not in symbols:
        raise BadMessage(f"unknown symbol {short_repr(s)}")
    return s


# --------------------------------------------------------------------------------------------------
# WebSocket payloads

PayloadKind = Literal["trade", "aggTrade", "bookTicker", "depthUpdate", "result", "other"]


def classify_payload(obj: Any) -> tuple[PayloadKind, dict[str, Any]]:
    """Unwrap a decoded message and name its kind; raise :class:`BadMessage` if unknown."""
    if not isinstance(obj, dict):
        raise BadMessage(f"message is not a JSON object but {type(obj).__name__}")
    if "data" in obj and "stream" in obj:
        obj = obj["data"]
        if not isinstance(obj, dict):
            raise BadMessage(f"'data' of the combined-stream message is not an object but {type(obj).__name__}")
    e = obj.get("e")
    if e is None:
        if "id" in obj and "result" in obj:
            return "result", obj
        if "id" in obj and "error" in obj:
            return "other", obj
        if "lastUpdateId" in obj:
            return "other", obj  # REST depth snapshot recorded in a capture
        if "u" in obj and "s" in obj and "b" in obj and "a" in obj:
            return "bookTicker", obj  # spot bookTicker carries no event type
        raise BadMessage("message has no event type ('e') and is not a bookTicker")
    if e in ("trade", "aggTrade", "bookTicker", "depthUpdate"):
        return e, obj
    if e == "serverShutdown":
        return "other", obj
    raise BadMessage(f"event type ('e') {short_repr(e)} is not supported")


def trade_fields(
    d: Mapping[str, Any], symbols: set[str] | frozenset[str] | None = None
) -> tuple[str, int, float, float, int, int, bool]:
    """``(symbol, trade_id, price, qty, trade_time, event_time, buyer_maker)`` of a trade payload."""
    try:  # fast path for well-formed messages; anything unusual goes through the checks below
        s, tid, p, q, tt, et, m = d["s"], d["t"], d["p"], d["q"], d["T"], d["E"], d["m"]
        if (
            type(p) is str
            and type(q) is str
            and type(tid) is int
            and type(tt) is int
            and type(et) is int
            and type(m) is bool
            and type(s) is str
            and (s in symbols if symbols is not None else s.isupper())
            and 0 <= tid <= MAX_INT64
            and 0 < tt < _US_FROM
            and 0 < et < _US_FROM
        ):
            pf, qf = float(p), float(q)
            if 0 < pf < _FINF and 0 < qf < _FINF:
                return s, tid, pf, qf, tt, et, m
    except (KeyError, ValueError, TypeError):
        pass
    s = _symbol(d, symbols)
    tid = _int64(d, "t", "trade id")
    p, q = _field_number(d, "p", "price"), _field_number(d, "q", "quantity")
    tt, et = _int64(d, "T", "trade time"), _int64(d, "E", "event time")
    m = _bool(d, "m", "buyer-maker flag")
    check_row("trade", {"trade_id": tid, "price": p, "qty": q, "trade_time": tt, "event_time": et})
    return s, tid, p, q, to_ms(tt), to_ms(et), m


def agg_trade_fields(
    d: Mapping[str, Any], symbols: set[str] | frozenset[str] | None = None
) -> tuple[str, int, float, float, int, int, bool, int, int]:
    """Like :func:`trade_fields` for an aggTrade (id = aggregate id ``a``), plus first and last trade id."""
    s = _symbol(d, symbols)
    tid = _int64(d, "a", "aggregate trade id")
    p, q = _field_number(d, "p", "price"), _field_number(d, "q", "quantity")
    tt, et = _int64(d, "T", "trade time"), _int64(d, "E", "event time")
    m = _bool(d, "m", "buyer-maker flag")
    first, last = _int(d, "f", "first trade id"), _int(d, "l", "last trade id")
    check_row("trade", {"trade_id": tid, "price": p, "qty": q, "trade_time": tt, "event_time": et})
    return s, tid, p, q, to_ms(tt), to_ms(et), m, first, last


def book_fields(
    d: Mapping[str, Any], symbols: set[str] | frozenset[str] | None = None
) -> tuple[str, int, float, float, float, float, int | None]:
    """``(symbol, update_id, bid, bid_qty, ask, ask_qty, event_time|None)`` of a bookTicker payload."""
    try:  # fast path for well-formed messages; anything unusual goes through the checks below
        s, uid, b_, bq_, a_, aq_ = d["s"], d["u"], d["b"], d["B"], d["a"], d["A"]
        et_ = d.get("E")
        if (
            type(b_) is str
            and type(bq_) is str
            and type(a_) is str
            and type(aq_) is str
            and type(uid) is int
            and type(s) is str
            and (s in symbols if symbols is not None else s.isupper())
            and 0 <= uid <= MAX_INT64
            and (et_ is None or (type(et_) is int and 0 < et_ < _US_FROM))
        ):
            bf_, bqf, af, aqf = float(b_), float(bq_), float(a_), float(aq_)
            if 0 < bf_ < af < _FINF and 0 < bqf < _FINF and 0 < aqf < _FINF:
                return s, uid, bf_, bqf, af, aqf, et_
    except (KeyError, ValueError, TypeError):
        pass
    s = _symbol(d, symbols)
    uid = _int64(d, "u", "update id")
    bid, bq = _field_number(d, "b", "bid price"), _field_number(d, "B", "bid quantity")
    ask, aq = _field_number(d, "a", "ask price"), _field_number(d, "A", "ask quantity")
    et = _int64(d, "E", "event time") if "E" in d else None
    row = {"update_id": uid, "bid_price": bid, "bid_qty": bq, "ask_price": ask, "ask_qty": aq, "event_time": et}
    check_row("book", row)
    return s, uid, bid, bq, ask, aq, (to_ms(et) if et is not None else None)


def _levels(d: Mapping[str, Any], key: str, what: str) -> list[tuple[float, float]]:
    v = _get(d, key, what)
    if not isinstance(v, list):
        raise BadMessage(f"{what} ({key!r}) must be a list of [price, qty], got {type(v).__name__}")
    out = []
    for lvl in v:
        if not isinstance(lvl, list) or len(lvl) < 2:
            raise BadMessage(f"{what} ({key!r}) has a level that is not [price, qty]: {short_repr(lvl)}")
        p = _float(lvl[0], key, f"{what} price")
        if p <= 0:
            raise BadMessage(f"{what} price ({key!r}) must be > 0, got {short_repr(lvl[0])}")
        out.append((p, _nonneg(lvl[1], key, f"{what} quantity")))
    return out


def depth_fields(
    d: Mapping[str, Any], recv_time_ms: int, symbols: set[str] | frozenset[str] | None = None
) -> DepthDiffEvent:
    """A ``depthUpdate`` payload as a :class:`DepthDiffEvent`."""
    return DepthDiffEvent(
        symbol=_symbol(d, symbols),
        first_update_id=_int(d, "U", "first update id"),
        final_update_id=_int(d, "u", "final update id"),
        event_time=_time(d, "E", "event time"),
        bids=_levels(d, "b", "bid"),
        asks=_levels(d, "a", "ask"),
        recv_time=recv_time_ms,
        prev_final_update_id=_int(d, "pu", "previous final update id") if "pu" in d else None,
        transaction_time=_time(d, "T", "transaction time") if "T" in d else None,
    )


def parse_ws_message(raw: str | bytes, recv_time_ms: int, symbols: set[str] | None = None) -> WsEvent:
    """Normalise one WebSocket message (bare or combined-stream); raise :class:`BadMessage` if unusable.

    ``recv_time_ms`` is the local receive time (epoch ms) stamped on the result; ``symbols``, if given,
    is the set of accepted (upper-case) symbols.
    """
    try:
        obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as e:
        raise BadMessage(f"message is not valid JSON ({str(e).splitlines()[0][:60]})") from None
    kind, d = classify_payload(obj)
    try:
        if kind == "trade":
            s, tid, p, q, tt, et, m = trade_fields(d, symbols)
            return TradeEvent(Trade(**_trade_kw(s, tid, p, q, tt, et, recv_time_ms, m)))
        if kind == "aggTrade":
            s, tid, p, q, tt, et, m, f, last = agg_trade_fields(d, symbols)
            return AggTradeEvent(Trade(**_trade_kw(s, tid, p, q, tt, et, recv_time_ms, m)), f, last)
        if kind == "bookTicker":
            s, uid, b, bq, a, aq, bet = book_fields(d, symbols)
            return BookEvent(
                BookTicker(
                    symbol=s,
                    update_id=uid,
                    bid_price=b,
                    bid_qty=bq,
                    ask_price=a,
                    ask_qty=aq,
                    event_time=bet,
                    recv_time=recv_time_ms,
                )
            )
        if kind == "depthUpdate":
            return depth_fields(d, recv_time_ms, symbols)
    except ValidationError as e:  # a rule of the model we did not check above: still the message's fault
        raise BadMessage(f"invalid {kind}: {e.errors()[0].get('msg', 'invalid value')}") from None
    return ControlEvent("result" if kind == "result" else "other", d)


def _trade_kw(s: str, tid: int, p: float, q: float, tt: int, et: int, recv: int, m: bool) -> dict[str, Any]:
    return {
        "symbol": s,
        "trade_id": tid,
        "price": p,
        "qty": q,
        "trade_time": tt,
        "event_time": et,
        "recv_time": recv,
        "buyer_maker": m,
    }
