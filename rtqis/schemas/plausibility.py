"""Stateful plausibility bounds of a tick row: one hostile or corrupt row must never move a symbol's
event-time clock or trade-id high-water mark so far that every later good row looks late or duplicate.

The row rules (:mod:`rtqis.schemas.rows`) are stateless (a price > 0, a time > 0); these bounds compare a
row with what its symbol already applied: the worker checks them against its per-symbol state
(:class:`~rtqis.agents.books.SymbolBook`), the sink against the high-water marks of its tick archive
(:mod:`rtqis.sinks.marks`), so a row the worker refuses is not archived either. The rule is pure (state,
row and wall clock in, reasons out) and lives here, below both layers. A row that breaks one is
dead-lettered with its reason and not applied; the other rows of its frame are.

The bounds, and the data behind them (``tests/data/binance/trades``, Binance spot, 2024-08-08/09, 650 s:
BTCUSDT 19,904 trades, ETHUSDT 14,515; trade ids step by exactly 1, at most 929 trades in one second,
the longest gap between two trades of a symbol 3.8 s; BTCUSDT's trade id was 3.7e9):

* **time ahead** - a row is refused when its time is more than :data:`MAX_AHEAD_MS` (5 min) ahead of
  the symbol's clock (the latest time it applied) **and** more than 5 min ahead of the wall clock. The
  wall clock lets real gaps through (an exchange outage, a worker stopped for a day: the first trade
  after it is far ahead of the symbol's clock but not of the wall clock); the symbol's clock lets a
  replay run on a machine whose clock is behind. A symbol's first row (no clock yet) has only the
  wall-clock bound. A 2100-01-01 trade breaks both, live or replayed.
* **id jump** - a trade id more than :data:`ID_SLACK` (10 million) + :data:`MAX_IDS_PER_MS` (100) per ms
  of time since the symbol's clock above its high-water mark is refused: Binance spot ids grow by 1 per
  trade, and 100 trades/ms is ~100x the busiest second seen; a gap in time allows a matching gap in ids,
  so a stopped worker is not frozen out. A symbol's first trade id must be below :data:`MAX_TRADE_ID`
  (1e12, ~250x BTCUSDT's id in 2024). Ids of book-ticker updates are not bounded (they count every
  order book change, not trades).

Determinism (SIGKILL restarts stay bit-identical): the clock and high-water mark come from the state
restored from the changelog, so the decision is a function of the state, the row and the wall clock;
the wall clock only grows, so a row accepted once is accepted on every reprocessing, and a row is
decided differently on a reprocessing only if it was more than 5 min in the future when first seen.
Market data (replayed or live, with a clock skew under 5 min) never is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["ID_SLACK", "MAX_AHEAD_MS", "MAX_IDS_PER_MS", "MAX_TRADE_ID", "implausible_rows"]

MAX_AHEAD_MS = 5 * 60_000
"""How far (ms) a row's time may be ahead of both its symbol's clock and the wall clock."""

ID_SLACK = 10_000_000
"""How far a trade id may jump above the symbol's high-water mark at the same time (ids)."""

MAX_IDS_PER_MS = 100
"""More id jump allowed per ms of time since the symbol's clock (ids/ms; 100,000 trades/s)."""

MAX_TRADE_ID = 10**12
"""The largest plausible first trade id of a symbol (ids)."""


def implausible_rows(
    times: Any, ids: Any | None, clock: int | None, high_id: int | None, now_ms: int | None = None
) -> list[tuple[int, str]]:
    """[(row, reason)] of the rows that break a bound, against the symbol's ``clock`` (latest time
    applied, epoch ms; None: none yet) and ``high_id`` (highest trade id applied; None: none yet), at
    wall-clock ``now_ms`` (default: now). ``ids`` None: no id bound (book-ticker update ids).

    Every row is checked against the state before the frame, so a bad row cannot open the door for the
    rows after it, and the good rows around a bad one pass."""
    t = np.asarray(times, dtype=np.int64)
    if not len(t):
        return []
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    limit = now + MAX_AHEAD_MS if clock is None else max(clock, now) + MAX_AHEAD_MS
    reasons: list[tuple[int, str]] = []
    if int(t.max()) > limit:
        ref = "the wall clock" if clock is None else "the symbol's clock and the wall clock"
        reasons.extend(
            (int(i), f"time {int(t[i])} more than {MAX_AHEAD_MS} ms ahead of {ref}") for i in np.flatnonzero(t > limit)
        )
    if ids is not None:
        a = np.asarray(ids, dtype=np.int64)
        if high_id is None:
            over = a > MAX_TRADE_ID
            what = f"above the largest plausible first trade id {MAX_TRADE_ID}"
        else:
            since = np.clip(t - (clock if clock is not None else t), 0, 10**15)  # no int64 overflow
            over = (a - high_id) > ID_SLACK + MAX_IDS_PER_MS * since
            what = f"jumps more than {ID_SLACK} + {MAX_IDS_PER_MS}/ms above the symbol's last id {high_id}"
        if over.any():
            seen = {i for i, _ in reasons}
            reasons.extend((int(i), f"trade_id {int(a[i])} {what}") for i in np.flatnonzero(over) if i not in seen)
            reasons.sort()
    return reasons
