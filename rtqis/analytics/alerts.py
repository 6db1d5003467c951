"""Z-score alerts with hysteresis, a cooldown and a cost gate (pure state machine, no I/O).

Two rules: ``bands`` (below) and ``reverse`` (stop-and-reverse: no exit band; a position is held until
z reaches the opposite entry band, where it exits and enters the other side in the same sample).
Cost gate: ``update(..., cost_ok=False)`` withholds an entry the caller judged not to pay its round
trip; the position stays flat and ``below_cost`` counts such entries once per excursion beyond the
band.

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

__all__ = ["ENTER_LONG", "ENTER_SHORT", "EXIT", "RULES", "ZAlert"]

ENTER_SHORT = "enter_short_spread"
ENTER_LONG = "enter_long_spread"
EXIT = "exit"
RULES = ("bands", "reverse")


@dataclass
class ZAlert:
    enter: float = 2.0
    exit: float = 0.5
    cooldown_ms: int = 30_000
    position: int = 0  # +1 short spread, -1 long spread, 0 flat
    last_alert: int | None = None
    rule: str = "bands"
    below_cost: int = 0  # entries withheld by the cost gate
    blocked: int = 0  # side (+1/-1) of the excursion whose entry was withheld (counted once)

    def __post_init__(self) -> None:
        if not 0 <= self.exit < self.enter:
            raise ValueError(f"need 0 <= exit < enter, got exit={self.exit}, enter={self.enter}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")

    def update(self, t: int, z: float | None, cost_ok: bool = True) -> list[tuple[str, float]]:
        """Alerts ``(kind, threshold crossed)`` fired by z-score ``z`` at event time ``t`` (ms); a missing
        or non-finite z (a warming-up window) fires nothing and changes nothing. An entry is withheld (and
        counted in ``below_cost``) when ``cost_ok`` is False."""
        if z is None or not math.isfinite(z):
            return []
        out: list[tuple[str, float]] = []
        cooling = self.last_alert is not None and t - self.last_alert < self.cooldown_ms
        back = abs(z) <= self.exit and self.rule == "bands"
        if self.position and (back or z * self.position <= -self.enter):
            out.append((EXIT, self.exit))
            self.position = 0
            self.last_alert = t
        side = 1 if z > 0 else -1
        if abs(z) < self.enter:
            self.blocked = 0
        elif not self.position and not cooling:
            if cost_ok:
                self.position = side
                out.append((ENTER_SHORT if z > 0 else ENTER_LONG, self.enter if z > 0 else -self.enter))
                self.last_alert = t
                self.blocked = 0
            elif self.blocked != side:
                self.below_cost += 1
                self.blocked = side
        return out

    def state(self) -> dict[str, Any]:
        return {
            "enter": self.enter,
            "exit": self.exit,
            "cooldown_ms": self.cooldown_ms,
            "position": self.position,
            "last_alert": self.last_alert,
            "rule": self.rule,
            "below_cost": self.below_cost,
            "blocked": self.blocked,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ZAlert:
        return cls(**d)
