"""rtqis.intervals: the one place every interval rule lives (computed fixed windows, stored calendar ones)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from rtqis.errors import IntervalError, RtqisError
from rtqis.intervals import (
    INTERVALS,
    aligned,
    interval_from_bounds,
    interval_ms,
    interval_name,
    next_open,
    stored_interval_ms,
)


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_fixed_intervals_parse_and_name_round_trip() -> None:
    assert interval_ms("1m") == 60_000 and interval_ms("5m") == 300_000 and interval_ms("1d") == 86_400_000
    assert interval_ms("250ms") == 250 and interval_ms("90s") == 90_000 and interval_ms("7d") == 7 * 86_400_000
    assert all(interval_name(size) == name for name, size in INTERVALS.items())
    assert interval_name(250) == "250ms" and interval_name(90_000) == "90s"


@pytest.mark.parametrize("bad", ["", "0m", "-1m", "1x", "m1", "1.5m", "01m", "1 m", "1W"])
def test_malformed_intervals_are_refused_everywhere(bad: str) -> None:
    with pytest.raises(IntervalError, match="interval"):
        interval_ms(bad)
    with pytest.raises(IntervalError, match="unknown interval"):
        stored_interval_ms(bad)


def test_calendar_intervals_are_stored_but_never_computed() -> None:
    for name in ("1w", "1M"):
        with pytest.raises(IntervalError, match="calendar interval") as err:
            interval_ms(name)
        assert isinstance(err.value, ValueError) and isinstance(err.value, RtqisError)
    assert stored_interval_ms("1w") == 7 * 86_400_000
    assert stored_interval_ms("1M") == 31 * 86_400_000  # the longest month: look-backs never fall short
    assert stored_interval_ms("5m") == 300_000
    with pytest.raises(IntervalError):
        stored_interval_ms("2w")


def test_alignment_follows_binance() -> None:
    monday, thursday = _ms(2024, 8, 5), _ms(2024, 8, 8)
    assert aligned(np.array([monday, thursday]), "1w").tolist() == [True, False]
    assert aligned(np.array([_ms(2024, 8, 1), _ms(2024, 8, 2)]), "1M").tolist() == [True, False]
    assert aligned(np.array([_ms(2024, 8, 8, 0, 5), _ms(2024, 8, 8, 0, 6)]), "5m").tolist() == [True, False]
    three_days = 3 * 86_400_000
    assert aligned(np.array([_ms(2024, 8, 8), _ms(2024, 8, 8, 12)]), "3d").tolist() == [True, False]
    assert interval_ms("3d") == three_days


def test_next_open_steps_calendar_months() -> None:
    opens = np.array([_ms(2024, 1, 1), _ms(2024, 2, 1), _ms(2024, 12, 1)])
    assert next_open(opens, "1M").tolist() == [_ms(2024, 2, 1), _ms(2024, 3, 1), _ms(2025, 1, 1)]
    assert next_open(np.array([_ms(2024, 8, 5)]), "1w").tolist() == [_ms(2024, 8, 12)]
    assert next_open(np.array([0, 60_000]), "1m").tolist() == [60_000, 120_000]


def test_interval_of_a_kline_from_its_bounds() -> None:
    assert interval_from_bounds(0, 59_999) == "1m"
    assert interval_from_bounds(0, 299_999) == "5m"
    assert interval_from_bounds(0, 86_399_999) == "1d"
    assert interval_from_bounds(0, 998) is None
    assert interval_from_bounds(10, 5) is None
