"""The stall watchdog's bookkeeping (rtqis.agents.watchdog): which input partitions count as stalled."""

from __future__ import annotations

from rtqis.agents.watchdog import Stall, StallWatch

T0, T1 = ("ticks.trade", 0), ("ticks.trade", 1)


def test_a_partition_is_stalled_once_its_position_stays_behind_the_end_for_the_whole_wait() -> None:
    w = StallWatch(stall_s=30.0, repeat_s=300.0)
    assert w.observe(0.0, {T0: 10, T1: 5}, {T0: 20, T1: 5}) == []  # T1 has nothing waiting
    assert w.observe(29.9, {T0: 10, T1: 5}, {T0: 25, T1: 9}) == []  # not yet 30 s
    assert w.observe(30.0, {T0: 10, T1: 5}, {T0: 25, T1: 9}) == [Stall("ticks.trade", 0, 10, 25, 30.0)]
    assert w.observe(35.0, {T0: 10, T1: 5}, {T0: 25, T1: 9}) == []  # reported; T1 waits since 29.9
    assert w.observe(60.0, {T0: 10, T1: 5}, {T0: 25, T1: 9}) == [Stall("ticks.trade", 1, 5, 9, 30.1)]
    assert w.observe(330.0, {T0: 10, T1: 5}, {T0: 25, T1: 9})[0].for_s == 330.0  # lasting: said again


def test_progress_or_an_emptied_partition_restarts_the_wait() -> None:
    w = StallWatch(stall_s=30.0)
    w.observe(0.0, {T0: 10}, {T0: 20})
    assert w.observe(20.0, {T0: 11}, {T0: 20}) == []  # moved: a new wait starts at 20 s
    assert w.observe(45.0, {T0: 11}, {T0: 20}) == []
    assert w.observe(50.0, {T0: 11}, {T0: 20}) != []
    w.observe(51.0, {T0: 20}, {T0: 20})  # caught up: forgotten
    assert w.observe(60.0, {T0: 20}, {T0: 21}) == [] and w.observe(89.0, {T0: 20}, {T0: 21}) == []
    w.reset()  # a rebalance: everything starts over
    assert w.observe(95.0, {T0: 20}, {T0: 21}) == []
    assert w.observe(125.0, {T0: 20}, {T0: 21}) == [Stall("ticks.trade", 0, 20, 21, 30.0)]
