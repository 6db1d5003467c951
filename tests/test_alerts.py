"""The alert rules (rtqis.analytics.alerts): bands with hysteresis and cooldown, stop-and-reverse, the cost
gate, missing z, state round trip."""

from __future__ import annotations

import math

import pytest

from rtqis.analytics.alerts import ENTER_LONG, ENTER_SHORT, EXIT, ZAlert


def _run(a: ZAlert, zs: list[tuple[int, float | None]]) -> list[tuple[int, str, float]]:
    return [(t, kind, thr) for t, z in zs for kind, thr in a.update(t, z)]


def test_entry_exit_with_hysteresis() -> None:
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=0)
    fired = _run(a, [(1, 0.0), (2, 1.9), (3, 2.0), (4, 2.7), (5, 1.2), (6, 2.3), (7, 0.6), (8, 0.5), (9, 0.1)])
    # 2.0 reaches the band (>=); 2.7, 1.2, 2.3, 0.6 are inside it: nothing; 0.5 exits (<=)
    assert fired == [(3, ENTER_SHORT, 2.0), (8, EXIT, 0.5)]
    assert a.position == 0 and a.last_alert == 8


def test_long_spread_entry_is_below_minus_enter() -> None:
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=0)
    fired = _run(a, [(1, -1.99), (2, -2.01), (3, -0.7), (4, -0.4)])
    assert fired == [(2, ENTER_LONG, -2.0), (4, EXIT, 0.5)]
    assert a.position == 0


def test_cooldown_blocks_entries_not_exits() -> None:
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=30_000)
    fired = _run(
        a,
        [
            (0, 2.5),  # entry
            (1_000, 0.0),  # exit: always, even 1 s after the entry
            (10_000, 3.0),  # entry blocked: 9 s after the exit
            (30_999, -3.0),  # still blocked: 29.999 s after the exit
            (31_000, 2.2),  # 30 s after the exit: fires
        ],
    )
    assert fired == [(0, ENTER_SHORT, 2.0), (1_000, EXIT, 0.5), (31_000, ENTER_SHORT, 2.0)]
    assert a.position == 1 and a.last_alert == 31_000


def test_a_blocked_entry_is_not_remembered() -> None:
    """z stays beyond the band through the cooldown: the entry fires at the first sample after it."""
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=5_000)
    fired = _run(a, [(0, 2.1), (1_000, 0.2), (2_000, 2.6), (4_000, 2.6), (6_000, 2.6), (7_000, 2.6)])
    assert fired == [(0, ENTER_SHORT, 2.0), (1_000, EXIT, 0.5), (6_000, ENTER_SHORT, 2.0)]


def test_a_jump_through_both_bands_exits_then_enters_the_other_side() -> None:
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=10_000)
    assert a.update(0, 2.4) == [(ENTER_SHORT, 2.0)]
    # within the cooldown of the entry: the exit fires, the opposite entry waits
    assert a.update(5_000, -2.4) == [(EXIT, 0.5)]
    assert a.position == 0
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=10_000)
    a.update(0, 2.4)
    # past it: both, exit first
    assert a.update(20_000, -2.4) == [(EXIT, 0.5), (ENTER_LONG, -2.0)]
    assert a.position == -1 and a.last_alert == 20_000


@pytest.mark.parametrize("z", [None, math.nan, math.inf, -math.inf])
def test_missing_or_non_finite_z_changes_nothing(z: float | None) -> None:
    a = ZAlert(enter=2.0, exit=0.5, cooldown_ms=0)
    a.update(0, 2.5)
    before = a.state()
    assert a.update(1, z) == [] and a.state() == before


@pytest.mark.parametrize(("enter", "exit_"), [(2.0, 2.0), (1.0, 1.5), (2.0, -0.1)])
def test_bands_must_nest(enter: float, exit_: float) -> None:
    with pytest.raises(ValueError, match="need 0 <= exit < enter"):
        ZAlert(enter=enter, exit=exit_)


def test_state_round_trip_keeps_position_and_cooldown() -> None:
    a = ZAlert(enter=1.5, exit=0.2, cooldown_ms=8_000)
    a.update(100, -1.6)
    b = ZAlert.from_state(a.state())
    assert b.state() == {
        "enter": 1.5, "exit": 0.2, "cooldown_ms": 8_000, "position": -1, "last_alert": 100,
        "rule": "bands", "below_cost": 0, "blocked": 0,
    }  # fmt: skip
    # the restored rule continues exactly where the first one was
    zs = [(1_000, -1.0), (2_000, 0.1), (5_000, 1.7), (9_999, 1.7), (10_000, 1.7)]
    # exit at 2 s, then no entry until 2 s + 8 s
    assert _run(b, zs) == _run(a, zs) == [(2_000, EXIT, 0.2), (10_000, ENTER_SHORT, 1.5)]


def run(a: ZAlert, zs: list[float], ok: list[bool] | None = None) -> list[list[str]]:
    return [[k for k, _ in a.update(i * 60_000, z, True if ok is None else ok[i])] for i, z in enumerate(zs)]


def test_bands_enter_and_exit() -> None:
    assert run(ZAlert(2.0, 0.5), [0, 2.1, 1.0, 0.4, -2.5, -0.1]) == [
        [], [ENTER_SHORT], [], [EXIT], [ENTER_LONG], [EXIT]
    ]  # fmt: skip


def test_stop_and_reverse_holds_until_the_other_band() -> None:
    a = ZAlert(2.0, 0.5, rule="reverse")
    assert run(a, [2.1, 0.0, -1.9, -2.2, 0.0, 2.0]) == [
        [ENTER_SHORT], [], [], [EXIT, ENTER_LONG], [], [EXIT, ENTER_SHORT]
    ]  # fmt: skip
    with pytest.raises(ValueError, match="rule"):
        ZAlert(rule="martingale")


def test_cost_gate_withholds_and_counts_once_per_excursion() -> None:
    a = ZAlert(2.0, 0.5)
    out = run(a, [2.1, 2.5, 3.0, 1.0, 2.2, -2.3, 0.0], ok=[False, False, False, False, False, True, True])
    assert out == [[], [], [], [], [], [ENTER_LONG], [EXIT]]
    assert a.below_cost == 2 and a.position == 0
    assert ZAlert.from_state(a.state()) == a
