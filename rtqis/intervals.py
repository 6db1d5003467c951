"""Every candle interval rule in one place: parse, name, align, step.

Two families, decided once:

* **Fixed windows** (``250ms``, ``1s``, ``1m``, ``5m``, ``1h``, ``1d``, any ``<n><ms|s|m|h|d>``): epoch-aligned,
  ``open = floor(t / size) * size``. These are what RT-QIS *computes* from trades (:func:`interval_ms`), and
  for sizes up to one day they are exactly Binance's kline windows.
* **Calendar intervals** (``1w``: weeks starting Monday 00:00 UTC; ``1M``: calendar months): Binance publishes
  klines for them, so the store *imports* and serves them (:func:`stored_interval_ms`, :func:`aligned`,
  :func:`next_open`), but an epoch floor cannot reproduce them, so computing them is refused with the reason.

Times are epoch milliseconds, UTC. Pure: numpy only.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from rtqis.errors import IntervalError

__all__ = [
    "CALENDAR",
    "INTERVALS",
    "aligned",
    "interval_from_bounds",
    "interval_ms",
    "interval_name",
    "next_open",
    "stored_interval_ms",
]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MONTH_NOMINAL_MS = 31 * DAY_MS  # the longest month: an upper bound used to size look-backs
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; Binance weeks start on Monday 00:00 UTC

#: Binance kline intervals whose windows are epoch-aligned (``floor(t / size) * size``), in milliseconds.
#: ``3d``, ``1w`` and ``1M`` are deliberately absent: Binance aligns those to calendar boundaries
#: (weeks start on Monday, months vary in length), which an epoch floor does not reproduce.
INTERVALS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}

#: Calendar intervals: stored and served (imported Binance klines), never computed.
CALENDAR: dict[str, int] = {"1w": WEEK_MS, "1M": MONTH_NOMINAL_MS}

_UNIT_MS: dict[str, int] = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_FIXED_RE = re.compile(r"^([1-9][0-9]*)(ms|s|m|h|d)$")

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def interval_ms(interval: str) -> int:
    """Window size in ms of a fixed interval such as ``"1m"``, ``"5m"``, ``"1h"`` or ``"250ms"``.

    Accepts the names in :data:`INTERVALS` and any ``<positive integer><unit>`` with unit ``ms``, ``s``,
    ``m``, ``h`` or ``d``. Anything else (including the calendar ``1w``/``1M``) raises :class:`IntervalError`,
    which is a :class:`ValueError`, naming the value.
    """
    if isinstance(interval, str):
        known = INTERVALS.get(interval)
        if known is not None:
            return known
        m = _FIXED_RE.match(interval)
        if m is not None:
            return int(m.group(1)) * _UNIT_MS[m.group(2)]
        if interval in CALENDAR:
            raise IntervalError(
                f"candle interval {interval!r} is a calendar interval: it can be imported from Binance klines "
                "and read back, but not computed from trades (windows are epoch-aligned); use 1d or shorter"
            )
    raise IntervalError(
        f"bad candle interval {interval!r}: expected <positive integer><unit> with unit ms, s, m, h or d "
        f"(e.g. {', '.join(list(INTERVALS)[:6])}); calendar intervals (1w, 1M) are not supported here"
    )


def stored_interval_ms(interval: str) -> int:
    """Nominal length in ms of an interval the store accepts: any fixed interval, or ``1w`` / ``1M``
    (31 days, the longest month, so look-backs sized with it never fall short)."""
    if isinstance(interval, str) and interval in CALENDAR:
        return CALENDAR[interval]
    try:
        return interval_ms(interval)
    except IntervalError:
        raise IntervalError(f"unknown interval {interval!r} (expected e.g. 1s, 1m, 5m, 1h, 1d, 1w, 1M)") from None


def interval_name(size_ms: int) -> str:
    """Canonical name of a fixed window size: the largest unit that divides it (``300_000 -> "5m"``)."""
    size = int(size_ms)
    if size != size_ms or size <= 0:
        raise IntervalError(f"window size must be a positive integer number of milliseconds, got {size_ms!r}")
    for unit in ("d", "h", "m", "s"):
        if size % _UNIT_MS[unit] == 0:
            return f"{size // _UNIT_MS[unit]}{unit}"
    return f"{size}ms"


def interval_from_bounds(open_ms: int, close_ms: int) -> str | None:
    """Interval of a Binance kline from its open and (inclusive) close time, or None if no fixed unit fits
    (``close - open + 1`` is the window length: 1m klines close at ``open + 59_999``)."""
    size = int(close_ms) - int(open_ms) + 1
    if size <= 0:
        return None
    for unit in ("d", "h", "m", "s"):
        if size % _UNIT_MS[unit] == 0:
            return f"{size // _UNIT_MS[unit]}{unit}"
    return None


def aligned(open_ms: IntArray, interval: str) -> BoolArray:
    """Which open times start an interval: epoch-aligned up to 1d, day-aligned for multi-day bars (their
    phase is exchange specific), Monday for 1w, the first of the month for 1M (all UTC)."""
    open_ms = np.asarray(open_ms, dtype=np.int64)
    if interval == "1M":
        d = open_ms.astype("datetime64[ms]")
        return np.asarray(d == d.astype("datetime64[M]").astype("datetime64[ms]"), dtype=bool)
    size = stored_interval_ms(interval)
    if interval == "1w":
        return np.asarray((open_ms - _MONDAY_OFFSET_MS) % size == 0, dtype=bool)
    if size > DAY_MS:
        return np.asarray(open_ms % DAY_MS == 0, dtype=bool)
    return np.asarray(open_ms % size == 0, dtype=bool)


def next_open(open_ms: IntArray, interval: str) -> IntArray:
    """Open time of the bar after each bar (calendar months for ``1M``)."""
    open_ms = np.asarray(open_ms, dtype=np.int64)
    if interval == "1M":
        month = open_ms.astype("datetime64[ms]").astype("datetime64[M]")
        return np.asarray((month + 1).astype("datetime64[ms]").astype(np.int64))
    return np.asarray(open_ms + stored_interval_ms(interval), dtype=np.int64)
