"""`rtqis sink`: the analytics and tick topics into DuckDB, effectively once.

Consumes ``candles.1m``, ``candles.5m``, ``analytics.pair``, ``analytics.adf``, ``alerts`` and the tick
topics (the tick archive). Rows are written in batches (every ``flush_ms`` or ``flush_rows``) in ONE
DuckDB transaction together with the consumer offsets they came from; Kafka offsets are committed only
after that transaction. On start the consumer resumes from the offsets stored in DuckDB (the source
of truth), so a SIGKILL at any moment neither loses nor duplicates rows: at-least-once delivery plus
idempotent upserts keyed by (symbol, interval, open_time), (symbol, trade_id), ... = effectively once.
Every ``snapshot_s`` seconds a read-only snapshot of the database is published for the dashboard and
the CLI (DuckDB allows one writing process per file).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from rtqis.errors import DecodeError
from rtqis.kafka.clients import MessageProducer, consumer_config
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.sinks.snapshot import publish_snapshot
from rtqis.sinks.store import Store, StoreError
from rtqis.topics import ADF, ALERTS, BOOK, CANDLES_1M, CANDLES_5M, DEADLETTER, PAIR, TRADES, TopicSpec

__all__ = ["SinkStats", "run_sink", "sink_paths"]

log = logging.getLogger(__name__)

SINK_TOPICS: tuple[TopicSpec, ...] = (CANDLES_1M, CANDLES_5M, PAIR, ADF, ALERTS, TRADES, BOOK)


def sink_paths(settings: Settings) -> tuple[Path, Path]:
    """(live database written by the sink, read-only snapshot for readers)."""
    name = f"rtqis-{settings.namespace}" if settings.namespace else "rtqis"
    return settings.data_dir / f"{name}.duckdb", settings.data_dir / f"{name}-snapshot.duckdb"


@dataclass
class SinkStats:
    batches: int = 0
    rows: int = 0
    dead_lettered: int = 0
    by_table: dict[str, int] = field(default_factory=dict)


class _Batch:
    def __init__(self) -> None:
        self.candles: list[dict[str, Any]] = []
        self.trades: list[Frame] = []
        self.books: list[Frame] = []
        self.signals: list[dict[str, Any]] = []
        self.adf: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.rows = 0
        self.started = time.monotonic()


def open_for_writing(path: Path, stop: threading.Event, wait_s: float = 30.0, *, memory_mb: int | None = None) -> Store:
    """The store at ``path`` for writing, waiting up to ``wait_s`` while another process holds the file.

    A reader that found no sink running opens the live file read-only for a moment (``open_history``,
    ``rtqis candles show``); a sink starting just then met its lock and died. Another *sink* holds the
    lock for good: that still fails, with DuckDB's message naming the process, after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return Store(path, memory_mb=memory_mb)
        except StoreError as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline or stop.is_set():
                raise
            if not told:
                log.info("%s is held by another process (a reader?): waiting up to %.0f s", path, wait_s)
                told = True
            stop.wait(0.2)


def run_sink(
    settings: Settings,
    stop: threading.Event,
    *,
    flush_ms: int = 500,
    flush_rows: int = 10_000,
    snapshot_s: float = 5.0,
) -> SinkStats:
    """Run until ``stop`` is set; flushes what it holds before returning."""
    db_path, snap_path = sink_paths(settings)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    store = open_for_writing(db_path, stop, memory_mb=settings.sink_memory_mb)
    stats = SinkStats()
    names = {spec.full_name(settings.namespace): spec for spec in SINK_TOPICS}
    group = f"rtqis-sink-{settings.namespace}" if settings.namespace else "rtqis-sink"
    stored = store.load_offsets()

    def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
        for tp in parts:  # resume from what is durable in DuckDB, not from Kafka's commit
            off = stored.get((tp.topic, tp.partition))
            if off is not None:
                tp.offset = off
        c.assign(parts)

    c = Consumer(consumer_config(settings, group, **{"auto.offset.reset": "earliest"}))
    c.subscribe(list(names), on_assign=on_assign)
    dlq = MessageProducer(settings)
    batch = _Batch()
    last_snapshot = 0.0
    try:
        while not stop.is_set():
            for msg in c.consume(1000, 0.05):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                spec = names[msg.topic()]
                try:
                    obj = decode(msg.value(), msg.headers(), spec.value_schema)
                except DecodeError as e:
                    dlq.send(
                        DEADLETTER,
                        m.DeadLetter(
                            time=int(time.time() * 1000),
                            stage="sink",
                            reason=str(e),
                            source_topic=msg.topic(),
                            partition=msg.partition(),
                            offset=msg.offset(),
                            payload=msg.value() or b"",
                        ),
                        key="sink",
                    )
                    stats.dead_lettered += 1
                else:
                    _add(batch, obj)
                batch.offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            due = batch.offsets and (batch.rows >= flush_rows or (time.monotonic() - batch.started) * 1000 >= flush_ms)
            if due:
                _flush(store, c, batch, stats)
                stored.update(batch.offsets)
                batch = _Batch()
            if snapshot_s and time.monotonic() - last_snapshot >= snapshot_s:
                publish_snapshot(store, snap_path)
                last_snapshot = time.monotonic()
    finally:
        if batch.offsets:
            _flush(store, c, batch, stats)
        publish_snapshot(store, snap_path)
        store.close()
        c.close()
        dlq.flush()
        log.info("sink stopped: %s", stats)
    return stats


def _add(batch: _Batch, obj: Any) -> None:
    if isinstance(obj, Frame):
        (batch.trades if obj.type is TRADE_FRAME else batch.books).append(obj)
        batch.rows += len(obj)
        return
    row = obj.model_dump()
    if isinstance(obj, m.Candle):
        batch.candles.append(row)
    elif isinstance(obj, m.PairSignal):
        batch.signals.append(row)
    elif isinstance(obj, m.AdfResult):
        batch.adf.append(row)
    elif isinstance(obj, m.Alert):
        batch.alerts.append(row)
    batch.rows += 1


def _flush(store: Store, c: Consumer, batch: _Batch, stats: SinkStats) -> None:
    n = store.write_batch(
        candles=batch.candles,
        trades=batch.trades,
        books=batch.books,
        signals=batch.signals,
        adf=batch.adf,
        alerts=batch.alerts,
        offsets=batch.offsets,
    )
    # rows and offsets are durable together; the Kafka commit is only for lag figures and tools
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()], asynchronous=True)
    stats.batches += 1
    stats.rows += int(n or 0)
