"""The value rules of a tick or kline row, written once and applied to numpy columns.

Every path that lets market data in uses these rules, so a row is accepted or rejected for the same
reason everywhere: the file readers (CSV, Parquet, raw captures), the Binance message and CSV-row
parsers (:mod:`rtqis.producers.binance_format`, one row as one-element columns), the worker and the
sink (:func:`rtqis.schemas.frames.validate_trade_frame` / ``validate_book_frame``).

The rules (times are epoch ms, checked after any us/ns -> ms conversion, which keeps the sign):

* ids and counts ``>= 0`` (reason ``"trade_id < 0"``);
* prices and trade/quote quantities finite and ``> 0`` (``"price is not a finite number"``,
  ``"price <= 0"``); kline volumes finite and ``>= 0`` (``"volume < 0"``);
* times ``> 0`` (``"trade_time <= 0"``);
* a book ticker is not crossed (``"crossed book: bid_price >= ask_price"``); a kline's
  ``high >= low`` (``"high < low"``).

What is *not* here: whether a text is a number at all (a missing field, ``"abc"``, a wrong field count),
which is the business of each format's parser and has its own reason there. A column that is absent
(None, or not in the mapping) is not checked: optional columns such as a spot book ticker's
``event_time``. A row with several problems gets the reason of the first rule in the order above.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BOOK_RULES",
    "KLINE_RULES",
    "TRADE_RULES",
    "BoolArray",
    "RowKind",
    "RuleKind",
    "check_columns",
    "first_problem",
]

RowKind = Literal["trade", "book", "kline"]
RuleKind = Literal["id", "pos", "nonneg", "time"]
BoolArray = npt.NDArray[np.bool_]

TRADE_RULES: dict[str, RuleKind] = {
    "trade_id": "id",
    "price": "pos",
    "qty": "pos",
    "trade_time": "time",
    "event_time": "time",
    "recv_time": "time",
}
"""The rule of each checked trade column (``buyer_maker`` is a bool: nothing to check)."""

BOOK_RULES: dict[str, RuleKind] = {
    "update_id": "id",
    "bid_price": "pos",
    "bid_qty": "pos",
    "ask_price": "pos",
    "ask_qty": "pos",
    "event_time": "time",
    "recv_time": "time",
}
"""The rule of each checked book-ticker column; then ``bid_price < ask_price``."""

KLINE_RULES: dict[str, RuleKind] = {
    "open_time": "time",
    "open": "pos",
    "high": "pos",
    "low": "pos",
    "close": "pos",
    "volume": "nonneg",
    "close_time": "time",
    "quote_volume": "nonneg",
    "count": "id",
    "taker_buy_volume": "nonneg",
    "taker_buy_quote_volume": "nonneg",
}
"""The rule of each checked kline column; then ``high >= low``."""

_RULES: dict[RowKind, dict[str, RuleKind]] = {"trade": TRADE_RULES, "book": BOOK_RULES, "kline": KLINE_RULES}


def _checks(kind: RowKind, cols: Mapping[str, Any]) -> Iterator[tuple[BoolArray, str]]:
    """(mask of rows breaking a rule, reason) for every rule, in order."""
    for name, rule in _RULES[kind].items():
        v = cols.get(name)
        if v is None:
            continue
        a = np.asarray(v)
        if rule == "id":
            yield np.asarray(a < 0), f"{name} < 0"
        elif rule == "time":
            yield np.asarray(a <= 0), f"{name} <= 0"
        else:
            yield ~np.isfinite(a), f"{name} is not a finite number"
            if rule == "pos":
                yield np.asarray(a <= 0), f"{name} <= 0"
            else:
                yield np.asarray(a < 0), f"{name} < 0"
    if kind == "book" and cols.get("bid_price") is not None and cols.get("ask_price") is not None:
        yield (
            np.asarray(np.asarray(cols["bid_price"]) >= np.asarray(cols["ask_price"])),
            ("crossed book: bid_price >= ask_price"),
        )
    elif kind == "kline" and cols.get("high") is not None and cols.get("low") is not None:
        yield np.asarray(np.asarray(cols["high"]) < np.asarray(cols["low"])), "high < low"


def _all_good(kind: RowKind, cols: Mapping[str, Any]) -> bool:
    """Whether every row keeps every rule, by one reduction per column (no mask is built): the common
    case, so the worker's check of a clean frame costs little. NaN fails it (min/max propagate NaN)."""
    for name, rule in _RULES[kind].items():
        v = cols.get(name)
        if v is None:
            continue
        a = np.asarray(v)
        lo = a.min()
        if rule == "id":
            ok = lo >= 0
        elif rule == "time":
            ok = lo > 0
        else:
            ok = (lo > 0 if rule == "pos" else lo >= 0) and a.max() < np.inf
        if not ok:
            return False
    if kind == "book" and cols.get("bid_price") is not None and cols.get("ask_price") is not None:
        return bool(np.all(np.asarray(cols["bid_price"]) < np.asarray(cols["ask_price"])))
    if kind == "kline" and cols.get("high") is not None and cols.get("low") is not None:
        return bool(np.all(np.asarray(cols["high"]) >= np.asarray(cols["low"])))
    return True


def check_columns(kind: RowKind, cols: Mapping[str, Any], n: int) -> tuple[BoolArray, list[tuple[int, str]]]:
    """Apply the rules of ``kind`` to ``n`` rows in columns: (mask of good rows, [(row, reason)] sorted by
    row, one reason per bad row: the first rule it breaks)."""
    if n == 0 or _all_good(kind, cols):
        return np.ones(n, dtype=bool), []
    bad = np.zeros(n, dtype=bool)
    reasons: list[tuple[int, str]] = []
    for mask, reason in _checks(kind, cols):
        new = mask & ~bad
        if new.any():
            reasons.extend((int(i), reason) for i in np.flatnonzero(new))
            bad |= new
    reasons.sort()
    return ~bad, reasons


def first_problem(kind: RowKind, row: Mapping[str, Any]) -> str | None:
    """The reason one row (field -> scalar) breaks the rules of ``kind``, or None if it keeps them.

    For parsers that see one message at a time: the same rules as :func:`check_columns`, on one-row
    columns (a few microseconds; meant for rows that already failed a parser's fast path).
    """
    _, reasons = check_columns(kind, {k: (None if v is None else np.asarray([v])) for k, v in row.items()}, 1)
    return reasons[0][1] if reasons else None
