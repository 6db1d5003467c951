"""Event-time sampling of pair legs: from ticks to aligned (t, x, y) observations.

Pair analytics run on a clock, not on ticks: every ``step_ms`` of *event* time each leg contributes
the last price strictly before the sample time (the close of the bucket ending there, as in a candle).
Event time, not wall time, so a replay gives the numbers of the live run.

- :class:`LegSampler` turns one symbol's ticks (arriving in frames, in order) into samples. A sample
  time ``b`` is emitted once a tick at or after ``b`` proves that no earlier tick can still come.
  A quiet second repeats the last price; its ``last_time`` (the time of that price) says how old it is,
  which is how a stale leg is recognised downstream.
- :class:`PairAligner` joins the samples of the two legs of a pair, which arrive as separate
  messages in any interleaving, into rows ``(t, x, y, x_time, y_time)``, each time once, in order,
  and only when both legs have reached it (the pair's watermark is the slower leg).

Both are plain state machines with a JSON-able :meth:`state`, so the worker keeps them in Faust tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["AlignedRows", "LegSampler", "PairAligner", "leg_queues"]

_MAX_SPAN = 1_000_000  # sample times generated per update at most (a longer silence is skipped)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass
class LegSampler:
    """Samples of one symbol on an event-time clock of ``step_ms``.

    ``max_fill`` bounds the samples emitted across a silence (a leg quiet for an hour does not emit
    3,600 copies of one price): the first ``max_fill`` sample times after its last tick, then none
    until the sample time just before its next tick (enough to show downstream how old the price is).
    """

    step_ms: int = 1000
    max_fill: int = 60
    next_t: int | None = None  # next sample time to emit
    price: float = float("nan")  # last price seen
    last_time: int = -1  # event time of ``price``
    last_id: int = -1  # highest tick id applied (trade id / update id)

    def update(self, times: I64, prices: F64, ids: I64 | None = None) -> tuple[I64, F64, I64]:
        """Feed ticks (in arrival order); returns the completed samples ``(time, price, last_time)``.

        With ``ids`` (trade or update ids, increasing per symbol) ticks already applied are skipped,
        so a redelivered frame changes nothing. Non-finite or non-positive prices are ignored. A tick
        older than the last one counts at the last time (the clock never goes back).
        """
        times = np.asarray(times, dtype=np.int64)
        prices = np.asarray(prices, dtype=np.float64)
        ok = np.isfinite(prices) & (prices > 0)
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            ok &= ids > self.last_id
            if ok.any():
                self.last_id = int(ids[ok].max())
        if not ok.all():
            times, prices = times[ok], prices[ok]
        empty = (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))
        if not len(times):
            return empty
        times = np.maximum.accumulate(np.maximum(times, self.last_time))
        step = self.step_ms
        if self.next_t is None:
            self.next_t = (int(times[0]) // step + 1) * step
        last_b = (int(times[-1]) // step) * step  # the last sample time this batch completes
        start = max(self.next_t, last_b - _MAX_SPAN * step)
        if last_b < start:
            self.price, self.last_time = float(prices[-1]), int(times[-1])
            return empty
        bounds = np.arange(start, last_b + 1, step, dtype=np.int64)
        idx = np.searchsorted(times, bounds, side="left") - 1  # last tick strictly before each bound
        have = idx >= 0
        out_p = np.where(have, prices[np.maximum(idx, 0)], self.price)
        out_t = np.where(have, times[np.maximum(idx, 0)], self.last_time)
        self.next_t = int(last_b) + step
        self.price, self.last_time = float(prices[-1]), int(times[-1])
        # nothing before the very first tick; in a silence only the first max_fill samples and the last
        keep = np.isfinite(out_p) & ((bounds - out_t <= self.max_fill * step) | (bounds == last_b))
        return bounds[keep], out_p[keep], out_t[keep]

    def state(self) -> dict[str, Any]:
        return {
            "step_ms": self.step_ms,
            "max_fill": self.max_fill,
            "next_t": self.next_t,
            "price": None if np.isnan(self.price) else self.price,
            "last_time": self.last_time,
            "last_id": self.last_id,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> LegSampler:
        price = d.get("price")
        return cls(
            step_ms=int(d["step_ms"]),
            max_fill=int(d["max_fill"]),
            next_t=d.get("next_t"),
            price=float("nan") if price is None else float(price),
            last_time=int(d.get("last_time", -1)),
            last_id=int(d.get("last_id", -1)),
        )


def leg_queues(pending: dict[str, list[list[float]]], last: dict[str, list[float] | None]) -> dict[str, Any]:
    """Copies of per-leg sample queues and last samples, ``{"pending": ..., "last": ...}``: the state of a
    :class:`PairAligner` (and of :class:`rtqis.agents.quotes.LegQuotes`), both ways. Copies, because the
    owner goes on changing its lists in place after its state is stored (and a restored one must not
    change the stored dict)."""
    return {
        "pending": {k: [list(x) for x in v] for k, v in pending.items()},
        "last": {k: (list(v) if v is not None else None) for k, v in last.items()},
    }


@dataclass
class AlignedRows:
    """Rows released by :meth:`PairAligner.drain`, in time order."""

    time: I64
    x: F64
    y: F64
    x_time: I64
    y_time: I64

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class PairAligner:
    """Joins the samples of legs ``x`` and ``y`` of one pair by sample time.

    Samples of a leg are deduplicated by time (a redelivered message changes nothing). A row is
    released for every sample time of either leg up to the slower leg's latest sample time; each leg's
    value at ``t`` is its latest sample at or before ``t``. ``max_pending`` bounds what waits for a
    silent leg: beyond it the oldest rows are released with that leg's last value (and its old
    ``last_time``, so they are flagged stale downstream).
    """

    max_pending: int = 3600
    pending: dict[str, list[list[float]]] = field(default_factory=lambda: {"x": [], "y": []})
    last: dict[str, list[float] | None] = field(default_factory=lambda: {"x": None, "y": None})

    def _latest_t(self, leg: str) -> float:
        if self.pending[leg]:
            return self.pending[leg][-1][0]
        last = self.last[leg]
        return last[0] if last is not None else -1

    def push(self, leg: str, times: Any, prices: Any, last_times: Any) -> int:
        """Queue samples of ``leg``; returns how many were new (older or repeated times are skipped)."""
        latest = self._latest_t(leg)
        q = self.pending[leg]
        n = 0
        for t, p, lt in zip(times, prices, last_times, strict=True):
            if t > latest:
                q.append([int(t), float(p), int(lt)])
                latest = t
                n += 1
        return n

    def drain(self) -> AlignedRows:
        wx, wy = self._latest_t("x"), self._latest_t("y")
        upto = min(wx, wy)
        if self.last["x"] is None and not self.pending["x"] or self.last["y"] is None and not self.pending["y"]:
            upto = -1  # a leg never seen yet
        overflow = max(len(self.pending["x"]), len(self.pending["y"])) - self.max_pending
        if overflow > 0:  # one leg is silent: release the oldest rows with its last value
            lead = "x" if len(self.pending["x"]) >= len(self.pending["y"]) else "y"
            upto = max(upto, self.pending[lead][overflow - 1][0])
        times = sorted({s[0] for leg in ("x", "y") for s in self.pending[leg] if s[0] <= upto})
        rows: dict[str, list[list[float]]] = {"x": [], "y": []}
        for leg in ("x", "y"):
            q = self.pending[leg]
            i = 0
            cur = self.last[leg]
            for t in times:
                while i < len(q) and q[i][0] <= t:
                    cur = q[i]
                    i += 1
                rows[leg].append(cur if cur is not None else [t, float("nan"), -1])
            self.last[leg] = cur
            del q[:i]
        n = len(times)
        rx, ry = (
            np.array(rows["x"], dtype=np.float64).reshape(n, 3),
            np.array(rows["y"], dtype=np.float64).reshape(n, 3),
        )
        return AlignedRows(
            time=np.array(times, dtype=np.int64),
            x=rx[:, 1],
            y=ry[:, 1],
            x_time=rx[:, 2].astype(np.int64),
            y_time=ry[:, 2].astype(np.int64),
        )

    def state(self) -> dict[str, Any]:
        """A snapshot (copies: the aligner goes on changing its own lists after the state is stored)."""
        return {"max_pending": self.max_pending, **leg_queues(self.pending, self.last)}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> PairAligner:
        return cls(max_pending=int(d["max_pending"]), **leg_queues(d["pending"], d["last"]))
