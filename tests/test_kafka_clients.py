"""The project's Kafka clients against a real broker: what MessageProducer sends arrives (key, timestamp,
headers, value), ``on_delivered`` runs once per acknowledged message and never for a failed one, a full
local queue blocks instead of raising, and the configs carry the settings."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from confluent_kafka import Message, TopicPartition

from rtqis.kafka.clients import MessageProducer, consumer_config, new_consumer, producer_config
from rtqis.process import free_port
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode, header_map
from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.settings import Settings, load_settings
from rtqis.topics import TICKER, TRADES, TopicSpec


def _ticker(i: int) -> m.Ticker:
    return m.Ticker(symbol="BTCUSDT", event_time=1_000 + i, price=100.0 + i, trade_id=i, trades=i + 1, frames=1)


def _read(settings: Settings, spec: TopicSpec, n: int, timeout_s: float = 30.0) -> list[Message]:
    """The first ``n`` messages of ``spec`` (partition 0, from offset 0)."""
    c = new_consumer(settings)
    c.assign([TopicPartition(spec.full_name(settings.namespace), 0, 0)])
    out: list[Message] = []
    try:
        for _ in range(int(timeout_s / 0.5)):
            out += [x for x in c.consume(n - len(out), 0.5) if not x.error()]
            if len(out) >= n:
                return out
    finally:
        c.close()
    raise AssertionError(f"read {len(out)} of {n} messages of {spec.name} in {timeout_s} s")


def test_configs_carry_the_settings_and_overrides_win() -> None:
    s = load_settings(bootstrap_servers="k:9092", compression="lz4", producer_linger_ms=7, fetch_max_wait_ms=33)
    p = producer_config(s, **{"linger.ms": 50})
    assert p["bootstrap.servers"] == "k:9092" and p["compression.type"] == "lz4"
    assert p["enable.idempotence"] is True and p["linger.ms"] == 50
    c = consumer_config(s)
    assert c["group.id"] == "rtqis-nogroup" and c["fetch.wait.max.ms"] == 33
    assert c["enable.auto.commit"] is False and c["enable.auto.offset.store"] is False  # store after the work
    assert c["auto.offset.reset"] == "earliest"
    assert consumer_config(s, "g1", **{"fetch.wait.max.ms": 5})["group.id"] == "g1"
    assert consumer_config(s, "g1", **{"fetch.wait.max.ms": 5})["fetch.wait.max.ms"] == 5


def test_sent_models_arrive_keyed_stamped_and_decodable(settings: Settings) -> None:
    p = MessageProducer(settings)
    for i in range(5):
        p.send(TICKER, _ticker(i), key="BTCUSDT", timestamp_ms=1_700_000_000_000 + i)
    assert p.flush() == 0
    assert (p.stats.sent, p.stats.delivered, p.stats.failed) == (5, 5, 0)
    assert p.stats.by_topic == {"analytics.ticker": 5} and len(p) == 0
    msgs = _read(settings, TICKER, 5)
    assert [x.key() for x in msgs] == [b"BTCUSDT"] * 5
    assert [x.timestamp()[1] for x in msgs] == [1_700_000_000_000 + i for i in range(5)]
    assert header_map(msgs[0].headers())["rtqis-schema"] == "rtqis.Ticker"
    assert [decode(x.value(), x.headers()) for x in msgs] == [_ticker(i) for i in range(5)]


def test_frames_round_trip_with_the_configured_codec(settings: Settings) -> None:
    s = settings.model_copy(update={"codec": "avro"})
    cols = {
        "trade_id": np.arange(4),
        "price": np.array([1.0, 2.0, 3.0, 4.0]),
        "qty": np.ones(4),
        "trade_time": np.arange(4) + 10,
        "event_time": np.arange(4) + 10,
        "recv_time": np.arange(4) + 11,
        "buyer_maker": np.array([True, False, True, False]),
    }
    p = MessageProducer(s)
    p.send(TRADES, Frame(TRADE_FRAME, "ETHUSDT", cols), key="ETHUSDT", partition=0)
    assert p.flush() == 0
    (msg,) = _read(s, TRADES, 1)
    assert header_map(msg.headers())["content-type"] == "application/avro"
    f = decode(msg.value(), msg.headers())
    assert isinstance(f, Frame) and f.symbol == "ETHUSDT" and len(f) == 4
    assert [r["price"] for r in f.iter_rows()] == [1.0, 2.0, 3.0, 4.0]
    assert [r["buyer_maker"] for r in f.iter_rows()] == [True, False, True, False]


def test_on_delivered_runs_once_per_acknowledged_message(settings: Settings) -> None:
    p = MessageProducer(settings, **{"linger.ms": 200})
    done: list[int] = []
    for i in range(20):
        p.send(TICKER, _ticker(i), key="BTCUSDT", on_delivered=lambda i=i: done.append(i))
    p.send(TICKER, _ticker(99), key="BTCUSDT")  # no callback: only the stats count it
    assert len(done) < 20  # lingering: not acknowledged yet, so not reported
    assert p.flush() == 0
    assert sorted(done) == list(range(20)) and p.stats.delivered == 21
    p.poll(0.1)
    assert len(done) == 20  # never twice


def test_a_failed_delivery_is_counted_and_skips_on_delivered(caplog: pytest.LogCaptureFixture) -> None:
    """Nobody listens at the bootstrap address: the message times out, the callback reports the error."""
    s = load_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    p = MessageProducer(s, **{"message.timeout.ms": 500})
    done: list[int] = []
    with caplog.at_level(logging.WARNING, logger="rtqis.kafka.clients"):
        p.send(TICKER, _ticker(1), key="BTCUSDT", on_delivered=lambda: done.append(1))
        assert p.flush(timeout_s=10) == 0  # reported (as failed): nothing outstanding
    assert (p.stats.sent, p.stats.delivered, p.stats.failed) == (1, 0, 1)
    assert done == [] and "timed out" in p.stats.last_error.lower()
    assert any("delivery to analytics.ticker failed" in r.getMessage() for r in caplog.records)


def test_a_full_queue_blocks_the_sender_instead_of_raising(settings: Settings) -> None:
    """A 5-message local queue and 300 sends: each waits for deliveries to make room (back-pressure)."""
    p = MessageProducer(settings, **{"queue.buffering.max.messages": 5, "linger.ms": 20})
    queued = []
    for i in range(300):
        p.send(TICKER, _ticker(i), key="BTCUSDT")  # BufferError would escape here without back-pressure
        queued.append(len(p))
    assert max(queued) <= 5
    assert p.flush() == 0 and p.stats.delivered == 300 and p.stats.failed == 0
    msgs = _read(settings, TICKER, 300)
    assert [decode(x.value(), x.headers()).trade_id for x in msgs] == list(range(300))  # type: ignore[union-attr]


def test_close_flushes_what_is_outstanding(settings: Settings) -> None:
    p = MessageProducer(settings, **{"linger.ms": 500})
    for i in range(3):
        p.send(TICKER, _ticker(i), key="BTCUSDT")
    p.close()
    assert len(p) == 0 and p.stats.delivered == 3
    assert len(_read(settings, TICKER, 3)) == 3


def test_offset_lookups_retry_what_clears_by_itself_and_nothing_else() -> None:
    # a cluster node just killed answers "Not leader" / times out for seconds: retried, bounded
    from confluent_kafka import KafkaError, KafkaException

    from rtqis.kafka.offsets import is_transient, retry_transient

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return "ok"

    assert retry_transient(flaky, "test", limit_s=10.0) == "ok" and len(calls) == 3
    assert is_transient(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    assert not is_transient(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))

    def broken() -> str:
        calls.append(1)
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    calls.clear()
    with pytest.raises(KafkaException):
        retry_transient(broken, "test", limit_s=10.0)
    assert len(calls) == 1  # not retried

    def always() -> str:
        calls.append(1)
        raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))

    calls.clear()
    with pytest.raises(KafkaException):
        retry_transient(always, "test", limit_s=0.5)
    assert 1 < len(calls) < 10  # retried, then given up at the limit
