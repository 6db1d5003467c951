"""The ceiling: how fast a bare confluent-kafka consumer reads and decodes the tick frames."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import TopicPartition

from rtqis.bench.harness import Say, fresh_namespace, produce_trades
from rtqis.kafka.clients import new_consumer
from rtqis.kafka.offsets import topic_offsets
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings
from rtqis.topics import TRADES

__all__ = ["bench_raw"]

log = logging.getLogger(__name__)


def bench_raw(settings: Settings, n: int, say: Say) -> dict[str, Any]:
    """``n`` trades produced as full frames, then read back from offset 0 to the end of every partition:
    ticks and messages per second, timed from the assignment (the first fetch included)."""
    s = fresh_namespace(settings)
    produce_trades(s, n, s.frame_max_ticks)
    topic = TRADES.full_name(s.namespace)
    ends = {r.partition: r.end for r in topic_offsets(s, [topic])}
    overrides: dict[str, Any] = {"fetch.wait.max.ms": 10}
    c = new_consumer(s, **overrides)
    msgs = ticks = 0
    done: set[int] = set()
    t0 = time.perf_counter()  # from assignment: includes the first fetch
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    try:
        while len(done) < len(ends):
            for msg in c.consume(1000, 1.0):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                obj = decode(msg.value(), msg.headers(), TRADES.value_schema)
                ticks += len(obj) if isinstance(obj, Frame) else 1
                msgs += 1
                if offset + 1 >= ends[partition]:
                    done.add(partition)
        dt = time.perf_counter() - t0
    finally:
        c.close()
    res = {"ticks": ticks, "messages": msgs, "seconds": dt, "ticks_per_s": ticks / dt, "messages_per_s": msgs / dt}
    say(
        f"raw consume (confluent-kafka + decode): {res['ticks_per_s']:,.0f} ticks/s, {res['messages_per_s']:,.0f} msg/s"
    )
    return res
