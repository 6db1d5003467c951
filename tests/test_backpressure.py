"""Slow or stopped consumers (#21): a stalled sink keeps its memory bounded, lag is reported with true end
offsets (``rtqis topics offsets --group``), and the dashboard's buffers never grow with a stalled session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import consumer_config
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import die_with_parent
from rtqis.settings import Settings
from rtqis.topics import BOOK, TRADES
from tests.conftest import env_of, make_settings, wait_until
from tests.test_cli import run_cli

#: a sink whose every DuckDB write first sleeps ``%s`` seconds (a slow disk), started like `rtqis sink`
SLOW_SINK = (
    "import time\n"
    "from rtqis.sinks.store import Store\n"
    "write = Store.write_batch\n"
    "def slow(self, **kw):\n"
    "    time.sleep(%s)\n"
    "    return write(self, **kw)\n"
    "Store.write_batch = slow\n"
    "from rtqis.cli import main\n"
    "raise SystemExit(main(['sink']))\n"
)

#: MB an idle sink's RSS may grow by while it is far behind. What it holds then: librdkafka's prefetch
#: queue (CONSUMER_QUEUE_KB, 16 MB) plus one fetch in flight (CONSUMER_FETCH_MAX_BYTES, 16 MB), the
#: messages of one consume call (CONSUME_MAX 200 frames, ~10 MB in JSON), the batch (flush_rows 10,000
#: rows, ~5 MB in Python and numpy) and DuckDB's buffer pool (sink_memory_mb, 32 MB here): ~80 MB.
#: Measured here: 49 MB; with librdkafka's defaults (64 MB queue, 50 MB fetches) the same run grew 117 MB.
RSS_GROWTH_BOUND_MB = 80


def _sink_lag(s: Settings) -> tuple[int, int]:
    """(sum of true end offsets, sum of the sink group's lag) over the tick topics."""
    rows = topic_offsets(
        s, [TRADES.full_name(s.namespace), BOOK.full_name(s.namespace)], group=f"rtqis-sink-{s.namespace}"
    )
    return sum(r.end for r in rows), sum(r.lag or 0 for r in rows)


def _produce(s: Settings, trades: int) -> int:
    """Synthetic ticks as fast as the broker takes them; returns the frames (messages) sent."""
    r = run_cli("produce", "synthetic", "--rate", "max", "--limit", str(trades), env=env_of(s), timeout=180)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split(" frames")[0].rsplit(" ", 1)[1])


@pytest.mark.broker
def test_a_slow_sink_keeps_its_memory_bounded_and_its_lag_shows(bootstrap: str, tmp_path: Path) -> None:
    s = make_settings(bootstrap, tmp_path, sink_memory_mb=32)
    create_topics(s)
    log = (tmp_path / "sink.log").open("wb")
    sink = subprocess.Popen(
        [sys.executable, "-c", SLOW_SINK % 1.0],
        env={**os.environ, **env_of(s)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    try:
        proc = psutil.Process(sink.pid)
        frames = _produce(s, 2000)
        wait_until(lambda: _sink_lag(s) == (frames, 0), 60, "the sink to store the first ticks")
        time.sleep(1.0)
        base = proc.memory_info().rss
        peak = base
        done = threading.Event()
        sent: list[int] = []

        def produce() -> None:
            try:
                sent.append(_produce(s, 500_000))
            finally:
                done.set()

        threading.Thread(target=produce, daemon=True).start()
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.1)
        for _ in range(50):  # 5 s more of the sink reading its backlog
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.1)
        assert sent, "the producer did not finish"
        end, lag = _sink_lag(s)
        assert end == frames + sent[0]  # true end offsets (the embedded broker's own answer is short)
        assert lag > sent[0] // 2, (lag, sent)  # far behind: most of the backlog is still in the broker
        assert sink.poll() is None
        growth_mb = (peak - base) / 2**20
        assert growth_mb < RSS_GROWTH_BOUND_MB, f"the sink grew {growth_mb:.0f} MB while {lag} messages behind"
    finally:
        if sink.poll() is None:
            os.killpg(sink.pid, signal.SIGTERM)
            try:
                sink.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(sink.pid, signal.SIGKILL)
                sink.wait(5)
        log.close()


@pytest.mark.broker
def test_group_lag_uses_true_end_offsets(settings: Settings) -> None:
    """Ten records in one batch: the embedded broker answers an end of 1; lag must be 10 - committed."""
    topic = TRADES.full_name(settings.namespace)
    p = Producer({**settings.kafka_client_config(), "linger.ms": 200})
    for i in range(10):
        p.produce(topic, value=b"x%d" % i, partition=0)
    assert p.flush(10) == 0
    group = f"rtqis-worker-{settings.namespace}"  # any group: the worker's, the sink's, a tool's
    c = Consumer(consumer_config(settings, group))
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    finally:
        c.close()
    rows = {r.partition: r for r in topic_offsets(settings, [topic], group=group)}
    assert (rows[0].end, rows[0].committed, rows[0].lag) == (10, 3, 7)
    r = run_cli("topics", "offsets", "--group", group, "ticks.trade", env=env_of(settings))
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "partition=0 " in x)
    assert "end=10" in line and "committed=3" in line and "lag=7" in line, line
