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

import numpy as np
import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import consumer_config
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import die_with_parent
from rtqis.settings import Settings
from rtqis.sinks.sink import sink_group
from rtqis.topics import BOOK, TRADES
from rtqis.topics.registry import app_id
from rtqis.ui import panels as pl
from rtqis.ui import session as ss
from rtqis.ui import tables as tb
from rtqis.ui.hub import Batch, LiveHub, SinkLag, _Staging
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
    rows = topic_offsets(s, [TRADES.full_name(s.namespace), BOOK.full_name(s.namespace)], group=sink_group(s))
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
    group = app_id(settings.namespace)  # the worker's group (Faust's app id); the sink's is the same case
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


# ------------------------------------------------------------------------------------------ the dashboard


def _hub_settings(tmp_path: Path) -> Settings:
    from rtqis.settings import load_settings

    return load_settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")


def _publish_trades(hub: LiveHub, n_batches: int, rows: int = 100) -> None:
    """``n_batches`` hub batches of ``rows`` BTC trades each, as the hub thread publishes them."""

    for i in range(n_batches):
        st = _Staging()
        t = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        st.trades["BTCUSDT"] = [
            {"t": t, "price": np.ones(rows), "qty": np.ones(rows), "buyer_maker": np.zeros(rows, bool), "trade_id": t}
        ]
        st.count = rows
        hub._publish(st)


def test_a_session_that_does_not_drain_keeps_a_bounded_inbox(tmp_path: Path) -> None:

    hub = LiveHub(_hub_settings(tmp_path))
    inbox = ss.Inbox(maxlen=50)
    _, unsubscribe = hub.subscribe(inbox.put)
    _publish_trades(hub, 400)
    assert len(inbox) == 50 and inbox.dropped == 350  # the oldest dropped, counted
    got = inbox.take()
    assert [b.seq for b in got] == list(range(351, 401)) and len(inbox) == 0
    assert tb.length(hub.snapshot().trades["BTCUSDT"]) == hub.caps["trades"]  # the hub's own buffer is capped
    unsubscribe()
    _publish_trades(hub, 10)
    assert len(inbox) == 0


def test_chart_queues_and_loading_views_are_bounded() -> None:

    q = ss.ChartQueues({"book": 900})
    for i in range(20):
        t = np.arange(i * 500, (i + 1) * 500)
        q.queue("book", {"t": t, "bid": t * 1.0}, "t")
        q.queue("other", {"t": t, "bid": t * 1.0}, "t")
    assert q.pending["book"]["t"].tolist() == list(range(10_000 - 900, 10_000))  # the newest, as drawn
    assert tb.length(q.pending["other"]) == ss.QUEUE_ROWS
    v = ss.ViewLoad(maxlen=5)
    v.start_loading()
    for seq in range(1, 13):
        v.keep(Batch(seq=seq))
    assert v.pending is not None and [b.seq for b in v.pending] == [8, 9, 10, 11, 12] and v.dropped == 7


@pytest.mark.filterwarnings("ignore:Widget.name is deprecated:PendingDeprecationWarning")  # the page as served
def test_a_stalled_tab_neither_draws_nor_grows_and_reloads_after_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtqis.ui.page import Dashboard

    s = _hub_settings(tmp_path)
    hub = LiveHub(s)
    d = Dashboard(s, hub)
    _, unsubscribe = hub.subscribe(d.inbox.put)  # what the page's load does
    reloads: list[int] = []
    monkeypatch.setattr(d, "_resync", lambda: reloads.append(1))
    backlog = [ss.SOCKET_BACKLOG_BYTES + 1]
    monkeypatch.setattr(ss, "socket_backlog", lambda _doc: backlog[0])
    d.candles_view.pending = d.signals_view.pending = None  # history loaded
    _publish_trades(hub, ss.INBOX_BATCHES + 40)
    for _ in range(5):
        d._on_turn()  # the browser does not read: nothing taken, nothing drawn
    assert len(d.inbox) == ss.INBOX_BATCHES and d.dropped == 40 and "trades" not in d.queues
    assert reloads == []
    backlog[0] = 0  # it reads again
    d._on_turn()
    assert reloads == [1] and len(d.inbox) == 0  # dropped batches: the views are loaded again
    _publish_trades(hub, 3)
    d._on_turn()
    assert reloads == [1] and len(d.inbox) == 0
    assert tb.length(d.queues.pending["trades"]) == 300

    assert "this tab fell behind: 40 updates dropped" in pl.status_html(hub.stats, 0, dropped=d.dropped)
    unsubscribe()


def test_socket_backlog_reads_tornados_unsent_bytes() -> None:
    """Bokeh session -> connection -> WSHandler -> IOStream: the bytes a browser has not read yet."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from tornado.iostream import IOStream

    async def run() -> int:
        a, b = socket.socketpair()
        stream = IOStream(a)
        try:
            stream.write(b"x" * (8 << 20))  # nobody reads b: most of it stays in Tornado's buffer
            conn = SimpleNamespace(_socket=SimpleNamespace(ws_connection=SimpleNamespace(stream=stream)))
            doc = SimpleNamespace(
                session_context=SimpleNamespace(_session=SimpleNamespace(_subscribed_connections=[conn]))
            )
            return ss.socket_backlog(doc)
        finally:
            stream.close()
            b.close()

    assert asyncio.run(run()) > 4 << 20
    assert ss.socket_backlog(None) == 0 and ss.socket_backlog(SimpleNamespace(session_context=None)) == 0


def test_sink_lag_in_messages_and_seconds() -> None:

    lag = SinkLag(keep=3)
    a, b = ("t", 0), ("t", 1)
    assert lag.lag(0, {}) == (0, 0.0)
    lag.sample(1_000, {a: 10, b: 5})
    lag.sample(6_000, {a: 20, b: 5})
    lag.sample(11_000, {a: 30, b: 8})
    assert lag.lag(12_000, {a: 30, b: 8}) == (0, 0.0)
    assert lag.lag(12_000, {a: 20, b: 5}) == (13, 6.0)  # where the ends were at 6 s
    assert lag.lag(12_000, {a: 12, b: 5}) == (21, 11.0)
    lag.sample(16_000, {a: 40, b: 8})  # the 1 s sample is no longer kept
    assert lag.lag(17_000, {a: 12, b: 5}) == (31, None)
    assert lag.lag(17_000, {a: 40}) == (8, None)  # a partition never committed counts from 0
    assert pl.sink_lag_html(None, None) == ""
    assert "up to date" in pl.sink_lag_html(0, 0.0)
    ok, late, unknown = pl.sink_lag_html(13, 6.0), pl.sink_lag_html(13, 45.0), pl.sink_lag_html(31, None)
    assert "13</b> msgs" in ok and "6 s" in ok and pl.BAD not in ok
    assert pl.BAD in late and pl.BAD in unknown and "over the measured window" in unknown


@pytest.mark.broker
def test_the_dashboard_shows_the_sinks_lag(settings: Settings) -> None:
    """Ten records in one batch (the embedded broker would answer an end of 1), the sink group committed
    at 3: the hub reports 7 messages behind, from its own fetches' ends."""

    topic = TRADES.full_name(settings.namespace)
    p = Producer({**settings.kafka_client_config(), "linger.ms": 200})
    for i in range(10):
        p.produce(topic, value=b"x%d" % i, partition=0)
    assert p.flush(10) == 0
    c = Consumer(consumer_config(settings, sink_group(settings)))
    hub = LiveHub(settings, batch_ms=100, lag_every_s=0.5).start()
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        wait_until(lambda: hub.stats.sink_lag == 7, 30, "the hub to report the sink 7 messages behind")
        assert hub.stats.sink_lag_s is None  # behind since before the hub measured: "over the window"
        c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        wait_until(lambda: hub.stats.sink_lag == 0, 30, "the hub to report the sink up to date")
        assert hub.stats.sink_lag_s == 0.0
    finally:
        hub.stop()
        c.close()
