"""Broker loss (#21): the embedded broker of a running `rtqis up` is SIGKILLed. It is memory only, so `up`
cannot give the worker its state back: it stops every service, says in one line what was lost and what
DuckDB keeps (the latest stored trade time), and exits non-zero, leaving no process behind."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from rtqis.settings import Settings
from rtqis.sinks.history import open_history
from rtqis.supervisor import BROKER_LOST_EXIT
from tests.conftest import alive_pids, wait_until
from tests.test_orphans import _Rtqis, _up_env, _wait_up, runner  # noqa: F401 - runner is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.broker]

_DELIVERIES = re.compile(r"deliveries: (\d+) sent, (\d+) delivered, (\d+) failed, (\d+) undelivered")
_FEED = re.compile(r"frames=(\d+), dead_lettered=(\d+)\)")

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")


@linux_only
def test_up_says_what_was_lost_when_the_broker_dies(tmp_path: Path, runner: _Rtqis) -> None:  # noqa: F811
    p, log = runner.start("up", "up", **_up_env(tmp_path))
    _wait_up(p, log, tmp_path)
    settings = Settings(data_dir=tmp_path / "var")

    def stored() -> int:
        try:
            with open_history(settings, wait_s=0) as st:
                return int(st.counts()["trades"])
        except Exception:  # noqa: BLE001 - the sink is not answering yet
            return 0

    wait_until(lambda: stored() > 0, 60, "the sink's first stored trades")
    kids = runner.tree(p)
    broker = next(k for k in kids if "tansu" in " ".join(k.cmdline()))
    others = [k.pid for k in kids if k.pid != broker.pid]
    assert len(others) >= 4  # producer, worker, sink, dashboard
    broker.kill()
    t0 = time.monotonic()
    code = p.wait(30)
    took = time.monotonic() - t0
    text = log.read_text(errors="replace")
    assert code == BROKER_LOST_EXIT != 0, text
    assert took < 15, f"`up` took {took:.1f} s to exit"
    lines = [line for line in text.splitlines() if line.startswith("the embedded broker died")]
    assert len(lines) == 1, text
    line = lines[0]
    assert "killed by signal 9" in line
    for what in ("ticks the sink had not stored", "changelogs", "outputs not yet stored", "`rtqis up` again"):
        assert what in line, line
    assert "up to trade time 20" in line, line  # the latest stored trade, e.g. 2026-12-06 19:30:01 UTC
    assert text.rstrip().endswith("stopped")
    # a worker blocked on a full producer buffer towards the dead broker may need the 8 s SIGKILL of
    # `up` (seen about once in three runs): allowed, it is within the 15 s above and leaves no process
    producer_log = (tmp_path / "var" / "logs" / "producer.log").read_text(errors="replace")
    # every message the producer sent is accounted for: delivered before the broker died, or lost and counted
    # (none is lost when the signal of `up` came before the next frame: seen in CI, so not asserted)
    sent, delivered, failed, lost = map(int, _DELIVERIES.findall(producer_log)[-1])
    frames, dead_lettered = map(int, _FEED.findall(producer_log)[-1])
    assert sent >= frames + dead_lettered > 0, producer_log  # the feed's depth snapshots are messages too
    assert delivered > 0 and sent == delivered + failed + lost, producer_log
    assert (f"{lost} messages undelivered at shutdown" in producer_log) == (lost > 0), producer_log
    wait_until(lambda: not alive_pids(others), 10, f"the children {alive_pids(others)} of `up` to exit")
