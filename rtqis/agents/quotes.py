"""The best bid/ask of each leg of a pair at its sample times, for the round-trip cost of an entry (#20).

With mid prices (``RTQIS_PAIR_PRICE=mid``) a leg sample is the mid of the last book update strictly
before the sample time; the symbol book samples that update's bid and ask with the same clock
(:class:`~rtqis.analytics.sampling.LegSampler`, same times, same ids, so the same samples) and ships
them with the leg samples (``LegSamples.bid`` / ``.ask``). :class:`LegQuotes` joins them to the pair's
aligned rows exactly as :class:`~rtqis.analytics.sampling.PairAligner` joins the prices: each leg's
quote at row time ``t`` is its latest sample at or before ``t``. Its state is JSON and lives in the
pair's table state, so a restarted worker passes the same quotes to the model (bit-identical outputs).

With trade prices (``RTQIS_PAIR_PRICE=trade``, the default) the leg samples carry no quotes: the
trades agent never sees the book, and joining a second topic would make the pair wait for both feeds
in event time (a redesign of the alignment). The model then counts fees only in the round-trip cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtqis.analytics.sampling import leg_queues

__all__ = ["LegQuotes"]

Quote = tuple[float | None, float | None]
_NONE: Quote = (None, None)


@dataclass
class LegQuotes:
    """Per leg (``x``, ``y``): quote samples ``[time, bid, ask]`` not yet joined, and the last one joined."""

    pending: dict[str, list[list[float]]] = field(default_factory=lambda: {"x": [], "y": []})
    last: dict[str, list[float] | None] = field(default_factory=lambda: {"x": None, "y": None})

    def push(self, leg: str, times: list[int], bids: list[float] | None, asks: list[float] | None) -> None:
        """Queue the quotes of ``leg``'s samples (none: a trade-priced leg); repeated times are skipped."""
        if bids is None or asks is None or len(bids) != len(times) or len(asks) != len(times):
            return
        q = self.pending[leg]
        latest = q[-1][0] if q else (self.last[leg] or [-1])[0]
        for t, b, a in zip(times, bids, asks, strict=True):
            if t > latest:
                q.append([int(t), float(b), float(a)])
                latest = t

    def at(self, leg: str, t: int) -> Quote:
        """``(bid, ask)`` of ``leg`` at row time ``t`` (rows in time order), ``(None, None)`` if unknown."""
        q = self.pending[leg]
        i = 0
        while i < len(q) and q[i][0] <= t:
            i += 1
        if i:
            self.last[leg] = q[i - 1]
            del q[:i]
        cur = self.last[leg]
        return _NONE if cur is None else (cur[1], cur[2])

    def state(self) -> dict[str, Any]:
        """A snapshot (copies: :func:`~rtqis.analytics.sampling.leg_queues`)."""
        return leg_queues(self.pending, self.last)

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> LegQuotes:
        return cls(**leg_queues(d["pending"], d["last"])) if d else cls()
