"""Z-score alerts with hysteresis and a cooldown (pure state machine, no I/O).

States: flat, short spread (entered at z >= enter: y rich against x), long spread (z <= -enter).
An entry alert fires when |z| reaches ``enter`` from flat; an exit alert when |z| falls back to
``exit`` or below. Between the two bands nothing fires however often z wiggles (hysteresis). After any
alert, no new *entry* fires for ``cooldown_ms`` of event time (exits always fire: a trader must hear
that the spread has come back). A jump from one side straight through to the other fires an exit then
an entry (the entry subject to the cooldown counted from the alert before the exit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ENTER_LONG", "ENTER_SHORT", "EXIT", "ZAlert"]

ENTER_SHORT = "enter_short_spread"
ENTER_LONG = "enter_long_spread"
EXIT = "exit"


@dataclass
class ZAlert:
    enter: float = 2.0
    exit: float = 0.5
    cooldown_ms: int = 30_000
    position: int = 0  # +1 short spread, -1 long spread, 0 flat
    last_alert: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.exit < self.enter:
            raise ValueError(f"need 0 <= exit < enter, got exit={self.exit}, enter={self.enter}")

    def update(self, t: int, z: float | None) -> list[tuple[str, float]]:
        """Alerts ``(kind, threshold crossed)`` fired by z-score ``z`` at event time ``t`` (ms); a missing
        or non-finite z (a warming-up window) fires nothing and changes nothing."""
        if z is None or not math.isfinite(z):
            return []
        out: list[tuple[str, float]] = []
        cooling = self.last_alert is not None and t - self.last_alert < self.cooldown_ms
        if self.position and (abs(z) <= self.exit or z * self.position <= -self.enter):
            out.append((EXIT, self.exit))
            self.position = 0
            self.last_alert = t
        if not self.position and abs(z) >= self.enter and not cooling:
            self.position = 1 if z > 0 else -1
            out.append((ENTER_SHORT if z > 0 else ENTER_LONG, self.enter if z > 0 else -self.enter))
            self.last_alert = t
        return out

    def state(self) -> dict[str, Any]:
        return {
            "enter": self.enter,
            "exit": self.exit,
            "cooldown_ms": self.cooldown_ms,
            "position": self.position,
            "last_alert": self.last_alert,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ZAlert:
        return cls(**d)
