"""Reading a time the user typed: ISO-8601 (UTC when no offset is given) or epoch milliseconds.

One rule for every option that takes a time (``--start``/``--end``, ``--time``, ``--from-time``,
``rtqis replay --from/--to``): the same forms are accepted everywhere and a bad one is one line.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rtqis.errors import RtqisError

__all__ = ["parse_time"]


def parse_time(text: str, what: str = "time", error: type[RtqisError] = RtqisError) -> int:
    """Epoch milliseconds from ISO-8601 (UTC when no offset is given) or an integer of epoch ms.

    ``what`` names the option in the error; ``error`` is the class raised (one readable line)."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise error(f"cannot read {what} {text!r}: use ISO-8601 UTC (2024-08-09T00:00:00Z) or epoch ms") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
