"""Alert rules: bands with hysteresis, stop-and-reverse, the cost gate."""

from __future__ import annotations

import pytest

from rtqis.analytics.alerts import ENTER_LONG, ENTER_SHORT, EXIT, ZAlert


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
