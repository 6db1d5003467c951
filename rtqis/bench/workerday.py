"""Opt-in section ``workerday``: the Faust worker's memory over a simulated day of trades (#22 item 1).

The ``day`` section (:mod:`rtqis.bench.day`) measures the sink and the dashboard over a day of live-like
data; this one measures the third process, a real ``rtqis worker``, on the data it consumes: the
synthetic market's trades for the configured symbols and pairs at ``rate`` trades per second of event
time over all symbols (150 by default: the trades part of 250 ticks/s; the worker ignores book tickers
unless ``RTQIS_PAIR_PRICE=mid``), produced as fast as the broker takes them in frames of
``RTQIS_FRAME_MAX_TICKS`` trades, as the e2e section does. A day is 12.96 M trades and 86,400 pair
samples. No sink runs: the worker's outputs stay on the broker.

The broker is Apache Kafka (:class:`~rtqis.kafka.apache.ApacheKafka`, started here on free ports with its
data under the bench's directory; or the configured external broker): Tansu keeps every message in
memory and cannot hold a day. The run's topics keep every message (a bench namespace has no size
retention, :func:`rtqis.kafka.admin.create_topics`); the broker's disk use is reported at each mark
(allocated bytes, as ``du`` counts them; also per topic partition) and its data deleted after the run
(its log and the worker's stay).

At each mark (simulated hours 1, 6, 12, 24 within ``hours``; for a run shorter than an hour, those
scaled to its length) the producer stops at that event time and the bench waits until the worker's group
has committed every ``ticks.trade`` message (and ``pairs.legs`` has no lag): the worker has then
consumed exactly that much event time. It then records the worker's RSS and anonymous RSS
(:func:`rtqis.process.anon_rss_bytes`), its CPU seconds (user + system) so far, the wall seconds since
the first trade was produced, the broker's RSS and the bytes under its data directory, and the pair
signals the worker has published; ``rss_growth_mb`` is the last mark's RSS minus the first's.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from rtqis.bench.cpu import cpu_seconds
from rtqis.bench.harness import Say, fresh_namespace, start_rtqis, wait_ready
from rtqis.kafka.apache import ApacheKafka
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import ChildProcess, anon_rss_bytes, free_port, rss_bytes
from rtqis.producers.feed import DEFAULT_START_PRICES, frame_time, trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.settings import Settings
from rtqis.topics import LEGS, PAIR, TRADES
from rtqis.topics.registry import app_id

__all__ = ["MARK_HOURS", "bench_workerday", "mark_hours"]

log = logging.getLogger(__name__)

MARK_HOURS: tuple[float, ...] = (1.0, 6.0, 12.0, 24.0)
"""Simulated hours at which the worker is measured (those within the run; see :func:`mark_hours`)."""

_HOUR_MS = 3_600_000
#: a worker that has consumed nothing new for this long while lagging is taken as stuck (s)
_STALL_S = 300.0
_POLL_S = 0.5


def mark_hours(hours: float) -> list[float]:
    """The marks of a run of ``hours`` simulated hours: :data:`MARK_HOURS` below ``hours``, then ``hours``
    itself; for a run shorter than an hour, :data:`MARK_HOURS` scaled to end at ``hours``."""
    if hours < MARK_HOURS[0]:
        return [hours * h / MARK_HOURS[-1] for h in MARK_HOURS]
    return [h for h in MARK_HOURS if h < hours] + [hours]


def _dir_bytes(path: Path) -> int:
    """Bytes allocated on disk to the files under ``path``, as ``du`` counts them: Kafka preallocates each
    segment's 10 MB index files sparsely, so their sizes say nothing of the disk used. Files that vanish
    while walking (deleted segments) are skipped."""
    total = 0
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file():
            total += st.st_blocks * 512
    return total


def _disk_by_topic(data_dir: Path, namespace: str) -> dict[str, int]:
    """:func:`_dir_bytes` of each topic partition's directory under Kafka's ``data_dir`` holding at least
    1 MB, by directory name without the run's namespace (e.g. ``replay..ticks.trade-0``)."""
    out = {}
    for d in sorted(data_dir.iterdir()) if data_dir.is_dir() else ():
        n = _dir_bytes(d) if d.is_dir() else 0
        if n >= 1_000_000:
            out[d.name.replace(namespace, "")] = n
    return out


def _drained(s: Settings, group: str) -> tuple[bool, int]:
    """Whether ``group`` has committed every ``ticks.trade`` message and has no ``pairs.legs`` lag; and its
    committed ``ticks.trade`` offsets summed (progress)."""
    rows = topic_offsets(s, [TRADES.full_name(s.namespace), LEGS.full_name(s.namespace)], group=group)
    trades = [r for r in rows if r.topic == TRADES.full_name(s.namespace)]
    done = all(r.committed is not None and r.committed >= r.end for r in trades) and all(
        (r.lag or 0) == 0 for r in rows if r not in trades
    )
    return done, sum(r.committed or 0 for r in trades)


def _wait_drained(s: Settings, worker: ChildProcess, group: str, log_dir: Path) -> None:
    """Block until the worker's group has consumed and committed everything produced so far; raises if
    the worker exits or makes no progress for :data:`_STALL_S` seconds."""
    last, since = -1, time.monotonic()
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.poll()}) during the workerday run: see {log_dir}")
        done, progress = _drained(s, group)
        if done:
            return
        if progress != last:
            last, since = progress, time.monotonic()
        elif time.monotonic() - since > _STALL_S:
            raise TimeoutError(f"the worker made no progress for {_STALL_S:.0f} s: see {log_dir}")
        time.sleep(_POLL_S)


def _run(
    s: Settings,
    tmp: Path,
    hours: float,
    rate: float,
    data_dir: Path | None,
    broker_pid: Callable[[], int | None],
    say: Say,
) -> list[dict[str, Any]]:
    """The run itself on the broker of ``s``: worker, producer, marks."""
    worker = start_rtqis(s, tmp / "workerday-worker.log", "worker")
    marks: list[dict[str, Any]] = []
    producer = MessageProducer(s)
    try:
        wait_ready(worker, timeout_s=180.0)
        pid = worker.pid
        assert pid is not None  # started above
        per_symbol = rate / len(s.symbols)
        start = int(time.time() * 1000) // s.sample_ms * s.sample_ms  # a whole sample time, as e2e does
        market = SyntheticMarket(
            [SymbolSpec(x, DEFAULT_START_PRICES.get(x, 100.0)) for x in s.symbols],
            seed=s.seed,
            trade_rate=per_symbol,
            start_ms=start,
        )
        step_ms = max(1, int(1000 * s.frame_max_ticks / per_symbol))  # about one full frame per symbol per step
        group = app_id(s.namespace)
        cpu0 = cpu_seconds(pid) or 0.0
        trades = frames = 0
        t0 = time.monotonic()
        for h in mark_hours(hours):
            target = start + int(h * _HOUR_MS)
            t_mark = time.monotonic()
            while market.now_ms < target:
                batches, _ = market.advance(min(step_ms, target - market.now_ms))
                out = [f for b in batches for f in trade_frames(b, s.frame_max_ticks)]
                out.sort(key=frame_time)  # each partition's timestamps in time order
                for f in out:
                    producer.send(TRADES, f, key=f.symbol, timestamp_ms=frame_time(f))
                    trades += len(f)
                frames += len(out)
            left = producer.flush(120.0)
            if left:
                raise RuntimeError(f"{left} trade frames not delivered to the broker within 120 s")
            produced_s = time.monotonic() - t_mark
            _wait_drained(s, worker, group, tmp)
            fig: dict[str, Any] = {
                "sim_hour": round(h, 4),
                "trades": trades,
                "frames": frames,
                "wall_s": round(time.monotonic() - t0, 1),
                "produce_s": round(produced_s, 1),
                "worker_rss_mb": round(rss_bytes(pid) / 1e6, 1),
                "worker_rss_anon_mb": round(anon_rss_bytes(pid) / 1e6, 1),
                "worker_cpu_s": round((cpu_seconds(pid) or 0.0) - cpu0, 1),
                "signals": sum(r.end for r in topic_offsets(s, [PAIR.full_name(s.namespace)])),
                "load_avg_1m": round(psutil.getloadavg()[0], 2),
            }
            bpid = broker_pid()
            fig["broker_rss_mb"] = round(rss_bytes(bpid) / 1e6, 1) if bpid else None
            fig["broker_disk_bytes"] = _dir_bytes(data_dir) if data_dir is not None else None
            fig["broker_disk_by_topic"] = _disk_by_topic(data_dir, s.namespace) if data_dir is not None else None
            marks.append(fig)
            disk = fig["broker_disk_bytes"]
            say(
                f"workerday h{h:>6.3g}: worker RSS {fig['worker_rss_mb']:.0f} MB "
                f"({fig['worker_rss_anon_mb']:.0f} anonymous), {fig['worker_cpu_s']:.1f} s CPU, "
                f"{trades:,} trades, {fig['signals']:,} signals, {fig['wall_s']:.0f} s wall"
                + (f", broker disk {disk / 1e6:.0f} MB" if disk is not None else "")
                + (f", broker RSS {fig['broker_rss_mb']:.0f} MB" if fig["broker_rss_mb"] is not None else "")
            )
    finally:
        producer.close()
        worker.stop()
    return marks


def bench_workerday(
    settings: Settings, tmp: Path, *, hours: float = 24.0, rate: float = 150.0, say: Say = print
) -> dict[str, Any]:
    """Run the workerday bench (see the module docstring): ``hours`` simulated hours of trades at ``rate``
    trades/s of event time over all symbols. Starts its own Apache Kafka node (data under ``tmp``) unless
    an external broker is configured (``RTQIS_BOOTSTRAP_SERVERS``); then the disk use is not reported."""
    tag = uuid.uuid4().hex[:6]
    wd = tmp / f"workerday-{tag}"
    wd.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "hours": hours,
        "rate_trades_per_s": rate,
        "symbols": list(settings.symbols),
        "pairs": list(settings.pairs),
        "frame_max_ticks": settings.frame_max_ticks,
        "codec": settings.codec,
        "compression": settings.compression,
    }
    if settings.embedded:
        broker = ApacheKafka(
            settings.broker_host,
            free_port(),
            wd,
            wd / "kafka.log",
            controller_port=free_port(),  # its own free port: the one after the broker's may be taken
            kafka_home=settings.kafka_home,
            heap_mb=settings.kafka_heap_mb,
            partitions=settings.partitions,
        )
        try:
            with broker:
                res["broker"] = f"Apache Kafka {broker.details}, heap {settings.kafka_heap_mb} MB"
                s = fresh_namespace(settings.model_copy(update={"bootstrap_servers": broker.bootstrap}), data_dir=wd)
                marks = _run(s, wd, hours, rate, broker.home / "data", lambda: broker.pid, say)
        finally:  # a day of messages nobody reads again (the logs stay)
            shutil.rmtree(broker.home / "data", ignore_errors=True)
    else:
        res["broker"] = settings.bootstrap
        s = fresh_namespace(settings, data_dir=wd)
        marks = _run(s, wd, hours, rate, None, lambda: None, say)
    res["namespace"] = s.namespace
    res["marks"] = marks
    if len(marks) > 1:
        res["rss_growth_mb"] = round(marks[-1]["worker_rss_mb"] - marks[0]["worker_rss_mb"], 1)
        res["rss_anon_growth_mb"] = round(marks[-1]["worker_rss_anon_mb"] - marks[0]["worker_rss_anon_mb"], 1)
        say(
            f"workerday: worker RSS {marks[0]['worker_rss_mb']:.0f} MB at hour {marks[0]['sim_hour']:g}, "
            f"{marks[-1]['worker_rss_mb']:.0f} MB at hour {marks[-1]['sim_hour']:g}: "
            f"{res['rss_growth_mb']:+.0f} MB ({res['rss_anon_growth_mb']:+.0f} MB anonymous)"
        )
    if marks:
        last = marks[-1]
        res["worker_trades_per_s"] = round(last["trades"] / max(last["wall_s"], 1e-9))
    return res
