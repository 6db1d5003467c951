"""Replay event time against the wall clock at a chosen speed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Replays event time at ``speed`` times the wall clock (None: as fast as possible).

    The first :meth:`wait_until` anchors event time to the clock; later calls sleep until the clock
    has advanced ``(event_ms - first_event_ms) / speed`` ms. ``clock`` (seconds, monotonic) and
    ``sleep`` are injectable for tests; ``sleep`` may be ``threading.Event().wait`` to make it stoppable.
    """

    def __init__(
        self,
        speed: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0 or None, got {speed}")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._anchor: tuple[float, int] | None = None

    def reset(self) -> None:
        """Forget the anchor: the next event is replayed at once."""
        self._anchor = None

    def wait_until(self, event_ms: int) -> float:
        """Sleep until ``event_ms`` is due; return the seconds slept (0.0 if it was already due)."""
        if self.speed is None:
            return 0.0
        now = self._clock()
        if self._anchor is None:
            self._anchor = (now, event_ms)
            return 0.0
        wall0, ev0 = self._anchor
        delay = wall0 + (event_ms - ev0) / 1000.0 / self.speed - now
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        return delay
