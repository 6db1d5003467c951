"""A local Binance order book kept in sync from depth diffs and REST snapshots, exactly as Binance documents it.

Binance publishes the order book as a stream of *diffs* (``depthUpdate``: the absolute quantity of every
price level that changed between update ids ``U`` and ``u``) and, over REST, *snapshots* (the top levels
at ``lastUpdateId``). :class:`LocalOrderBook` follows "How to manage a local order book correctly":

Spot (``futures=False``)
    1. buffer the diffs while there is no book (:attr:`LocalOrderBook.needs_snapshot` is True);
    2. load a snapshot (:meth:`LocalOrderBook.on_snapshot`); drop buffered diffs with ``u <= lastUpdateId``;
    3. the first diff applied must have ``U <= lastUpdateId + 1 <= u``; if it starts later the snapshot is
       older than the stream (or diffs were lost): the snapshot is discarded, the diffs stay buffered and a
       new snapshot is needed;
    4. afterwards a diff with ``u <= local id`` is stale (dropped, counted); one with ``U > local id + 1``
       is a gap: the book is discarded and a new snapshot is needed (counted in ``gaps`` and ``resyncs``).
       Binance's rule is ``U > local id + 1`` -> restart, so a diff that overlaps the book's id
       (``U <= local id < u``) is applied: its quantities are absolute, hence still correct.

USD-M / COIN-M futures (``futures=True``): update ids are shared across symbols and jump, so continuity is
``pu`` (previous final update id) ``== local id``; stale diffs are ``u < lastUpdateId``; the first diff
applied must have ``U <= lastUpdateId <= u``.

Applying a diff: quantity 0 removes the level (absent levels are ignored), any other quantity sets it. A
book that is crossed afterwards (best bid >= best ask) is corrupted and resynced.

Units: prices and quantities are float64 as parsed from Binance's decimal strings (the same string always
gives the same float, so prices are exact dictionary keys); times are epoch ms. Each side is a dict
``price -> qty`` plus an ascending list of prices kept sorted with :mod:`bisect`, so the best level is O(1)
and a level update is O(log n) + a memmove, plenty for 100 ms (spot) or real-time (futures) diffs on
books of a few thousand levels. Levels outside the snapshot's range that diffs add later are kept but, as
Binance warns, the book far from the top is incomplete; only the top N levels are published.

:class:`Throttle` decides when to publish the top N: at most ``max_per_s`` times a second per symbol,
and a refused state is remembered (:attr:`Throttle.pending`) so that a timer can publish the latest
state once the interval has passed (:meth:`Throttle.due`).
"""

from __future__ import annotations

import bisect
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtqis.producers.binance_format import DepthDiffEvent
from rtqis.schemas.models import DepthSnapshot

__all__ = ["BookState", "BookStats", "LocalOrderBook", "Throttle"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 10_000
"""Diffs kept while waiting for a snapshot; older ones are dropped first (counted in ``buffer_overflow``)."""


class BookState(enum.Enum):
    """Where a :class:`LocalOrderBook` is in Binance's sync procedure."""

    NEEDS_SNAPSHOT = "needs_snapshot"
    """No book: diffs are buffered until a snapshot arrives."""
    SYNCING = "syncing"
    """A snapshot is loaded but no diff has bridged it yet (``U <= lastUpdateId + 1 <= u``)."""
    SYNCED = "synced"
    """The book follows the stream; :meth:`LocalOrderBook.top` returns it."""


@dataclass
class BookStats:
    """Counters of one book (monotonic over its life)."""

    applied: int = 0
    """Diffs applied to the book."""
    dropped_stale: int = 0
    """Diffs older than the book (already contained in the snapshot or a duplicate)."""
    gaps: int = 0
    """Continuity breaks (``U > local id + 1`` spot, ``pu != local id`` futures)."""
    resyncs: int = 0
    """Times a loaded book or snapshot was discarded and a new snapshot requested."""
    stale_snapshots: int = 0
    """Snapshots older than the first diff still needed (discarded; the diffs stay buffered)."""
    crossed: int = 0
    """Books found crossed after a diff or in a snapshot (corrupted -> resync)."""
    snapshots: int = 0
    """Snapshots received."""
    buffer_overflow: int = 0
    """Buffered diffs dropped because the buffer was full."""


class _Side:
    """One side of the book: ``price -> qty`` and the prices in ascending order."""

    __slots__ = ("prices", "qty")

    def __init__(self) -> None:
        self.qty: dict[float, float] = {}
        self.prices: list[float] = []

    def load(self, levels: Iterable[tuple[float, float]]) -> None:
        self.qty = {float(p): float(q) for p, q in levels if q > 0}
        self.prices = sorted(self.qty)

    def set(self, price: float, qty: float) -> None:
        if qty == 0.0:
            if self.qty.pop(price, None) is not None:
                prices = self.prices
                del prices[bisect.bisect_left(prices, price)]
        else:
            if price not in self.qty:
                bisect.insort(self.prices, price)
            self.qty[price] = qty

    def clear(self) -> None:
        self.qty = {}
        self.prices = []

    def __len__(self) -> int:
        return len(self.prices)


def _levels(x: Any) -> list[tuple[float, float]]:
    """Snapshot levels from ``[[price, qty], ...]`` (strings or numbers) or an ``(n, 2)`` array."""
    if isinstance(x, np.ndarray):
        arr = np.asarray(x, dtype=np.float64)
        if arr.size == 0:
            return []
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise ValueError(f"snapshot levels must be an (n, 2) array, got shape {arr.shape}")
        return [(p, q) for p, q in arr[:, :2].tolist()]
    return [(float(lvl[0]), float(lvl[1])) for lvl in x]


class LocalOrderBook:
    """The order book of one symbol, rebuilt from snapshots and kept current by depth diffs.

    Feed every ``depthUpdate`` of the symbol to :meth:`on_diff`; whenever :attr:`needs_snapshot` is True,
    fetch a REST snapshot (keep feeding diffs meanwhile: they are buffered) and pass it to
    :meth:`on_snapshot`. :meth:`top` returns the best ``n`` levels once synced. ``depth_levels`` is the
    default ``n``; ``futures`` selects the USD-M/COIN-M continuity rules (``pu``).
    """

    def __init__(
        self, symbol: str, *, depth_levels: int = 20, futures: bool = False, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> None:
        if depth_levels < 1:
            raise ValueError(f"depth_levels must be >= 1, got {depth_levels}")
        self.symbol = symbol.upper()
        self.depth_levels = depth_levels
        self.futures = futures
        self.stats = BookStats()
        self._bids = _Side()
        self._asks = _Side()
        self._buffer: deque[DepthDiffEvent] = deque(maxlen=max_buffer)
        self._state = BookState.NEEDS_SNAPSHOT
        self._last_id = 0  # update id the book is at
        self._snapshot_id = 0
        self._dropped_since_snapshot = 0
        self._event_time: int | None = None
        self._recv_time = 0
        self._warned_pu = False

    # ------------------------------------------------------------------------------------------ state

    @property
    def state(self) -> BookState:
        return self._state

    @property
    def needs_snapshot(self) -> bool:
        """True while there is no book: the caller should fetch a snapshot (diffs are being buffered)."""
        return self._state is BookState.NEEDS_SNAPSHOT

    @property
    def synced(self) -> bool:
        return self._state is BookState.SYNCED

    @property
    def last_update_id(self) -> int:
        """The update id the book is at (0 before the first snapshot)."""
        return self._last_id

    @property
    def buffered(self) -> int:
        """Diffs waiting for a snapshot."""
        return len(self._buffer)

    def __len__(self) -> int:
        """Number of price levels held (both sides)."""
        return len(self._bids) + len(self._asks)

    def best_bid(self) -> tuple[float, float] | None:
        """``(price, qty)`` of the best bid of the current book, or None if that side is empty."""
        if not self._bids.prices:
            return None
        p = self._bids.prices[-1]
        return p, self._bids.qty[p]

    def best_ask(self) -> tuple[float, float] | None:
        """``(price, qty)`` of the best ask of the current book, or None if that side is empty."""
        if not self._asks.prices:
            return None
        p = self._asks.prices[0]
        return p, self._asks.qty[p]

    # ----------------------------------------------------------------------------------------- inputs

    def on_diff(self, ev: DepthDiffEvent) -> BookState:
        """Buffer (no book yet) or apply one diff; returns the state afterwards."""
        if ev.symbol.upper() != self.symbol:
            raise ValueError(f"diff for {ev.symbol} given to the {self.symbol} order book")
        if self.futures and ev.prev_final_update_id is None:
            raise ValueError(f"{self.symbol}: futures order book needs diffs with 'pu' (spot stream?)")
        if not self.futures and ev.prev_final_update_id is not None and not self._warned_pu:
            self._warned_pu = True
            log.warning("%s: diffs carry 'pu' (a futures stream) but the book uses spot rules", self.symbol)
        if self._state is BookState.NEEDS_SNAPSHOT:
            self._buffer_diff(ev)
        else:
            self._process(ev)
        return self._state

    def on_snapshot(self, last_update_id: int, bids: Any, asks: Any, recv_time_ms: int) -> BookState:
        """Load a REST snapshot (levels ``[price, qty]``, any order) and apply the buffered diffs to it.

        A snapshot older than the buffered diffs is discarded (``stale_snapshots``; a newer one is needed,
        the diffs stay buffered). A snapshot given while the book is synced replaces it.
        """
        self.stats.snapshots += 1
        self._bids.load(_levels(bids))
        self._asks.load(_levels(asks))
        self._last_id = self._snapshot_id = int(last_update_id)
        self._dropped_since_snapshot = 0
        self._event_time = None
        self._recv_time = int(recv_time_ms)
        if self._crossed():
            self.stats.crossed += 1
            log.warning("%s: snapshot %d is crossed; need another", self.symbol, last_update_id)
            self._reset()
            return self._state
        self._state = BookState.SYNCING
        buffered, self._buffer = self._buffer, deque(maxlen=self._buffer.maxlen)
        while buffered:
            ev = buffered.popleft()
            if self._state is BookState.NEEDS_SNAPSHOT:
                self._buffer_diff(ev)
            else:
                self._process(ev)
        log.info(
            "%s: snapshot %d loaded (%d bids, %d asks) -> %s",
            self.symbol,
            last_update_id,
            len(self._bids),
            len(self._asks),
            self._state.value,
        )
        return self._state

    # ---------------------------------------------------------------------------------------- outputs

    def top(self, n: int | None = None) -> DepthSnapshot | None:
        """The best ``n`` levels per side (default ``depth_levels``), best first; None until synced.

        ``last_update_id`` is the book's update id, ``event_time`` the exchange time of the last diff
        applied and ``recv_time`` its local receive time (epoch ms).
        """
        if self._state is not BookState.SYNCED:
            return None
        k = self.depth_levels if n is None else n
        if k < 1:
            raise ValueError(f"n must be >= 1, got {k}")
        bid_p = self._bids.prices[-1 : -k - 1 : -1]
        ask_p = self._asks.prices[:k]
        bq, aq = self._bids.qty, self._asks.qty
        return DepthSnapshot(
            symbol=self.symbol,
            last_update_id=self._last_id,
            event_time=self._event_time,
            recv_time=self._recv_time,
            bid_price=bid_p,
            bid_qty=[bq[p] for p in bid_p],
            ask_price=ask_p,
            ask_qty=[aq[p] for p in ask_p],
        )

    # -------------------------------------------------------------------------------------- internals

    def _buffer_diff(self, ev: DepthDiffEvent) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.stats.buffer_overflow += 1
        self._buffer.append(ev)

    def _reset(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._state = BookState.NEEDS_SNAPSHOT
        self._event_time = None

    def _resync(self, ev: DepthDiffEvent | None, why: str) -> None:
        """Discard the book; ``ev`` (the newest diff, not applied) starts the new buffer."""
        self.stats.resyncs += 1
        log.warning("%s: resync (%s)", self.symbol, why)
        self._reset()
        if ev is not None:
            self._buffer_diff(ev)

    def _crossed(self) -> bool:
        b, a = self._bids.prices, self._asks.prices
        return bool(b) and bool(a) and b[-1] >= a[0]

    def _process(self, ev: DepthDiffEvent) -> None:
        first, final = ev.first_update_id, ev.final_update_id
        last = self._last_id
        if self._state is BookState.SYNCING:
            # stale: already contained in the snapshot
            if (final < last) if self.futures else (final <= last):
                self.stats.dropped_stale += 1
                self._dropped_since_snapshot += 1
                return
            bridges = first <= last <= final if self.futures else first <= last + 1 <= final
            if not bridges:
                if self._dropped_since_snapshot == 0:
                    # every diff seen is newer than the snapshot: Binance says fetch another
                    self.stats.stale_snapshots += 1
                    self._resync(ev, f"snapshot {self._snapshot_id} older than the first diff (U={first})")
                else:
                    self.stats.gaps += 1
                    self._resync(ev, f"gap after snapshot {self._snapshot_id}: next diff U={first}, u={final}")
                return
        elif self.futures:
            pu = ev.prev_final_update_id
            if pu != last:
                if final <= last:
                    self.stats.dropped_stale += 1
                    return
                self.stats.gaps += 1
                self._resync(ev, f"gap: pu={pu} but book is at {last}")
                return
        else:
            if final <= last:
                self.stats.dropped_stale += 1
                return
            if first > last + 1:
                self.stats.gaps += 1
                self._resync(ev, f"gap: U={first} but book is at {last} ({first - last - 1} updates missing)")
                return
        self._apply(ev)

    def _apply(self, ev: DepthDiffEvent) -> None:
        bids, asks = self._bids, self._asks
        for p, q in ev.bids:
            bids.set(p, q)
        for p, q in ev.asks:
            asks.set(p, q)
        self._last_id = ev.final_update_id
        self._event_time = ev.event_time
        self._recv_time = ev.recv_time
        self.stats.applied += 1
        self._state = BookState.SYNCED
        if self._crossed():
            self.stats.crossed += 1
            self._resync(None, f"crossed book after update {ev.final_update_id}")


class Throttle:
    """Publish at most ``max_per_s`` times a second, and never lose the latest state.

    Call :meth:`allow` on every change: it says whether to publish now (at least ``1/max_per_s`` seconds
    after the previous publication). A refused change leaves :attr:`pending` True; call :meth:`due` from a
    timer to learn when that latest state should be published (it then counts as a publication).
    Times are seconds of a monotonic clock, passed in or read from ``clock``.
    """

    def __init__(self, max_per_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not max_per_s > 0:
            raise ValueError(f"max_per_s must be > 0, got {max_per_s}")
        self.interval_s = 1.0 / max_per_s
        self._clock = clock
        self._last: float | None = None
        self._pending = False
        self.published = 0
        self.suppressed = 0

    @property
    def pending(self) -> bool:
        """A change was refused since the last publication (the latest state is not out yet)."""
        return self._pending

    def allow(self, now: float | None = None) -> bool:
        """A new state is available: True if it may be published now (then it counts as published)."""
        t = self._clock() if now is None else now
        if self._last is None or t - self._last >= self.interval_s:
            self._last = t
            self._pending = False
            self.published += 1
            return True
        self._pending = True
        self.suppressed += 1
        return False

    def due(self, now: float | None = None) -> bool:
        """True if a refused (latest) state is waiting and may now be published; it then counts as published."""
        if not self._pending:
            return False
        t = self._clock() if now is None else now
        assert self._last is not None
        if t - self._last >= self.interval_s:
            self._last = t
            self._pending = False
            self.published += 1
            return True
        return False

    def next_due(self) -> float | None:
        """Clock time from which :meth:`due` will return True, or None if nothing is pending."""
        if not self._pending or self._last is None:
            return None
        return self._last + self.interval_s
