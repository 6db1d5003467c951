"""The worker's stall watchdog (rtqis.agents.watchdog): which input partitions count as stalled, and a real
worker that finds and resumes partitions a fault left paused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtqis.agents.watchdog import Stall, StallWatch
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import die_with_parent
from rtqis.producers.feed import trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.settings import Settings
from rtqis.topics import TRADES
from rtqis.topics.registry import app_id
from tests.conftest import Procs, env_of, wait_until

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


@pytest.mark.broker
@pytest.mark.integration
def test_a_real_worker_finds_and_resumes_a_partition_left_paused(settings: Settings, tmp_path: Path) -> None:
    """A worker whose ticks.trade partitions were paused and never resumed (tests/stall_worker.py) logs the
    stall with the consumer's view after RTQIS_WORKER_STALL_S, resumes them and handles every frame."""
    s = settings.model_copy(update={"worker_stall_s": 3.0})
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        w = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("stall_worker.py"))],
            env=env_of(s),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    try:
        _wait(lambda: "INJECTED" in log.read_text(), 90.0, log)
        market = SyntheticMarket([SymbolSpec("BTCUSDT", 60_000.0), SymbolSpec("ETHUSDT", 3_000.0)], seed=3)
        p = MessageProducer(s)
        frames: list[Any] = [f for _ in range(5) for b in market.advance(1000)[0] for f in trade_frames(b, 50)]
        for f in frames:
            p.send(TRADES, f, key=f.symbol, timestamp_ms=int(f.cols["event_time"][0]))
        assert p.flush() == 0

        def handled() -> bool:
            rows = topic_offsets(s, [TRADES.full_name(s.namespace)], group=app_id(s.namespace))
            return all(r.lag == 0 for r in rows)

        _wait(handled, 60.0, log)
        text = log.read_text()
        warned = [line for line in text.splitlines() if "stalled for" in line]
        assert warned and "paused=True" in warned[0] and "resuming it" in warned[0], text[-3000:]
        assert text.index("INJECTED") < text.index("stalled for")
        assert w.poll() is None
    finally:
        Procs.stop(w)


def _wait(cond: Callable[[], bool], timeout_s: float, log: Path) -> None:
    try:
        wait_until(cond, timeout_s)
    except AssertionError as e:
        raise AssertionError(f"{e}; the worker's log ends:\n{log.read_text()[-3000:]}") from None
