"""Broker compatibility suite: each broker behaviour RT-QIS relies on or works around, stated as a test.

Runs on the embedded broker in CI, and on any broker named by RTQIS_BOOTSTRAP_SERVERS
(`RTQIS_BOOTSTRAP_SERVERS=host:9092 pytest -m broker`), so the same statements can be checked on Kafka.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from rtqis.kafka.admin import admin_client
from rtqis.kafka.offsets import broker_capabilities, offsets_at_time, topic_offsets
from rtqis.settings import Settings
from tests.test_cli import run_cli

pytestmark = pytest.mark.broker


def new_topic(settings: Settings, partitions: int = 1) -> str:
    name = f"{settings.namespace}.compat.{uuid.uuid4().hex[:6]}"
    admin = admin_client(settings)  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(name, partitions, replication_factor=-1)])[name].result()
    return name


def produce(settings: Settings, topic: str, n: int, ts0: int = 1_000_000, step: int = 10, **conf: object) -> None:
    """n records in as few batches as the producer makes (linger 200 ms), timestamps ts0 + step*i."""
    p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 200, **conf})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), key=f"k{i % 5}".encode(), partition=0, timestamp=ts0 + step * i)
    assert p.flush(30) == 0


def test_end_offset_equals_records_produced_in_one_batch(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 1000)
    (row,) = topic_offsets(settings, [topic])
    assert (row.earliest, row.end) == (0, 1000)
    r = run_cli("topics", "offsets", topic, "--json", env={"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": topic, "partition": 0, "earliest": 0, "end": 1000}


def test_self_check_tells_whether_the_broker_end_offset_can_be_trusted(settings: Settings) -> None:
    """Whatever the broker does, the self-check must describe it (Tansu 0.6: base of last batch + 1)."""
    topic = new_topic(settings)
    produce(settings, topic, 50)
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "compat"})
    try:
        _, raw_end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    finally:
        c.close()
    caps = broker_capabilities(settings, refresh=True)
    assert caps.exact_end_offsets == (raw_end == 50)


def test_empty_topic_has_equal_earliest_and_end(settings: Settings) -> None:
    topic = new_topic(settings, partitions=3)
    rows = topic_offsets(settings, [topic])
    assert [(r.partition, r.earliest, r.end) for r in rows] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]


def test_group_committed_offset_and_lag(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 100)
    group = f"{settings.namespace}-g"
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
    finally:
        c.close()
    (row,) = topic_offsets(settings, [topic], group=group)
    assert (row.end, row.committed, row.lag) == (100, 40, 60)
    r = run_cli(
        "topics", "offsets", topic, "--group", group, "--json", env={"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap}
    )
    assert json.loads(r.stdout)["lag"] == 60


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(1_000_055, 6), (1_000_060, 6), (0, 0), (1_000_000, 0), (1_000_990, 99), (1_000_991, 100), (9_999_999, 100)],
)
def test_seek_by_time_finds_first_record_at_or_after(settings: Settings, ts: int, expected: int) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 100)  # timestamps 1_000_000 + 10 i
    assert offsets_at_time(settings, [topic], ts) == {(topic, 0): expected}


def test_seek_by_time_on_the_cli(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 30, ts0=1_723_161_600_000, step=1000)  # one record a second from 2024-08-09T00:00Z
    env = {"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap}
    r = run_cli("topics", "offsets", topic, "--time", "2024-08-09T00:00:12.5Z", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["at_time"] == 13


@pytest.mark.parametrize("codec", ["zstd", "lz4", "gzip", "snappy"])
def test_compressed_batches_are_readable_by_both_clients(settings: Settings, codec: str) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 200, **{"compression.type": codec})
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "x", "fetch.wait.max.ms": 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while len(got) < 200:
            msg = c.poll(10)
            assert msg is not None, f"confluent-kafka read {len(got)} of 200"
            got.append(msg.value())
    finally:
        c.close()
    assert got == [f"v{i}".encode() for i in range(200)]

    async def read_aiokafka() -> list[bytes]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as ATP

        ac = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
        await ac.start()
        try:
            tp = ATP(topic, 0)
            ac.assign([tp])
            ac.seek(tp, 0)
            out: list[bytes] = []
            while len(out) < 200:
                batch = await ac.getmany(tp, timeout_ms=10_000)
                assert batch, f"aiokafka read {len(out)} of 200"
                out.extend(m.value for m in batch[tp])
            return out
        finally:
            await ac.stop()

    assert asyncio.run(read_aiokafka()) == got


def test_idempotent_producer_works(settings: Settings) -> None:
    """confluent-kafka's idempotent producer gets a producer id (aiokafka's does not on Tansu 0.6)."""
    topic = new_topic(settings)
    produce(settings, topic, 20, **{"enable.idempotence": True})
    (row,) = topic_offsets(settings, [topic])
    assert row.end == 20
