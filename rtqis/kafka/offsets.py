"""True offsets on any broker: earliest, end, committed, lag, and the first offset at a time.

Some brokers answer ListOffsets wrongly (the embedded Tansu 0.6 reports the *base offset of the last
record batch + 1* as the end, and offset 0 for every timestamp). Whether the broker can be trusted is
decided once per process and broker by a self-check (:func:`broker_capabilities`), never by the
broker's name. When it cannot, the end is read from a fetch (its high watermark is right) and the time
seek is a binary search over record timestamps.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from rtqis.errors import BrokerError
from rtqis.kafka.admin import admin_client, broker_metadata, cluster_id, wait_for_topics
from rtqis.kafka.clients import consumer_config
from rtqis.settings import Settings

__all__ = [
    "TRANSIENT_RETRY_S",
    "true_end_offsets",
    "BrokerCapabilities",
    "PartitionOffsets",
    "broker_capabilities",
    "offsets_at_time",
    "is_transient",
    "partition_bounds",
    "retry_transient",
    "topic_offsets",
]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 10.0
#: a true-end probe of a partition still being written stops this long after every partition answered:
#: it used to read on until 200 ms without a record, so a busy topic kept it to the 10 s timeout (the
#: sink resuming after a broker outage, while producers flushed their backlog, spent 10 s in it) (s)
_BUSY_TOPIC_S = 0.5
#: consumer overrides of the offset probes: short fetch waits (they read a few records, not a stream), and
#: no librdkafka log below critical: a probe that finds no broker raises one BrokerError, and closing it
#: wrote its queued connection failures on top (58 lines in 3 s; the CLI's error is one line)
_PROBE_CONSUMER: dict[str, Any] = {"fetch.wait.max.ms": 10, "log_level": 2}
#: how long a lookup keeps retrying answers that clear by themselves (a node of a cluster just killed or
#: restarted, a fresh cluster's coordinator loading); longer than a leader election, shorter than a session
TRANSIENT_RETRY_S = 30.0
#: errors that clear by themselves: leadership moving, a coordinator loading, a request timing out (not a
#: broker that refuses connections: that is for the caller to report at once)
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
}
T = TypeVar("T")


def is_transient(e: KafkaException) -> bool:
    """True for a broker answer that clears by itself (:data:`_TRANSIENT`, or one librdkafka calls retriable)."""
    err = e.args[0] if e.args else None
    return isinstance(err, KafkaError) and (err.code() in _TRANSIENT or err.retriable())


def retry_transient(fn: Callable[[], T], what: str, limit_s: float = TRANSIENT_RETRY_S) -> T:
    """``fn()``, again after a transient broker error (:func:`is_transient`) until ``limit_s`` has passed.

    On a three-node cluster with one node just SIGKILLed, lookups answered "Not leader" and timed out for
    a few seconds: a worker starting then crashed in the self-check, and a replay's progress poll ended
    the replay. Any other error, or a transient one past the limit, is raised as it came."""
    deadline = time.monotonic() + limit_s
    delay = 0.2
    while True:
        try:
            return fn()
        except KafkaException as e:
            if not is_transient(e) or time.monotonic() + delay > deadline:
                raise
            log.info("%s: %s; retrying in %.1f s", what, e, delay)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


@dataclass(frozen=True)
class BrokerCapabilities:
    """What the self-check found: does the broker's own answer give the true end / time offset?"""

    exact_end_offsets: bool
    time_index: bool


@dataclass
class PartitionOffsets:
    topic: str
    partition: int
    earliest: int
    end: int
    committed: int | None = None
    lag: int | None = None
    at_time: int | None = None

    def as_dict(self, group: bool = False, at_time: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not group:
            d.pop("committed")
            d.pop("lag")
        if not at_time:
            d.pop("at_time")
        return d


#: (bootstrap address, cluster id) -> the self-check's answer
_caps_cache: dict[tuple[str, str], BrokerCapabilities] = {}


def broker_capabilities(settings: Settings, refresh: bool = False, cluster: str | None = None) -> BrokerCapabilities:
    """Self-check, once per process and broker: three records in one batch to a scratch topic.

    A broker with exact end offsets answers 3 for the end; one with a time index answers offset 1 for
    the second record's timestamp. "The broker" is its address *and* its cluster id (``cluster`` when
    the caller has the broker's metadata, else asked for): a long-lived process (the sink, a bot) that
    sees another broker come up on the same address, Tansu after Apache Kafka say, checks it again
    instead of trusting it as the first.
    """
    key = (settings.bootstrap, cluster_id(settings) if cluster is None else cluster)
    if not refresh and key in _caps_cache:
        return _caps_cache[key]
    topic = f"_rtqis.selfcheck.{uuid.uuid4().hex[:12]}"
    admin = admin_client(settings)
    from confluent_kafka.admin import NewTopic

    fut = admin.create_topics([NewTopic(topic, 1, replication_factor=-1)], operation_timeout=10)[topic]
    try:
        fut.result()
    except KafkaException as e:
        raise BrokerError(f"broker self-check could not create a topic: {e}") from None
    try:
        wait_for_topics(admin, {topic: 1}, _PROBE_TIMEOUT_S)
        conf = settings.kafka_client_config()
        conf.update({"linger.ms": 100, "logger": logging.getLogger("rtqis.librdkafka")})
        p = Producer(conf)
        for i in range(3):
            p.produce(topic, value=b"x", timestamp=1_000_000 + 1000 * i)
        if p.flush(_PROBE_TIMEOUT_S):
            raise BrokerError("broker self-check: records were not delivered")
        c = Consumer(consumer_config(settings))
        try:
            tp = TopicPartition(topic, 0)
            _, high = retry_transient(
                lambda: c.get_watermark_offsets(tp, timeout=_PROBE_TIMEOUT_S, cached=False), "self-check end offset"
            )
            t = retry_transient(
                lambda: c.offsets_for_times([TopicPartition(topic, 0, 1_001_000)], timeout=_PROBE_TIMEOUT_S),
                "self-check time lookup",
            )[0].offset
        finally:
            c.close()
        caps = BrokerCapabilities(exact_end_offsets=(high == 3), time_index=(t == 1))
    finally:
        admin.delete_topics([topic], operation_timeout=10)
    if not caps.exact_end_offsets or not caps.time_index:
        log.debug("broker at %s (cluster %s): %s; using fetch-based offsets", *key, caps)
    _caps_cache[key] = caps
    return caps


def _partitions(md: Any, topics: list[str]) -> list[TopicPartition]:
    out: list[TopicPartition] = []
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            raise BrokerError(f"unknown topic {t!r}")
        out.extend(TopicPartition(t, p) for p in sorted(tm.partitions))
    return out


def _watermarks(c: Consumer, tps: list[TopicPartition]) -> dict[tuple[str, int], tuple[int, int]]:
    return {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=_PROBE_TIMEOUT_S, cached=False) for tp in tps}


def _true_ends(c: Consumer, wm: dict[tuple[str, int], tuple[int, int]]) -> dict[tuple[str, int], int]:
    """End offsets read with a fetch: start at the reported end - 1 and read what follows (the rest of
    the last record batch); the end is past the last record seen, or the fetch's high watermark if
    that is larger (Tansu's ListOffsets answer is the last batch's base offset + 1, too small)."""
    ends = {k: hi for k, (lo, hi) in wm.items()}
    todo = {k: hi - 1 for k, (lo, hi) in wm.items() if hi > lo}
    if not todo:
        return ends
    c.assign([TopicPartition(t, p, off) for (t, p), off in todo.items()])
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    seen: dict[tuple[str, int], int] = {}
    quiet_since = time.monotonic()
    answered_at: float | None = None  # when every partition had answered
    while time.monotonic() < deadline:
        msg = c.poll(0.05)
        now = time.monotonic()
        if msg is not None and not msg.error():
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            k = (topic or "", partition if partition is not None else -1)
            if k in todo and offset is not None:
                seen[k] = max(seen.get(k, -1), offset)
                quiet_since = now
        if answered_at is None and len(seen) == len(todo):
            answered_at = now
        # done once every partition answered and nothing more came for 200 ms, or, on a topic still
        # being written (records keep coming), _BUSY_TOPIC_S after that: the whole batch the lookup
        # started in came with the first answer, and a later end only counts newer records
        if answered_at is not None and (now - quiet_since >= 0.2 or now - answered_at >= _BUSY_TOPIC_S):
            break
    c.unassign()
    missing = set(todo) - set(seen)
    if missing:
        raise BrokerError(f"could not read the end of {sorted(missing)} within {_PROBE_TIMEOUT_S:.0f} s")
    for k, last in seen.items():
        _, hi = c.get_watermark_offsets(TopicPartition(*k), cached=True)
        if last + 1 > hi:
            log.info("%s[%d]: the fetch's high watermark %d is below the last record read + 1 (%d)", *k, hi, last + 1)
        ends[k] = max(hi, last + 1, ends[k])
    return ends


def true_end_offsets(settings: Settings, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """True end offset (last offset + 1) of each (topic, partition), whatever the broker's ListOffsets says."""
    c = Consumer(consumer_config(settings, **_PROBE_CONSUMER))
    try:
        wm = _watermarks(c, [TopicPartition(t, p) for t, p in partitions])
        return _true_ends(c, wm)
    except KafkaException as e:
        raise BrokerError(f"end offset lookup failed: {e}") from None
    finally:
        c.close()


def partition_bounds(settings: Settings, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """``{(topic, partition): (earliest, true end)}`` of the given partitions, whatever the broker.

    The end is the broker's own answer where the self-check (:func:`broker_capabilities`) trusts it,
    else read with a fetch. Raises :class:`BrokerError` when the broker does not answer."""
    if not partitions:
        return {}
    c = Consumer(consumer_config(settings, **_PROBE_CONSUMER))
    try:
        # the cluster id from one topic's metadata: ~21 ms on Tansu, ~29 ms with every topic's
        caps = broker_capabilities(settings, cluster=cluster_id(settings, c, partitions[0][0]))
        wm = _watermarks(c, [TopicPartition(t, p) for t, p in partitions])
        ends = {k: hi for k, (lo, hi) in wm.items()} if caps.exact_end_offsets else _true_ends(c, wm)
        return {k: (lo, ends[k]) for k, (lo, _) in wm.items()}
    except KafkaException as e:
        raise BrokerError(f"offset lookup failed: {e}") from None
    finally:
        c.close()


def _timestamp_at(c: Consumer, topic: str, partition: int, offset: int) -> tuple[int, int]:
    """(offset, timestamp ms) of the first record at or after ``offset``."""
    c.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is None or msg.error() or msg.topic() != topic or msg.partition() != partition:
            continue
        found = msg.offset()
        if found is not None:
            return found, msg.timestamp()[1]
    raise BrokerError(f"no record at {topic}[{partition}]@{offset} within {_PROBE_TIMEOUT_S:.0f} s")


def _search_time(c: Consumer, topic: str, partition: int, lo: int, hi: int, ts_ms: int) -> int:
    """First offset in [lo, hi) whose timestamp >= ts_ms (hi if none), by binary search.

    Assumes record timestamps do not decrease along a partition, which RT-QIS producers keep (each
    frame is stamped with its first tick's event time, frames go out in that order).
    """
    while lo < hi:
        mid = (lo + hi) // 2
        off, ts = _timestamp_at(c, topic, partition, mid)
        if ts >= ts_ms:
            hi = mid
        else:
            lo = max(mid, off) + 1
    return lo


def topic_offsets(
    settings: Settings, topics: list[str], group: str | None = None, at_time_ms: int | None = None
) -> list[PartitionOffsets]:
    """Earliest and true end offset of every partition of ``topics`` (+ group lag, + offset at a time)."""
    try:
        return retry_transient(lambda: _topic_offsets(settings, topics, group, at_time_ms), "offset lookup")
    except KafkaException as e:  # transient, but for longer than TRANSIENT_RETRY_S
        raise BrokerError(f"offset lookup failed: {e}") from None


def _topic_offsets(
    settings: Settings, topics: list[str], group: str | None, at_time_ms: int | None
) -> list[PartitionOffsets]:
    c = Consumer(consumer_config(settings, group, **_PROBE_CONSUMER))
    try:
        md = broker_metadata(c, settings)
        caps = broker_capabilities(settings, cluster=str(md.cluster_id or ""))
        tps = _partitions(md, topics)
        wm = _watermarks(c, tps)
        ends = {k: hi for k, (lo, hi) in wm.items()} if caps.exact_end_offsets else _true_ends(c, wm)
        rows = [
            PartitionOffsets(t, p, wm[(t, p)][0], ends[(t, p)]) for t, p in ((tp.topic, tp.partition) for tp in tps)
        ]
        if group is not None:
            committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=_PROBE_TIMEOUT_S)}
            for r in rows:
                off = committed.get((r.topic, r.partition), -1)
                r.committed = off if off >= 0 else None
                r.lag = r.end - (off if off >= 0 else r.earliest)
        if at_time_ms is not None:
            found = _at_time(c, caps, rows, at_time_ms)
            for r in rows:
                r.at_time = found[(r.topic, r.partition)]
        return rows
    except KafkaException as e:
        if is_transient(e):
            raise  # retried by topic_offsets
        raise BrokerError(f"offset lookup failed: {e}") from None
    finally:
        c.close()


def _at_time(
    c: Consumer, caps: BrokerCapabilities, rows: list[PartitionOffsets], ts_ms: int
) -> dict[tuple[str, int], int]:
    if caps.time_index:
        answer = c.offsets_for_times(
            [TopicPartition(r.topic, r.partition, ts_ms) for r in rows], timeout=_PROBE_TIMEOUT_S
        )
        ends = {(r.topic, r.partition): r.end for r in rows}
        return {
            (tp.topic, tp.partition): (
                tp.offset if tp.offset >= 0 and tp.offset != OFFSET_END else ends[(tp.topic, tp.partition)]
            )
            for tp in answer
        }
    return {(r.topic, r.partition): _search_time(c, r.topic, r.partition, r.earliest, r.end, ts_ms) for r in rows}


def offsets_at_time(settings: Settings, topics: list[str], ts_ms: int) -> dict[tuple[str, int], int]:
    """Per partition, the first offset whose record timestamp is >= ``ts_ms`` (the end if none)."""
    return {
        (r.topic, r.partition): r.at_time
        for r in topic_offsets(settings, topics, at_time_ms=ts_ms)
        if r.at_time is not None
    }
