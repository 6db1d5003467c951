"""`rtqis sink`: the analytics and tick topics into DuckDB, effectively once.

Consumes ``candles.1m``, ``candles.5m``, ``analytics.pair``, ``analytics.adf``, ``alerts`` and the tick
topics (the tick archive). Each message is decoded and validated once (:func:`accept`) and the validated
models and frames are what is written. Tick rows go through the worker's own row rules
(:data:`ROW_RULES`): a row the worker dead-letters never reaches DuckDB (the message's good rows are
still stored).

Each bad message is dead-lettered ONCE, by the stage that owns its topic. The worker owns the dead
letters of the tick topics it consumes (``ticks.trade``, and ``ticks.book`` with
``RTQIS_PAIR_PRICE=mid``): the sink still refuses such messages and rows (never stores them) and counts
them (:class:`SinkStats` ``refused`` and ``invalid_rows``), but sends no second dead letter. The sink
dead-letters (stage ``sink``) what only it consumes: the analytics and candle topics, and ``ticks.book``
when the worker does not read it (:func:`dead_letter_topics`).

Rows are written in batches (every ``flush_ms`` or ``flush_rows``) in ONE DuckDB transaction together
with the consumer offsets they came from; Kafka offsets are committed only after that transaction. On
start the consumer resumes from the offsets stored in DuckDB (the source of truth), so a SIGKILL at any
moment neither loses nor duplicates rows: at-least-once delivery plus idempotent writes = effectively
once. Candles, signals, ADF results and alerts are upserts keyed by (symbol, interval, open_time),
(pair, time), ...; the tick archive has no key (its index grew with every tick): a tick whose id is not
above its symbol's stored high-water mark is a re-publication, skipped and counted
(:mod:`rtqis.sinks.marks`). Tick rows beyond the worker's plausibility bounds
(:mod:`rtqis.schemas.plausibility`, against the same marks) are dead-lettered, not archived. On every assignment the
stored offsets are checked against the broker's log (:func:`resume_offsets`): one beyond its end (a
new memory-only broker, a recreated topic) or below its start (retention) restarts that partition
from its earliest offset, with one warning, and the offset stored with the next rows replaces the
old one. A new broker whose log already passed the stored offset is told apart by a fingerprint stored
with each offset (the last stored message's timestamp and a hash of its key and value,
:func:`fingerprint`): the broker's message at that offset minus one must be the same one, or the
partition is read again from its earliest offset, with the same warning and counter.

While it runs, the sink answers the dashboard's and the CLI's history queries on a local Unix socket
from its own connection (:mod:`rtqis.sinks.serve`; DuckDB allows one process per file): a committed
batch is visible to the next query, at no publishing cost. Retention per kind and the disk-use line
and warning run in the same loop (:mod:`rtqis.sinks.retention`).

Bounded when slow or refused: the consumer's prefetch is bounded (:mod:`rtqis.kafka.clients`), the
batch holds at most ``flush_rows`` rows plus one message, and a write the disk refuses (full,
read-only, I/O error) holds the batch, pauses consumption and commits nothing until a retry succeeds
(:class:`~rtqis.sinks.writer.StoreWriter`): nothing is lost or stored twice. Lag: ``rtqis topics offsets --group`` with
:func:`sink_group`, and the dashboard's status bar.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from rtqis.errors import BrokerError, DecodeError
from rtqis.kafka.clients import MessageProducer, consumer_config, new_consumer
from rtqis.kafka.groups import consumer_timeouts, group_session_s
from rtqis.kafka.offsets import partition_bounds
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.deadletters import bounded_dead_letter
from rtqis.schemas.frames import (
    BOOK_FRAME,
    TRADE_FRAME,
    Frame,
    invalid_rows_reason,
    unknown_symbol_reason,
    validate_book_frame,
    validate_trade_frame,
)
from rtqis.settings import Settings
from rtqis.sinks.marks import TickMarks, screen_frame
from rtqis.sinks.readers import socket_path
from rtqis.sinks.retention import Housekeeper
from rtqis.sinks.serve import HistoryServer
from rtqis.sinks.store import Store, StoreError
from rtqis.sinks.writer import WRITE_RETRY_S, StoreWriter
from rtqis.topics import ADF, ALERTS, BOOK, CANDLES_1M, CANDLES_5M, DEADLETTER, PAIR, TRADES, TopicSpec

__all__ = [
    "NO_MESSAGE",
    "ROW_RULES",
    "Accepted",
    "SinkStats",
    "accept",
    "dead_letter_topics",
    "fingerprint",
    "open_for_writing",
    "resume_offsets",
    "run_sink",
    "sink_group",
    "sink_paths",
]

log = logging.getLogger(__name__)

SINK_TOPICS: tuple[TopicSpec, ...] = (CANDLES_1M, CANDLES_5M, PAIR, ADF, ALERTS, TRADES, BOOK)
#: messages taken from the consumer per call: with frames of up to 500 ticks (~50 KB in JSON) the
#: messages in hand stay under ~10 MB, on top of librdkafka's bounded queue (rtqis.kafka.clients)
CONSUME_MAX = 200


def sink_paths(settings: Settings) -> tuple[Path, Path]:
    """(live database written by the sink, the Unix socket on which the running sink serves readers)."""
    name = f"rtqis-{settings.namespace}" if settings.namespace else "rtqis"
    db = settings.data_dir / f"{name}.duckdb"
    return db, socket_path(db)


def sink_group(settings: Settings) -> str:
    """The sink's consumer group (its committed offsets give its lag: ``rtqis topics offsets --group``)."""
    return f"rtqis-sink-{settings.namespace}" if settings.namespace else "rtqis-sink"


@dataclass
class SinkStats:
    """What a :func:`run_sink` run did: ``rows`` written (DuckDB's count), ``dead_lettered`` messages sent
    to the deadletter topic (undecodable, of another schema, or carrying invalid tick rows, on the topics
    the sink owns the dead letters of: :func:`dead_letter_topics`), ``refused`` such messages on the
    worker's topics (refused, not stored, dead-lettered by the worker) and ``invalid_rows``, the tick rows
    among both that were dropped. ``offset_resets``: partitions started
    again from their beginning because the broker's log went back below the stored offset (a new broker
    or a recreated topic); ``lost_to_retention``: messages deleted by retention before they were stored.
    ``duplicate_ticks``: re-published tick rows skipped (id at or below the symbol's high-water mark,
    :mod:`rtqis.sinks.marks`); ``implausible_rows``: tick rows refused by the worker's plausibility
    bounds (also counted in ``invalid_rows``)."""

    batches: int = 0
    rows: int = 0
    dead_lettered: int = 0
    refused: int = 0
    invalid_rows: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    offset_resets: int = 0
    lost_to_retention: int = 0
    duplicate_ticks: int = 0
    implausible_rows: int = 0


#: The worker's row rules per tick frame type: a row the worker dead-letters never reaches DuckDB either.
ROW_RULES: dict[str, Callable[[Frame], tuple[np.ndarray, list[tuple[int, str]]]]] = {
    TRADE_FRAME.name: validate_trade_frame,
    BOOK_FRAME.name: validate_book_frame,
}


@dataclass(frozen=True)
class Accepted:
    """One consumed message after decoding and validation: ``value`` to store (None: nothing), and the
    ``reason`` the message goes to the deadletter topic (None: it does not), naming ``invalid_rows``."""

    value: m.Message | Frame | None
    reason: str | None = None
    invalid_rows: int = 0


def dead_letter_topics(settings: Settings) -> frozenset[str]:
    """Names (unqualified) of the sink topics whose bad messages the SINK dead-letters: those the worker
    does not consume. The worker reads ``ticks.trade`` always and ``ticks.book`` only for mid-price legs
    (``RTQIS_PAIR_PRICE=mid``), and dead-letters their bad messages itself (see the module docstring)."""
    worker = {TRADES.name} | ({BOOK.name} if settings.pair_price == "mid" else set())
    return frozenset(spec.name for spec in SINK_TOPICS if spec.name not in worker)


def accept(spec: TopicSpec, value: bytes | None, headers: Any, symbols: Sequence[str] | None = None) -> Accepted:
    """Decode one message of the sink topic ``spec`` and validate it, once, as the worker does.

    Models are validated by decoding (pydantic); a message of another schema than the topic's is refused;
    a tick frame of a symbol outside ``symbols`` (the configured ones; None: any) is refused whole, as the
    worker refuses it; otherwise it loses the rows its row rule (:data:`ROW_RULES`, the worker's) rejects,
    and the reason names the first ten of them as the worker's dead letters do."""
    try:
        obj = decode(value, headers, spec.value_schema)
    except DecodeError as e:
        return Accepted(None, str(e))
    if obj.schema_name != spec.value_schema:
        return Accepted(None, f"expected a {spec.value_schema} on {spec.name}, got {obj.schema_name}")
    if isinstance(obj, Frame):
        if symbols is not None and obj.symbol not in symbols:
            why = unknown_symbol_reason(obj.symbol, symbols)
            return Accepted(None, invalid_rows_reason([(i, why) for i in range(len(obj))]), len(obj))
        good, bad = ROW_RULES[obj.type.name](obj)
        if bad:
            kept = obj.take(good)
            return Accepted(kept if len(kept) else None, invalid_rows_reason(bad), len(bad))
    return Accepted(obj)


class _Batch:
    """Validated models and frames of one write, with the offsets of the messages they came from."""

    def __init__(self, marks: TickMarks | None = None) -> None:
        # the store's committed high-water marks, advanced over the ticks of this batch: a batch that is
        # never written leaves the store's marks as they were, and the next batch starts from those
        self.marks = marks if marks is not None else TickMarks()
        self.candles: list[m.Candle] = []
        self.trades: list[Frame] = []
        self.books: list[Frame] = []
        self.signals: list[m.PairSignal] = []
        self.adf: list[m.AdfResult] = []
        self.alerts: list[m.Alert] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], Message] = {}  # the message at each offset - 1 (its fingerprint)
        self.rows = 0
        self.started = time.monotonic()

    def add(self, obj: m.Message | Frame) -> None:
        """Hold ``obj`` (decoded and validated by :func:`accept`) as it is for the next write."""
        if isinstance(obj, Frame):
            (self.trades if obj.type is TRADE_FRAME else self.books).append(obj)
            self.rows += len(obj)
            return
        if isinstance(obj, m.Candle):
            self.candles.append(obj)
        elif isinstance(obj, m.PairSignal):
            self.signals.append(obj)
        elif isinstance(obj, m.AdfResult):
            self.adf.append(obj)
        elif isinstance(obj, m.Alert):
            self.alerts.append(obj)
        else:  # accept() lets through only the sink topics' schemas
            raise TypeError(f"the sink does not store {type(obj).__name__}")
        self.rows += 1

    def write(self, store: Store) -> int:
        """Write the rows and their offsets in one transaction (:meth:`Store.write_batch`); rows written."""
        return store.write_batch(
            candles=self.candles,
            trades=self.trades,
            books=self.books,
            signals=self.signals,
            adf=self.adf,
            alerts=self.alerts,
            offsets=self.offsets,
            fingerprints=self.fingerprints(),
        )

    def fingerprints(self) -> dict[tuple[str, int], tuple[int, str]]:
        """The :func:`fingerprint` of the message at each of :attr:`offsets` minus one."""
        return {k: fingerprint(msg) for k, msg in self.last.items()}


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
    flush_rows: int | None = None,
    retry_s: float = WRITE_RETRY_S,
) -> SinkStats:
    """Run until ``stop`` is set; flushes what it holds before returning. Readers are served on the
    socket :func:`sink_paths` names while it runs.

    A batch is written once it holds ``flush_rows`` rows (default ``settings.sink_flush_rows``; checked
    after every message, so it never holds more than ``flush_rows`` plus one message) or is ``flush_ms``
    old. A write the disk refuses (full, read-only, I/O error) holds the batch and stops consuming
    (:class:`~rtqis.sinks.writer.StoreWriter`). A data directory that cannot be created or written at
    start raises :class:`StoreError` (one line from the CLI)."""
    flush_rows = settings.sink_flush_rows if flush_rows is None else flush_rows
    db_path, sock_path = sink_paths(settings)
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the data directory {db_path.parent}: {e.strerror or e}") from None
    store = open_for_writing(db_path, stop, memory_mb=settings.sink_memory_mb)
    writer = StoreWriter(db_path, store, settings.sink_memory_mb, retry_s)
    try:
        server = HistoryServer(store, sock_path)
    except BaseException:
        store.close()
        raise
    stats = SinkStats()
    names = {spec.full_name(settings.namespace): spec for spec in SINK_TOPICS}
    symbols = list(settings.symbols)  # ticks of any other symbol are refused, as the worker refuses them
    ours = dead_letter_topics(settings)  # the topics whose bad messages the sink dead-letters
    group = sink_group(settings)
    stored = store.load_offsets()
    prints = store.load_fingerprints()

    def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
        # resume from what is durable in DuckDB, not from Kafka's commit, checked against the broker's log
        resume_offsets(settings, parts, stored, stats, fingerprints=prints)
        c.assign(parts)
        if writer.held:  # a rebalance must not start consuming again while a write is held
            c.pause(parts)
        # the group's commit says where the sink stands (lag in `rtqis topics offsets --group`, the dashboard,
        # a replay's end): on a new broker a partition with nothing left to read would otherwise show none
        resumed = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in parts if tp.offset >= 0]
        if resumed:
            try:
                c.commit(offsets=resumed, asynchronous=True)
            except KafkaException as e:
                log.warning("could not commit the resumed offsets (lag figures lag until the next write): %s", e)

    # on Tansu a 2 s session: the sink joins its group in ~1 s, not 3 (rtqis.kafka.groups)
    timeouts = consumer_timeouts(group_session_s(settings))
    c = Consumer(consumer_config(settings, group, **{"auto.offset.reset": "earliest", **timeouts}))
    c.subscribe(list(names), on_assign=on_assign)
    dlq = MessageProducer(settings)
    batch = _Batch(store.tick_marks())
    keeper = Housekeeper(settings, store)  # retention and disk use, without stopping (rtqis.sinks.retention)

    def follow_reopen() -> None:
        """The writer reopens the store after DuckDB dropped its connection: readers and retention follow."""
        nonlocal store
        if writer.store is not None and writer.store is not store:
            store = writer.store
            server.use(store)
            keeper.store = store

    def flush() -> None:
        nonlocal batch
        ok = writer.flush(c, partial(_flush, c=c, batch=batch, stats=stats), batch.rows)
        follow_reopen()
        if ok:
            stored.update(batch.offsets)
            prints.update(batch.fingerprints())
            batch = _Batch(store.tick_marks())

    try:
        while not stop.is_set():
            for msg in c.consume(CONSUME_MAX, 0.05):
                if stop.is_set():  # what is left of this call is not in the batch: read again on restart
                    break
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or partition is None or offset is None:  # only error events lack them
                    continue
                spec = names[topic]
                got = accept(spec, msg.value(), msg.headers(), symbols)
                value, reason, n_bad = got.value, got.reason, got.invalid_rows
                if isinstance(value, Frame):  # the worker's plausibility bounds, then de-duplication
                    value, refused, dup = screen_frame(batch.marks, value)
                    stats.duplicate_ticks += dup
                    if refused:
                        stats.implausible_rows += len(refused)
                        n_bad += len(refused)
                        why = invalid_rows_reason(refused)
                        reason = why if reason is None else f"{reason}; then, of the rows left: {why}"
                if reason is not None:
                    if spec.name in ours:
                        _dead_letter(dlq, msg, reason)
                        stats.dead_lettered += 1
                    else:  # the worker dead-letters it: refused here, counted, not sent twice
                        stats.refused += 1
                        log.debug(
                            "refused %s[%s]@%s (the worker's to dead-letter): %s", topic, partition, offset, reason
                        )
                    stats.invalid_rows += n_bad
                if value is not None:
                    batch.add(value)
                batch.offsets[(topic, partition)] = offset + 1
                batch.last[(topic, partition)] = msg
                if batch.rows >= flush_rows and writer.ready():  # the batch stays bounded by flush_rows
                    flush()
            due = batch.offsets and (
                writer.held or batch.rows >= flush_rows or (time.monotonic() - batch.started) * 1000 >= flush_ms
            )
            if due and writer.ready():
                flush()
            if not writer.held and writer.store is not None:
                keeper.run_due()
    finally:
        if batch.offsets and not writer.flush(c, partial(_flush, c=c, batch=batch, stats=stats), batch.rows, last=True):
            log.error(
                "%d rows were not stored (%s refuses writes): their offsets were not committed, the next "
                "start reads them again",
                batch.rows,
                db_path,
            )
        server.close()
        writer.close()
        c.close()
        dlq.flush()
        log.info("sink stopped: %s", stats)
    return stats


def resume_offsets(
    settings: Settings,
    parts: list[TopicPartition],
    stored: dict[tuple[str, int], int],
    stats: SinkStats,
    bounds: Callable[[Settings, list[tuple[str, int]]], dict[tuple[str, int], tuple[int, int]]] = partition_bounds,
    *,
    fingerprints: dict[tuple[str, int], tuple[int, str]] | None = None,
    read_prints: Callable[[Settings, Mapping[tuple[str, int], int]], dict[tuple[str, int], tuple[int, str]]]
    | None = None,
) -> None:
    """Set each assigned partition's start to its ``stored`` offset (from DuckDB), checked against the
    broker's log: its earliest offset and true end (``bounds``, :func:`partition_bounds`).

    - stored beyond the end: the log went back (a new memory-only broker, a recreated topic). Waiting for
      the new offsets to pass the old ones would store nothing, silently: start from the earliest offset
      instead, with one warning, counted in ``stats.offset_resets``. Re-reading is safe (upserts are
      idempotent by key); the next batch stores the new offset with its rows, in one transaction.
    - stored below the earliest: retention deleted what was not stored yet; start at the earliest, with a
      warning naming how many messages were lost (``stats.lost_to_retention``).
    - stored within the log, with a ``fingerprints`` entry (the :func:`fingerprint` of the message stored
      last, at the stored offset minus one): the broker's message at that offset (``read_prints``,
      :func:`fingerprints_at`) must have the same fingerprint. Another one means another log (a new
      broker whose log already passed the stored offset): restart from the earliest offset as above,
      with the same warning and counter, instead of skipping the new log's beginning silently.

    ``stored`` and ``fingerprints`` are updated in place, so a later rebalance starts from the same place.
    Partitions without a stored offset are left to ``auto.offset.reset``. If the broker does not answer
    a look-up, the stored offsets are used as they are (the previous behaviour), with a warning.
    """
    known = [(tp.topic, tp.partition) for tp in parts if (tp.topic, tp.partition) in stored]
    try:
        found = bounds(settings, known)
    except BrokerError as e:
        log.warning("could not check the stored offsets against the broker (%s): resuming from them as stored", e)
        found = {}
    prints = fingerprints if fingerprints is not None else {}
    differ = _other_logs(settings, found, stored, prints, read_prints or fingerprints_at)
    for tp in parts:
        key = (tp.topic, tp.partition)
        off = stored.get(key)
        if off is None:
            continue
        if key in found:
            low, end = found[key]
            if off > end or key in differ:
                why = (
                    f"is beyond the broker's end {end}"
                    if off > end
                    else f"is within the broker's log (end {end}) but its message at {off - 1} is not the one stored"
                )
                log.warning(
                    "%s[%d]: the stored offset %d %s (a new broker or a recreated topic): "
                    "reading this partition again from its beginning (offset %d)",
                    tp.topic,
                    tp.partition,
                    off,
                    why,
                    low,
                )
                stats.offset_resets += 1
                off = low
                prints.pop(key, None)
            elif off < low:
                log.warning(
                    "%s[%d]: %d messages were lost to retention (stored offset %d, earliest %d): resuming at %d",
                    tp.topic,
                    tp.partition,
                    low - off,
                    off,
                    low,
                    low,
                )
                stats.lost_to_retention += low - off
                off = low
                prints.pop(key, None)
            stored[key] = off
        tp.offset = off


#: what :func:`fingerprints_at` reports where the log has no message at the offset (another log)
NO_MESSAGE: tuple[int, str] = (-1, "")


def fingerprint(msg: Message) -> tuple[int, str]:
    """(Kafka timestamp ms, hex BLAKE2b-128 of key and value) of a consumed message: what the sink stores
    with an offset to recognise the message at that offset minus one in the broker's log later."""
    h = hashlib.blake2b(digest_size=16)
    for part in (msg.key(), msg.value()):
        h.update(b"\xff" * 8 if part is None else len(part).to_bytes(8, "big"))  # None differs from b""
        h.update(part or b"")
    return int(msg.timestamp()[1]), h.hexdigest()


def fingerprints_at(
    settings: Settings, wanted: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], tuple[int, str]]:
    """``{(topic, partition): fingerprint}`` of the broker's message at each ``wanted`` offset; where the
    first message is at a later offset (none at that one), :data:`NO_MESSAGE`; missing: no answer within
    10 s. Raises :class:`BrokerError` on a broker error."""
    if not wanted:
        return {}
    c = new_consumer(settings, None, **{"fetch.wait.max.ms": 10})
    out: dict[tuple[str, int], tuple[int, str]] = {}
    pending = dict(wanted)
    try:
        c.assign([TopicPartition(t, p, off) for (t, p), off in wanted.items()])
        deadline = time.monotonic() + 10.0
        while pending and time.monotonic() < deadline:
            for msg in c.consume(100, 0.2):
                if msg.error() is not None:
                    continue
                key = (msg.topic() or "", msg.partition() or 0)
                if key not in pending:
                    continue
                out[key] = fingerprint(msg) if msg.offset() == pending.pop(key) else NO_MESSAGE
                c.incremental_unassign([TopicPartition(*key)])
    except KafkaException as e:
        raise BrokerError(f"reading the stored offsets' messages failed: {e}") from None
    finally:
        c.close()
    return out


def _other_logs(
    settings: Settings,
    found: Mapping[tuple[str, int], tuple[int, int]],
    stored: Mapping[tuple[str, int], int],
    prints: Mapping[tuple[str, int], tuple[int, str]],
    read_prints: Callable[[Settings, Mapping[tuple[str, int], int]], dict[tuple[str, int], tuple[int, str]]],
) -> set[tuple[str, int]]:
    """The partitions whose message at the stored offset minus one is not the one stored (fingerprint).
    A partition the broker did not answer for in time is not among them (kept as stored, with a warning)."""
    wanted = {
        k: stored[k] - 1 for k, (low, end) in found.items() if k in prints and k in stored and low < stored[k] <= end
    }
    try:
        seen = read_prints(settings, wanted)
    except BrokerError as e:
        log.warning("could not check the stored offsets' last messages (%s): resuming from the offsets", e)
        return set()
    unread = sorted(k for k in wanted if k not in seen)
    if unread:
        log.warning("could not read the last stored message of %s: resuming from the stored offsets", unread)
    return {k for k in wanted if k in seen and seen[k] != prints[k]}


def _dead_letter(dlq: MessageProducer, msg: Message, reason: str) -> None:
    """Send a consumed message to the deadletter topic with ``reason``, as the worker does (stage ``sink``),
    bounded in size (:func:`~rtqis.schemas.deadletters.bounded_dead_letter`)."""
    dl = bounded_dead_letter(
        "sink",
        reason,
        msg.value(),
        source_topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
    )
    dlq.send(DEADLETTER, dl, key="sink")
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), dl.reason)


def _flush(store: Store, c: Consumer, batch: _Batch, stats: SinkStats) -> None:
    n = batch.write(store)
    # rows and offsets are durable together; the Kafka commit is only for lag figures and tools
    c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()], asynchronous=True)
    stats.batches += 1
    stats.rows += int(n or 0)
